//! The coordinator agent binary: runs cycles, expires leases, promotes winners onto `main`.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("coordinator", |_env| {
        Ok(kit::server::AgentSpec {
            name: "coordinator".into(),
            role: "coordinator".into(),
            description: "Runs the improvement loop: routes tasks by role and skill, expires stale leases, promotes winners onto main by fast-forward".into(),
            skills: vec![],
            push_notifications: true,
        })
    })
}
