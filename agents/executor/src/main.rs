//! The executor agent binary: applies candidates in their worktrees, commits, runs the fast gate.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("executor", |env| {
        let agent = kit::worker::LeasedAgent {
            role: "executor",
            skill: "execute",
            skill_name: "Execute a candidate",
            skill_description: "Apply a candidate in its worktree, commit it with its provenance, and run the fast gate (build, tests) in a sandbox",
            description: "Applies a candidate in its worktree, commits it and runs the fast gate in a sandbox",
        };
        Ok(agent.spec(env, executor::execute))
    })
}
