//! The proposer agent binary: proposes candidate changes against the current baseline.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("proposer", |env| {
        Ok(kit::server::AgentSpec {
            name: env.name.clone(),
            role: "proposer".into(),
            description: "Proposes candidate changes against the current baseline (strategies: sweep, command)".into(),
            skills: vec![proposer::work::skill(env.home.clone(), env.state_dir.clone())],
            push_notifications: true,
            routes: None,
        })
    })
}
