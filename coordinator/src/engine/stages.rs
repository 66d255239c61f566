//! The loop's stages as the coordinator runs them: asking the proposer over A2A, and for each
//! candidate the leased `execute`, `critique` and `evaluate` tasks (queued as files, handed over
//! A2A too, their accepted results read back), the custom-role reviewers, and the evaluator's
//! recommendation applied within bounds. Each records its typed event and the candidate's verdict
//! and reasons.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kit::client::skill_message;
use kit::substrate::{self, BranchDir, BranchState};
use protocol::TaskState;
use protocol::evaluation::{Calibration, Outcome, Stopping};
use protocol::events::{EvaluatedStats, EventKind};
use protocol::lease::{ResultFile, TaskFile, TaskFileState};
use protocol::work::{
    CalibrateOutput, CritiqueInput, CritiqueOutput, EvaluateInput, EvaluateMode, EvaluateOutput, ExecuteInput,
    ExecuteOutput, ProposeInput, ProposeOutput, ReviewerReply, Verdict,
};
use serde_json::{Value, json};

use super::models::stage_usage;
use super::{Candidate, Engine};

impl Engine {
    pub(super) async fn propose(&mut self, baseline: &str) -> anyhow::Result<(ProposeOutput, String)> {
        self.propose_with(baseline, self.gov.cadence.candidates, None).await
    }

    /// [`Engine::propose`] for `n` candidates, from the declared model `model` when given.
    pub(super) async fn propose_with(
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
            metric: self.current_metric(),
            start_metric: self.st.baseline_metric,
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
    pub(super) async fn run_task(
        &self,
        bd: &BranchDir,
        id: &str,
        role: &str,
        input: Value,
    ) -> anyhow::Result<(TaskFile, Option<ResultFile>)> {
        self.run_task_as(bd, id, id, role, input).await
    }

    /// [`Engine::run_task`] for a task whose id is not its skill's name (a second evaluation).
    pub(super) async fn run_task_as(
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
                max_attempts: self.gov.cadence.max_attempts,
                ttl_ms: self.gov.cadence.lease_ttl_s * 1000,
                governance: self.gov.hashes.clone(),
                ..TaskFile::queued(bd.branch(), id, role, skill, input)
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
        let mut shown = None;
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
            // Where a long gate or evaluation is: said when it moves on.
            if let Some(p) = kit::worker::read_progress(&bd.artifacts_dir().join(id))
                && shown.as_ref().is_none_or(|s: &protocol::work::StageProgress| (&s.step, s.done) != (&p.step, p.done))
            {
                self.say(&format!("    {} {id}: {}", bd.branch(), crate::verdict::progress_words(&p)));
                shown = Some(p);
            }
            // A result file wakes us at once; the timeout is the safety net (and the pace at
            // which dead holders are noticed by this loop's own reaping).
            let _ = tokio::time::timeout(Duration::from_millis(250), self.results_changed.notified()).await;
        }
    }

    pub(super) async fn execute(&self, bd: &BranchDir, c: &mut Candidate, baseline: &str) -> anyhow::Result<bool> {
        let input = ExecuteInput {
            proposal: c.proposal.clone(),
            base: baseline.to_string(),
            gates: self.gov.ethos.gates.clone(),
            gate_timeout_s: self.gov.ethos.gate_timeout_s,
            sandbox: self.sandbox(),
            trusted_tests: self.gov.ethos.trusted_tests.clone(),
            test_command: if self.gov.ethos.trusted_tests.is_empty() {
                String::new()
            } else {
                self.gov.ethos.test_command.clone()
            },
        };
        let (task, result) = self.run_task(bd, "execute", "executor", json!(input)).await?;
        let out: Option<ExecuteOutput> = result.as_ref().and_then(|r| serde_json::from_value(r.data.clone()).ok());
        if let Some(o) = &out {
            c.command_ms += o.command_ms;
        }
        let summary = result.as_ref().map(|r| r.summary.clone()).unwrap_or_default();
        let outcome = task.state.end();
        self.emit_by(
            result.as_ref().map(|r| r.agent_id.as_str()),
            Some(bd.branch()),
            Some("execute"),
            EventKind::Executed {
                candidate: c.proposal.id.clone(),
                commit: out.as_ref().map(|o| o.commit.clone()).unwrap_or_default(),
                outcome,
                gates: out.as_ref().map(|o| o.gates.clone()).unwrap_or_default(),
                trusted: out.as_ref().and_then(|o| o.trusted.clone()),
            },
        );
        c.exec = out;
        match task.state {
            TaskFileState::Done => Ok(true),
            TaskFileState::InfraFailed => {
                c.verdict = Some(Verdict::Infra);
                c.reasons.push(format!(
                    "execute failed for infrastructure reasons after {} attempt(s): {summary}; not counted against the candidate",
                    task.attempt
                ));
                Ok(false)
            }
            _ => {
                c.verdict = Some(Verdict::Failed);
                c.reasons.push(format!("execute: {summary}"));
                Ok(false)
            }
        }
    }

    pub(super) async fn critique(&mut self, bd: &BranchDir, c: &mut Candidate, baseline: &str) -> anyhow::Result<bool> {
        let commit = c.exec.as_ref().map(|e| e.commit.clone()).unwrap_or_default();
        let rails_only = rails_only(c);
        let input = CritiqueInput {
            proposal: c.proposal.clone(),
            base: baseline.to_string(),
            commit,
            constitution: self.gov.constitution.clone(),
            ethos: self.gov.ethos.clone(),
            sandbox: self.sandbox(),
            rails_only,
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
        if let Some(o) = &out {
            self.note_tampering(bd.branch(), c, o);
        }
        let pass = out.as_ref().is_some_and(|o| o.pass);
        c.critique = out;
        if rails_only {
            self.record_rails_after_failure(c, &task, &summary);
            return Ok(false);
        }
        match task.state {
            TaskFileState::Done if pass => Ok(true),
            TaskFileState::Done | TaskFileState::Failed => {
                c.verdict = Some(Verdict::Reject);
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
                c.verdict = Some(Verdict::Infra);
                c.reasons.push(format!(
                    "critique failed for infrastructure reasons: {summary}; not counted against the candidate"
                ));
                Ok(false)
            }
        }
    }

    /// The static rails' findings on a candidate that failed its gates, added to its record
    /// (its verdict stays FAILED; a rails run that could not finish is said so, never counted).
    fn record_rails_after_failure(&self, c: &mut Candidate, task: &TaskFile, summary: &str) {
        match task.state {
            TaskFileState::Done | TaskFileState::Failed => {
                let findings: Vec<String> = c
                    .critique
                    .iter()
                    .flat_map(|o| o.findings.iter().filter(|f| f.blocks()).map(|f| f.line_for_people()))
                    .collect();
                c.reasons.extend(findings.into_iter().map(|f| format!("critic: {f}")));
            }
            _ => c.reasons.push(format!(
                "critic: the static rails could not run after the failed gate (infrastructure): {summary}"
            )),
        }
    }

    /// A `tampering_detected` event for every finding about a protected (or append-only) path:
    /// which path, which class (governance, benchmark, CI, tests), which rail, where.
    fn note_tampering(&self, branch: &str, c: &Candidate, out: &CritiqueOutput) {
        for f in &out.findings {
            let (Some(class), Some(path)) = (f.class, &f.file) else { continue };
            self.emit(
                Some(branch),
                Some("critique"),
                EventKind::TamperingDetected {
                    candidate: c.proposal.id.clone(),
                    rail: f.rail.clone(),
                    path: path.clone(),
                    line: f.line,
                    class,
                    message: f.message.clone(),
                },
            );
        }
    }

    /// Agents of a custom role (not one of the five built-in ones), e.g. a security reviewer or a
    /// third-party A2A agent listed by URL, review the candidate's diff over plain A2A. Their
    /// answer is recorded as evidence; an answer whose data says `{"pass": false}` blocks.
    pub(super) async fn reviewers(&self, bd: &BranchDir, c: &mut Candidate, baseline: &str) -> bool {
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
                    let answer = m.as_ref().and_then(|m| m.data()).map(ReviewerReply::from_data).unwrap_or_default();
                    let blocks = answer.blocks();
                    let mut reply = m.map(|m| m.text()).unwrap_or_default();
                    if let Some(reason) = &answer.reason {
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
                c.verdict = Some(Verdict::Reject);
                c.reasons.push(format!("reviewer {} ({}): {reply}", r.name, r.role));
            }
        }
        pass
    }

    pub(super) fn evaluate_input(
        &self,
        baseline: &str,
        commit: String,
        resume: Vec<protocol::evaluation::Pair>,
    ) -> EvaluateInput {
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
    pub(super) async fn evaluate(
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
                        verdict: o.verdict,
                        reasons: o.reasons.clone(),
                        stats: Box::new(EvaluatedStats {
                            baseline_median: o.baseline_median,
                            candidate_median: o.candidate_median,
                            diagnosis: o.diagnosis.clone(),
                            effect: o.effect,
                            rounds,
                            runs: o.runs.clone(),
                            stats: o.stats.clone(),
                            warmup: Some(self.warmup()),
                        }),
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
                c.verdict = Some(o.verdict);
                c.reasons.extend(o.reasons.iter().cloned());
                c.eval = Some(o);
            }
            (TaskFileState::InfraFailed, _) => {
                c.verdict = Some(Verdict::Infra);
                c.reasons.push(format!(
                    "evaluation failed for infrastructure reasons: {summary}; not counted against the candidate"
                ));
            }
            _ => {
                c.verdict = Some(Verdict::Reject);
                c.reasons.push(format!("evaluation failed: {summary}"));
            }
        }
        Ok(())
    }

    /// A candidate undecided at the cap of its first measurement is measured once more before
    /// the cycle closes (continuing its rounds, up to twice `max_rounds`), when the wall-clock
    /// budget leaves room for about as long again.
    pub(super) async fn remeasure(&mut self, i: usize, cycle_started: Instant) -> anyhow::Result<()> {
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
        self.emit_decided(&c);
        self.say(&self.candidate_line(&c));
        Ok(())
    }

    /// Measure the baseline against itself at the start of a run: the calibrated noise, recorded
    /// as an event, sizes the first look of every evaluation. A calibration the settings cannot
    /// run (duet pairing on one CPU) stops the loop with the reason; a harness failure leaves the
    /// run uncalibrated.
    pub(super) async fn calibrate(&mut self) -> anyhow::Result<()> {
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
}

/// A candidate that failed its gates after it was committed gets the static rails only.
pub(super) fn rails_only(c: &Candidate) -> bool {
    c.verdict == Some(Verdict::Failed) && c.exec.as_ref().is_some_and(|e| !e.commit.is_empty())
}
