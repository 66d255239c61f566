//! The improvement loop: propose, execute, critique, evaluate, promote or revert, cycle after
//! cycle, until the loop cannot move the metric (stall), the proposer keeps failing (circuit
//! breaker), the proposer has nothing left, or the budget runs out.
//!
//! Everything needed to resume is in files: `worktrees/.swarm/loop.json` (the loop's own state,
//! written temp + rename after every step), the task and result files of each candidate branch,
//! and git refs. A restarted coordinator continues the cycle it was in: finished tasks are read
//! back, in-flight ones are re-run by the lease substrate, and a promotion that already happened
//! is recognised (main already at the candidate), never applied twice.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use kit::substrate::{self, BranchState, Home};
use protocol::events::{Event, EventKind};
use protocol::governance::Governance;
use protocol::work::{Proposal, SandboxSettings, Verdict};
use serde_json::json;

use crate::peers::Peers;

mod approval;
mod compare;
mod decide;
mod history;
mod models;
mod settings;
mod stages;
mod summary;
pub use crate::loop_state::{
    Candidate, CycleState, LOOP_STATE_VERSION, LoopState, Overrides, Phase, PromotionRecord, Stage, StopRecord,
    loop_state_path, read_state,
};
use crate::loop_state::{now, write_state};
pub use compare::{CompareReport, CompareRequest, SideReport, compare_run};
pub use decide::{approve_promotion, approved_promotions, record_promotion};
use models::stage_usage;
pub use models::{ModelSummary, StageSummary, model_summary};
pub use summary::{CandidateItem, MetricSummary, PromotedItem, Summary, summarize};

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

fn swarm_events(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).events_file()
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
    /// An engine on `st`, with the peers running now and a watcher on the branches' results;
    /// `persist`: whether `st` is the loop's own (saved to loop.json).
    async fn start(ctx: LoopCtx, home: Home, gov: Governance, st: LoopState, persist: bool) -> Engine {
        let peers = Peers::discover(&kit::layout::Layout::new(&ctx.home), &ctx.me).await;
        let results_changed = std::sync::Arc::new(tokio::sync::Notify::new());
        let wake = results_changed.clone();
        let watcher =
            substrate::TaskWatcher::for_dirs(home.worktrees_dir(), &["results", "leases"], move || wake.notify_one())
                .map_err(|e| tracing::warn!("watching results failed ({e}); polling instead"))
                .ok();
        Engine {
            results_changed,
            _results_watcher: watcher,
            adjusted_this_cycle: false,
            ctx,
            home,
            st,
            gov,
            peers,
            pending_usage: Default::default(),
            persist,
        }
    }

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
        self.st.stop_condition(&self.gov.cadence).or_else(|| self.token_budget_spent())
    }

    /// Run candidate `i` of the current cycle through the stages it has not finished.
    async fn run_candidate(&mut self, i: usize) -> anyhow::Result<()> {
        let cycle = self.st.current.clone().expect("a cycle is running");
        let mut c = cycle.candidates[i].clone();
        let bd = self.home.branch_dir(&c.branch)?;
        let decided_before = c.stage == Stage::Decided;
        // Made when proposed; here only for a loop state written before that was so.
        self.make_branch(&c.branch, &cycle.baseline, &c.proposal).await?;
        if c.stage == Stage::Executing {
            let t = Instant::now();
            let ok = self.execute(&bd, &mut c, &cycle.baseline).await?;
            self.add_stage_ms("execute", t.elapsed().as_millis() as u64);
            // Every rail, every time: a candidate that failed its gates still meets the static
            // rails (no execution), so its record lists every rail it broke.
            c.stage = if ok || stages::rails_only(&c) { Stage::Critiquing } else { Stage::Decided };
            self.update_candidate(i, &c)?;
        }
        if c.stage == Stage::Critiquing {
            let t = Instant::now();
            let mut ok = self.critique(&bd, &mut c, &cycle.baseline).await?;
            if ok && !stages::rails_only(&c) {
                ok = self.reviewers(&bd, &mut c, &cycle.baseline).await;
            }
            self.add_stage_ms("critique", t.elapsed().as_millis() as u64);
            c.stage = if ok { Stage::Evaluating } else { Stage::Decided };
            self.update_candidate(i, &c)?;
        }
        if c.stage == Stage::Evaluating {
            let t = Instant::now();
            self.evaluate(&bd, &mut c, &cycle.baseline, vec![]).await?;
            self.add_stage_ms("evaluate", t.elapsed().as_millis() as u64);
            c.stage = Stage::Decided;
            self.update_candidate(i, &c)?;
        }
        if !decided_before {
            self.emit_decided(&c);
        }
        self.say(&self.candidate_line(&c));
        Ok(())
    }

    /// The loop's decision on a candidate, with every reason it recorded.
    fn emit_decided(&self, c: &Candidate) {
        // Every path to a decided stage sets the verdict; an undecided one has nothing to say.
        let Some(verdict) = c.verdict else {
            tracing::warn!("{}: no verdict at its decision; no candidate_decided event", c.branch);
            return;
        };
        self.emit(
            Some(&c.branch),
            None,
            EventKind::CandidateDecided { candidate: c.proposal.id.clone(), verdict, reasons: c.reasons.clone() },
        );
    }

    /// The candidate's verdict line, as every place shows it (`crate::verdict`).
    fn candidate_line(&self, c: &Candidate) -> String {
        format!("  {}", crate::verdict::line(c, &self.gov.ethos.metric))
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

    async fn cycle(&mut self) -> anyhow::Result<()> {
        // Resume the cycle in flight, or start a new one.
        let main = self.main_commit()?;
        if let Some(cur) = &self.st.current
            && cur.baseline != main
            && cur.phase != Phase::Done
        {
            // main moved under us (a human, or a promotion already made before a crash).
            let promoted_here = cur
                .candidates
                .iter()
                .find(|c| c.exec.as_ref().is_some_and(|e| e.commit == main) && c.verdict == Some(Verdict::Promote));
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
                dropped.phase = Phase::Dropped;
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
            self.st.current = Some(CycleState::new(cycle, main.clone(), Phase::Proposing));
            self.emit(None, None, EventKind::CycleStarted { baseline: main.clone() });
            self.say(&format!("cycle {cycle}: baseline {}", &main[..12]));
            self.save()?;
        }
        let t0 = Instant::now();
        self.adjusted_this_cycle = false;
        let cur = self.st.current.clone().expect("set above");
        if cur.phase == Phase::Proposing {
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
                    self.record_dropped(cur.cycle, &out.dropped);
                    let why = out.failure.unwrap_or_else(|| "the proposer returned no candidates".into());
                    self.proposal_failed(&why, t0)?;
                    return Ok(());
                }
                Ok((out, proposer)) => {
                    self.st.proposal_failures = 0;
                    self.record_dropped(cur.cycle, &out.dropped);
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
                        let candidate = Candidate::new(branch.clone(), p.clone(), models);
                        self.st.current.as_mut().expect("cycle").candidates.push(candidate);
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
                                declaration: p.declaration.clone(),
                            },
                        );
                        self.say(&format!("  proposed {branch}: {}", p.summary));
                    }
                    let c = self.st.current.as_mut().expect("cycle");
                    c.phase = Phase::Running;
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
        let cur = self.st.current.take().expect("a cycle is running");
        let metric = promoted.as_ref().and_then(|p| p.after);
        // A promotion waiting for a person is not a stall: the loop moved the metric.
        let waiting = promoted.is_none() && self.waits_for_approval(&cur);
        self.emit(None, None, EventKind::CycleEnded { promoted: promoted.as_ref().map(|p| p.commit.clone()), metric });
        self.st.close_cycle(cur, promoted, waiting, t0.elapsed().as_millis() as u64);
        self.save()
    }

    fn stop(&mut self, reason: &str, detail: &str) -> anyhow::Result<()> {
        let detail = &format!("{detail}{}", self.waiting_note());
        self.st.stopped = Some(StopRecord { reason: reason.into(), detail: detail.into(), at: now() });
        let total = model_summary(&self.st, &self.gov).tokens;
        *self.pending_usage.lock().expect("usage lock") = (!total.is_empty()).then_some(total);
        self.emit(None, None, EventKind::LoopStopped { reason: reason.into(), detail: detail.into() });
        self.say(&format!("stopped: {reason}: {detail}"));
        self.save()
    }
}

fn fmt_effect(before: Option<f64>, after: Option<f64>, effect: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!(
            "{} -> {} ({})",
            crate::verdict::num(b),
            crate::verdict::num(a),
            crate::verdict::effect_words(effect.unwrap_or(0.0))
        ),
        _ => String::new(),
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
    let mut eng = Engine::start(ctx, home, gov, st, true).await;
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
            eng.absorb_decisions();
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
