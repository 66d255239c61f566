//! Exports built from the evidence alone: a Chrome/Perfetto trace of a run, and preference pairs
//! (accepted vs rejected candidates for the same goal and baseline) for fine-tuning.

use std::collections::BTreeMap;
use std::path::Path;

use protocol::events::EventKind;
use protocol::work::Verdict;
use serde_json::{Value, json};

use crate::engine::{LoopState, read_state};

fn micros(at: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as i64)
}

/// Chrome trace event format (also read by Perfetto): one track per agent; a span per leased
/// task from claim to accepted result, a span per cycle on the coordinator's track, and instant
/// events for verdicts and promotions.
pub fn chrome_trace(home: &Path) -> anyhow::Result<Value> {
    let events = kit::substrate::all_events(&kit::substrate::Home::open(home)?);
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
            EventKind::ModelCalled { stage, started_at, outcome, .. } => {
                // A span per model call, on the model's own track, from when it was asked.
                let u = e.usage.unwrap_or_default();
                let start = micros(started_at).unwrap_or(ts);
                let model = e.model.clone().unwrap_or_default();
                let track = format!("model {}", model.split(':').next().unwrap_or("?"));
                out.push(json!({"name": format!("{stage} {outcome}"), "cat": "model", "ph": "X", "ts": start,
                    "dur": (u.latency_ms as i64 * 1000).max(1), "pid": 1, "tid": tid(&track),
                    "args": {"model": model, "branch": branch, "prompt_tokens": u.prompt_tokens,
                             "cached_prompt_tokens": u.cached_prompt_tokens, "completion_tokens": u.completion_tokens}}));
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
    Ok(json!({"traceEvents": out, "displayTimeUnit": "ms"}))
}

/// Preference pairs: for the same goal and the same baseline (every cycle measured against the
/// same `main`, not only one cycle: with one candidate per cycle a pair spans cycles), the
/// candidate promoted from that baseline (by the loop or approved by a person) is preferred over
/// each candidate rejected on it (REJECT: worse or refused by the critic; FAILED: failed its
/// gates). One JSON object per pair, with both diffs, the models that produced and reviewed each
/// side, and the governance hashes in force (so a fine-tune can be traced back to the rules and
/// the models that made its data).
pub fn preference_pairs(home: &Path) -> anyhow::Result<Vec<Value>> {
    Ok(pairs_explained(home)?.0)
}

/// [`preference_pairs`], and when there is none, why (for people: an empty export says so).
pub fn pairs_explained(home: &Path) -> anyhow::Result<(Vec<Value>, Option<String>)> {
    let Some(st): Option<LoopState> = read_state(home)? else {
        return Ok((vec![], Some("no loop has run here (no worktrees/.swarm/loop.json): nothing to pair".into())));
    };
    let gov = crate::govern::load(home).ok();
    let goal = gov.as_ref().map(|g| g.ethos.goal.clone()).unwrap_or_default();
    let git = kit::git::Git::new(home);
    let diff = |base: &str, commit: &str| git.run(["diff", base, commit]).unwrap_or_default();
    let promotions = crate::dashboard::all_promotions(home, &st);
    let candidates: Vec<(&crate::engine::CycleState, &crate::engine::Candidate)> =
        st.finished.iter().flat_map(|cy| cy.candidates.iter().map(move |c| (cy, c))).collect();
    let lost_verdict = |c: &crate::engine::Candidate| matches!(c.verdict, Some(Verdict::Reject | Verdict::Failed));
    let mut pairs = vec![];
    for (win, _) in &promotions {
        let Some((wcy, chosen)) = candidates.iter().find(|(_, c)| c.branch == win.branch) else { continue };
        for (cy, lost) in candidates.iter().filter(|(cy, c)| cy.baseline == wcy.baseline && lost_verdict(c)) {
            let Some(lc) = lost.exec.as_ref().map(|e| e.commit.clone()).filter(|c| !c.is_empty()) else { continue };
            pairs.push(json!({
                "goal": goal,
                "baseline": wcy.baseline,
                "cycle": wcy.cycle,
                "rejected_cycle": cy.cycle,
                "run_id": st.run_id,
                "governance": win.governance,
                "chosen": {"branch": chosen.branch, "summary": chosen.proposal.summary, "commit": win.commit,
                           "diff": diff(&wcy.baseline, &win.commit), "effect": chosen.eval.as_ref().and_then(|e| e.effect),
                           "strategy": chosen.proposal.strategy, "models": chosen.models},
                "rejected": {"branch": lost.branch, "summary": lost.proposal.summary, "commit": lc,
                             "diff": diff(&wcy.baseline, &lc), "reasons": lost.reasons, "verdict": lost.verdict,
                             "strategy": lost.proposal.strategy, "models": lost.models},
            }));
        }
    }
    if !pairs.is_empty() {
        return Ok((pairs, None));
    }
    let rejected = candidates
        .iter()
        .filter(|(_, c)| lost_verdict(c) && c.exec.as_ref().is_some_and(|e| !e.commit.is_empty()))
        .count();
    let why = match (promotions.len(), rejected) {
        (0, _) => format!(
            "no preference pairs: a pair needs a promotion, and this run ({} cycle(s)) promoted nothing",
            st.cycles_done
        ),
        (p, 0) => format!(
            "no preference pairs: {p} promotion(s), but no candidate with a commit was rejected or failed on the same baseline (held candidates are not evidence either way)"
        ),
        (p, r) => format!(
            "no preference pairs: {p} promotion(s) and {r} rejected candidate(s), but none of them share a baseline (a pair compares two answers to the same main)"
        ),
    };
    Ok((vec![], Some(why)))
}
