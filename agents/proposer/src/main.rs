//! The proposer agent binary: proposes candidate changes against the current baseline.
//!
//! `proposer --gc` removes the scratch checkouts proposers left in their state directories
//! (`worktrees/.swarm/agents/*/scratch`, none in use) of the repository in `RATCHET_HOME` (default:
//! the current directory) and prints the removed paths as a JSON list. `ratchet gc` runs it.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--gc") {
        return gc();
    }
    kit::agent::main_with("proposer", |env| {
        // A scratch checkout left by a proposer that died in a task.
        proposer::work::gc(std::slice::from_ref(&env.state_dir));
        Ok(kit::server::AgentSpec {
            name: env.name.clone(),
            role: "proposer".into(),
            description: "Proposes candidate changes against the current baseline (strategies: sweep, command)".into(),
            skills: vec![proposer::work::skill(env.home.clone(), env.state_dir.clone())],
            push_notifications: true,
            routes: None,
            ..Default::default()
        })
    })
}

fn gc() -> anyhow::Result<()> {
    let home = kit::agent::home_from_env().context("finding the repository")?;
    let agents = kit::layout::Layout::new(&home).agents_dir();
    let state_dirs: Vec<_> = match std::fs::read_dir(&agents) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e).with_context(|| format!("reading {}", agents.display())),
    };
    let removed = proposer::work::gc(&state_dirs);
    println!("{}", serde_json::to_string(&removed)?);
    Ok(())
}
