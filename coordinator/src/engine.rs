//! The improvement loop: propose, execute, critique, evaluate, promote or revert, cycle after
//! cycle, until the loop cannot move the metric (stall), the proposer keeps failing (circuit
//! breaker), the proposer has nothing left, or the budget runs out.
//!
//! Everything needed to resume is in files: `worktrees/.swarm/loop.json` (the loop's own state,
//! written temp + rename after every step), the task and result files of each candidate branch,
//! and git refs. A restarted coordinator continues the cycle it was in: finished tasks are read
//! back, in-flight ones are re-run by the lease substrate, and a promotion that already happened
//! is recognised (main already at the candidate), never applied twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kit::client::skill_message;
use kit::substrate::{self, BranchDir, BranchState, Home, PromoteOutcome};
use protocol::TaskState;
use protocol::evaluation::{Calibration, Outcome, Stopping};
use protocol::events::{Event, EventKind};
use protocol::governance::{Governance, PromotionMode};
use protocol::lease::{ResultFile, TaskFile, TaskFileState};
use protocol::work::{
    CalibrateOutput, CritiqueInput, CritiqueOutput, EvaluateInput, EvaluateMode, EvaluateOutput, ExecuteInput,
    ExecuteOutput, Proposal, ProposeInput, ProposeOutput, SandboxSettings, Tried,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::peers::Peers;

mod compare;
mod models;
pub use compare::{CompareReport, CompareRequest, SideReport, compare_run};
use models::stage_usage;
pub use models::{ModelSummary, StageSummary, model_summary};

pub const LOOP_STATE_VERSION: u32 = 1;

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopRecord {
    /// stalled | circuit-breaker | exhausted | budget-cycles | budget-wall | canceled | error
    pub reason: String,
    pub detail: String,
    pub at: String,
}

/// A candidate's journey through one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub branch: String,
    pub proposal: Proposal,
    /// executing | critiquing | evaluating | decided
    pub stage: String,
    #[serde(default)]
    pub exec: Option<ExecuteOutput>,
    #[serde(default)]
    pub critique: Option<CritiqueOutput>,
    #[serde(default)]
    pub eval: Option<EvaluateOutput>,
    /// PROMOTE, HOLD, REJECT, FAILED (candidate's fault before evaluation) or INFRA (harness's
    /// fault: not counted against the candidate).
    #[serde(default)]
    pub verdict: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleState {
    pub cycle: u64,
    pub baseline: String,
    pub started_at: String,
    pub candidates: Vec<Candidate>,
    /// proposing | running | promoting | done, or dropped (main moved while it ran: its
    /// candidates are stale and it promoted nothing)
    pub phase: String,
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

impl CycleState {
    /// Cycle `cycle` on `baseline`, starting now in `phase`.
    pub fn new(cycle: u64, baseline: String, phase: &str) -> CycleState {
        CycleState {
            cycle,
            baseline,
            started_at: now(),
            candidates: vec![],
            phase: phase.into(),
            wall_ms: 0,
            propose_ms: 0,
        }
    }
}

/// A line of progress for people (terminal or stream).
pub type Progress = Box<dyn Fn(&str) + Send + Sync>;

/// What the loop needs to run.
pub struct LoopCtx {
    pub home: PathBuf,
    pub run_id: String,
    /// The coordinator's own name (excluded from routing).
    pub me: String,
    pub progress: Progress,
    /// Upper bound on cycles for this run in addition to cadence.max_cycles (0 = the budget the
    /// run was started with, saved in loop.json, if any).
    pub max_cycles: u32,
    /// Start afresh even if loop.json holds a finished run.
    pub fresh: bool,
}

fn now() -> String {
    protocol::timestamp(std::time::SystemTime::now())
}

pub fn loop_state_path(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).loop_state()
}

fn swarm_events(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).events_file()
}

pub fn read_state(home: &Path) -> anyhow::Result<Option<LoopState>> {
    let path = loop_state_path(home);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(serde_json::from_str(&t).with_context(|| {
            format!("{}: not a loop state file; fix: move it aside to start a new run", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_state(home: &Path, st: &LoopState) -> anyhow::Result<()> {
    let path = loop_state_path(home);
    let dir = path.parent().expect("loop.json has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".loop.json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(st)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

struct Engine {
    /// Woken when a result file appears (notify on every branch's `results/`), so a finished
    /// task is noticed at once instead of at the next poll.
    results_changed: std::sync::Arc<tokio::sync::Notify>,
    _results_watcher: Option<substrate::TaskWatcher>,
    adjusted_this_cycle: bool,
    ctx: LoopCtx,
    home: Home,
    st: LoopState,
    gov: Governance,
    peers: Peers,
    /// Model usage the next emitted event carries (a stage's calls, set just before it).
    pending_usage: std::sync::Mutex<Option<protocol::models::Usage>>,
    /// Whether the state is the loop's (`loop.json`); a compare run keeps its own in memory.
    persist: bool,
}

impl Engine {
    fn event(&self, kind: EventKind) -> Event {
        let mut e = Event::new(self.st.run_id.clone(), kind);
        e.governance = self.gov.hashes.clone();
        e.agent = Some(self.ctx.me.clone());
        e.cycle = self.st.current.as_ref().map(|c| c.cycle);
        e
    }

    /// Record an event in the swarm log, and in the branch's log when it concerns one.
    fn emit(&self, branch: Option<&str>, task: Option<&str>, kind: EventKind) {
        self.emit_by(None, branch, task, kind)
    }

    /// Like `emit`, naming the agent that did the work (default: the coordinator itself).
    fn emit_by(&self, agent: Option<&str>, branch: Option<&str>, task: Option<&str>, kind: EventKind) {
        let e = self.event_about(agent, branch, task, kind);
        self.append(branch, &e);
    }

    /// The event `emit_by` would record, not yet recorded.
    fn event_about(&self, agent: Option<&str>, branch: Option<&str>, task: Option<&str>, kind: EventKind) -> Event {
        let mut e = self.event(kind);
        if let Some(a) = agent {
            e.agent = Some(a.to_string());
        }
        e.branch = branch.map(String::from);
        e.task = task.map(String::from);
        e.models = self.candidate_models(branch);
        e.usage = self.pending_usage.lock().expect("usage lock").take();
        e
    }

    /// Append an event to the swarm log, and to the branch's log when it concerns one.
    fn append(&self, branch: Option<&str>, e: &Event) {
        let _ = std::fs::create_dir_all(kit::layout::Layout::new(&self.ctx.home).swarm());
        if let Err(err) = substrate::append_event(&swarm_events(&self.ctx.home), e) {
            tracing::warn!("appending an event: {err}");
        }
        if let Some(b) = branch
            && let Ok(bd) = self.home.branch_dir(b)
            && let Err(err) = substrate::append_event(&bd.events_file(), e)
        {
            tracing::warn!("appending an event for {b}: {err}");
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        if !self.persist {
            return Ok(());
        }
        write_state(&self.ctx.home, &self.st)
    }

    fn say(&self, line: &str) {
        (self.ctx.progress)(line);
    }

    fn sandbox(&self) -> SandboxSettings {
        SandboxSettings::from(&self.gov.constitution)
    }

    fn warmup(&self) -> u32 {
        self.st.overrides.warmup.unwrap_or(self.gov.cadence.warmup)
    }

    fn main_commit(&self) -> anyhow::Result<String> {
        self.home
            .git()
            .resolve_commit("refs/heads/main")?
            .context("the repository has no main branch; fix: create it (git branch -M main) and commit")
    }

    /// The stop condition, if any, before starting another cycle.
    fn should_stop(&self) -> Option<(String, String)> {
        let c = &self.gov.cadence;
        if self.st.stalls >= c.stall_limit {
            return Some((
                "stalled".into(),
                format!(
                    "{} consecutive cycles moved nothing (stall_limit {} in cadence.md): the loop cannot move the metric with what it tries",
                    self.st.stalls, c.stall_limit
                ),
            ));
        }
        if self.st.proposal_failures >= c.breaker_limit {
            return Some((
                "circuit-breaker".into(),
                format!(
                    "{} consecutive proposal failures (breaker_limit {} in cadence.md): fix the proposer before running again",
                    self.st.proposal_failures, c.breaker_limit
                ),
            ));
        }
        let max_cycles = match (c.max_cycles, self.st.max_cycles) {
            (0, 0) => 0,
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
        if max_cycles > 0 && self.st.cycles_done >= max_cycles as u64 {
            return Some(("budget-cycles".into(), format!("ran the budget of {max_cycles} cycles")));
        }
        // `wall_ms` is the time spent in cycles, across restarts, added once per cycle when it
        // ends (`finish_cycle`); this is checked between cycles, so nothing else is running.
        let spent = self.st.wall_ms;
        if c.max_wall_s > 0 && spent >= c.max_wall_s * 1000 {
            return Some((
                "budget-wall".into(),
                format!(
                    "spent {spent} ms in {} cycles, the wall-clock budget is {} s (max_wall_s in cadence.md)",
                    self.st.cycles_done, c.max_wall_s
                ),
            ));
        }
        if let Some(stop) = self.token_budget_spent() {
            return Some(stop);
        }
        None
    }

    async fn propose(&mut self, baseline: &str) -> anyhow::Result<(ProposeOutput, String)> {
        self.propose_with(baseline, self.gov.cadence.candidates, None).await
    }

    /// [`Engine::propose`] for `n` candidates, from the declared model `model` when given.
    async fn propose_with(
        &mut self,
        baseline: &str,
        n: u32,
        model: Option<String>,
    ) -> anyhow::Result<(ProposeOutput, String)> {
        // Only what the loop chooses per call: the proposer takes its settings (strategy,
        // command, endpoint, goal, context, limits) from the approved governance it loads.
        let input = ProposeInput {
            baseline: baseline.to_string(),
            n,
            history: self.st.tried.clone(),
            banned: self.st.banned.clone(),
            governance: self.gov.hashes.clone(),
            model,
        };
        let peer = self
            .peers
            .pick("proposer", "propose")
            .context("no proposer with skill `propose` is running; fix: add one to agents.toml")?;
        let task = peer.client.send(skill_message("propose", json!(input)), true).await?;
        let msg = task.status.message.clone();
        match task.status.state {
            TaskState::Completed => {
                let data = msg.as_ref().and_then(|m| m.data()).context("the proposer answered without data")?;
                let out = serde_json::from_value(Value::Object(data.clone()))
                    .context("the proposer's answer is not a ProposeOutput")?;
                Ok((out, peer.name.clone()))
            }
            other => bail!("the proposer ended {other:?}: {}", msg.map(|m| m.text()).unwrap_or_default()),
        }
    }

    /// Queue (or find) a task on a branch, hand it to an agent, wait for its final state, and
    /// return its accepted result.
    async fn run_task(
        &self,
        bd: &BranchDir,
        id: &str,
        role: &str,
        input: Value,
    ) -> anyhow::Result<(TaskFile, Option<ResultFile>)> {
        self.run_task_as(bd, id, id, role, input).await
    }

    /// [`Engine::run_task`] for a task whose id is not its skill's name (a second evaluation).
    async fn run_task_as(
        &self,
        bd: &BranchDir,
        id: &str,
        skill: &str,
        role: &str,
        input: Value,
    ) -> anyhow::Result<(TaskFile, Option<ResultFile>)> {
        let existing = substrate::read_task(bd, id).ok();
        if existing.is_none() {
            let task = TaskFile {
                version: protocol::lease::TASK_FILE_VERSION,
                id: id.to_string(),
                branch: bd.branch().to_string(),
                role: role.to_string(),
                skill: skill.to_string(),
                attempt: 1,
                max_attempts: self.gov.cadence.max_attempts,
                token: 1,
                state: TaskFileState::Queued,
                created_at: now(),
                ttl_ms: self.gov.cadence.lease_ttl_s * 1000,
                input,
                governance: self.gov.hashes.clone(),
                history: vec![],
            };
            let bd2 = bd.clone();
            tokio::task::spawn_blocking(move || substrate::queue_task(&bd2, &task)).await??;
        }
        // Hand it over A2A too (the watcher would find it anyway; both go through the lease).
        if let Some(peer) = self.peers.pick(role, skill) {
            let msg = skill_message(skill, json!({"branch": bd.branch(), "task_id": id}));
            if let Err(e) = peer.client.send(msg, false).await {
                tracing::warn!("handing {}/{id} to {}: {e}", bd.branch(), peer.name);
            }
        }
        loop {
            let bd3 = bd.clone();
            let id3 = id.to_string();
            let host = substrate::hostname();
            let t = tokio::task::spawn_blocking(move || -> anyhow::Result<TaskFile> {
                substrate::reap(&bd3, &host)?;
                Ok(substrate::read_task(&bd3, &id3)?)
            })
            .await??;
            if t.state.is_final() {
                let result = substrate::accepted_result(bd, &t);
                return Ok((t, result));
            }
            // A result file wakes us at once; the timeout is the safety net (and the pace at
            // which dead holders are noticed by this loop's own reaping).
            let _ = tokio::time::timeout(Duration::from_millis(250), self.results_changed.notified()).await;
        }
    }

    async fn execute(&self, bd: &BranchDir, c: &mut Candidate, baseline: &str) -> anyhow::Result<bool> {
        let input = ExecuteInput {
            proposal: c.proposal.clone(),
            base: baseline.to_string(),
            gates: self.gov.ethos.gates.clone(),
            gate_timeout_s: self.gov.ethos.gate_timeout_s,
            sandbox: self.sandbox(),
        };
        let (task, result) = self.run_task(bd, "execute", "executor", json!(input)).await?;
        let out: Option<ExecuteOutput> = result.as_ref().and_then(|r| serde_json::from_value(r.data.clone()).ok());
        if let Some(o) = &out {
            c.command_ms += o.command_ms;
        }
        let summary = result.as_ref().map(|r| r.summary.clone()).unwrap_or_default();
        let outcome = task_outcome(&task);
        self.emit_by(
            result.as_ref().map(|r| r.agent_id.as_str()),
            Some(bd.branch()),
            Some("execute"),
            EventKind::Executed {
                candidate: c.proposal.id.clone(),
                commit: out.as_ref().map(|o| o.commit.clone()).unwrap_or_default(),
                outcome: outcome.clone(),
                gates: out.as_ref().map(|o| o.gates.clone()).unwrap_or_default(),
            },
        );
        c.exec = out;
        match task.state {
            TaskFileState::Done => Ok(true),
            TaskFileState::InfraFailed => {
                c.verdict = Some("INFRA".into());
                c.reasons.push(format!(
                    "execute failed for infrastructure reasons after {} attempt(s): {summary}; not counted against the candidate",
                    task.attempt
                ));
                Ok(false)
            }
            _ => {
                c.verdict = Some("FAILED".into());
                c.reasons.push(format!("execute: {summary}"));
                Ok(false)
            }
        }
    }

    async fn critique(&mut self, bd: &BranchDir, c: &mut Candidate, baseline: &str) -> anyhow::Result<bool> {
        let commit = c.exec.as_ref().map(|e| e.commit.clone()).unwrap_or_default();
        let input = CritiqueInput {
            proposal: c.proposal.clone(),
            base: baseline.to_string(),
            commit,
            constitution: self.gov.constitution.clone(),
            ethos: self.gov.ethos.clone(),
            sandbox: self.sandbox(),
        };
        let (task, result) = self.run_task(bd, "critique", "critic", json!(input)).await?;
        let out: Option<CritiqueOutput> = result.as_ref().and_then(|r| serde_json::from_value(r.data.clone()).ok());
        if let Some(o) = &out {
            c.command_ms += o.command_ms;
            self.note_review(bd.branch(), c, o);
            *self.pending_usage.lock().expect("usage lock") = stage_usage(&o.calls);
        }
        let summary = result.as_ref().map(|r| r.summary.clone()).unwrap_or_default();
        self.emit_by(
            result.as_ref().map(|r| r.agent_id.as_str()),
            Some(bd.branch()),
            Some("critique"),
            EventKind::Critiqued {
                candidate: c.proposal.id.clone(),
                pass: out.as_ref().is_some_and(|o| o.pass),
                findings: out.as_ref().map(|o| o.findings.clone()).unwrap_or_default(),
                sandbox: out.as_ref().and_then(|o| o.sandbox.clone()),
            },
        );
        let pass = out.as_ref().is_some_and(|o| o.pass);
        c.critique = out;
        match task.state {
            TaskFileState::Done if pass => Ok(true),
            TaskFileState::Done | TaskFileState::Failed => {
                c.verdict = Some("REJECT".into());
                let findings: Vec<String> = c
                    .critique
                    .iter()
                    .flat_map(|o| o.findings.iter().filter(|f| f.blocks()).map(|f| f.line_for_people()))
                    .collect();
                if findings.is_empty() {
                    c.reasons.push(format!("critic: {summary}"));
                }
                c.reasons.extend(findings.into_iter().map(|f| format!("critic: {f}")));
                Ok(false)
            }
            _ => {
                c.verdict = Some("INFRA".into());
                c.reasons.push(format!(
                    "critique failed for infrastructure reasons: {summary}; not counted against the candidate"
                ));
                Ok(false)
            }
        }
    }

    /// Agents of a custom role (not one of the five built-in ones), e.g. a security reviewer or a
    /// third-party A2A agent listed by URL, review the candidate's diff over plain A2A. Their
    /// answer is recorded as evidence; an answer whose data says `{"pass": false}` blocks.
    async fn reviewers(&self, bd: &BranchDir, c: &mut Candidate, baseline: &str) -> bool {
        let reviewers: Vec<crate::peers::Peer> = self.peers.custom().into_iter().cloned().collect();
        if reviewers.is_empty() {
            return true;
        }
        let commit = c.exec.as_ref().map(|e| e.commit.clone()).unwrap_or_default();
        let diff = self.home.git().run(["diff", baseline, &commit]).unwrap_or_default();
        let diff: String = diff.chars().take(64 * 1024).collect();
        let mut pass = true;
        for r in reviewers {
            let text = format!(
                "Review this candidate change for the goal: {}\nCandidate {}: {}\nReply with your findings; to block it, answer with a data part {{\"pass\": false, \"reason\": \"...\"}}.\n\n{diff}",
                self.gov.ethos.goal, c.proposal.id, c.proposal.summary
            );
            let msg = protocol::Message::new(
                protocol::Role::User,
                kit::server::new_id(),
                vec![
                    protocol::Part::text(text),
                    protocol::Part::data(
                        json!({"candidate": c.proposal.id, "branch": c.branch, "base": baseline, "commit": commit, "files": c.proposal.files}),
                    ),
                ],
            );
            let answer = tokio::time::timeout(Duration::from_secs(300), r.client.send(msg, true)).await;
            let (state, reply, blocks) = match answer {
                Ok(Ok(task)) => {
                    let m = task.status.message.clone();
                    let data = m.as_ref().and_then(|m| m.data()).cloned().unwrap_or_default();
                    let blocks = data.get("pass").and_then(Value::as_bool) == Some(false);
                    let mut reply = m.map(|m| m.text()).unwrap_or_default();
                    if let Some(reason) = data.get("reason").and_then(Value::as_str) {
                        reply = format!("{reply} {reason}").trim().to_string();
                    }
                    (format!("{:?}", task.status.state).to_lowercase(), reply, blocks)
                }
                Ok(Err(e)) => ("unreachable".to_string(), e.to_string(), false),
                Err(_) => ("timed-out".to_string(), "no answer within 300 s".to_string(), false),
            };
            let _ = std::fs::write(bd.artifacts_dir().join(format!("review-{}.txt", r.name)), &reply);
            self.emit_by(
                Some(&r.name),
                Some(bd.branch()),
                None,
                EventKind::AdvisoryReview {
                    candidate: c.proposal.id.clone(),
                    reviewer: r.name.clone(),
                    state,
                    blocks,
                    text: reply.clone(),
                },
            );
            if blocks {
                pass = false;
                c.verdict = Some("REJECT".into());
                c.reasons.push(format!("reviewer {} ({}): {reply}", r.name, r.role));
            }
        }
        pass
    }

    fn evaluate_input(&self, baseline: &str, commit: String, resume: Vec<protocol::evaluation::Pair>) -> EvaluateInput {
        // A calibration of another pairing (ethos.md changed since) says nothing about this one.
        let calibration = self.st.calibration.clone().filter(|c| c.pairing == self.gov.ethos.pairing);
        EvaluateInput {
            base: baseline.to_string(),
            commit,
            ethos: self.gov.ethos.clone(),
            warmup: self.warmup(),
            sandbox: self.sandbox(),
            mode: EvaluateMode::Evaluate,
            // The calibrated noise sizes the first look (see `evaluator::calibration`).
            first_look: calibration.as_ref().map(|c| c.first_look),
            resume,
            calibration: calibration.map(|c| Calibration { pairs: vec![], ..c }),
        }
    }

    /// Evaluate the candidate (task `evaluate`), or measure it once more continuing its earlier
    /// rounds (task `evaluate-again`, when `resume` holds them).
    async fn evaluate(
        &mut self,
        bd: &BranchDir,
        c: &mut Candidate,
        baseline: &str,
        resume: Vec<protocol::evaluation::Pair>,
    ) -> anyhow::Result<()> {
        let commit = c.exec.as_ref().map(|e| e.commit.clone()).unwrap_or_default();
        let again = !resume.is_empty();
        let input = self.evaluate_input(baseline, commit, resume);
        let id = if again { "evaluate-again" } else { "evaluate" };
        let (task, result) = self.run_task_as(bd, id, "evaluate", "evaluator", json!(input)).await?;
        let out: Option<EvaluateOutput> = result.as_ref().and_then(|r| serde_json::from_value(r.data.clone()).ok());
        let summary = result.as_ref().map(|r| r.summary.clone()).unwrap_or_default();
        if again && !(task.state == TaskFileState::Done && out.is_some()) {
            // The first measurement stands; say why there is no second one.
            c.reasons.push(format!("the second measurement failed ({:?}): {summary}", task.state));
            return Ok(());
        }
        if again {
            c.reasons.clear();
        }
        match (&task.state, out) {
            (TaskFileState::Done, Some(o)) => {
                c.command_ms += o.command_ms;
                let rounds = o.sampling.as_ref().map(|s| s.rounds);
                self.emit_by(
                    result.as_ref().map(|r| r.agent_id.as_str()),
                    Some(bd.branch()),
                    Some(id),
                    EventKind::Evaluated {
                        candidate: c.proposal.id.clone(),
                        verdict: o.verdict.clone(),
                        reasons: o.reasons.clone(),
                        stats: json!({"stats": o.stats, "diagnosis": o.diagnosis, "runs": o.runs,
                                      "baseline_median": o.baseline_median, "candidate_median": o.candidate_median,
                                      "effect": o.effect, "rounds": rounds, "warmup": self.warmup()}),
                        outcome: o.outcome,
                        sampling: o.sampling.clone().map(Box::new),
                    },
                );
                if self.st.baseline_metric.is_none() {
                    self.st.baseline_metric = o.baseline_median;
                }
                // At most one self-adjustment per cycle: one noisy evaluation should not ratchet
                // the loop's cost up before the next one has been seen.
                if let Some(r) = &o.recommendation
                    && !self.adjusted_this_cycle
                {
                    self.apply_recommendation(r);
                }
                c.verdict = Some(o.verdict.clone());
                c.reasons.extend(o.reasons.iter().cloned());
                c.eval = Some(o);
            }
            (TaskFileState::InfraFailed, _) => {
                c.verdict = Some("INFRA".into());
                c.reasons.push(format!(
                    "evaluation failed for infrastructure reasons: {summary}; not counted against the candidate"
                ));
            }
            _ => {
                c.verdict = Some("REJECT".into());
                c.reasons.push(format!("evaluation failed: {summary}"));
            }
        }
        Ok(())
    }

    /// A candidate undecided at the cap of its first measurement is measured once more before
    /// the cycle closes (continuing its rounds, up to twice `max_rounds`), when the wall-clock
    /// budget leaves room for about as long again.
    async fn remeasure(&mut self, i: usize, cycle_started: Instant) -> anyhow::Result<()> {
        let cycle = self.st.current.clone().expect("a cycle is running");
        let mut c = cycle.candidates[i].clone();
        let undecided = c.eval.as_ref().and_then(|e| e.sampling.as_ref().map(|s| (e.outcome, s)));
        let Some((Some(Outcome::TooNoisy), sampling)) = undecided else { return Ok(()) };
        if c.remeasured || sampling.stopping != Stopping::Cap {
            return Ok(());
        }
        let sampling = sampling.clone();
        let max_wall = self.gov.cadence.max_wall_s * 1000;
        // Cycles add their time to `wall_ms` when they end: this one's so far is on top.
        let spent = self.st.wall_ms + cycle_started.elapsed().as_millis() as u64;
        let took = c.eval.as_ref().map_or(0, |e| e.command_ms);
        c.remeasured = true;
        if max_wall > 0 && spent + took > max_wall {
            let why = format!(
                "not measured again: the wall-clock budget ({} s in cadence.md) leaves {} s, the first measurement took {} s",
                self.gov.cadence.max_wall_s,
                max_wall.saturating_sub(spent) / 1000,
                took / 1000
            );
            self.say(&format!("  {}: {why}", c.branch));
            c.reasons.push(why);
            return self.update_candidate(i, &c);
        }
        self.say(&format!(
            "  {}: undecided after {} rounds; measuring it again (up to {} rounds in all)",
            c.branch, sampling.rounds, sampling.horizon
        ));
        let bd = self.home.branch_dir(&c.branch)?;
        self.evaluate(&bd, &mut c, &cycle.baseline, sampling.pairs).await?;
        self.update_candidate(i, &c)?;
        self.say(&self.candidate_line(&c));
        Ok(())
    }

    /// Measure the baseline against itself at the start of a run: the calibrated noise, recorded
    /// as an event, sizes the first look of every evaluation. A calibration the settings cannot
    /// run (duet pairing on one CPU) stops the loop with the reason; a harness failure leaves the
    /// run uncalibrated.
    async fn calibrate(&mut self) -> anyhow::Result<()> {
        if self.st.calibration.is_some() || self.gov.ethos.calibration_rounds == 0 || self.st.stopped.is_some() {
            return Ok(());
        }
        let main = self.main_commit()?;
        let short: String = self.st.run_id.chars().take(6).collect();
        let branch = format!("r{short}-calibrate");
        let bd = self.home.branch_dir(&branch)?;
        if !bd.exists() {
            let (home, b, base) = (self.home.clone(), branch.clone(), main.clone());
            tokio::task::spawn_blocking(move || substrate::add_worktree(&home, &b, &base)).await??;
        }
        self.say(&format!(
            "calibrating: {} rounds of the baseline {} against itself ({} pairing)",
            self.gov.ethos.calibration_rounds,
            &main[..12],
            self.gov.ethos.pairing.as_str()
        ));
        let input = EvaluateInput { mode: EvaluateMode::Calibrate, ..self.evaluate_input(&main, main.clone(), vec![]) };
        let (task, result) = self.run_task_as(&bd, "calibrate", "evaluate", "evaluator", json!(input)).await?;
        let out: Option<CalibrateOutput> = result.as_ref().and_then(|r| serde_json::from_value(r.data.clone()).ok());
        let summary = result.as_ref().map(|r| r.summary.clone()).unwrap_or_default();
        let _ = bd.set_state(BranchState::Archived, Some("calibration"));
        match (task.state, out) {
            (TaskFileState::Done, Some(o)) => {
                self.say(&format!(
                    "  calibrated: {}; first look at round {}",
                    o.calibration.describe(),
                    o.calibration.first_look
                ));
                self.emit_by(
                    result.as_ref().map(|r| r.agent_id.as_str()),
                    Some(&branch),
                    Some("calibrate"),
                    EventKind::Calibrated { calibration: o.calibration.clone() },
                );
                self.st.calibration = Some(o.calibration);
                self.save()
            }
            (TaskFileState::Failed, _) => self.stop("calibration-failed", &summary),
            _ => {
                self.say(&format!("  calibration failed ({summary}); evaluating without it"));
                Ok(())
            }
        }
    }

    /// Apply an evaluator recommendation to the loop's own operational settings, with an audit
    /// record. Governance documents are never touched.
    fn apply_recommendation(&mut self, r: &protocol::work::Recommendation) {
        let (current, slot) = match r.setting.as_str() {
            "cadence.warmup" => (self.warmup(), &mut self.st.overrides.warmup),
            _ => return,
        };
        let to = r.to.clamp(1, 25);
        if to <= current {
            return;
        }
        *slot = Some(to);
        self.adjusted_this_cycle = true;
        self.emit(
            None,
            None,
            EventKind::SettingAdjusted {
                setting: r.setting.clone(),
                from: json!(current),
                to: json!(to),
                reason: r.reason.clone(),
            },
        );
        self.say(&format!("  adjusted {} {current} -> {to}: {}", r.setting, r.reason));
    }

    /// Run candidate `i` of the current cycle through the stages it has not finished.
    async fn run_candidate(&mut self, i: usize) -> anyhow::Result<()> {
        let cycle = self.st.current.clone().expect("a cycle is running");
        let mut c = cycle.candidates[i].clone();
        let bd = self.home.branch_dir(&c.branch)?;
        // Made when proposed; here only for a loop state written before that was so.
        self.make_branch(&c.branch, &cycle.baseline, &c.proposal).await?;
        if c.stage == "executing" {
            let t = Instant::now();
            let ok = self.execute(&bd, &mut c, &cycle.baseline).await?;
            self.add_stage_ms("execute", t.elapsed().as_millis() as u64);
            c.stage = if ok { "critiquing" } else { "decided" }.into();
            self.update_candidate(i, &c)?;
        }
        if c.stage == "critiquing" {
            let t = Instant::now();
            let mut ok = self.critique(&bd, &mut c, &cycle.baseline).await?;
            if ok {
                ok = self.reviewers(&bd, &mut c, &cycle.baseline).await;
            }
            self.add_stage_ms("critique", t.elapsed().as_millis() as u64);
            c.stage = if ok { "evaluating" } else { "decided" }.into();
            self.update_candidate(i, &c)?;
        }
        if c.stage == "evaluating" {
            let t = Instant::now();
            self.evaluate(&bd, &mut c, &cycle.baseline, vec![]).await?;
            self.add_stage_ms("evaluate", t.elapsed().as_millis() as u64);
            c.stage = "decided".into();
            self.update_candidate(i, &c)?;
        }
        self.say(&self.candidate_line(&c));
        Ok(())
    }

    fn candidate_line(&self, c: &Candidate) -> String {
        let verdict = c.verdict.clone().unwrap_or_default();
        match &c.eval {
            Some(e) => format!(
                "  {:<8} {} [{}] {}{}",
                verdict,
                c.branch,
                c.proposal.approach_key(),
                fmt_effect(e.baseline_median, e.candidate_median, e.effect),
                e.sampling
                    .as_ref()
                    .map(|s| format!(
                        " ({} {} rounds: {})",
                        s.rounds,
                        s.pairing.as_str(),
                        e.outcome.map_or("-", |o| o.as_str())
                    ))
                    .unwrap_or_default()
            ),
            None => format!(
                "  {:<8} {} [{}] {}",
                verdict,
                c.branch,
                c.proposal.approach_key(),
                c.reasons.first().cloned().unwrap_or_default()
            ),
        }
    }

    /// Create the branch's directory, event log and checkout at `base` (unless a run before a
    /// crash already did) and record the proposal in its artefacts.
    async fn make_branch(&self, branch: &str, base: &str, proposal: &Proposal) -> anyhow::Result<()> {
        let bd = self.home.branch_dir(branch)?;
        if bd.exists() {
            return Ok(());
        }
        let (home, b, base) = (self.home.clone(), branch.to_string(), base.to_string());
        tokio::task::spawn_blocking(move || substrate::add_worktree(&home, &b, &base)).await??;
        let proposal = serde_json::to_vec_pretty(proposal)?;
        std::fs::create_dir_all(bd.artifacts_dir())?;
        std::fs::write(bd.artifacts_dir().join("proposal.json"), proposal)?;
        Ok(())
    }

    fn update_candidate(&mut self, i: usize, c: &Candidate) -> anyhow::Result<()> {
        if let Some(cur) = self.st.current.as_mut() {
            cur.candidates[i] = c.clone();
        }
        self.save()
    }

    /// Promote the best PROMOTE candidate; mark the others.
    async fn decide(&mut self) -> anyhow::Result<Option<PromotionRecord>> {
        let cycle = self.st.current.clone().expect("a cycle is running");
        let mut winners: Vec<&Candidate> =
            cycle.candidates.iter().filter(|c| c.verdict.as_deref() == Some("PROMOTE")).collect();
        winners.sort_by(|a, b| {
            let ea = a.eval.as_ref().and_then(|e| e.effect).unwrap_or(0.0);
            let eb = b.eval.as_ref().and_then(|e| e.effect).unwrap_or(0.0);
            eb.partial_cmp(&ea).unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut promoted = None;
        if let Some(w) = winners.first() {
            w.exec.as_ref().context("a PROMOTE candidate without a commit")?;
            if self.gov.cadence.promotion == PromotionMode::Approval {
                self.say(&format!(
                    "  {} waits for a human: promotion = \"approval\" in cadence.md; run `ratchet approve {}`",
                    w.branch, w.branch
                ));
                self.emit(
                    Some(&w.branch),
                    None,
                    EventKind::PromotionRefused {
                        candidate: w.proposal.id.clone(),
                        reason: "awaiting human approval (cadence.md promotion = \"approval\")".into(),
                    },
                );
            } else {
                let announce = self.event_about(None, Some(&w.branch), None, placeholder());
                let (home, cy, cand) = (self.home.clone(), cycle.clone(), (*w).clone());
                let (outcome, rec) =
                    tokio::task::spawn_blocking(move || record_promotion(&home, &cy, &cand, announce)).await??;
                match outcome {
                    PromoteOutcome::Promoted { to, .. } => {
                        let rec = rec.expect("a promotion has its record");
                        self.say(&format!(
                            "  PROMOTED {} -> main at {} ({})",
                            w.branch,
                            &to[..12],
                            fmt_effect(rec.before, rec.after, w.eval.as_ref().and_then(|e| e.effect))
                        ));
                        promoted = Some(rec);
                    }
                    PromoteOutcome::Stale { main_now } => {
                        self.say(&format!(
                            "  {} is stale: main moved to {}; it will be re-proposed on the new baseline",
                            w.branch,
                            &main_now[..12]
                        ));
                    }
                    PromoteOutcome::Held { reason } => {
                        self.say(&format!("  promotion of {} held: {reason}", w.branch));
                        self.emit(
                            Some(&w.branch),
                            None,
                            EventKind::PromotionRefused { candidate: w.proposal.id.clone(), reason },
                        );
                    }
                }
            }
        }
        // Mark every other candidate; unpromoted commits stay reachable (gc archives them).
        for c in &cycle.candidates {
            if promoted.as_ref().is_some_and(|p| p.branch == c.branch) {
                continue;
            }
            if let Ok(bd) = self.home.branch_dir(&c.branch)
                && bd.exists()
                && bd.read_meta().ok().flatten().is_some_and(|m| m.state == BranchState::Active)
            {
                let note = format!("{}: {}", c.verdict.clone().unwrap_or_default(), c.reasons.join("; "));
                let bd2 = bd.clone();
                tokio::task::spawn_blocking(move || bd2.set_state(BranchState::Rejected, Some(&note))).await??;
            }
        }
        Ok(promoted)
    }

    async fn cycle(&mut self) -> anyhow::Result<()> {
        // Resume the cycle in flight, or start a new one.
        let main = self.main_commit()?;
        if let Some(cur) = &self.st.current
            && cur.baseline != main
            && cur.phase != "done"
        {
            // main moved under us (a human, or a promotion already made before a crash).
            let promoted_here = cur
                .candidates
                .iter()
                .find(|c| c.exec.as_ref().is_some_and(|e| e.commit == main) && c.verdict.as_deref() == Some("PROMOTE"));
            if promoted_here.is_none() {
                self.say(&format!(
                    "cycle {}: main moved to {}; dropping its candidates (stale)",
                    cur.cycle,
                    &main[..12]
                ));
                for c in cur.candidates.clone() {
                    self.emit(
                        Some(&c.branch),
                        None,
                        EventKind::CandidateDropped {
                            candidate: c.proposal.id.clone(),
                            reason: "main moved; stale".into(),
                        },
                    );
                    if let Ok(bd) = self.home.branch_dir(&c.branch)
                        && bd.exists()
                    {
                        let _ = bd.set_state(BranchState::Stale, Some("main moved during the cycle"));
                    }
                }
                // The dropped cycle keeps its number: the next one is a new cycle, with new
                // branches made on the new baseline (never the stale ones' directories).
                self.emit(None, None, EventKind::CycleEnded { promoted: None, metric: None });
                let mut dropped = self.st.current.take().expect("checked above");
                dropped.phase = "dropped".into();
                for c in dropped.candidates.iter_mut().filter(|c| c.verdict.is_none()) {
                    c.reasons.push(format!("dropped: main moved to {} during the cycle (stale)", &main[..12]));
                }
                self.st.cycles_done = self.st.cycles_done.max(dropped.cycle);
                self.st.finished.push(dropped);
                self.save()?;
            }
        }
        if self.st.current.is_none() {
            let cycle = self.st.cycles_done + 1;
            self.st.current = Some(CycleState::new(cycle, main.clone(), "proposing"));
            self.emit(None, None, EventKind::CycleStarted { baseline: main.clone() });
            self.say(&format!("cycle {cycle}: baseline {}", &main[..12]));
            self.save()?;
        }
        let t0 = Instant::now();
        self.adjusted_this_cycle = false;
        let cur = self.st.current.clone().expect("set above");
        if cur.phase == "proposing" {
            let tp = Instant::now();
            let answer = self.propose(&cur.baseline).await;
            self.add_stage_ms("propose", tp.elapsed().as_millis() as u64);
            if let Ok((out, _)) = &answer {
                self.record_calls(None, &out.calls.clone());
                if out.proposals.is_empty() {
                    // The failure's event carries what the failed calls cost.
                    *self.pending_usage.lock().expect("usage lock") = stage_usage(&out.calls);
                }
            }
            match answer {
                Ok((out, _)) if out.proposals.is_empty() && out.exhausted => {
                    self.finish_cycle(t0, None)?;
                    self.stop("exhausted", "the proposer has nothing left to try in its search space")?;
                    return Ok(());
                }
                Ok((out, _)) if out.proposals.is_empty() => {
                    let why = out.failure.unwrap_or_else(|| "the proposer returned no candidates".into());
                    self.proposal_failed(&why, t0)?;
                    return Ok(());
                }
                Ok((out, proposer)) => {
                    self.st.proposal_failures = 0;
                    let short: String = self.st.run_id.chars().take(6).collect();
                    let current = self.st.current.as_mut().expect("cycle");
                    current.candidates.clear();
                    current.propose_ms = out.command_ms;
                    for (i, p) in out.proposals.into_iter().enumerate() {
                        let branch = format!("r{short}-c{}-{}", cur.cycle, i + 1);
                        protocol::names::check_branch(&branch)?;
                        // The branch (its directory, event log and checkout) is made when it is
                        // named, so its log starts with the `proposed` event.
                        self.make_branch(&branch, &cur.baseline, &p).await?;
                        let models = self.models_of(&p);
                        self.st.current.as_mut().expect("cycle").candidates.push(Candidate {
                            branch: branch.clone(),
                            proposal: p.clone(),
                            stage: "executing".into(),
                            exec: None,
                            critique: None,
                            eval: None,
                            verdict: None,
                            reasons: vec![],
                            command_ms: 0,
                            models,
                            remeasured: false,
                        });
                        self.emit_by(
                            Some(&proposer),
                            Some(&branch),
                            None,
                            EventKind::Proposed {
                                candidate: p.id.clone(),
                                strategy: p.strategy.clone(),
                                summary: p.summary.clone(),
                                files: p.files.clone(),
                                params: p.params.clone(),
                            },
                        );
                        self.say(&format!("  proposed {branch}: {}", p.summary));
                    }
                    let c = self.st.current.as_mut().expect("cycle");
                    c.phase = "running".into();
                    self.save()?;
                }
                Err(e) => {
                    self.proposal_failed(&format!("{e:#}"), t0)?;
                    return Ok(());
                }
            }
        }
        let n = self.st.current.as_ref().map_or(0, |c| c.candidates.len());
        for i in 0..n {
            self.run_candidate(i).await?;
        }
        // The loop acts on "undecided": measured once more, after the cycle's other candidates.
        for i in 0..n {
            self.remeasure(i, t0).await?;
        }
        let promoted = self.decide().await?;
        self.finish_cycle(t0, promoted)?;
        Ok(())
    }

    fn proposal_failed(&mut self, why: &str, t0: Instant) -> anyhow::Result<()> {
        self.st.proposal_failures += 1;
        self.emit(None, None, EventKind::ProposalFailed { reason: why.to_string() });
        self.say(&format!("  proposal failed ({} in a row): {why}", self.st.proposal_failures));
        self.finish_cycle(t0, None)
    }

    fn finish_cycle(&mut self, t0: Instant, promoted: Option<PromotionRecord>) -> anyhow::Result<()> {
        let mut cur = self.st.current.take().expect("a cycle is running");
        cur.phase = "done".into();
        cur.wall_ms += t0.elapsed().as_millis() as u64;
        self.st.wall_ms += t0.elapsed().as_millis() as u64;
        self.st.cycles_done = cur.cycle;
        for c in &cur.candidates {
            let v = c.verdict.clone().unwrap_or_default();
            if v == "INFRA" {
                continue; // the harness's fault: may be tried again
            }
            let recorded = if promoted.as_ref().is_some_and(|p| p.branch == c.branch) {
                "PROMOTED".to_string()
            } else {
                v.clone()
            };
            self.st.tried.push(Tried {
                key: c.proposal.approach_key(),
                verdict: recorded,
                effect: c.eval.as_ref().and_then(|e| e.effect),
                cycle: cur.cycle,
            });
            if v == "REJECT" || v == "FAILED" {
                self.st.banned.push(c.proposal.approach_key());
            }
        }
        let metric = promoted.as_ref().and_then(|p| p.after);
        if let Some(p) = &promoted {
            self.st.promotions.push(p.clone());
            self.st.stalls = 0;
        } else if !cur.candidates.is_empty() {
            self.st.stalls += 1;
        }
        self.emit(None, None, EventKind::CycleEnded { promoted: promoted.as_ref().map(|p| p.commit.clone()), metric });
        self.st.finished.push(cur);
        self.save()
    }

    fn stop(&mut self, reason: &str, detail: &str) -> anyhow::Result<()> {
        self.st.stopped = Some(StopRecord { reason: reason.into(), detail: detail.into(), at: now() });
        let total = model_summary(&self.st, &self.gov).tokens;
        *self.pending_usage.lock().expect("usage lock") = (!total.is_empty()).then_some(total);
        self.emit(None, None, EventKind::LoopStopped { reason: reason.into(), detail: detail.into() });
        self.say(&format!("stopped: {reason}: {detail}"));
        self.save()
    }
}

fn task_outcome(t: &TaskFile) -> String {
    match t.state {
        TaskFileState::Done => "success",
        TaskFileState::Failed => "candidate-failure",
        TaskFileState::InfraFailed => "infra-failure",
        TaskFileState::Canceled => "canceled",
        TaskFileState::Queued => "queued",
    }
    .into()
}

fn fmt_effect(before: Option<f64>, after: Option<f64>, effect: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => match effect.unwrap_or(0.0) {
            e if e < 0.0 => format!("{b:.3} -> {a:.3} ({:.1}% worse)", -e * 100.0),
            e => format!("{b:.3} -> {a:.3} ({:+.1}% better)", e * 100.0),
        },
        _ => String::new(),
    }
}

fn approvals_dir(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).approvals_dir()
}

/// An event whose kind its recorder fills in.
fn placeholder() -> EventKind {
    EventKind::Promoted {
        candidate: String::new(),
        commit: String::new(),
        from: String::new(),
        before: None,
        after: None,
    }
}

/// Promote `cand`, a candidate of `cycle`, the one way both the loop and `ratchet approve
/// <branch>` do: the substrate's serialized compare-and-swap fast-forward of `main`, announced
/// once by a `promoted` event made from `announce` (run, agent, cycle, governance, models) with
/// the promotion's commits and metric. Returns the substrate's outcome and, when main moved (or
/// had, before a crash), the record of the promotion.
pub fn record_promotion(
    home: &Home,
    cycle: &CycleState,
    cand: &Candidate,
    announce: Event,
) -> anyhow::Result<(PromoteOutcome, Option<PromotionRecord>)> {
    let commit = cand.exec.as_ref().map(|e| e.commit.clone()).context("the candidate has no commit")?;
    let e = cand.eval.as_ref();
    let (before, after) = (e.and_then(|e| e.baseline_median), e.and_then(|e| e.candidate_median));
    let governance = announce.governance.clone();
    let candidate = cand.proposal.id.clone();
    let outcome = substrate::promote(home, &cand.branch, &commit, &cycle.baseline, |from, to| {
        let mut ev = announce;
        ev.kind = EventKind::Promoted { candidate, commit: to.into(), from: from.into(), before, after };
        ev
    })?;
    let rec = match &outcome {
        PromoteOutcome::Promoted { from, to } => Some(PromotionRecord {
            cycle: cycle.cycle,
            branch: cand.branch.clone(),
            commit: to.clone(),
            from: from.clone(),
            before,
            after,
            governance,
            models: cand.models.clone(),
        }),
        _ => None,
    };
    Ok((outcome, rec))
}

/// Promotions a person approved (`ratchet approve <branch>`, cadence promotion = "approval").
pub fn approved_promotions(home: &Path) -> Vec<PromotionRecord> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(approvals_dir(home)) {
        for e in rd.flatten() {
            if let Some(r) = std::fs::read_to_string(e.path()).ok().and_then(|t| serde_json::from_str(&t).ok()) {
                out.push(r);
            }
        }
    }
    out.sort_by_key(|a: &PromotionRecord| a.cycle);
    out
}

/// `ratchet approve <branch>`: a person approves the promotion of a candidate that the
/// evaluator judged PROMOTE while cadence.md says promotion needs approval. The promotion goes
/// through the same serialized compare-and-swap fast-forward as the loop's own.
pub fn approve_promotion(home_path: &Path, branch: &str, by: &str) -> anyhow::Result<PromotionRecord> {
    protocol::names::check_branch(branch)?;
    let st = read_state(home_path)?.context("no loop has run here (no worktrees/.swarm/loop.json)")?;
    let (cycle, cand) = st
        .finished
        .iter()
        .flat_map(|cy| cy.candidates.iter().map(move |c| (cy, c)))
        .find(|(_, c)| c.branch == branch)
        .with_context(|| {
            format!("no finished candidate named {branch}; see `ratchet inspect` or worktrees/.swarm/loop.json")
        })?;
    if cand.verdict.as_deref() != Some("PROMOTE") {
        bail!(
            "{branch} was judged {}, not PROMOTE: only a promotable candidate can be approved",
            cand.verdict.clone().unwrap_or_default()
        );
    }
    let gov = crate::govern::load(home_path)?;
    let home = Home::open(home_path)?.with_run_id(st.run_id.clone());
    let mut announce = Event::new(st.run_id.clone(), placeholder());
    announce.cycle = Some(cycle.cycle);
    announce.agent = Some(format!("human:{by}"));
    announce.governance = gov.hashes.clone();
    announce.models = cand.models.clone();
    match record_promotion(&home, cycle, cand, announce)? {
        (PromoteOutcome::Promoted { .. }, Some(rec)) => {
            let dir = approvals_dir(home_path);
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{branch}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec_pretty(&rec)?)?;
            std::fs::rename(&tmp, dir.join(format!("{branch}.json")))?;
            Ok(rec)
        }
        (PromoteOutcome::Promoted { .. }, None) => unreachable!("record_promotion records every promotion"),
        (PromoteOutcome::Stale { main_now }, _) => bail!(
            "{branch} is stale: main moved to {} since its baseline {}; it must be re-based and re-evaluated",
            &main_now[..12],
            &cycle.baseline[..12]
        ),
        (PromoteOutcome::Held { reason }, _) => bail!("promotion of {branch} held: {reason}"),
    }
}

/// Summary of a finished (or stopped) run, as `ratchet demo --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub repo: String,
    pub run_id: String,
    pub cycles: u64,
    pub promoted: Vec<Value>,
    pub rejected: Vec<Value>,
    pub held: Vec<Value>,
    pub metric: Value,
    pub stop_reason: Option<String>,
    pub stop_detail: Option<String>,
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

/// The rounds an evaluation used and what it concluded, for the summary's items.
fn evaluation_brief(c: &Candidate) -> Value {
    let e = c.eval.as_ref();
    json!({
        "rounds": e.and_then(|e| e.sampling.as_ref()).map(|s| s.rounds),
        "pairing": e.and_then(|e| e.sampling.as_ref()).map(|s| s.pairing),
        "outcome": e.and_then(|e| e.outcome),
        "remeasured": c.remeasured,
    })
}

pub fn summarize(home: &Path, st: &LoopState, gov: &Governance) -> Summary {
    let mut rejected = vec![];
    let mut held = vec![];
    let mut command_ms = 0;
    for cy in &st.finished {
        command_ms += cy.propose_ms;
        for c in &cy.candidates {
            command_ms += c.command_ms;
            let v = c.verdict.clone().unwrap_or_default();
            let mut item = json!({"cycle": cy.cycle, "branch": c.branch, "approach": c.proposal.approach_key(), "verdict": v, "reasons": c.reasons,
                              "effect": c.eval.as_ref().and_then(|e| e.effect), "models": c.models});
            if let (Value::Object(m), Value::Object(b)) = (&mut item, evaluation_brief(c)) {
                m.extend(b);
            }
            match v.as_str() {
                "REJECT" | "FAILED" => rejected.push(item),
                "HOLD" | "INFRA" => held.push(item),
                _ => {}
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
    let promoted: Vec<Value> = promotions
        .iter()
        .map(|p| {
            let approach = candidate(&p.branch).map(|c| c.proposal.approach_key());
            let verdict = candidate(&p.branch).and_then(|c| c.verdict.clone());
            let mut item = json!({"cycle": p.cycle, "branch": p.branch, "approach": approach, "verdict": verdict,
                                  "commit": p.commit, "before": p.before, "after": p.after, "models": p.models});
            if let (Value::Object(m), Some(Value::Object(b))) = (&mut item, candidate(&p.branch).map(evaluation_brief))
            {
                m.extend(b);
            }
            item
        })
        .collect();
    let final_metric = promotions.last().and_then(|p| p.after).or(st.baseline_metric);
    // The harness is everything but the target's own commands and the models' answers.
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
        metric: json!({"name": gov.ethos.metric, "direction": gov.ethos.direction, "baseline": st.baseline_metric, "final": final_metric}),
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

/// Run the loop to its end (or resume it). Returns the summary.
pub async fn run_loop(ctx: LoopCtx) -> anyhow::Result<Summary> {
    let home = Home::open(&ctx.home)?.with_run_id(ctx.run_id.clone());
    let gov = crate::govern::load(&ctx.home)?;
    models::guard(&gov)?;
    let previous = read_state(&ctx.home)?;
    let mut st = match previous {
        Some(st) if st.stopped.is_none() && !ctx.fresh => st,
        _ => LoopState::new(ctx.run_id.clone()),
    };
    // A budget given now applies; a resume without one keeps the run's own.
    if ctx.max_cycles > 0 {
        st.max_cycles = ctx.max_cycles;
    }
    let layout = kit::layout::Layout::new(&ctx.home);
    let peers = Peers::discover(&layout, &ctx.me).await;
    let results_changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let wake = results_changed.clone();
    let watcher =
        substrate::TaskWatcher::for_dirs(home.worktrees_dir(), &["results", "leases"], move || wake.notify_one())
            .map_err(|e| tracing::warn!("watching results failed ({e}); polling instead"))
            .ok();
    let mut eng = Engine {
        results_changed,
        _results_watcher: watcher,
        adjusted_this_cycle: false,
        ctx,
        home,
        st,
        gov,
        peers,
        pending_usage: Default::default(),
        persist: true,
    };
    eng.save()?;
    eng.calibrate().await?;
    if eng.st.stopped.is_some() {
        return Ok(summarize(&eng.ctx.home, &eng.st, &eng.gov));
    }
    loop {
        // Governance may change between cycles (an approval): reload it each time.
        match crate::govern::load(&eng.ctx.home).and_then(|g| models::guard(&g).map(|()| g)) {
            Ok(g) => {
                let switched = crate::govern::switched(&eng.gov, &g);
                eng.gov = g;
                for (doc, from, to) in switched {
                    eng.say(&format!("governance: now under the approved {doc} {}", &to[..12]));
                    eng.emit(None, None, EventKind::GovernanceSwitched { doc, from, to });
                }
            }
            Err(e) => tracing::warn!("keeping the governance in force: {e:#}"),
        }
        if eng.st.current.is_none() {
            if let Some((reason, detail)) = eng.should_stop() {
                eng.stop(&reason, &detail)?;
                break;
            }
            // Peers may have changed (agents.toml edits): rediscover between cycles.
            eng.peers = Peers::discover(&layout, &eng.ctx.me).await;
        }
        eng.cycle().await?;
        // Agents propose, never impose: repeated critic findings become proposals for a person.
        for p in crate::govern::distil(&eng.ctx.home, &eng.st.finished, &eng.gov) {
            eng.say(&format!("governance: proposed {} ({}); apply with `ratchet approve {}`", p.doc, p.summary, p.id));
            let evidence = json!(p.evidence);
            eng.emit(None, None, EventKind::GovernanceProposed { id: p.id, doc: p.doc, summary: p.summary, evidence });
        }
        if eng.st.stopped.is_some() {
            break;
        }
    }
    Ok(summarize(&eng.ctx.home, &eng.st, &eng.gov))
}
