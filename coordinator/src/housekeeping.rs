//! `ratchet gc`'s side of the agents' own directories: each agent cleans what it owns, so the
//! coordinator knows no agent's private paths. It runs `evaluator --gc` (its baseline and
//! candidate checkouts, when no benchmark runs) and `proposer --gc` (scratch checkouts no task
//! holds), each found beside `ratchet`, and reports what they removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The agents that own directories under `worktrees/.swarm/` and clean them on `--gc`.
const CLEANERS: [&str; 2] = ["evaluator", "proposer"];

/// A Ratchet binary (`evaluator`, `proposer`) beside the running one, else on PATH.
pub(crate) fn agent_program(name: &str) -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(name)));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|c| c.is_file()))
        .with_context(|| {
            format!("the `{name}` binary is neither beside `ratchet` nor on PATH; fix: build it (`cargo build --workspace --bins`)")
        })
}

/// Run `<agent> --gc` on `home`: the paths it removed.
fn agent_gc(agent: &str, home: &Path) -> anyhow::Result<Vec<String>> {
    let program = agent_program(agent)?;
    let out = Command::new(&program)
        .arg("--gc")
        .env("RATCHET_HOME", home)
        .current_dir(home)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --gc", program.display()))?;
    if !out.status.success() {
        bail!("{} --gc failed ({}): {}", program.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!("{} --gc printed no JSON list of paths: {}", program.display(), String::from_utf8_lossy(&out.stdout))
    })
}

/// Have every agent clean its own helper checkouts; returns what was removed and, per agent
/// that could not clean, why.
pub fn gc_helper_checkouts(home: &Path) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut errors) = (vec![], vec![]);
    for agent in CLEANERS {
        match agent_gc(agent, home) {
            Ok(paths) => removed.extend(paths),
            Err(e) => errors.push(format!("{agent}: {e:#}")),
        }
    }
    (removed, errors)
}

/// `ratchet gc` for people: what was removed, archived and kept, in a few lines.
pub fn render_gc(r: &kit::substrate::GcReport, helpers: &[String]) -> String {
    fn names(v: &[String]) -> String {
        const SHOWN: usize = 6;
        let mut s = v.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > SHOWN {
            s.push_str(&format!(" and {} more", v.len() - SHOWN));
        }
        s
    }
    let mut o = String::new();
    if !r.removed_checkouts.is_empty() {
        o.push_str(&format!(
            "removed {} finished checkout(s): {}\n",
            r.removed_checkouts.len(),
            names(&r.removed_checkouts)
        ));
    }
    if !r.deleted_branches.is_empty() {
        o.push_str(&format!(
            "deleted {} branch(es) whose commits are on main or archived: {}\n",
            r.deleted_branches.len(),
            names(&r.deleted_branches)
        ));
    }
    if !r.archived.is_empty() {
        let b: Vec<String> = r.archived.iter().map(|(b, _)| b.clone()).collect();
        o.push_str(&format!(
            "archived {} unpromoted commit(s) under refs/ratchet/archive/ (nothing is lost; `git log refs/ratchet/archive/<branch>`): {}\n",
            b.len(),
            names(&b)
        ));
    }
    for (b, why) in &r.kept_branches {
        o.push_str(&format!("kept {b}: {why}\n"));
    }
    for p in &r.orphans_removed {
        o.push_str(&format!("removed {} (a checkout git did not know: left by a crash)\n", p.display()));
    }
    for (p, why) in &r.orphans_reported {
        o.push_str(&format!("left alone {}: {why}\n", p.display()));
    }
    for h in helpers {
        o.push_str(&format!("removed helper checkout {h}\n"));
    }
    if o.is_empty() {
        o.push_str("nothing to clean: no finished worktree, no orphan\n");
    }
    o.push_str("artefacts and events stay under worktrees/<branch>/ (`ratchet inspect <branch>`); --json for the full report\n");
    o
}
