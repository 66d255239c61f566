//! The loop's state, `worktrees/.swarm/loop.json`: everything a restarted coordinator needs to
//! continue the run it was in (the cycle in flight and the stage of each candidate, what was
//! tried and banned, promotions, budgets, self-adjustments), written temp + rename after every
//! step and read back with its format version checked. At the bottom of the coordinator: the
//! engine, governance (distilling findings into proposals), the exports and the web pages read
//! it; it imports none of them.
//!
//! Also the loop's pure decisions on that state, tested without processes: when to stop
//! ([`LoopState::stop_condition`]), which candidate of a cycle wins ([`CycleState::winner`]), and
//! how a finished cycle is recorded ([`LoopState::close_cycle`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::evaluation::Calibration;
use protocol::work::{CritiqueOutput, EvaluateOutput, ExecuteOutput, Proposal, Tried, Verdict};
use serde::{Deserialize, Serialize};

pub const LOOP_STATE_VERSION: u32 = 1;

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopRecord {
    /// stalled | circuit-breaker | exhausted | budget-cycles | budget-wall | canceled | error
    pub reason: String,
    pub detail: String,
    pub at: String,
}

/// Where a candidate is in its cycle: the stages run in this order, and a candidate that fails
/// one is `Decided` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Executing,
    Critiquing,
    Evaluating,
    Decided,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Executing => "executing",
            Stage::Critiquing => "critiquing",
            Stage::Evaluating => "evaluating",
            Stage::Decided => "decided",
        }
    }
}

/// Where a cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Asking the proposer.
    Proposing,
    /// Its candidates go through their stages, then the decision.
    Running,
    /// Closed (`LoopState::close_cycle`).
    Done,
    /// Main moved while it ran: its candidates are stale and it promoted nothing.
    Dropped,
}

/// A candidate's journey through one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub branch: String,
    pub proposal: Proposal,
    pub stage: Stage,
    #[serde(default)]
    pub exec: Option<ExecuteOutput>,
    #[serde(default)]
    pub critique: Option<CritiqueOutput>,
    #[serde(default)]
    pub eval: Option<EvaluateOutput>,
    /// PROMOTE, HOLD, REJECT, FAILED (candidate's fault before evaluation) or INFRA (harness's
    /// fault: not counted against the candidate); none while undecided.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Milliseconds the target's own commands took for this candidate.
    #[serde(default)]
    pub command_ms: u64,
    /// The models behind it: `producer`, `reviewer` (`name: model @ url`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
    /// Undecided at the cap of its first measurement, it was measured once more (or the budget
    /// did not allow it: see its reasons).
    #[serde(default)]
    pub remeasured: bool,
}

impl Candidate {
    /// A candidate just proposed: about to be executed, nothing measured or decided yet.
    pub fn new(branch: String, proposal: Proposal, models: BTreeMap<String, String>) -> Candidate {
        Candidate {
            branch,
            proposal,
            stage: Stage::Executing,
            exec: None,
            critique: None,
            eval: None,
            verdict: None,
            reasons: vec![],
            command_ms: 0,
            models,
            remeasured: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleState {
    pub cycle: u64,
    pub baseline: String,
    pub started_at: String,
    pub candidates: Vec<Candidate>,
    pub phase: Phase,
    #[serde(default)]
    pub wall_ms: u64,
    /// Milliseconds the proposer spent in external commands for this cycle's proposals (counted
    /// once per cycle, not per candidate).
    #[serde(default)]
    pub propose_ms: u64,
}

/// One promotion, for the summary and `ratchet explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionRecord {
    pub cycle: u64,
    pub branch: String,
    pub commit: String,
    pub from: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub governance: BTreeMap<String, String>,
    /// The models that produced and reviewed it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
}

/// Operational settings the loop changed on itself (never governance texts). Only warmup: the
/// rounds of an evaluation are sequential up to ethos.md's `max_rounds`, which only a person
/// changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    pub warmup: Option<u32>,
}

/// `worktrees/.swarm/loop.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    pub v: u32,
    pub run_id: String,
    pub started_at: String,
    /// Wall-clock ms spent in cycles so far (across restarts).
    pub wall_ms: u64,
    pub cycles_done: u64,
    pub stalls: u32,
    pub proposal_failures: u32,
    pub overrides: Overrides,
    pub tried: Vec<Tried>,
    pub banned: Vec<String>,
    pub current: Option<CycleState>,
    pub finished: Vec<CycleState>,
    pub promotions: Vec<PromotionRecord>,
    pub baseline_metric: Option<f64>,
    pub stopped: Option<StopRecord>,
    /// Model tokens and time per loop stage (propose, critique, ...), summed over the run.
    #[serde(default)]
    pub usage: BTreeMap<String, protocol::models::Usage>,
    /// Wall-clock milliseconds per loop stage, summed over the run.
    #[serde(default)]
    pub stage_ms: BTreeMap<String, u64>,
    /// The run's own budget of cycles (`ratchet up --max-cycles`), kept so that a resumed run
    /// keeps it; 0 = none (cadence.md's max_cycles still applies).
    #[serde(default)]
    pub max_cycles: u32,
    /// The machine's noise measured at the start of the run (the baseline against itself).
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

impl LoopState {
    /// A new run, nothing done yet.
    pub fn new(run_id: String) -> LoopState {
        LoopState {
            v: LOOP_STATE_VERSION,
            run_id,
            started_at: now(),
            wall_ms: 0,
            cycles_done: 0,
            stalls: 0,
            proposal_failures: 0,
            overrides: Overrides::default(),
            tried: vec![],
            banned: vec![],
            current: None,
            finished: vec![],
            promotions: vec![],
            baseline_metric: None,
            stopped: None,
            usage: BTreeMap::new(),
            stage_ms: BTreeMap::new(),
            max_cycles: 0,
            calibration: None,
        }
    }
}

impl LoopState {
    /// Why the loop must stop before another cycle, if it must: `(reason, detail)` with the
    /// numbers and the setting behind it. Stalls, then the circuit breaker, then the budgets of
    /// cycles (cadence.md's and the run's own, the smaller) and of wall-clock time spent in
    /// cycles. Checked between cycles only.
    pub fn stop_condition(&self, c: &protocol::governance::Cadence) -> Option<(String, String)> {
        if self.stalls >= c.stall_limit {
            return Some((
                "stalled".into(),
                format!(
                    "{} consecutive cycles moved nothing (stall_limit {} in cadence.md): the loop cannot move the metric with what it tries",
                    self.stalls, c.stall_limit
                ),
            ));
        }
        if self.proposal_failures >= c.breaker_limit {
            return Some((
                "circuit-breaker".into(),
                format!(
                    "{} consecutive proposal failures (breaker_limit {} in cadence.md): fix the proposer before running again",
                    self.proposal_failures, c.breaker_limit
                ),
            ));
        }
        let max_cycles = match (c.max_cycles, self.max_cycles) {
            (0, 0) => 0,
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
        if max_cycles > 0 && self.cycles_done >= max_cycles as u64 {
            return Some(("budget-cycles".into(), format!("ran the budget of {max_cycles} cycles")));
        }
        // `wall_ms` is the time spent in cycles, across restarts, added once per cycle when it
        // ends (`close_cycle`).
        let spent = self.wall_ms;
        if c.max_wall_s > 0 && spent >= c.max_wall_s * 1000 {
            return Some((
                "budget-wall".into(),
                format!(
                    "spent {spent} ms in {} cycles, the wall-clock budget is {} s (max_wall_s in cadence.md)",
                    self.cycles_done, c.max_wall_s
                ),
            ));
        }
        None
    }

    /// Record the end of `cur`, the cycle that was in flight, which took `wall_ms` (this time;
    /// a resumed cycle adds to what it had): every candidate but an INFRA one goes into the
    /// history of approaches tried (PROMOTED for the one that went onto main), REJECT and FAILED
    /// ones are banned, a promotion resets the stall count and a cycle that had candidates and
    /// promoted nothing adds one, unless its best PROMOTE waits for a person (`waiting`): then
    /// the loop moved the metric and a person has yet to say yes.
    pub fn close_cycle(&mut self, mut cur: CycleState, promoted: Option<PromotionRecord>, waiting: bool, wall_ms: u64) {
        cur.phase = Phase::Done;
        cur.wall_ms += wall_ms;
        self.wall_ms += wall_ms;
        self.cycles_done = cur.cycle;
        for c in &cur.candidates {
            let v = c.verdict;
            if v == Some(Verdict::Infra) {
                continue; // the harness's fault: may be tried again
            }
            // An undecided candidate (none is, once its cycle ran) goes into the history as
            // failed, unbanned.
            let recorded = if promoted.as_ref().is_some_and(|p| p.branch == c.branch) {
                Verdict::Promoted
            } else {
                v.unwrap_or(Verdict::Failed)
            };
            self.tried.push(tried(c, cur.cycle, recorded));
            if matches!(v, Some(Verdict::Reject | Verdict::Failed)) {
                self.banned.push(c.proposal.approach_key());
            }
        }
        if let Some(p) = promoted {
            self.promotions.push(p);
            self.stalls = 0;
        } else if !cur.candidates.is_empty() && !waiting {
            self.stalls += 1;
        }
        self.finished.push(cur);
    }
}

/// The history entry of a decided candidate.
fn tried(c: &Candidate, cycle: u64, verdict: Verdict) -> Tried {
    let e = c.eval.as_ref();
    let reason = match verdict {
        Verdict::Promoted => None,
        _ => Some(crate::verdict::why(c)).filter(|r| !r.is_empty()),
    };
    Tried {
        key: c.proposal.approach_key(),
        verdict,
        effect: e.and_then(|e| e.effect),
        cycle,
        summary: crate::verdict::summary(c),
        reason,
        before: e.and_then(|e| e.baseline_median),
        after: e.and_then(|e| e.candidate_median),
    }
}

impl LoopState {
    /// Milliseconds the target's own commands took over the finished cycles: each candidate's
    /// gates, bite check and benchmark, and the proposer's program once per cycle.
    pub fn command_ms(&self) -> u64 {
        self.finished.iter().map(|cy| cy.propose_ms + cy.candidates.iter().map(|c| c.command_ms).sum::<u64>()).sum()
    }
}

impl CycleState {
    /// The candidate to promote: the PROMOTE with the largest effect (the first of equals, in
    /// the order they were proposed).
    pub fn winner(&self) -> Option<&Candidate> {
        let effect = |c: &Candidate| c.eval.as_ref().and_then(|e| e.effect).unwrap_or(0.0);
        self.candidates.iter().filter(|c| c.verdict == Some(Verdict::Promote)).fold(None, |best, c| match best {
            Some(b) if effect(c) <= effect(b) => Some(b),
            _ => Some(c),
        })
    }

    /// Cycle `cycle` on `baseline`, starting now in `phase`.
    pub fn new(cycle: u64, baseline: String, phase: Phase) -> CycleState {
        CycleState { cycle, baseline, started_at: now(), candidates: vec![], phase, wall_ms: 0, propose_ms: 0 }
    }
}

pub(crate) fn now() -> String {
    protocol::timestamp(std::time::SystemTime::now())
}

pub fn loop_state_path(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).loop_state()
}

/// The loop's state, if a loop ran here; a file of a newer format version is refused as such.
pub fn read_state(home: &Path) -> anyhow::Result<Option<LoopState>> {
    let path = loop_state_path(home);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            protocol::format::parse_versioned(&bytes, "loop state file", LOOP_STATE_VERSION)
                .with_context(|| format!("{}; fix: move it aside to start a new run", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub(crate) fn write_state(home: &Path, st: &LoopState) -> anyhow::Result<()> {
    let path = loop_state_path(home);
    kit::files::write_atomic(&path, &serde_json::to_vec_pretty(st)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::governance::{Cadence, PromotionMode};
    use protocol::work::Proposal;
    use serde_json::json;

    fn cadence() -> Cadence {
        Cadence {
            candidates: 2,
            warmup: 0,
            max_warmup: 0,
            stall_limit: 3,
            breaker_limit: 2,
            lease_ttl_s: 10,
            max_attempts: 3,
            promotion: PromotionMode::Auto,
            max_cycles: 0,
            max_wall_s: 0,
            max_tokens: 0,
        }
    }

    fn candidate(id: &str, verdict: Option<Verdict>, effect: Option<f64>) -> Candidate {
        let eval = effect.map(|e| {
            serde_json::from_value(
                json!({"verdict": verdict, "reasons": [], "baseline_median": 2.0, "candidate_median": 1.0,
                "effect": e, "stats": null, "diagnosis": null, "runs": [], "command_ms": 0}),
            )
            .expect("an evaluation")
        });
        Candidate {
            branch: format!("r1-c1-{id}"),
            proposal: Proposal {
                id: id.into(),
                strategy: "sweep".into(),
                summary: id.into(),
                files: vec![],
                params: json!({ "k": id }),
                patch: None,
                edits: vec![],
                model: None,
                declaration: None,
            },
            stage: Stage::Decided,
            exec: None,
            critique: None,
            eval,
            verdict,
            reasons: vec![],
            command_ms: 100,
            models: BTreeMap::new(),
            remeasured: false,
        }
    }

    fn cycle(n: u64, candidates: Vec<Candidate>) -> CycleState {
        let mut c = CycleState::new(n, "base".into(), Phase::Running);
        c.candidates = candidates;
        c
    }

    fn promotion(branch: &str) -> PromotionRecord {
        PromotionRecord {
            cycle: 1,
            branch: branch.into(),
            commit: "c".into(),
            from: "base".into(),
            before: Some(2.0),
            after: Some(1.0),
            governance: BTreeMap::new(),
            models: BTreeMap::new(),
        }
    }

    #[test]
    fn stop_conditions_in_order_with_their_numbers() {
        let c = cadence();
        let mut st = LoopState::new("r1".into());
        assert_eq!(st.stop_condition(&c), None, "a new run goes on");
        st.stalls = 3;
        st.proposal_failures = 2;
        let (reason, detail) = st.stop_condition(&c).expect("stalled");
        assert_eq!(reason, "stalled", "stalls are checked first");
        assert!(detail.starts_with("3 consecutive cycles moved nothing (stall_limit 3"), "{detail}");
        st.stalls = 2;
        assert_eq!(st.stop_condition(&c).expect("breaker").0, "circuit-breaker");
        st.proposal_failures = 1;
        // The smaller of cadence.md's budget and the run's own; 0 means none.
        st.cycles_done = 4;
        assert_eq!(st.stop_condition(&c), None);
        st.max_cycles = 4;
        assert_eq!(st.stop_condition(&c).expect("budget").1, "ran the budget of 4 cycles");
        let mut c6 = cadence();
        c6.max_cycles = 6;
        assert_eq!(st.stop_condition(&c6).expect("budget").1, "ran the budget of 4 cycles");
        c6.max_cycles = 3;
        assert_eq!(st.stop_condition(&c6).expect("budget").1, "ran the budget of 3 cycles");
        st.max_cycles = 0;
        st.wall_ms = 60_000;
        let mut wall = cadence();
        wall.max_wall_s = 60;
        let (reason, detail) = st.stop_condition(&wall).expect("wall");
        assert_eq!(reason, "budget-wall");
        assert!(detail.starts_with("spent 60000 ms in 4 cycles"), "{detail}");
        wall.max_wall_s = 61;
        assert_eq!(st.stop_condition(&wall), None);
    }

    #[test]
    fn the_winner_is_the_promote_with_the_largest_effect_first_of_equals() {
        let cy = cycle(
            1,
            vec![
                candidate("a", Some(Verdict::Hold), Some(0.9)),
                candidate("b", Some(Verdict::Promote), Some(0.2)),
                candidate("c", Some(Verdict::Promote), Some(0.3)),
                candidate("d", Some(Verdict::Promote), Some(0.3)),
                candidate("e", Some(Verdict::Reject), None),
            ],
        );
        assert_eq!(cy.winner().map(|c| c.proposal.id.as_str()), Some("c"));
        assert!(cycle(1, vec![candidate("a", Some(Verdict::Hold), Some(0.5))]).winner().is_none());
        let unmeasured = cycle(
            1,
            vec![candidate("x", Some(Verdict::Promote), None), candidate("y", Some(Verdict::Promote), Some(0.1))],
        );
        assert_eq!(unmeasured.winner().map(|c| c.proposal.id.as_str()), Some("y"));
    }

    #[test]
    fn closing_a_cycle_records_history_bans_and_stalls() {
        let mut st = LoopState::new("r1".into());
        let mut cy = cycle(
            1,
            vec![
                candidate("p", Some(Verdict::Promote), Some(0.5)),
                candidate("h", Some(Verdict::Hold), Some(0.0)),
                candidate("r", Some(Verdict::Reject), Some(-0.2)),
                candidate("f", Some(Verdict::Failed), None),
                candidate("i", Some(Verdict::Infra), None),
            ],
        );
        cy.propose_ms = 1000;
        cy.wall_ms = 50;
        st.close_cycle(cy, Some(promotion("r1-c1-p")), false, 200);
        assert_eq!((st.cycles_done, st.wall_ms, st.stalls), (1, 200, 0));
        assert_eq!(st.finished[0].phase, Phase::Done);
        assert_eq!(st.finished[0].wall_ms, 250, "a resumed cycle adds to the time it had");
        let tried: Vec<(&str, &str)> = st.tried.iter().map(|t| (t.key.as_str(), t.verdict.as_str())).collect();
        assert_eq!(tried, [("k=p", "PROMOTED"), ("k=h", "HOLD"), ("k=r", "REJECT"), ("k=f", "FAILED")]);
        assert_eq!(st.banned, ["k=r", "k=f"]);
        assert_eq!(st.promotions.len(), 1);
        assert_eq!(st.command_ms(), 1000 + 5 * 100, "the proposer's time once, not once per candidate");

        st.close_cycle(cycle(2, vec![candidate("h2", Some(Verdict::Hold), Some(0.0))]), None, false, 10);
        assert_eq!((st.cycles_done, st.stalls), (2, 1), "a cycle that moved nothing is a stall");
        st.close_cycle(cycle(3, vec![]), None, false, 10);
        assert_eq!(st.stalls, 1, "a cycle without candidates is not a stall (a proposal failure)");
        st.close_cycle(
            cycle(4, vec![candidate("p4", Some(Verdict::Promote), Some(0.1))]),
            Some(promotion("r1-c1-p4")),
            false,
            10,
        );
        assert_eq!(st.stalls, 0, "a promotion resets the stall count");
        st.close_cycle(cycle(5, vec![candidate("p5", Some(Verdict::Promote), Some(0.1))]), None, true, 10);
        assert_eq!(st.stalls, 0, "a promotion waiting for a person is not a stall");
        let last = st.tried.last().expect("history");
        assert_eq!((last.verdict.as_str(), last.summary.as_str()), ("PROMOTE", "p5"), "by its summary");
    }

    #[test]
    fn stages_and_phases_keep_their_bytes() {
        let mut cy = cycle(1, vec![candidate("a", None, None)]);
        cy.candidates[0].stage = Stage::Critiquing;
        let v = serde_json::to_value(&cy).expect("serialize");
        assert_eq!((&v["phase"], &v["candidates"][0]["stage"]), (&json!("running"), &json!("critiquing")));
        for (stage, text) in [
            (Stage::Executing, "executing"),
            (Stage::Critiquing, "critiquing"),
            (Stage::Evaluating, "evaluating"),
            (Stage::Decided, "decided"),
        ] {
            assert_eq!(serde_json::to_value(stage).expect("stage"), json!(text));
            assert_eq!(stage.as_str(), text);
        }
        for (phase, text) in [
            (Phase::Proposing, "proposing"),
            (Phase::Running, "running"),
            (Phase::Done, "done"),
            (Phase::Dropped, "dropped"),
        ] {
            assert_eq!(serde_json::from_value::<Phase>(json!(text)).expect("phase"), phase);
        }
    }

    #[test]
    fn a_newer_loop_state_is_refused_as_such() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let st = LoopState::new("r1".into());
        write_state(tmp.path(), &st).expect("write");
        assert_eq!(read_state(tmp.path()).expect("read"), Some(st));
        let path = loop_state_path(tmp.path());
        let text = std::fs::read_to_string(&path).expect("loop.json");
        std::fs::write(&path, text.replacen("\"v\": 1", "\"v\": 7", 1)).expect("rewrite");
        let e = format!("{:#}", read_state(tmp.path()).expect_err("newer"));
        assert!(e.contains("loop state file version 7 is newer than this build of Ratchet reads (up to 1)"), "{e}");
    }
}
