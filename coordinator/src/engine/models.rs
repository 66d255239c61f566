//! The loop's side of models as swarm members: every model call becomes a `model_called` event;
//! tokens and wall time add up per stage in the loop state (so they survive a restart); each
//! candidate carries the models that produced and reviewed it into its events, its promotion and
//! the run summary; a cadence token budget stops the loop; and the reviewer guard refuses a
//! configuration whose reviewer is its producer.

use std::collections::BTreeMap;

use protocol::events::Event;
use protocol::governance::Governance;
use protocol::models::{ModelCall, Usage};
use serde::Serialize;

use super::{Engine, LoopState};

/// The loop's stages, in order, as the summary reports them.
pub const STAGES: [&str; 4] = ["propose", "execute", "critique", "evaluate"];

/// The loop stage a model call belongs to (the critic's `review` calls are part of `critique`).
pub fn stage_of_call(call_stage: &str) -> &str {
    match call_stage {
        "review" => "critique",
        other => other,
    }
}

/// The producing and reviewing models a configuration names, refused when they are the same
/// endpoint and model.
pub fn guard(gov: &Governance) -> anyhow::Result<()> {
    gov.check_reviewer_differs().map_err(|e| anyhow::anyhow!("{e}"))
}

impl Engine {
    /// Record a stage's model calls: one `model_called` event each (on the candidate's branch
    /// when there is one) and their usage in the loop state.
    pub(super) fn record_calls(&mut self, branch: Option<&str>, calls: &[ModelCall]) {
        for call in calls {
            let mut e = Event::model_call(self.st.run_id.clone(), call);
            e.governance = self.gov.hashes.clone();
            e.cycle = self.st.current.as_ref().map(|c| c.cycle);
            e.branch = branch.map(String::from);
            e.agent = Some(match call.stage.as_str() {
                "propose" => "proposer".to_string(),
                "review" => "critic".to_string(),
                _ => self.ctx.me.clone(),
            });
            self.append(branch, &e);
            self.st.usage.entry(stage_of_call(&call.stage).to_string()).or_default().add(&call.usage);
        }
    }

    /// The models behind a new candidate: the one that produced it (from the proposal) and the
    /// one that will review it (from the governance in force).
    pub(super) fn models_of(&self, p: &protocol::work::Proposal) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(producer) = &p.model {
            m.insert("producer".to_string(), producer.clone());
        }
        if let Some((id, _)) = self.gov.reviewer_model() {
            m.insert("reviewer".to_string(), id.to_string());
        }
        m
    }

    /// A critique's model review: the reviewer on the candidate (and its copy in the cycle), its
    /// calls recorded.
    pub(super) fn note_review(&mut self, branch: &str, c: &mut super::Candidate, out: &protocol::work::CritiqueOutput) {
        if let Some(r) = &out.reviewer {
            c.models.insert("reviewer".to_string(), r.clone());
            if let Some(cur) = self.st.current.as_mut()
                && let Some(k) = cur.candidates.iter_mut().find(|k| k.branch == branch)
            {
                k.models.insert("reviewer".to_string(), r.clone());
            }
        }
        self.record_calls(Some(branch), &out.calls);
    }

    /// Add wall-clock milliseconds to a stage.
    pub(super) fn add_stage_ms(&mut self, stage: &str, ms: u64) {
        *self.st.stage_ms.entry(stage.to_string()).or_default() += ms;
    }

    /// The models behind the candidate on `branch` (empty for events of no candidate).
    pub(super) fn candidate_models(&self, branch: Option<&str>) -> BTreeMap<String, String> {
        let Some(b) = branch else { return BTreeMap::new() };
        self.st
            .current
            .iter()
            .chain(self.st.finished.iter().rev())
            .flat_map(|cy| cy.candidates.iter())
            .find(|c| c.branch == b)
            .map(|c| c.models.clone())
            .unwrap_or_default()
    }

    /// The token budget's stop, if it is spent.
    pub(super) fn token_budget_spent(&self) -> Option<(String, String)> {
        let max = self.gov.cadence.max_tokens;
        let used = tokens_used(&self.st);
        (max > 0 && used >= max).then(|| {
            (
                "budget-tokens".to_string(),
                format!("used {used} model tokens, the budget of {max} (cadence.md max_tokens)"),
            )
        })
    }
}

/// The calls' usage added up (None without calls).
pub fn stage_usage(calls: &[ModelCall]) -> Option<Usage> {
    let mut u = Usage::default();
    for c in calls {
        u.add(&c.usage);
    }
    (!calls.is_empty()).then_some(u)
}

/// Model tokens (prompt + completion) the run used so far, every stage.
pub fn tokens_used(st: &LoopState) -> u64 {
    st.usage.values().map(Usage::total_tokens).sum()
}

/// One stage in the run summary.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StageSummary {
    pub wall_ms: u64,
    /// This stage's share of the summed stage wall time.
    pub time_share: f64,
    /// The stage's model calls (zero when no model works in it).
    pub usage: Usage,
    /// This stage's share of every model token of the run.
    pub token_share: f64,
}

/// Tokens and time of a run, per stage and in total.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ModelSummary {
    /// The models in force: `proposer` and `reviewer`, each `name: model @ url`.
    pub models: BTreeMap<String, String>,
    pub stages: BTreeMap<String, StageSummary>,
    /// Every stage's model usage added up.
    pub tokens: Usage,
    /// Of every prompt token, the share the servers served from their prefix cache (the stable
    /// governance prefix reused by the second and later calls).
    pub prefix_cache_share: Option<f64>,
}

pub fn model_summary(st: &LoopState, gov: &Governance) -> ModelSummary {
    let mut models = BTreeMap::new();
    if let Some((id, _)) = gov.proposer_model() {
        models.insert("proposer".to_string(), id.to_string());
    }
    if let Some((id, _)) = gov.reviewer_model() {
        models.insert("reviewer".to_string(), id.to_string());
    }
    let mut tokens = Usage::default();
    for u in st.usage.values() {
        tokens.add(u);
    }
    let wall: u64 = STAGES.iter().map(|s| st.stage_ms.get(*s).copied().unwrap_or(0)).sum();
    let share = |part: u64, whole: u64| if whole > 0 { part as f64 / whole as f64 } else { 0.0 };
    let stages = STAGES
        .iter()
        .map(|s| {
            let ms = st.stage_ms.get(*s).copied().unwrap_or(0);
            let usage = st.usage.get(*s).copied().unwrap_or_default();
            let summary = StageSummary {
                wall_ms: ms,
                time_share: share(ms, wall),
                usage,
                token_share: share(usage.total_tokens(), tokens.total_tokens()),
            };
            (s.to_string(), summary)
        })
        .collect();
    ModelSummary { models, stages, tokens, prefix_cache_share: tokens.cache_share() }
}
