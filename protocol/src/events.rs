//! Typed, append-only events (JSONL). Every stage of the swarm emits these; `ratchet explain`,
//! `ratchet inspect` and the trace export read nothing else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::{ModelCall, Usage};
use crate::rails::Declaration;
use crate::work::{SandboxUsed, TrustedTestsRun};

pub const EVENT_VERSION: u32 = 1;

/// One line of an `events.jsonl` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    /// RFC 3339 wall-clock time.
    pub at: String,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Hashes of the governance documents in force (doc name -> sha256 hex).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub governance: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// The models behind this event's candidate, by part: `producer` (proposed it) and
    /// `reviewer` (reviewed it), each `name: model @ url`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
    /// Model tokens and time behind this event (a model call, or a stage's calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The event recording one model call.
    pub fn model_call(run_id: impl Into<String>, call: &ModelCall) -> Event {
        let mut e = Event::new(
            run_id,
            EventKind::ModelCalled {
                stage: call.stage.clone(),
                started_at: call.started_at.clone(),
                outcome: call.outcome,
                response_id: call.response_id.clone(),
                detail: call.detail.clone(),
                answer: call.answer.clone(),
            },
        );
        e.model = Some(call.model.to_string());
        e.tokens = Some(call.usage.total_tokens());
        e.duration_ms = Some(call.usage.latency_ms);
        e.usage = Some(call.usage);
        e
    }

    pub fn new(run_id: impl Into<String>, kind: EventKind) -> Event {
        Event {
            v: EVENT_VERSION,
            at: crate::a2a::timestamp(std::time::SystemTime::now()),
            run_id: run_id.into(),
            parent_run_id: None,
            cycle: None,
            branch: None,
            task: None,
            agent: None,
            model: None,
            governance: BTreeMap::new(),
            duration_ms: None,
            tokens: None,
            models: BTreeMap::new(),
            usage: None,
            kind,
        }
    }

    /// The event's type name, as written in the `type` field.
    pub fn type_name(&self) -> String {
        serde_json::to_value(&self.kind)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(String::from))
            .unwrap_or_default()
    }
}

/// What happened. Evidence is typed (gate runs, findings, the sandbox used, an evaluation's
/// statistics and diagnosis); what is still a JSON value (a proposal's parameters, a governance
/// proposal's or a model comparison's evidence, a setting's values) is documented where it is
/// produced, and no reader takes a decision from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    // Supervisor
    AgentStarted {
        name: String,
        role: String,
        url: String,
        pid: Option<u32>,
    },
    AgentExited {
        name: String,
        status: String,
    },
    AgentRestarted {
        name: String,
        restarts: u32,
        backoff_ms: u64,
    },
    AgentGaveUp {
        name: String,
        reason: String,
    },
    AgentStopped {
        name: String,
    },
    ConfigReloaded {
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    ConfigRefused {
        error: String,
    },
    /// `ratchet up` found a member of a dead swarm instance still running (checked by pid, start
    /// time and executable) and stopped its process group before starting its own members.
    LeftoverStopped {
        name: String,
        pid: u32,
        /// The dead swarm instance it belonged to.
        swarm: String,
        /// "SIGTERM" or "SIGKILL": what it took.
        signal: String,
    },

    // Substrate
    TaskQueued {
        role: String,
        skill: String,
        attempt: u32,
        token: u64,
    },
    LeaseClaimed {
        holder: String,
        token: u64,
    },
    LeaseExpired {
        holder: String,
        token: u64,
        reason: String,
    },
    ResultAccepted {
        token: u64,
        outcome: crate::lease::Outcome,
        summary: String,
    },
    ResultRefused {
        token: u64,
        current_token: u64,
        reason: String,
    },
    TaskFailed {
        reason: String,
        infra: bool,
    },
    /// A holder refused to run a leased task whose settings are not those of approved
    /// governance (a forged or hand-edited task file); the task ends as an infrastructure
    /// failure, never counted against the candidate.
    TaskRefused {
        holder: String,
        token: u64,
        reason: String,
    },
    FileQuarantined {
        path: String,
        problem: String,
    },
    /// The coordinator holds this lease for a member on another host (`crate::remote`): where
    /// it runs, and on which engine its heavy commands run.
    LeaseHeldRemotely {
        holder: String,
        token: u64,
        host: String,
        engine: String,
    },
    /// A job (`kit::jobs`) whose holder died or lost its lease, found by its record
    /// (`jobs/<name>.json`): cancelled when the engine still ran it, its record removed.
    JobOrphaned {
        holder: String,
        token: u64,
        engine: crate::governance::JobEngine,
        /// The job's name and, when the engine still knows it, its id, node and the state it
        /// was found in (`RUNNING`, `PENDING`; `CANCELLED` when it had ended by itself).
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        node: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        state: String,
        /// Whether it was still live and was cancelled now.
        cancelled: bool,
        /// Why the job is an orphan (its lease expired, its holder is gone).
        reason: String,
        /// Who found it: `reaper`, or the agent that restarted.
        by: String,
    },
    /// A remote holder's result failed the coordinator's checks (commit, artefact hashes) and
    /// was not written: its lease is dropped and the task re-queued like a dead holder's.
    RemoteResultRefused {
        holder: String,
        token: u64,
        reason: String,
    },
    WorktreeAdded {
        base: String,
    },
    WorktreeRemoved {
        archived: Option<String>,
    },

    // Loop
    CycleStarted {
        baseline: String,
    },
    Proposed {
        candidate: String,
        strategy: String,
        summary: String,
        files: Vec<String>,
        params: Value,
        /// What the proposal declared (files, rationale, claims); none: its scope is unverified.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        declaration: Option<Declaration>,
    },
    ProposalFailed {
        reason: String,
    },
    Executed {
        candidate: String,
        commit: String,
        /// How the execute task ended.
        outcome: crate::lease::StageEnd,
        gates: Vec<crate::work::CommandRun>,
        /// The baseline's tests against the candidate's code (ethos.md `trusted_tests`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trusted: Option<TrustedTestsRun>,
    },
    Critiqued {
        candidate: String,
        pass: bool,
        /// Empty when the critic gave no answer (written as `null` before it was typed).
        #[serde(default, deserialize_with = "null_as_empty")]
        findings: Vec<crate::work::Finding>,
        /// The sandbox the bite check ran in, when it ran a command.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox: Option<SandboxUsed>,
    },
    /// A candidate changed a protected path (or an append-only one): named with its class
    /// (governance, benchmark, ci, tests, other), the rail that caught it and where.
    TamperingDetected {
        candidate: String,
        rail: String,
        path: String,
        line: Option<u32>,
        class: crate::rails::PathClass,
        message: String,
    },
    Evaluated {
        candidate: String,
        verdict: crate::work::Verdict,
        reasons: Vec<String>,
        /// Statistics, the diagnosis, and every run with the sandbox it ran in
        /// (`runs[].sandbox`).
        #[serde(serialize_with = "crate::format::as_json_value")]
        stats: Box<EvaluatedStats>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<crate::evaluation::Outcome>,
        /// Every pair, the stopping rule, rounds, effect with interval, calibrated noise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sampling: Option<Box<crate::evaluation::Sampling>>,
    },
    /// The evaluator measured the baseline against itself: the machine's noise for this
    /// benchmark, which sizes the first look of every evaluation that follows.
    Calibrated {
        calibration: crate::evaluation::Calibration,
    },
    Promoted {
        candidate: String,
        commit: String,
        from: String,
        before: Option<f64>,
        after: Option<f64>,
    },
    PromotionRefused {
        candidate: String,
        reason: String,
    },
    CandidateDropped {
        candidate: String,
        reason: String,
    },
    /// A person discarded a promotion that waited for approval (`ratchet reject <branch>`);
    /// `main` did not move and the approach is banned for the rest of the run.
    PromotionRejected {
        candidate: String,
        by: String,
    },
    /// A custom-role agent (e.g. a security reviewer, possibly a third-party A2A agent) reviewed
    /// the candidate; `blocks` when it answered `{"pass": false}`.
    AdvisoryReview {
        candidate: String,
        reviewer: String,
        state: String,
        blocks: bool,
        text: String,
    },
    /// The loop's decision on one candidate, with every reason it recorded (gate, rails,
    /// reviewers, evaluation): PROMOTE, HOLD, REJECT, FAILED or INFRA.
    CandidateDecided {
        candidate: String,
        verdict: crate::work::Verdict,
        reasons: Vec<String>,
    },
    CycleEnded {
        promoted: Option<String>,
        metric: Option<f64>,
    },
    SettingAdjusted {
        setting: String,
        from: Value,
        to: Value,
        reason: String,
    },
    LoopStopped {
        reason: String,
        detail: String,
    },
    /// One call to a model (stage `propose`, `review` or `compare`), usable or not; its tokens
    /// and latency are in the event's `usage`, its model in `model`.
    ModelCalled {
        stage: String,
        started_at: String,
        outcome: crate::models::CallOutcome,
        response_id: Option<String>,
        detail: Option<String>,
        answer: Option<String>,
    },
    /// `ratchet models compare`: a candidate model endpoint benchmarked against the current one
    /// on the same proposal tasks; `decision` is PROMOTE, HOLD or REJECT with every figure.
    ModelCompared {
        current: String,
        candidate: String,
        decision: crate::work::Verdict,
        reasons: Vec<String>,
        evidence: Value,
    },

    // Governance
    GovernanceSwitched {
        doc: String,
        from: Option<String>,
        to: String,
    },
    GovernanceProposed {
        id: String,
        doc: String,
        summary: String,
        evidence: Value,
    },
    GovernanceRejected {
        doc: String,
        restored: String,
    },
}

/// What the loop records with an `evaluated` event: the evaluator's numbers and diagnosis, every
/// run (with the sandbox it ran in), the medians, the effect, the rounds and the warmup in force.
/// Fields in alphabetical order, as the keys were written when this was a JSON value; every field
/// may be absent in an older line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluatedStats {
    #[serde(default)]
    pub baseline_median: Option<f64>,
    #[serde(default)]
    pub candidate_median: Option<f64>,
    #[serde(default)]
    pub diagnosis: Option<crate::evaluation::Diagnosis>,
    #[serde(default)]
    pub effect: Option<f64>,
    #[serde(default)]
    pub rounds: Option<u32>,
    #[serde(default)]
    pub runs: Vec<crate::work::CommandRun>,
    #[serde(default)]
    pub stats: Option<crate::evaluation::Stats>,
    /// Uncounted warmup rounds per side (cadence.md, as the loop had it).
    #[serde(default)]
    pub warmup: Option<u32>,
}

/// A list that older writers wrote as `null` when there was nothing.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn event_line_shape() {
        let mut e = Event::new("run-1", EventKind::LeaseClaimed { holder: "executor".into(), token: 2 });
        e.at = "2026-01-01T00:00:00.000Z".into();
        e.branch = Some("c1".into());
        e.task = Some("c1-exec".into());
        e.governance.insert("ethos.md".into(), "ab12".into());
        let line = serde_json::to_string(&e).unwrap();
        expect![[r#"{"v":1,"at":"2026-01-01T00:00:00.000Z","run_id":"run-1","branch":"c1","task":"c1-exec","governance":{"ethos.md":"ab12"},"type":"lease_claimed","holder":"executor","token":2}"#]]
            .assert_eq(&line);
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.type_name(), "lease_claimed");
    }

    /// The `evaluated` event's statistics, typed, keep the bytes they had as a JSON value (keys
    /// in alphabetical order at every depth, an infinite interval end as `null`), and read back.
    #[test]
    fn evaluated_stats_keep_their_bytes() {
        use crate::evaluation::{Call, Diagnosis, Failure, Look, Pattern, Scale, Side, SideStats, Stats};
        use crate::governance::Direction;
        use crate::work::{CommandResult, CommandRun, Recommendation, Verdict};
        let stats = Stats {
            metric: "ms".into(),
            direction: Direction::Lower,
            confidence: 0.95,
            min_effect: 0.02,
            scale: Scale::LogRatio,
            baseline: SideStats { n: 5, failed: 0, median: Some(100.0) },
            candidate: SideStats { n: 4, failed: 1, median: Some(90.0) },
            effect: Some(0.1),
            spread: Some(0.01),
            outliers: 0,
            look: Some(Look {
                n: 4,
                call: Call::Unclear,
                estimate: 0.1,
                lo: f64::NEG_INFINITY,
                hi: 0.2,
                above: 4,
                below: 0,
                w_plus: 10,
                sign_critical: None,
                signed_rank_critical: Some(10),
            }),
            nominal_level: Some(0.03),
            guards: vec![],
            failures: vec![Failure { round: 2, warmup: false, side: Side::Candidate, reason: "exit 1".into() }],
        };
        let diagnosis = Diagnosis {
            pattern: Pattern::ColdStart,
            summary: "cold start".into(),
            recommendation: Some(Recommendation {
                setting: "cadence.warmup".into(),
                from: 0,
                to: 1,
                reason: "warming".into(),
            }),
        };
        let run = CommandRun {
            command: "sh bench.sh".into(),
            result: CommandResult::Ok,
            detail: "ms=90".into(),
            duration_ms: 7,
            log: None,
            sandbox: None,
            job: None,
        };
        let mut e = Event::new(
            "run-1",
            EventKind::Evaluated {
                candidate: "p1".into(),
                verdict: Verdict::Hold,
                reasons: vec!["HOLD".into()],
                stats: Box::new(EvaluatedStats {
                    baseline_median: Some(100.0),
                    candidate_median: Some(90.0),
                    diagnosis: Some(diagnosis),
                    effect: Some(0.1),
                    rounds: Some(5),
                    runs: vec![run],
                    stats: Some(stats),
                    warmup: Some(0),
                }),
                outcome: None,
                sampling: None,
            },
        );
        e.at = "2026-01-01T00:00:00.000Z".into();
        let line = serde_json::to_string(&e).unwrap();
        expect![[r#"{"v":1,"at":"2026-01-01T00:00:00.000Z","run_id":"run-1","type":"evaluated","candidate":"p1","verdict":"HOLD","reasons":["HOLD"],"stats":{"baseline_median":100.0,"candidate_median":90.0,"diagnosis":{"pattern":"cold-start","recommendation":{"from":0,"reason":"warming","setting":"cadence.warmup","to":1},"summary":"cold start"},"effect":0.1,"rounds":5,"runs":[{"command":"sh bench.sh","detail":"ms=90","duration_ms":7,"result":"ok"}],"stats":{"baseline":{"failed":0,"median":100.0,"n":5},"candidate":{"failed":1,"median":90.0,"n":4},"confidence":0.95,"direction":"lower","effect":0.1,"failures":[{"reason":"exit 1","round":2,"side":"candidate","warmup":false}],"guards":[],"look":{"above":4,"below":0,"call":"unclear","estimate":0.1,"hi":0.2,"lo":null,"n":4,"sign_critical":null,"signed_rank_critical":10,"w_plus":10},"metric":"ms","min_effect":0.02,"nominal_level":0.03,"outliers":0,"scale":"log-ratio","spread":0.01},"warmup":0}}"#]].assert_eq(&line);
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e, "read back, the infinite end of the interval too");
        // An older line with only some of the statistics still reads.
        let old = r#"{"v":1,"at":"a","run_id":"r","type":"evaluated","candidate":"c","verdict":"HOLD","reasons":[],"stats":{"rounds":7,"effect":0.01}}"#;
        let back: Event = serde_json::from_str(old).unwrap();
        let EventKind::Evaluated { stats, .. } = back.kind else { panic!("evaluated") };
        assert_eq!((stats.rounds, stats.effect, stats.stats), (Some(7), Some(0.01), None));
    }
}
