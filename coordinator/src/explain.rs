//! `ratchet explain <commit>`: why is this commit on main? Answered from the events alone.

use std::path::Path;

use anyhow::{Context, bail};
use kit::git::Git;
use protocol::evaluation::{Sampling, Side};
use protocol::events::{Event, EventKind};
use serde::Serialize;

use crate::record::{j, kind};

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub commit: String,
    pub on_main: bool,
    pub branch: String,
    pub run_id: String,
    pub cycle: Option<u64>,
    pub promoted_at: String,
    pub from: String,
    pub governance: std::collections::BTreeMap<String, String>,
    /// The branch's last `proposed`, `executed`, `critiqued` and `evaluated` events.
    pub proposal: Option<Event>,
    pub execution: Option<Event>,
    pub critique: Option<Event>,
    pub evaluation: Option<Event>,
    pub promotion: PromotionBrief,
    /// The models behind it: `producer`, `reviewer` (`name: model @ url`).
    pub models: std::collections::BTreeMap<String, String>,
    /// Model tokens and time per loop stage behind it: `propose` (its cycle's proposer calls)
    /// and `critique` (its review).
    pub tokens: std::collections::BTreeMap<String, protocol::models::Usage>,
    /// The `ratchet models compare` that chose the producing model (decision PROMOTE), if any:
    /// the evidence behind the governance edit that switched the proposer to it.
    pub model_choice: Option<Event>,
    /// Every event of the branch, in order.
    pub events: Vec<Event>,
}

/// What the `promoted` event says of the metric.
#[derive(Debug, Serialize)]
pub struct PromotionBrief {
    pub after: Option<f64>,
    pub before: Option<f64>,
    pub candidate: String,
}

pub fn explain(home: &Path, rev: &str) -> anyhow::Result<Explanation> {
    let git = Git::new(home);
    let commit = git.resolve_commit(rev)?.with_context(|| {
        format!("{rev:?} is not a commit in {}; fix: pass a commit id from `git log main`", home.display())
    })?;
    let on_main = git.is_ancestor(&commit, "refs/heads/main").unwrap_or(false);
    let events = kit::substrate::all_events(&kit::substrate::Home::open(home)?);
    let promoted = events.iter().find(|e| matches!(&e.kind, EventKind::Promoted { commit: c, .. } if *c == commit));
    let Some(p) = promoted else {
        if on_main {
            bail!(
                "{} is on main but no Ratchet promotion event names it: it was committed by a person or a tool outside the loop (see `git log -1 {}`)",
                &commit[..12],
                &commit[..12]
            );
        }
        bail!("{} is not on main and was never promoted by Ratchet", &commit[..12]);
    };
    let branch = p.branch.clone().unwrap_or_default();
    let mine: Vec<Event> = events.iter().filter(|e| e.branch.as_deref() == Some(branch.as_str())).cloned().collect();
    let find = |name: &str| -> Option<Event> { mine.iter().rev().find(|e| e.type_name() == name).cloned() };
    let (from, promotion) = match &p.kind {
        EventKind::Promoted { from, before, after, candidate, .. } => {
            (from.clone(), PromotionBrief { after: *after, before: *before, candidate: candidate.clone() })
        }
        _ => unreachable!("matched above"),
    };
    let mut models = p.models.clone();
    if models.is_empty()
        && let Some(e) = mine.iter().rev().find(|e| !e.models.is_empty())
    {
        models = e.models.clone();
    }
    let mut tokens: std::collections::BTreeMap<String, protocol::models::Usage> = Default::default();
    for e in &events {
        let EventKind::ModelCalled { stage, .. } = &e.kind else { continue };
        let (Some(u), true) = (&e.usage, e.run_id == p.run_id) else { continue };
        let mine_call = match stage.as_str() {
            // The proposer's calls of the cycle that proposed it (no branch existed yet).
            "propose" => e.branch.is_none() && e.cycle.is_some() && e.cycle == mine.first().and_then(|f| f.cycle),
            _ => e.branch.as_deref() == Some(branch.as_str()),
        };
        if mine_call {
            let loop_stage = if stage == "review" { "critique" } else { stage.as_str() };
            tokens.entry(loop_stage.to_string()).or_default().add(u);
        }
    }
    let model_choice = models
        .get("producer")
        .and_then(|producer| {
            events.iter().rev().find(|e| {
                matches!(&e.kind, EventKind::ModelCompared { candidate, decision, .. }
                    if candidate == producer && *decision == protocol::work::Verdict::Promote)
            })
        })
        .cloned();
    Ok(Explanation {
        commit: commit.clone(),
        on_main,
        branch,
        run_id: p.run_id.clone(),
        cycle: p.cycle,
        promoted_at: p.at.clone(),
        from,
        governance: p.governance.clone(),
        proposal: find("proposed"),
        execution: find("executed"),
        critique: find("critiqued"),
        evaluation: find("evaluated"),
        promotion,
        models,
        tokens,
        model_choice,
        events: mine,
    })
}

pub fn render(x: &Explanation) -> String {
    let dash = || "-".to_string();
    let mut o = String::new();
    o.push_str(&format!(
        "{} is on main{} because Ratchet promoted branch {} (run {}, cycle {}) at {}\n",
        &x.commit[..12],
        if x.on_main { "" } else { " [no longer: main was rewritten]" },
        x.branch,
        x.run_id,
        x.cycle.map(|c| c.to_string()).unwrap_or("-".into()),
        x.promoted_at
    ));
    o.push_str(&format!("  fast-forward from {}\n", &x.from[..12.min(x.from.len())]));
    o.push_str("\nproposal\n");
    let (summary, strategy, files, params) = match kind(&x.proposal) {
        Some(EventKind::Proposed { summary, strategy, files, params, .. }) => {
            (summary.clone(), strategy.clone(), j(files), j(params))
        }
        _ => (dash(), dash(), dash(), dash()),
    };
    o.push_str(&format!("  {summary} ({strategy} strategy), files {files}, params {params}\n"));
    o.push_str(&crate::record::render_declaration(crate::record::declaration_of(&x.proposal)));
    o.push_str(&format!("  by agent {}\n", x.proposal.as_ref().and_then(|e| e.agent.clone()).unwrap_or_else(dash)));
    o.push_str("\nmodels\n");
    match x.models.get("producer") {
        Some(m) => o.push_str(&format!("  produced by {m}\n")),
        None => o.push_str("  produced by no model\n"),
    }
    match x.models.get("reviewer") {
        Some(m) => o.push_str(&format!("  reviewed by {m}\n")),
        None => o.push_str("  no model review\n"),
    }
    if let Some(e) = &x.model_choice
        && let EventKind::ModelCompared { current, reasons, .. } = &e.kind
    {
        o.push_str(&format!(
            "  chosen by `ratchet models compare` (run {}) over {current}: {}\n",
            e.run_id,
            j(reasons)
        ));
    }
    for (stage, u) in &x.tokens {
        o.push_str(&format!(
            "  {stage}: {} call(s), {} prompt tokens ({} from the prefix cache), {} completion tokens, {} ms\n",
            u.calls, u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.latency_ms
        ));
    }
    o.push_str("\ngates (executor)\n");
    if let Some(EventKind::Executed { gates, .. }) = kind(&x.execution) {
        for g in gates {
            o.push_str(&format!("  {:<6} {} ({} ms) {}\n", g.result.as_str(), g.command, g.duration_ms, g.detail));
        }
    }
    o.push_str(&crate::record::render_trusted(crate::record::trusted_of(&x.execution)));
    o.push_str("\ncritic\n");
    match kind(&x.critique) {
        Some(EventKind::Critiqued { pass, findings, .. }) => {
            o.push_str(&format!("  pass: {pass}\n"));
            for f in findings {
                o.push_str(&crate::record::render_finding(f));
            }
        }
        _ => o.push_str("  pass: -\n"),
    }
    o.push_str("\nevaluation\n");
    match kind(&x.evaluation) {
        Some(EventKind::Evaluated { verdict, reasons, stats, outcome, sampling, .. }) => {
            o.push_str(&format!("  verdict: {verdict} ({})\n", outcome.map_or("-", |o| o.as_str())));
            for r in reasons {
                o.push_str(&format!("  - {r}\n"));
            }
            // The statistics the coordinator recorded with the verdict (`stages::evaluate`).
            o.push_str(&format!(
                "  baseline median {}, candidate median {}, effect {}\n",
                j(&stats.baseline_median),
                j(&stats.candidate_median),
                j(&stats.effect)
            ));
            if let Some(sampling) = sampling {
                o.push_str(&render_sampling(sampling));
            }
            let diagnosis = stats.diagnosis.as_ref().map(|d| d.summary.as_str()).unwrap_or("-");
            o.push_str(&format!("  diagnosis: {diagnosis}\n"));
        }
        _ => o.push_str("  verdict: - (-)\n  baseline median -, candidate median -, effect -\n  diagnosis: -\n"),
    }
    o.push_str("\ngovernance in force\n");
    for (doc, h) in &x.governance {
        o.push_str(&format!("  {doc} sha256 {h}\n"));
    }
    o.push_str(&format!("\npromotion: {} -> {}\n", j(&x.promotion.before), j(&x.promotion.after)));
    o
}

/// The evidence of a sequential evaluation: pairing, rounds, the stopping rule, the effect with
/// its interval, the calibrated noise, and every pair.
pub fn render_sampling(x: &Sampling) -> String {
    let pct = |v: Option<f64>| v.map(|v| format!("{:+.1}%", v * 100.0)).unwrap_or_else(|| "unbounded".into());
    let mut o = String::new();
    o.push_str(&format!(
        "  pairing: {}, {} rounds{} (first look {}, cap {}, design horizon {}), stopped: {:?}\n",
        x.pairing.as_str(),
        x.rounds,
        if x.resumed > 0 { format!(", {} of them from the first measurement", x.resumed) } else { String::new() },
        x.first_look,
        x.cap,
        x.horizon,
        x.stopping
    ));
    o.push_str(&format!("  rule: {}\n", x.rule));
    if x.measure == protocol::governance::Measure::Instructions {
        o.push_str(&format!(
            "  measure: instructions, counted by {}; two runs of a side agree within {}\n",
            x.counter.map(|c| c.as_str()).unwrap_or("an unknown counter"),
            x.tolerance.map(protocol::evaluation::fine_pct).unwrap_or_else(|| "?".into())
        ));
    }
    if let Some(e) = &x.effect
        && x.measure == protocol::governance::Measure::Instructions
    {
        o.push_str(&format!(
            "  effect: {} fewer instructions, interval [{}, {}] over the agreeing runs\n",
            pct(Some(e.estimate)),
            pct(e.lo),
            pct(e.hi)
        ));
    } else if let Some(e) = &x.effect {
        o.push_str(&format!(
            "  effect: {} with {:.0}% repeated interval [{}, {}] ({} scale)\n",
            pct(Some(e.estimate)),
            e.coverage * 100.0,
            pct(e.lo),
            pct(e.hi),
            e.scale
        ));
    }
    match &x.calibration {
        Some(c) if c.counter.is_some() => o.push_str(&format!("  calibrated noise: {}\n", c.describe())),
        Some(c) => o.push_str(&format!("  calibrated noise: {}; first look at round {}\n", c.describe(), c.first_look)),
        None => o.push_str("  calibrated noise: none (no calibration in force)\n"),
    }
    o.push_str("  pairs (round, first or CPUs, baseline, candidate, score; * outlier):\n");
    if x.pairs.iter().any(|p| p.slots.iter().any(|s| s.started_first.is_some())) {
        o.push_str("    (duet: slot 1's CPUs, then the side started first in slot 1 and in slot 2)\n");
    }
    let num = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "failed".into());
    for p in &x.pairs {
        let how = match p.cpus {
            Some(c) => {
                let letter = |s: &protocol::evaluation::Slot| match s.started_first {
                    Some(Side::Baseline) => "b",
                    Some(Side::Candidate) => "c",
                    None => "?",
                };
                match &p.slots[..] {
                    [one, two] if one.started_first.is_some() || two.started_first.is_some() => {
                        format!("cpu b{} c{} {}{}", c.baseline, c.candidate, letter(one), letter(two))
                    }
                    _ => format!("cpu b{} c{}", c.baseline, c.candidate),
                }
            }
            None => format!("{} first", if p.first == Side::Baseline { "baseline" } else { "candidate" }),
        };
        o.push_str(&format!(
            "    {:>3} {:<18} {:>14} {:>14} {:>9}{}\n",
            p.round,
            how,
            num(p.baseline),
            num(p.candidate),
            p.score.map(|s| format!("{s:+.4}")).unwrap_or_else(|| "-".into()),
            if p.outlier { " *" } else { "" }
        ));
    }
    if let Some(w) = &x.wall_time {
        o.push_str("  wall-time guard (native runs, wall_time_ms, lower is better):\n");
        for line in render_sampling(w).lines() {
            o.push_str(&format!("  {line}\n"));
        }
    }
    o
}
