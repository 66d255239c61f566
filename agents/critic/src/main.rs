//! The critic agent binary: reviews candidates with deterministic rails.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("critic", |env| {
        let agent = kit::worker::LeasedAgent {
            role: "critic",
            skill: "critique",
            skill_name: "Critique a candidate",
            skill_description: "Review a candidate commit with deterministic rails: protected paths, size limits, scope guard, and the bite check (new tests must fail on the parent)",
            description: "Reviews a candidate with deterministic rails: protected paths, size, scope, bite check",
        };
        Ok(agent.spec(env, critic::work::critique))
    })
}
