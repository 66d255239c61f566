//! The executor agent binary: an A2A server whose skills live in the `executor` library.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("executor", |_env| {
        Ok(kit::server::AgentSpec {
            name: "executor".into(),
            role: "executor".into(),
            description: "Applies a candidate in its worktree, commits it and runs the fast gate in a sandbox".into(),
            skills: vec![],
            push_notifications: true,
        })
    })
}
