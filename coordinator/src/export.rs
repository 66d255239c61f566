//! Exports built from the evidence alone: a Chrome/Perfetto trace of a run, and preference pairs
//! (accepted vs rejected candidates for the same goal and baseline) for fine-tuning.

use std::collections::BTreeMap;
use std::path::Path;

use protocol::events::{Event, EventKind};
use serde_json::{Value, json};

use crate::engine::{LoopState, read_state};

fn micros(at: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as i64)
}

/// Every event of the swarm and its branches, oldest first, without duplicates.
pub fn all_events(home: &Path) -> Vec<Event> {
    let layout = kit::layout::Layout::new(home);
    let wt = layout.worktrees();
    let mut out = vec![];
    let mut add = |p: &Path| {
        if let Ok(log) = kit::substrate::read_events(p) {
            out.extend(log.events);
        }
    };
    add(&layout.events_file());
    if let Ok(rd) = std::fs::read_dir(&wt) {
        for e in rd.flatten() {
            add(&e.path().join("events").join("events.jsonl"));
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at));
    out.dedup_by(|a, b| a.at == b.at && a.type_name() == b.type_name() && a.task == b.task && a.branch == b.branch);
    out
}

/// Chrome trace event format (also read by Perfetto): one track per agent; a span per leased
/// task from claim to accepted result, a span per cycle on the coordinator's track, and instant
/// events for verdicts and promotions.
pub fn chrome_trace(home: &Path) -> Value {
    let events = all_events(home);
    let mut tids: BTreeMap<String, usize> = BTreeMap::new();
    let mut tid = |name: &str| {
        let n = tids.len() + 1;
        *tids.entry(name.to_string()).or_insert(n)
    };
    let mut out = vec![];
    let mut open: BTreeMap<(String, String), (i64, String)> = BTreeMap::new();
    let mut cycle_start: Option<(i64, u64)> = None;
    for e in &events {
        let Some(ts) = micros(&e.at) else { continue };
        let branch = e.branch.clone().unwrap_or_default();
        let task = e.task.clone().unwrap_or_default();
        match &e.kind {
            EventKind::LeaseClaimed { holder, .. } => {
                open.insert((branch, task), (ts, holder.clone()));
            }
            EventKind::ResultAccepted { outcome, summary, .. } => {
                if let Some((start, holder)) = open.remove(&(branch.clone(), task.clone())) {
                    out.push(json!({"name": format!("{task} {branch}"), "cat": "task", "ph": "X", "ts": start,
                        "dur": (ts - start).max(1), "pid": 1, "tid": tid(&holder),
                        "args": {"outcome": outcome, "summary": summary}}));
                }
            }
            EventKind::CycleStarted { baseline } => {
                cycle_start = Some((ts, e.cycle.unwrap_or(0)));
                let _ = baseline;
            }
            EventKind::CycleEnded { promoted, metric } => {
                if let Some((start, cycle)) = cycle_start.take() {
                    out.push(json!({"name": format!("cycle {cycle}"), "cat": "cycle", "ph": "X", "ts": start,
                        "dur": (ts - start).max(1), "pid": 1, "tid": tid("coordinator"),
                        "args": {"promoted": promoted, "metric": metric}}));
                }
            }
            EventKind::Evaluated { verdict, candidate, .. } => {
                out.push(json!({"name": format!("{verdict} {candidate}"), "cat": "verdict", "ph": "i", "s": "t",
                    "ts": ts, "pid": 1, "tid": tid("coordinator")}));
            }
            EventKind::Promoted { commit, .. } => {
                out.push(json!({"name": format!("promoted {}", &commit[..12.min(commit.len())]), "cat": "promotion",
                    "ph": "i", "s": "g", "ts": ts, "pid": 1, "tid": tid("coordinator")}));
            }
            _ => {}
        }
    }
    for (name, id) in &tids {
        out.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": id, "args": {"name": name}}));
    }
    json!({"traceEvents": out, "displayTimeUnit": "ms"})
}

/// Preference pairs: within each cycle (same goal, same baseline), the promoted candidate is
/// preferred over each rejected one. One JSON object per pair, with both diffs.
pub fn preference_pairs(home: &Path) -> anyhow::Result<Vec<Value>> {
    let Some(st): Option<LoopState> = read_state(home)? else { return Ok(vec![]) };
    let gov = crate::govern::load(home).ok();
    let goal = gov.as_ref().map(|g| g.ethos.goal.clone()).unwrap_or_default();
    let git = kit::git::Git::new(home);
    let diff = |base: &str, commit: &str| git.run(["diff", base, commit]).unwrap_or_default();
    let mut pairs = vec![];
    for cy in &st.finished {
        let Some(win) = st.promotions.iter().find(|p| p.cycle == cy.cycle) else { continue };
        let Some(chosen) = cy.candidates.iter().find(|c| c.branch == win.branch) else { continue };
        for lost in cy.candidates.iter().filter(|c| c.verdict.as_deref() == Some("REJECT")) {
            let Some(lc) = lost.exec.as_ref().map(|e| e.commit.clone()) else { continue };
            pairs.push(json!({
                "goal": goal,
                "baseline": cy.baseline,
                "cycle": cy.cycle,
                "chosen": {"branch": chosen.branch, "summary": chosen.proposal.summary, "commit": win.commit,
                           "diff": diff(&cy.baseline, &win.commit), "effect": chosen.eval.as_ref().and_then(|e| e.effect)},
                "rejected": {"branch": lost.branch, "summary": lost.proposal.summary, "commit": lc,
                             "diff": diff(&cy.baseline, &lc), "reasons": lost.reasons},
            }));
        }
    }
    Ok(pairs)
}
