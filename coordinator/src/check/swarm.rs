//! What the swarm's own configuration says: agents.toml (it parses, its commands resolve, the
//! built-in roles are covered) and the sandbox (where commands run here, and whether the
//! approved constitution accepts it).

use std::collections::BTreeMap;
use std::path::Path;

use kit::exec::SandboxMode;
use protocol::governance::Governance;

use super::Item;

/// agents.toml: it parses, its commands resolve, the built-in roles are covered. Returns the
/// proposer's environment as the swarm would give it (this process's, with the entry's `env`).
pub(super) fn agents_items(home: &Path, items: &mut Vec<Item>) -> Option<BTreeMap<String, String>> {
    let path = home.join("agents.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            items.push(Item::error(
                "agents.toml",
                format!("cannot read {}: {e}", path.display()),
                "agents.toml",
                "run `ratchet init` in the repository (it writes agents.toml and the governance templates)",
            ));
            return None;
        }
    };
    let config = match protocol::config::AgentsFile::parse(&text, "agents.toml") {
        Ok(c) => c,
        Err(e) => {
            items.push(Item::error("agents.toml", e.to_string(), "agents.toml", "correct the line it names"));
            return None;
        }
    };
    let mut ok = true;
    for a in &config.agents {
        if let Some(argv) = &a.command
            && let Err(e) = crate::supervisor::resolve_program(&a.name, &argv[0], home)
        {
            ok = false;
            items.push(Item::error(
                format!("agent {}", a.name),
                e.to_string()
                    .split("; fix:")
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("agents.toml: ")
                    .to_string(),
                format!("agents.toml [[agent]] {:?} command", a.name),
                "correct the program name, build it (`cargo build --workspace --bins`), or give its absolute path",
            ));
        }
    }
    for role in ["coordinator", "proposer", "executor", "critic", "evaluator"] {
        if config.agents.iter().any(|a| a.role == role) {
            continue;
        }
        ok = false;
        let fix = format!("add an [[agent]] with role = {role:?} (`ratchet init --force` writes the default five)");
        if matches!(role, "coordinator" | "proposer") {
            items.push(Item::error(
                "agents.toml",
                format!("no agent has role {role:?}: the loop needs one"),
                "agents.toml",
                fix,
            ));
        } else {
            // A leased worker may run on another host (RATCHET_COORDINATOR_URL): the loop waits for it.
            items.push(Item::warn(
                "agents.toml",
                format!("no agent has role {role:?} here: the loop waits until one on another host takes its tasks"),
                Some("agents.toml".into()),
                Some(format!("{fix}, unless a remote {role} joins")),
            ));
        }
    }
    if ok {
        items.push(Item::ok("agents.toml", format!("{} agent(s), every command found", config.agents.len())));
    }
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    if let Some(p) = config.agents.iter().find(|a| a.role == "proposer") {
        env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Some(env)
}

/// Where commands run here, and whether the approved constitution accepts it.
pub(super) fn sandbox_item(gov: &Governance, items: &mut Vec<Item>) -> Option<SandboxMode> {
    let report = kit::sandbox::probe::probe_sandbox();
    let asked: SandboxMode = gov.constitution.sandbox;
    let d = report.decide(asked, gov.constitution.allows_weak_sandbox());
    match (&d.refused, d.weak) {
        (Some(why), _) => {
            items.push(Item::error(
                "sandbox",
                why.clone(),
                "constitution.md sandbox, weak_sandbox",
                "see `ratchet sandbox`",
            ));
            None
        }
        (None, true) => {
            items.push(Item::warn(
                "sandbox",
                format!("commands run in {}, which does not confine them (weak_sandbox = \"allow\")", d.mode),
                Some("constitution.md".into()),
                Some(
                    "install bubblewrap, or enable unprivileged user namespaces (`ratchet sandbox` says what works)"
                        .into(),
                ),
            ));
            Some(d.mode)
        }
        (None, false) => {
            items.push(Item::ok("sandbox", format!("commands run in {} (sandbox = \"{}\")", d.mode, d.asked)));
            Some(d.mode)
        }
    }
}
