//! The critic agent binary: an A2A server whose skills live in the `critic` library.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("critic", |_env| {
        Ok(kit::server::AgentSpec {
            name: "critic".into(),
            role: "critic".into(),
            description: "Reviews a candidate with deterministic rails: protected paths, size, scope, bite check".into(),
            skills: vec![],
            push_notifications: true,
        })
    })
}
