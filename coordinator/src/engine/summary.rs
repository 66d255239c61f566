//! The summary of a run (`ratchet up --once --json`, `ratchet demo --json`, the `loop` skill's
//! last message): typed, and read back as the same type by whoever renders it.

use std::collections::BTreeMap;
use std::path::Path;

use protocol::evaluation::{Calibration, Outcome};
use protocol::governance::{Direction, Governance, Pairing};
use protocol::work::Verdict;
use serde::{Deserialize, Serialize};

use super::decide::approved_promotions;
use super::{Candidate, LoopState, ModelSummary, Overrides, model_summary};

/// Summary of a finished (or stopped) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub repo: String,
    pub run_id: String,
    pub cycles: u64,
    pub promoted: Vec<PromotedItem>,
    /// REJECT and FAILED candidates.
    pub rejected: Vec<CandidateItem>,
    /// HOLD and INFRA candidates.
    pub held: Vec<CandidateItem>,
    pub metric: MetricSummary,
    pub stop_reason: Option<String>,
    pub stop_detail: Option<String>,
    /// The share of the loop's wall time that was the harness's: everything but the target's own
    /// commands (gates, benchmarks, the proposer's program) and the models' answers.
    pub harness_share: f64,
    pub wall_ms: u64,
    pub command_ms: u64,
    pub overrides: Overrides,
    /// The models in force, tokens and time per stage, the prefix-cache share.
    #[serde(flatten)]
    pub model: ModelSummary,
    /// How baseline and candidate runs were paired (ethos.md), and the calibrated noise.
    #[serde(default)]
    pub pairing: String,
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

/// A promotion of the run (the loop's own, or one a person approved), with the evaluation
/// behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotedItem {
    pub after: Option<f64>,
    pub approach: Option<String>,
    pub before: Option<f64>,
    pub branch: String,
    pub commit: String,
    pub cycle: u64,
    pub models: BTreeMap<String, String>,
    pub outcome: Option<Outcome>,
    pub pairing: Option<Pairing>,
    pub remeasured: bool,
    pub rounds: Option<u32>,
    pub verdict: Option<Verdict>,
}

/// A candidate that did not go onto main, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateItem {
    pub approach: String,
    pub branch: String,
    pub cycle: u64,
    /// Relative improvement of the metric (positive = better), when it was measured.
    pub effect: Option<f64>,
    pub models: BTreeMap<String, String>,
    pub outcome: Option<Outcome>,
    pub pairing: Option<Pairing>,
    pub reasons: Vec<String>,
    pub remeasured: bool,
    pub rounds: Option<u32>,
    pub verdict: Verdict,
}

/// The metric the run moved: its name and direction, the baseline and where it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub baseline: Option<f64>,
    pub direction: Direction,
    #[serde(rename = "final")]
    pub final_value: Option<f64>,
    pub name: String,
}

/// The rounds an evaluation used and what it concluded, for the summary's items.
struct Brief {
    rounds: Option<u32>,
    pairing: Option<Pairing>,
    outcome: Option<Outcome>,
    remeasured: bool,
}

fn evaluation_brief(c: &Candidate) -> Brief {
    let sampling = c.eval.as_ref().and_then(|e| e.sampling.as_ref());
    Brief {
        rounds: sampling.map(|s| s.rounds),
        pairing: sampling.map(|s| s.pairing),
        outcome: c.eval.as_ref().and_then(|e| e.outcome),
        remeasured: c.remeasured,
    }
}

pub fn summarize(home: &Path, st: &LoopState, gov: &Governance) -> Summary {
    let mut rejected = vec![];
    let mut held = vec![];
    for cy in &st.finished {
        for c in &cy.candidates {
            let Some(v) = c.verdict else { continue };
            let b = evaluation_brief(c);
            let item = CandidateItem {
                approach: c.proposal.approach_key(),
                branch: c.branch.clone(),
                cycle: cy.cycle,
                effect: c.eval.as_ref().and_then(|e| e.effect),
                models: c.models.clone(),
                outcome: b.outcome,
                pairing: b.pairing,
                reasons: c.reasons.clone(),
                remeasured: b.remeasured,
                rounds: b.rounds,
                verdict: v,
            };
            match v {
                Verdict::Reject | Verdict::Failed => rejected.push(item),
                Verdict::Hold | Verdict::Infra => held.push(item),
                Verdict::Promote | Verdict::Promoted | Verdict::Dropped => {}
            }
        }
    }
    let mut promotions = st.promotions.clone();
    for a in approved_promotions(home) {
        if !promotions.iter().any(|p| p.commit == a.commit) {
            promotions.push(a);
        }
    }
    let candidate = |branch: &str| st.finished.iter().flat_map(|cy| cy.candidates.iter()).find(|c| c.branch == branch);
    let promoted = promotions
        .iter()
        .map(|p| {
            let c = candidate(&p.branch);
            let b = c.map(evaluation_brief);
            PromotedItem {
                after: p.after,
                approach: c.map(|c| c.proposal.approach_key()),
                before: p.before,
                branch: p.branch.clone(),
                commit: p.commit.clone(),
                cycle: p.cycle,
                models: p.models.clone(),
                outcome: b.as_ref().and_then(|b| b.outcome),
                pairing: b.as_ref().and_then(|b| b.pairing),
                remeasured: b.as_ref().is_some_and(|b| b.remeasured),
                rounds: b.as_ref().and_then(|b| b.rounds),
                verdict: c.and_then(|c| c.verdict),
            }
        })
        .collect();
    let final_value = promotions.last().and_then(|p| p.after).or(st.baseline_metric);
    // The harness is everything but the target's own commands and the models' answers.
    let command_ms = st.command_ms();
    let model_ms: u64 = st.usage.values().map(|u| u.latency_ms).sum();
    let harness_share =
        if st.wall_ms > 0 { (1.0 - (command_ms + model_ms) as f64 / st.wall_ms as f64).clamp(0.0, 1.0) } else { 0.0 };
    Summary {
        repo: home.display().to_string(),
        run_id: st.run_id.clone(),
        cycles: st.cycles_done,
        promoted,
        rejected,
        held,
        metric: MetricSummary {
            baseline: st.baseline_metric,
            direction: gov.ethos.direction,
            final_value,
            name: gov.ethos.metric.clone(),
        },
        stop_reason: st.stopped.as_ref().map(|s| s.reason.clone()),
        stop_detail: st.stopped.as_ref().map(|s| s.detail.clone()),
        harness_share,
        wall_ms: st.wall_ms,
        command_ms,
        overrides: st.overrides.clone(),
        model: model_summary(st, gov),
        pairing: gov.ethos.pairing.as_str().into(),
        calibration: st.calibration.clone().map(|c| Calibration { pairs: vec![], ..c }),
    }
}
