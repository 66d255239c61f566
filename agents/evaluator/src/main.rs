//! The evaluator agent binary: an A2A server whose skills live in the `evaluator` library.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("evaluator", |_env| {
        Ok(kit::server::AgentSpec {
            name: "evaluator".into(),
            role: "evaluator".into(),
            description: "Benchmarks baseline and candidate interleaved and gives a PROMOTE, HOLD or REJECT verdict".into(),
            skills: vec![],
            push_notifications: true,
        })
    })
}
