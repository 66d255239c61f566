//! The proposer agent binary: an A2A server whose skills live in the `proposer` library.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("proposer", |_env| {
        Ok(kit::server::AgentSpec {
            name: "proposer".into(),
            role: "proposer".into(),
            description: "Proposes candidate changes against the current baseline (strategies: sweep, command, openai)".into(),
            skills: vec![],
            push_notifications: true,
        })
    })
}
