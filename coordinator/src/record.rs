//! A candidate's record, from the events alone: what it declared, what its gates, the baseline's
//! tests and every rail said (each finding with its file:line evidence, tampering named with its
//! class), how it was measured, and the loop's decision with its reasons. `ratchet explain` shows
//! it for a candidate that was not promoted (by branch name or commit), and the web page for any
//! candidate.

use std::path::Path;

use anyhow::Context;
use protocol::events::{Event, EventKind};
use protocol::format::as_json_value;
use protocol::rails::Declaration;
use protocol::work::{Finding, TrustedTestsRun};
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
    /// The `proposed` event: summary, strategy, files, declaration. (The events here are written
    /// with their keys in alphabetical order, as when they were JSON values.)
    #[serde(serialize_with = "as_json_value")]
    pub proposal: Option<Event>,
    /// The `executed` event: outcome, every gate, the baseline's tests.
    #[serde(serialize_with = "as_json_value")]
    pub execution: Option<Event>,
    /// What the executor said when it finished (its accepted result's summary).
    pub execution_summary: Option<String>,
    /// The last `critiqued` event: pass and every finding.
    #[serde(serialize_with = "as_json_value")]
    pub critique: Option<Event>,
    /// `tampering_detected` events: protected (or append-only) paths the candidate changed.
    #[serde(serialize_with = "as_json_value")]
    pub tampering: Vec<Event>,
    /// The `evaluated` event, when it was measured.
    #[serde(serialize_with = "as_json_value")]
    pub evaluation: Option<Event>,
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
    let last = |name: &str| -> Option<Event> { mine.iter().rev().find(|e| e.type_name() == name).cloned() };
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
    let candidate = match kind(&proposal) {
        Some(EventKind::Proposed { candidate, .. }) => candidate.clone(),
        _ => String::new(),
    };
    let commit = match kind(&execution) {
        Some(EventKind::Executed { commit, .. }) => Some(commit.clone()).filter(|c| !c.is_empty()),
        _ => None,
    };
    Ok(Some(CandidateRecord {
        candidate,
        run_id: first.run_id.clone(),
        cycle: mine.iter().find_map(|e| e.cycle),
        commit,
        promoted: mine.iter().any(|e| e.type_name() == "promoted"),
        verdict,
        reasons,
        proposal,
        execution,
        execution_summary,
        critique: last("critiqued"),
        tampering: mine.iter().filter(|e| matches!(e.kind, EventKind::TamperingDetected { .. })).cloned().collect(),
        evaluation: last("evaluated"),
        branch,
        events: mine,
    }))
}

/// A value as the record and `ratchet explain` print it: a string as is, nothing as `-`,
/// anything else as JSON.
pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// [`s`] of a typed value.
pub(crate) fn j<T: Serialize>(v: &T) -> String {
    s(&serde_json::to_value(v).unwrap_or(Value::Null))
}

pub(crate) fn kind(e: &Option<Event>) -> Option<&EventKind> {
    e.as_ref().map(|e| &e.kind)
}

/// One finding as the record shows it: `[rail] severity file:line message`, then its evidence,
/// indented.
pub fn render_finding(f: &Finding) -> String {
    let at = match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{file}:{line}"),
        (Some(file), None) => file.clone(),
        _ => "-".into(),
    };
    let class = f.class.map(|c| format!(" ({})", j(&c))).unwrap_or_default();
    let mut o = format!("  [{}] {} {at}{class} {}\n", f.rail, j(&f.severity), f.message);
    for line in f.evidence.lines() {
        o.push_str(&format!("      {line}\n"));
    }
    o
}

/// What a `proposed` event says the proposal declared.
pub fn render_declaration(declaration: Option<&Declaration>) -> String {
    let Some(d) = declaration else {
        return "  declared nothing: its scope is unverified\n".into();
    };
    let mut o = format!("  declared files {}: {}\n", j(&d.files), d.rationale);
    if !d.tests.is_empty() {
        o.push_str(&format!("  declared tests {}\n", j(&d.tests)));
    }
    if let Some(e) = d.effect {
        o.push_str(&format!("  expected effect: {}\n", j(&e)));
    }
    o
}

/// The declaration of a `proposed` event, if it has one.
pub fn declaration_of(proposal: &Option<Event>) -> Option<&Declaration> {
    match kind(proposal) {
        Some(EventKind::Proposed { declaration, .. }) => declaration.as_ref(),
        _ => None,
    }
}

/// The baseline's tests' run of an `executed` event, if it had one.
pub fn trusted_of(execution: &Option<Event>) -> Option<&TrustedTestsRun> {
    match kind(execution) {
        Some(EventKind::Executed { trusted, .. }) => trusted.as_ref(),
        _ => None,
    }
}

/// The baseline's tests' run, from an `executed` event (nothing when there was none).
pub fn render_trusted(trusted: Option<&TrustedTestsRun>) -> String {
    let Some(trusted) = trusted else {
        return String::new();
    };
    // Where it ran: a fresh checkout says how long making and building it took, each build command.
    let mut o = String::new();
    if let Some(f) = &trusted.fresh {
        o.push_str(&format!(
            "  the baseline's tests ran in a fresh checkout of the commit (ethos.md trusted_checkout = \"fresh\"): made in {} ms, built in {} ms ({} ms before test_command)\n",
            f.checkout_ms,
            f.build_ms() - f.checkout_ms,
            f.build_ms()
        ));
        for b in &f.build {
            o.push_str(&format!(
                "  {:<6} fresh build: {} ({} ms) {}\n",
                b.result.as_str(),
                b.command,
                b.duration_ms,
                b.detail
            ));
        }
    }
    let Some(run) = &trusted.run else {
        if trusted.fresh.is_some() {
            return o;
        }
        return format!("  the baseline's tests: skipped: {}\n", trusted.skipped.as_deref().unwrap_or("-"));
    };
    let untracked = if trusted.untracked.is_empty() {
        String::new()
    } else {
        format!(", out of the run (in no commit) {}", j(&trusted.untracked))
    };
    o.push_str(&format!(
        "  {:<6} the baseline's tests: {} ({} ms) {}; restored from the base {}, set aside {}{untracked}; checkout {}\n",
        run.result.as_str(),
        run.command,
        run.duration_ms,
        run.detail,
        j(&trusted.restored),
        j(&trusted.set_aside),
        trusted.checkout.as_str()
    ));
    o
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
    let dash = || "-".to_string();
    let (summary, strategy, files) = match kind(&r.proposal) {
        Some(EventKind::Proposed { summary, strategy, files, .. }) => (summary.clone(), strategy.clone(), j(files)),
        _ => (dash(), dash(), dash()),
    };
    o.push_str(&format!("  {summary} ({strategy} strategy), files {files}\n"));
    o.push_str(&render_declaration(declaration_of(&r.proposal)));
    let (outcome, gates) = match kind(&r.execution) {
        Some(EventKind::Executed { outcome, gates, .. }) => (outcome.to_string(), gates.as_slice()),
        _ => (dash(), &[][..]),
    };
    o.push_str(&format!("\ngates (executor): {outcome}\n"));
    for g in gates {
        o.push_str(&format!("  {:<6} {} ({} ms) {}\n", g.result.as_str(), g.command, g.duration_ms, g.detail));
    }
    o.push_str(&render_trusted(trusted_of(&r.execution)));
    if let Some(summary) = &r.execution_summary {
        o.push_str(&format!("  {summary}\n"));
    }
    let (pass, findings) = match kind(&r.critique) {
        Some(EventKind::Critiqued { pass, findings, .. }) => (pass.to_string(), findings.as_slice()),
        _ => (dash(), &[][..]),
    };
    o.push_str(&format!("\ncritic: pass {pass}\n"));
    for f in findings {
        o.push_str(&render_finding(f));
    }
    if !r.tampering.is_empty() {
        o.push_str("\ntampering\n");
        for t in &r.tampering {
            let EventKind::TamperingDetected { rail, path, line, class, message, .. } = &t.kind else { continue };
            let at = match line {
                Some(l) => format!("{path}:{l}"),
                None => path.clone(),
            };
            o.push_str(&format!("  {} {at} ({rail} rail): {message}\n", j(class)));
        }
    }
    o.push_str("\nevaluation\n");
    match kind(&r.evaluation) {
        Some(EventKind::Evaluated { verdict, reasons, .. }) => {
            o.push_str(&format!("  verdict: {verdict}\n"));
            for reason in reasons {
                o.push_str(&format!("  - {reason}\n"));
            }
        }
        _ => o.push_str("  not measured\n"),
    }
    o.push_str(&format!("\ndecision: {}\n", r.verdict));
    for reason in &r.reasons {
        o.push_str(&format!("  - {reason}\n"));
    }
    o
}
