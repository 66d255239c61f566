//! A candidate's record, from the events alone: what it declared, what its gates, the baseline's
//! tests and every rail said (each finding with its file:line evidence, tampering named with its
//! class), how it was measured, and the loop's decision with its reasons. `ratchet explain` shows
//! it for a candidate that was not promoted (by branch name or commit), and the web page for any
//! candidate.

use std::path::Path;

use anyhow::Context;
use protocol::events::{Event, EventKind};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize)]
pub struct CandidateRecord {
    pub branch: String,
    pub candidate: String,
    pub run_id: String,
    pub cycle: Option<u64>,
    /// The candidate's commit, once the executor made it.
    pub commit: Option<String>,
    /// Whether a `promoted` event names it.
    pub promoted: bool,
    /// The loop's decision (`candidate_decided`), or `undecided` while it runs.
    pub verdict: String,
    pub reasons: Vec<String>,
    /// The `proposed` event: summary, strategy, files, declaration.
    pub proposal: Value,
    /// The `executed` event: outcome, every gate, the baseline's tests.
    pub execution: Value,
    /// What the executor said when it finished (its accepted result's summary).
    pub execution_summary: Option<String>,
    /// The last `critiqued` event: pass and every finding.
    pub critique: Value,
    /// `tampering_detected` events: protected (or append-only) paths the candidate changed.
    pub tampering: Vec<Value>,
    /// The `evaluated` event, when it was measured.
    pub evaluation: Value,
    /// Every event of the branch, in order.
    pub events: Vec<Event>,
}

/// The record of the candidate `rev` names: a candidate branch (even after gc removed it) or a
/// candidate's commit. `Ok(None)`: `rev` names no candidate.
pub fn find(home: &Path, rev: &str) -> anyhow::Result<Option<CandidateRecord>> {
    let events = kit::substrate::all_events(&kit::substrate::Home::open(home)?);
    let by_branch = events.iter().any(|e| e.branch.as_deref() == Some(rev) && e.type_name() == "proposed");
    let branch = if by_branch {
        Some(rev.to_string())
    } else {
        let commit = kit::git::Git::new(home).resolve_commit(rev).ok().flatten();
        commit.and_then(|commit| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::Executed { commit: c, .. } if *c == commit => e.branch.clone(),
                _ => None,
            })
        })
    };
    let Some(branch) = branch else { return Ok(None) };
    let mine: Vec<Event> = events.into_iter().filter(|e| e.branch.as_deref() == Some(branch.as_str())).collect();
    let last = |name: &str| -> Value {
        mine.iter()
            .rev()
            .find(|e| e.type_name() == name)
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .unwrap_or(Value::Null)
    };
    let proposal = last("proposed");
    let execution = last("executed");
    let decided = mine.iter().rev().find_map(|e| match &e.kind {
        EventKind::CandidateDecided { verdict, reasons, .. } => Some((verdict.to_string(), reasons.clone())),
        _ => None,
    });
    let (verdict, reasons) = decided.unwrap_or_else(|| ("undecided".into(), vec![]));
    let execution_summary = mine.iter().rev().find_map(|e| match &e.kind {
        EventKind::ResultAccepted { summary, .. } if e.task.as_deref() == Some("execute") => Some(summary.clone()),
        _ => None,
    });
    let first = mine.first().context("a candidate branch without events")?;
    Ok(Some(CandidateRecord {
        candidate: proposal.get("candidate").and_then(Value::as_str).unwrap_or_default().to_string(),
        run_id: first.run_id.clone(),
        cycle: mine.iter().find_map(|e| e.cycle),
        commit: execution.get("commit").and_then(Value::as_str).filter(|c| !c.is_empty()).map(String::from),
        promoted: mine.iter().any(|e| e.type_name() == "promoted"),
        verdict,
        reasons,
        proposal,
        execution,
        execution_summary,
        critique: last("critiqued"),
        tampering: mine
            .iter()
            .filter(|e| e.type_name() == "tampering_detected")
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect(),
        evaluation: last("evaluated"),
        branch,
        events: mine,
    }))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// One finding as the record shows it: `[rail] severity file:line message`, then its evidence,
/// indented.
pub fn render_finding(f: &Value) -> String {
    let at = match (f.get("file").and_then(Value::as_str), f.get("line").and_then(Value::as_u64)) {
        (Some(file), Some(line)) => format!("{file}:{line}"),
        (Some(file), None) => file.to_string(),
        _ => "-".into(),
    };
    let class = f.get("class").and_then(Value::as_str).map(|c| format!(" ({c})")).unwrap_or_default();
    let mut o = format!(
        "  [{}] {} {at}{class} {}\n",
        s(&f["rail"]),
        s(&f["severity"]),
        f.get("message").and_then(Value::as_str).unwrap_or("")
    );
    for line in f.get("evidence").and_then(Value::as_str).unwrap_or("").lines() {
        o.push_str(&format!("      {line}\n"));
    }
    o
}

/// What a `proposed` event says the proposal declared.
pub fn render_declaration(proposal: &Value) -> String {
    let Some(d) = proposal.get("declaration").filter(|d| !d.is_null()) else {
        return "  declared nothing: its scope is unverified\n".into();
    };
    let mut o = format!("  declared files {}: {}\n", s(&d["files"]), s(&d["rationale"]));
    if let Some(t) = d.get("tests").filter(|t| !t.is_null()) {
        o.push_str(&format!("  declared tests {}\n", s(t)));
    }
    if let Some(e) = d.get("effect").filter(|e| !e.is_null()) {
        o.push_str(&format!("  expected effect: {}\n", s(e)));
    }
    o
}

/// The baseline's tests' run, from an `executed` event (nothing when there was none).
pub fn render_trusted(execution: &Value) -> String {
    let trusted = &execution["trusted"];
    if trusted.is_null() {
        return String::new();
    }
    let run = &trusted["run"];
    if run.is_null() {
        return format!("  the baseline's tests: skipped: {}\n", s(&trusted["skipped"]));
    }
    let untracked = match trusted["untracked"].as_array() {
        Some(u) if !u.is_empty() => format!(", out of the run (in no commit) {}", s(&trusted["untracked"])),
        _ => String::new(),
    };
    format!(
        "  {:<6} the baseline's tests: {} ({} ms) {}; restored from the base {}, set aside {}{untracked}\n",
        s(&run["result"]),
        s(&run["command"]),
        s(&run["duration_ms"]),
        s(&run["detail"]),
        s(&trusted["restored"]),
        s(&trusted["set_aside"])
    )
}

/// The record for people.
pub fn render(r: &CandidateRecord) -> String {
    let mut o = String::new();
    let commit = r.commit.as_deref().map(|c| &c[..12.min(c.len())]).unwrap_or("(never committed)");
    if r.promoted {
        o.push_str(&format!("candidate {} ({commit}) was promoted: see `ratchet explain {commit}`\n", r.branch));
    } else {
        o.push_str(&format!(
            "{commit} is not on main and was never promoted by Ratchet: candidate {} (run {}, cycle {}) was judged {}\n",
            r.branch,
            r.run_id,
            r.cycle.map(|c| c.to_string()).unwrap_or("-".into()),
            r.verdict
        ));
    }
    o.push_str("\nproposal\n");
    o.push_str(&format!(
        "  {} ({} strategy), files {}\n",
        s(&r.proposal["summary"]),
        s(&r.proposal["strategy"]),
        s(&r.proposal["files"])
    ));
    o.push_str(&render_declaration(&r.proposal));
    o.push_str(&format!("\ngates (executor): {}\n", s(&r.execution["outcome"])));
    if let Some(gates) = r.execution["gates"].as_array() {
        for g in gates {
            o.push_str(&format!(
                "  {:<6} {} ({} ms) {}\n",
                s(&g["result"]),
                s(&g["command"]),
                s(&g["duration_ms"]),
                s(&g["detail"])
            ));
        }
    }
    o.push_str(&render_trusted(&r.execution));
    if let Some(summary) = &r.execution_summary {
        o.push_str(&format!("  {summary}\n"));
    }
    o.push_str(&format!("\ncritic: pass {}\n", s(&r.critique["pass"])));
    for f in r.critique["findings"].as_array().into_iter().flatten() {
        o.push_str(&render_finding(f));
    }
    if !r.tampering.is_empty() {
        o.push_str("\ntampering\n");
        for t in &r.tampering {
            let at = match t["line"].as_u64() {
                Some(l) => format!("{}:{l}", s(&t["path"])),
                None => s(&t["path"]),
            };
            o.push_str(&format!("  {} {at} ({} rail): {}\n", s(&t["class"]), s(&t["rail"]), s(&t["message"])));
        }
    }
    o.push_str("\nevaluation\n");
    if r.evaluation.is_null() {
        o.push_str("  not measured\n");
    } else {
        o.push_str(&format!("  verdict: {}\n", s(&r.evaluation["verdict"])));
        for reason in r.evaluation["reasons"].as_array().into_iter().flatten() {
            o.push_str(&format!("  - {}\n", s(reason)));
        }
    }
    o.push_str(&format!("\ndecision: {}\n", r.verdict));
    for reason in &r.reasons {
        o.push_str(&format!("  - {reason}\n"));
    }
    o
}
