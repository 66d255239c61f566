//! The evaluator's leased `evaluate` skill: run the benchmark on baseline and candidate in paired
//! rounds (one after the other in a random order, or both at once on two CPUs in duet mode),
//! always from the baseline's (trusted) copy of the benchmark, until the sequential test decides
//! or the cap is reached; and its calibrate mode (the baseline against itself).
//!
//! - The baseline runs in a checkout of the baseline commit shared by every candidate of that
//!   baseline (`worktrees/.swarm/baselines/<commit>`).
//! - The candidate runs in a checkout of its commit (`worktrees/.swarm/candidate`, reused and reset
//!   for each evaluation, keeping ignored build output so its build is incremental) in which every
//!   file matching `ethos.benchmark_paths` is replaced by the baseline's version (and files the
//!   candidate added there are removed): a candidate that edits the benchmark cannot grade itself.
//! - Benchmarks of the whole machine are serialized by `worktrees/.swarm/bench.lock`, so two
//!   evaluators never time each other.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kit::counters::Counter;
use kit::exec::{RunOutcome, RunSpec};
use kit::git::Git;
use kit::worker::{WorkCtx, WorkResult};
use protocol::evaluation::{Cpus, Outcome, Side};
use protocol::governance::{Measure, Pairing, SandboxMode};
use protocol::work::{
    CalibrateOutput, CommandResult, CommandRun, EvaluateInput, EvaluateMode, EvaluateOutput, PROGRESS_VERSION,
    StageProgress,
};
use serde_json::{Value, json};

use crate::session::{Plan, RoundPlan, RoundResult, RunResult, Session, order_seed};
use crate::{evaluate, parse_metrics};

fn infra(e: impl std::fmt::Display) -> String {
    format!("{e}")
}

/// A new detached checkout of `commit` at `dir` (anything left there is removed first).
fn checkout(repo: &Git, dir: &Path, commit: &str) -> Result<(), String> {
    let d = dir.to_string_lossy().to_string();
    if dir.exists() {
        let _ = repo.run(["worktree", "remove", "--force", "--force", &d]);
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = repo.run(["worktree", "prune"]);
    // Forced twice: a `git worktree add` killed midway leaves its registration locked
    // ("initializing"), which one --force does not override.
    repo.run(["worktree", "add", "--detach", "--force", "--force", &d, commit]).map_err(infra)?;
    Ok(())
}

/// The candidate's checkout, reused from one evaluation to the next: switched to `commit` with
/// every tracked file reset and untracked files removed, while ignored build output (`target/`)
/// stays, so the benchmark's own build is incremental.
fn reset_checkout(repo: &Git, dir: &Path, commit: &str) -> Result<(), String> {
    if dir.join(".git").exists() {
        let g = Git::new(dir);
        if g.run(["checkout", "-q", "--detach", "--force", commit]).is_ok() && g.run(["clean", "-q", "-fd"]).is_ok() {
            return Ok(());
        }
        let d = dir.to_string_lossy().to_string();
        let _ = repo.run(["worktree", "remove", "--force", "--force", &d]);
        let _ = std::fs::remove_dir_all(dir);
    }
    checkout(repo, dir, commit)
}

/// Make every benchmark path in `dir` the baseline's version: files the candidate changed are
/// checked out from the baseline, files it added there are removed.
fn restore_benchmark(dir: &Path, base: &str, patterns: &[String]) -> Result<Vec<String>, String> {
    use protocol::governance::glob_match;
    let git = Git::new(dir);
    let matches = |f: &&str| patterns.iter().any(|p| glob_match(p, f));
    // Usually the candidate did not touch the benchmark (the critic blocks that): one diff says so.
    let changed = git.run(["diff", "--name-only", base, "HEAD"]).map_err(infra)?;
    if !changed.lines().any(|f| matches(&f)) {
        return Ok(vec![]);
    }
    let ours = git.run(["ls-files"]).map_err(infra)?;
    let theirs = git.run(["ls-tree", "-r", "--name-only", base]).map_err(infra)?;
    let theirs: Vec<&str> = theirs.lines().filter(|l| !l.is_empty()).filter(matches).collect();
    let mut restored = vec![];
    for f in ours.lines().filter(|l| !l.is_empty()).filter(matches).filter(|f| !theirs.contains(f)) {
        std::fs::remove_file(dir.join(f)).map_err(|e| format!("removing {f}: {e}"))?;
        restored.push(format!("-{f}"));
    }
    if !theirs.is_empty() {
        let mut args = vec!["checkout", base, "--"];
        args.extend(theirs.iter().copied());
        git.run(args).map_err(infra)?;
        restored.extend(theirs.iter().map(|f| f.to_string()));
    }
    Ok(restored)
}

/// Why a measurement could not be made.
#[derive(Debug, Clone, PartialEq)]
pub enum MeasureError {
    /// The harness's fault (checkouts, the lock, a lost lease, a baseline that never runs):
    /// retried, never counted against the candidate.
    Infra(String),
    /// The settings cannot work here (duet pairing on one CPU): says what to change.
    Config(String),
}

impl std::fmt::Display for MeasureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeasureError::Infra(m) | MeasureError::Config(m) => f.write_str(m),
        }
    }
}

/// What a measurement produced.
#[derive(Debug, Clone)]
pub enum Measured {
    Evaluated { output: Box<EvaluateOutput>, artefact: Value },
    Calibrated(CalibrateOutput),
}

/// The two CPUs duet pairing pins the sides to (the last two this process may use), or why
/// there are none.
pub fn duet_cpus() -> Result<(u32, u32), MeasureError> {
    let cpus = kit::exec::available_cpus();
    match cpus.as_slice() {
        [.., a, b] => Ok((*a as u32, *b as u32)),
        _ => Err(MeasureError::Config(format!(
            "pairing = \"duet\" needs two CPUs, but the evaluator may run on {} ({}); fix: set pairing = \"sequential\" in ethos.md, or give the evaluator two CPUs",
            cpus.len(),
            cpus.iter().map(|c| format!("CPU {c}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Duet pairing runs both sides at once on this machine: not on a job engine, where each side
/// would be its own job, possibly on another node (docs/multihost.md, "Duet pairing on Slurm").
pub fn duet_here(jobs: &protocol::governance::JobSettings) -> Result<(), MeasureError> {
    match jobs.engine {
        protocol::governance::JobEngine::Local => Ok(()),
        engine => Err(MeasureError::Config(format!(
            "pairing = \"duet\" runs both sides at once on one machine, but constitution.md [constitution.jobs] engine = {:?} runs each benchmark run as its own job, possibly on another node; fix: set pairing = \"sequential\" in ethos.md (with exclusive_bench = true and bench_cpu each run gets a quiet node and a pinned CPU), or engine = \"local\"",
            serde_json::to_value(engine).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
        ))),
    }
}

/// One benchmark run's result: the metric (and guards) or why it failed.
fn parse_run(out: &RunOutcome, input: &EvaluateInput) -> RunResult {
    let parsed = if out.success() {
        parse_metrics(&out.stdout, input.ethos.metric_pattern.as_deref(), &input.ethos.metric)
            .map_err(|e| e.to_string())
    } else {
        Err(out.describe())
    };
    match parsed {
        Ok(metrics) => RunResult {
            value: metrics.get(&input.ethos.metric).copied(),
            guards: input
                .ethos
                .guard
                .iter()
                .filter_map(|g| metrics.get(&g.metric).map(|v| (g.metric.clone(), *v)))
                .collect(),
            failure: None,
        },
        Err(reason) => RunResult::failed(reason),
    }
}

/// A counted run's result: the instruction count (and any guard metrics the benchmark printed;
/// its own metric is not read).
fn parse_counted(counted: &kit::counters::Counted, input: &EvaluateInput) -> RunResult {
    match &counted.count {
        Ok(count) => RunResult {
            value: Some(count.instructions as f64),
            guards: guard_metrics(&counted.outcome.stdout, input),
            failure: None,
        },
        Err(why) if counted.outcome.success() => RunResult::failed(why.clone()),
        Err(_) => RunResult::failed(counted.outcome.describe()),
    }
}

/// The guard metrics a run printed (none when it printed no JSON line).
fn guard_metrics(stdout: &str, input: &EvaluateInput) -> std::collections::BTreeMap<String, f64> {
    let Some(first) = input.ethos.guard.first() else { return Default::default() };
    let metrics = crate::parse_metrics(stdout, None, &first.metric).unwrap_or_default();
    input.ethos.guard.iter().filter_map(|g| metrics.get(&g.metric).map(|v| (g.metric.clone(), *v))).collect()
}

/// A native run's wall time in milliseconds (the wall-time guard's value).
fn parse_wall(out: &RunOutcome) -> RunResult {
    if out.success() { RunResult::ok(out.duration.as_secs_f64() * 1000.0) } else { RunResult::failed(out.describe()) }
}

/// What a run's value is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// The metric the benchmark prints.
    Metric,
    /// The instructions it executes, counted by this tool.
    Counts(Counter),
    /// Its wall time, run natively (the wall-time guard).
    WallTime,
}

/// Runs the rounds of a session, with evidence of every command.
struct Bench<'a> {
    input: &'a EvaluateInput,
    /// The swarm's repository (hidden from the benchmark by the sandbox).
    root: PathBuf,
    dirs: [PathBuf; 2],
    logs: [PathBuf; 2],
    mode: SandboxMode,
    evidence: Vec<CommandRun>,
    /// Wall-clock milliseconds spent in benchmark commands (a duet round counts once).
    command_ms: u64,
    reading: Reading,
}

impl Bench<'_> {
    fn spec(&self, side: Side, cpu: Option<u32>) -> RunSpec {
        let i = side as usize;
        let mut spec = RunSpec::new(self.input.ethos.benchmark.clone(), self.dirs[i].clone())
            .with_timeout(Duration::from_secs(self.input.ethos.bench_timeout_s))
            .with_sandbox(self.mode)
            .with_network(self.input.sandbox.allow_network)
            .with_repository(&self.root)
            .with_weak_sandbox_allowed(self.input.sandbox.allow_weak)
            .with_jobs(&self.input.sandbox.jobs, true)
            .with_log(self.logs[i].clone());
        if self.input.sandbox.memory_mb > 0 {
            spec = spec.with_memory_limit(self.input.sandbox.memory_mb * 1024 * 1024);
        }
        if let Some(c) = cpu {
            spec = spec.with_cpus(vec![c as usize]);
        }
        // Instruction counts and the wall time that guards them measure the same program: with
        // its hash seeds fixed.
        if self.input.ethos.measure == Measure::Instructions {
            spec = kit::counters::deterministic(spec);
        }
        spec
    }

    /// Run one side's command and read its value.
    async fn run(&self, spec: &RunSpec) -> (RunOutcome, RunResult) {
        match self.reading {
            Reading::Metric => {
                let out = kit::exec::run(spec).await;
                let r = parse_run(&out, self.input);
                (out, r)
            }
            Reading::Counts(counter) => {
                let counted = kit::counters::run_counted(spec, counter).await;
                let r = parse_counted(&counted, self.input);
                (counted.outcome, r)
            }
            Reading::WallTime => {
                let out = kit::exec::run(spec).await;
                let r = parse_wall(&out);
                (out, r)
            }
        }
    }

    fn record(
        &mut self,
        plan: &RoundPlan,
        slot: Option<(usize, Cpus)>,
        side: Side,
        out: &RunOutcome,
        result: &RunResult,
    ) {
        let position = match slot {
            Some((i, cpus)) => {
                format!("slot {}, cpu {}", i + 1, if side == Side::Baseline { cpus.baseline } else { cpus.candidate })
            }
            None if plan.first == side => "first".into(),
            None => "second".into(),
        };
        let how = match self.reading {
            Reading::Metric => String::new(),
            Reading::Counts(c) => format!(" under {c}"),
            Reading::WallTime => " (wall-time guard)".into(),
        };
        self.evidence.push(CommandRun {
            command: format!(
                "{}round {} {} ({position}){how}",
                if plan.warmup { "warmup " } else { "" },
                plan.round,
                side.as_str()
            ),
            result: match (&result.failure, out.is_infra_failure()) {
                (None, _) => CommandResult::Ok,
                (Some(_), true) => CommandResult::Infra,
                (Some(_), false) => CommandResult::Failed,
            },
            detail: match (&result.failure, result.value) {
                (Some(why), _) => why.clone(),
                (None, Some(v)) => {
                    let mut m: std::collections::BTreeMap<String, Value> =
                        result.guards.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    let name = match self.reading {
                        Reading::Metric => self.input.ethos.metric.clone(),
                        Reading::Counts(_) => crate::counts::NAME.into(),
                        Reading::WallTime => crate::counts::WALL_TIME.into(),
                    };
                    m.insert(name, if matches!(self.reading, Reading::Counts(_)) { json!(v as u64) } else { json!(v) });
                    json!(m).to_string()
                }
                (None, None) => String::new(),
            },
            duration_ms: out.duration.as_millis() as u64,
            log: Some(
                self.logs[side as usize].file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
            ),
            sandbox: Some(out.sandbox_used()),
            job: out.job.clone(),
        });
    }

    /// The wall-time session of `plan` run to its end, natively, pinned to `cpus` in duet: the
    /// rounds beside instruction counts (a calibration's wall-time spread, the guard after a
    /// counted PROMOTE). `None` when the lease was lost.
    async fn wall_time(
        &mut self,
        mut plan: Plan,
        cpus: Option<(u32, u32)>,
        lease_lost: &impl Fn() -> bool,
    ) -> Option<Session> {
        if let Some((a, b)) = cpus {
            plan = plan.with_cpus(a, b);
        }
        let mut wall = Session::new(plan);
        self.reading = Reading::WallTime;
        while let Some(p) = wall.next() {
            if lease_lost() {
                return None;
            }
            let r = self.round(&p).await;
            wall.record(p, r);
        }
        Some(wall)
    }

    /// One round: sequential (first, then second), or duet (two slots of simultaneous runs, each
    /// side pinned to its CPU, the CPUs swapped between the slots).
    async fn round(&mut self, plan: &RoundPlan) -> RoundResult {
        let started = Instant::now();
        let result = match plan.slots() {
            Some(slots) => {
                let mut halves = Vec::with_capacity(2);
                let mut started = [None; 2];
                let starts = plan.slot_starts().expect("a duet round has CPUs");
                for (i, cpus) in slots.into_iter().enumerate() {
                    let (sb, sc) = (
                        self.spec(Side::Baseline, Some(cpus.baseline)),
                        self.spec(Side::Candidate, Some(cpus.candidate)),
                    );
                    // `join!` polls in order: the side named first is started first.
                    let ((b, rb), (c, rc)) = if starts[i] == Side::Baseline {
                        tokio::join!(self.run(&sb), self.run(&sc))
                    } else {
                        let (c, b) = tokio::join!(self.run(&sc), self.run(&sb));
                        (b, c)
                    };
                    // The evidence of the order is when each process was spawned, not the plan.
                    started[i] = match (b.spawned, c.spawned) {
                        (Some(tb), Some(tc)) => Some(if tb <= tc { Side::Baseline } else { Side::Candidate }),
                        _ => None,
                    };
                    self.record(plan, Some((i, cpus)), Side::Baseline, &b, &rb);
                    self.record(plan, Some((i, cpus)), Side::Candidate, &c, &rc);
                    halves.push((rb, rc));
                }
                let second = halves.pop().expect("two slots");
                let first = halves.pop().expect("two slots");
                RoundResult::duet(plan, first, second).with_starts(started)
            }
            None => {
                let (first, r1) = self.run(&self.spec(plan.first, None)).await;
                let (second, r2) = self.run(&self.spec(plan.first.other(), None)).await;
                self.record(plan, None, plan.first, &first, &r1);
                self.record(plan, None, plan.first.other(), &second, &r2);
                if plan.first == Side::Baseline {
                    RoundResult::sequential(r1, r2)
                } else {
                    RoundResult::sequential(r2, r1)
                }
            }
        };
        self.command_ms += started.elapsed().as_millis() as u64;
        result
    }
}

/// Unregister and delete one of the evaluator's checkouts.
fn remove_checkout(repo: &Git, dir: &Path) {
    let d = dir.to_string_lossy().to_string();
    let _ = repo.run(["worktree", "remove", "--force", &d]);
    let _ = std::fs::remove_dir_all(dir);
}

/// The evaluator's housekeeping (`evaluator --gc`, run by `ratchet gc`): remove its checkouts of
/// the repository at `root` (the baselines' and the candidate's) when no benchmark runs on this
/// machine (the benchmark lock is free; held meanwhile, so none starts on a half-removed
/// checkout). Returns the checkouts removed; none while a benchmark runs.
pub fn gc(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let layout = kit::layout::Layout::new(root);
    if !layout.swarm().is_dir() {
        return Ok(vec![]);
    }
    let lock = File::options().create(true).truncate(false).write(true).open(layout.bench_lock())?;
    if lock.try_lock().is_err() {
        return Ok(vec![]);
    }
    let repo = Git::new(root);
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(layout.baselines_dir()) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e),
    };
    dirs.push(layout.candidate_checkout());
    let removed: Vec<PathBuf> = dirs.into_iter().filter(|d| d.exists()).collect();
    for d in &removed {
        remove_checkout(&repo, d);
    }
    let _ = repo.run(["worktree", "prune"]);
    Ok(removed)
}

/// Prepare the checkouts under the benchmark lock and run the rounds: the evaluator's task and
/// `evaluator --once` (`ratchet calibrate`) both come here. `artifacts` receives the logs.
pub async fn measure(
    input: &EvaluateInput,
    root: &Path,
    artifacts: &Path,
    lease_lost: impl Fn() -> bool,
) -> Result<Measured, MeasureError> {
    let infra = |e: String| MeasureError::Infra(e);
    let cpus = match input.ethos.pairing {
        Pairing::Duet => {
            duet_here(&input.sandbox.jobs)?;
            Some(duet_cpus()?)
        }
        Pairing::Sequential => None,
    };
    let layout = kit::layout::Layout::new(root);
    let base_dir = layout.baselines_dir().join(&input.base[..16.min(input.base.len())]);
    let cand_dir = layout.candidate_checkout();
    // One benchmark at a time on this machine.
    let lock_path = layout.bench_lock();
    let lock = {
        let p = lock_path.clone();
        tokio::task::spawn_blocking(move || -> Result<File, String> {
            std::fs::create_dir_all(p.parent().expect("bench.lock has a parent")).map_err(infra_text)?;
            let f = File::options().create(true).truncate(false).write(true).open(&p).map_err(infra_text)?;
            f.lock().map_err(infra_text)?;
            Ok(f)
        })
        .await
    };
    let _lock = match lock {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(infra(format!("taking {}: {e}", lock_path.display()))),
        Err(e) => return Err(infra(format!("taking the benchmark lock: {e}"))),
    };
    let prep = {
        let (root, base_dir, cand_dir, inp) = (root.to_path_buf(), base_dir.clone(), cand_dir.clone(), input.clone());
        tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
            let repo = Git::new(&root);
            let baselines = base_dir.parent().expect("baselines dir");
            std::fs::create_dir_all(baselines).map_err(infra_text)?;
            // Checkouts of older baselines are done with (we hold the benchmark lock).
            for old in std::fs::read_dir(baselines).map_err(infra_text)?.flatten() {
                if old.path() != base_dir {
                    remove_checkout(&repo, &old.path());
                }
            }
            // Both reset, never trusted as found: a kill -9 during `git worktree add` leaves a
            // checkout whose HEAD is right but whose files are half written.
            reset_checkout(&repo, &base_dir, &inp.base)?;
            reset_checkout(&repo, &cand_dir, &inp.commit)?;
            restore_benchmark(&cand_dir, &inp.base, &inp.ethos.benchmark_paths)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    let restored = prep.map_err(|e| infra(format!("preparing the benchmark checkouts: {e}")))?;
    std::fs::create_dir_all(artifacts).map_err(|e| infra(format!("creating {}: {e}", artifacts.display())))?;
    // Instruction counts: the tool that counts here, inside the benchmark's sandbox.
    let counters = match input.ethos.measure {
        Measure::Metric => None,
        Measure::Instructions => Some(kit::counters::cached(input.sandbox.sandbox, input.sandbox.allow_weak).await),
    };
    let counter = match &counters {
        None => None,
        Some(report) => Some(report.chosen.ok_or_else(|| MeasureError::Config(report.why_none()))?),
    };

    let calibrating = input.mode == EvaluateMode::Calibrate;
    let seed = order_seed(&input.base, &input.commit);
    let mut plan = if calibrating {
        Plan::calibrate(&input.ethos, seed)
    } else {
        Plan::evaluate(&input.ethos, input.first_look, !input.resume.is_empty(), seed)
    };
    if let Some((a, b)) = cpus {
        plan = plan.with_cpus(a, b);
    }
    if let Some(c) = counter {
        plan = plan.with_counter(c);
    }
    // A calibration of the other measure says nothing about this one.
    let calibration = input.calibration.clone().filter(|c| c.counter.is_some() == counter.is_some());
    let mut session = if input.resume.is_empty() { Session::new(plan) } else { Session::resume(plan, &input.resume) };
    let mut bench = Bench {
        input,
        root: root.to_path_buf(),
        dirs: [base_dir, cand_dir],
        logs: [artifacts.join("bench-baseline.log"), artifacts.join("bench-candidate.log")],
        mode: input.sandbox.sandbox,
        evidence: vec![],
        command_ms: 0,
        reading: counter.map_or(Reading::Metric, Reading::Counts),
    };
    for w in 0..input.warmup {
        if lease_lost() {
            return Err(infra("lease lost while benchmarking".into()));
        }
        let p = session.round_plan(w, true);
        let r = bench.round(&p).await;
        session.record_warmup(p, r);
    }
    let progress = |session: &Session| {
        let estimate = (!calibrating).then(|| evaluate(session, &input.ethos, None).stats.effect).flatten();
        kit::worker::write_progress(
            artifacts,
            &StageProgress {
                version: PROGRESS_VERSION,
                step: if calibrating { "calibration" } else { "round" }.into(),
                done: session.pairs.len() as u32,
                of: session.plan.cap,
                command: None,
                estimate,
                at: protocol::timestamp(std::time::SystemTime::now()),
            },
        );
    };
    progress(&session);
    while let Some(p) = session.next() {
        if lease_lost() {
            return Err(infra("lease lost while benchmarking".into()));
        }
        let r = bench.round(&p).await;
        session.record(p, r);
        progress(&session);
    }
    // A benchmark that cannot run at all on the trusted baseline is the harness's problem.
    if session.pairs.iter().all(|p| p.baseline.is_none()) {
        let why = session.failures.iter().rev().find(|f| f.side == Side::Baseline).map(|f| f.reason.clone());
        return Err(infra(format!("the benchmark fails on the baseline itself: {}", why.unwrap_or_default())));
    }
    if calibrating {
        let calibration = crate::calibration::calibration(
            &session,
            &input.ethos,
            &input.base,
            protocol::timestamp(std::time::SystemTime::now()),
        );
        // Instruction counts: the slowdown under the counter and the wall time's own spread,
        // from as many native A/A rounds of the same baseline, so a user can choose the mode.
        let counting = match counters {
            Some(counters) => {
                let counted = bench.evidence.len();
                let metric = protocol::governance::Ethos {
                    measure: Measure::Metric,
                    direction: protocol::governance::Direction::Lower,
                    calibration_rounds: session.pairs.len() as u32,
                    ..input.ethos.clone()
                };
                let plan = Plan::calibrate(&metric, seed.rotate_left(17) ^ 0x5741_4C4C);
                let Some(wall) = bench.wall_time(plan, cpus, &lease_lost).await else {
                    return Err(infra("lease lost while benchmarking".into()));
                };
                let ms = |runs: &[CommandRun]| {
                    let xs: Vec<f64> = runs
                        .iter()
                        .filter(|r| r.result == CommandResult::Ok && !r.command.starts_with("warmup"))
                        .map(|r| r.duration_ms as f64)
                        .collect();
                    crate::stats::median(&xs).map(|m| m.round() as u64)
                };
                let at = protocol::timestamp(std::time::SystemTime::now());
                let wall_cal = crate::calibration::calibration(&wall, &metric, &input.base, at);
                Some(protocol::evaluation::Counting {
                    counters,
                    counted_ms: ms(&bench.evidence[..counted]),
                    native_ms: ms(&bench.evidence[counted..]),
                    wall_spread: wall_cal.spread,
                })
            }
            None => None,
        };
        return Ok(Measured::Calibrated(CalibrateOutput {
            calibration,
            runs: bench.evidence,
            command_ms: bench.command_ms,
            counting,
        }));
    }
    let mut ev = evaluate(&session, &input.ethos, calibration);
    // An instruction-count PROMOTE must not be slower in wall time (ethos.md guard_wall_time).
    if ev.outcome == Outcome::Better && counter.is_some() && input.ethos.guard_wall_time {
        let plan = Plan::wall_time(&input.ethos, seed.rotate_left(17) ^ 0x5741_4C4C); // "WALL"
        let Some(wall) = bench.wall_time(plan, cpus, &lease_lost).await else {
            return Err(infra("lease lost while benchmarking".into()));
        };
        let judged = evaluate(&wall, &crate::counts::wall_time_ethos(&input.ethos), None);
        ev = crate::counts::with_wall_time(ev, judged, &input.ethos);
    }
    let recommendation = ev.diagnosis.recommendation.clone();
    let output = EvaluateOutput {
        verdict: ev.outcome.into(),
        outcome: Some(ev.outcome),
        reasons: ev.reasons.clone(),
        baseline_median: ev.stats.baseline.median,
        candidate_median: ev.stats.candidate.median,
        effect: ev.stats.effect,
        sampling: Some(ev.sampling.clone()),
        calibration: None,
        stats: Some(ev.stats.clone()),
        diagnosis: Some(ev.diagnosis.clone()),
        recommendation,
        runs: bench.evidence,
        command_ms: bench.command_ms,
    };
    let mut artefact = json!(ev);
    artefact["restored_benchmark_files"] = json!(restored);
    Ok(Measured::Evaluated { output: Box::new(output), artefact })
}

fn infra_text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The HOLD an evaluation answers when its settings cannot work here (nothing was measured).
fn config_hold(why: &str) -> EvaluateOutput {
    EvaluateOutput {
        verdict: Outcome::Unmeasurable.into(),
        outcome: Some(Outcome::Unmeasurable),
        reasons: vec![format!("HOLD: not measurable: {why}")],
        baseline_median: None,
        candidate_median: None,
        effect: None,
        sampling: None,
        calibration: None,
        stats: None,
        diagnosis: None,
        recommendation: None,
        runs: vec![],
        command_ms: 0,
    }
}

pub async fn evaluate_task(ctx: WorkCtx) -> WorkResult {
    let input: EvaluateInput = match serde_json::from_value(ctx.task.input.clone()) {
        Ok(i) => i,
        Err(e) => {
            return WorkResult::candidate_failure(format!("task input is not an evaluate request: {e}"), json!({}));
        }
    };
    let root = ctx.home.root().to_path_buf();
    let measured = measure(&input, &root, &ctx.artifacts, || ctx.lease_lost()).await;
    match (measured, input.mode) {
        (Ok(Measured::Evaluated { output, artefact }), _) => {
            if let Err(e) =
                ctx.write_artifact("evaluation.json", &serde_json::to_vec_pretty(&artefact).unwrap_or_default())
            {
                tracing::warn!("writing evaluation.json: {e:#}");
            }
            let headline = output.reasons.first().cloned().unwrap_or_else(|| output.verdict.to_string());
            WorkResult::success(headline, json!(output))
        }
        (Ok(Measured::Calibrated(out)), _) => {
            let summary = format!("calibrated: {}", out.calibration.describe());
            if let Err(e) =
                ctx.write_artifact("calibration.json", &serde_json::to_vec_pretty(&out.calibration).unwrap_or_default())
            {
                tracing::warn!("writing calibration.json: {e:#}");
            }
            WorkResult::success(summary, json!(out))
        }
        (Err(MeasureError::Config(why)), EvaluateMode::Evaluate) => {
            let out = config_hold(&why);
            WorkResult::success(out.reasons[0].clone(), json!(out))
        }
        (Err(MeasureError::Config(why)), EvaluateMode::Calibrate) => WorkResult::candidate_failure(why, json!({})),
        (Err(MeasureError::Infra(why)), _) => WorkResult::infra_failure(why, json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        kit::git::Git::new(dir).without_user_config().with_identity("t", "t@t").run(args).expect("git")
    }

    /// A candidate that edits the benchmark is still measured with the baseline's benchmark:
    /// changed files come back, added ones go, the code under test stays the candidate's.
    #[test]
    fn the_candidate_runs_the_baselines_benchmark() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(repo.join("bench")).unwrap();
        std::fs::write(repo.join("bench/bench.sh"), "echo '{\"ms\": 100}'\n").unwrap();
        std::fs::write(repo.join("code.txt"), "slow\n").unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "base"]);
        let base = git(repo, &["rev-parse", "HEAD"]);
        std::fs::write(repo.join("bench/bench.sh"), "echo '{\"ms\": 1}'\n").unwrap();
        std::fs::write(repo.join("bench/extra.sh"), "cheat\n").unwrap();
        std::fs::write(repo.join("code.txt"), "fast\n").unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "candidate edits the benchmark"]);
        let cand = git(repo, &["rev-parse", "HEAD"]);
        let dir = repo.join("worktrees").join("candidate");
        reset_checkout(&Git::new(repo), &dir, &cand).unwrap();
        let restored = restore_benchmark(&dir, &base, &["bench/**".to_string()]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("bench/bench.sh")).unwrap(), "echo '{\"ms\": 100}'\n");
        assert!(!dir.join("bench/extra.sh").exists(), "a file the candidate added to the benchmark is removed");
        assert_eq!(std::fs::read_to_string(dir.join("code.txt")).unwrap(), "fast\n", "the code is the candidate's");
        assert!(restored.contains(&"-bench/extra.sh".to_string()) && restored.contains(&"bench/bench.sh".to_string()));
        // Reused for the next evaluation: reset to another commit with nothing left over.
        reset_checkout(&Git::new(repo), &dir, &base).unwrap();
        assert!(!dir.join("bench/extra.sh").exists());
        assert_eq!(std::fs::read_to_string(dir.join("code.txt")).unwrap(), "slow\n");
        assert!(restore_benchmark(&dir, &base, &["bench/**".to_string()]).unwrap().is_empty());
    }

    /// A kill -9 during `git worktree add` leaves a checkout whose HEAD names the right commit but
    /// whose files are missing, or whose `.git` points nowhere: both are rebuilt, never reused.
    #[test]
    fn a_half_made_checkout_is_repaired_not_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        git(repo, &["init", "-q"]);
        std::fs::write(repo.join("code.txt"), "slow\n").unwrap();
        std::fs::write(repo.join("bench.sh"), "echo 1\n").unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "base"]);
        let base = git(repo, &["rev-parse", "HEAD"]);
        let dir = repo.join("worktrees").join("baseline");
        reset_checkout(&Git::new(repo), &dir, &base).unwrap();
        // Files not yet written when the checkout was killed.
        std::fs::remove_file(dir.join("bench.sh")).unwrap();
        reset_checkout(&Git::new(repo), &dir, &base).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("bench.sh")).unwrap(), "echo 1\n");
        // A `.git` file whose administrative directory was never made.
        std::fs::write(dir.join(".git"), "gitdir: /nonexistent/worktrees/baseline\n").unwrap();
        std::fs::remove_file(dir.join("code.txt")).unwrap();
        reset_checkout(&Git::new(repo), &dir, &base).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("code.txt")).unwrap(), "slow\n");
        assert_eq!(Git::new(&dir).run(["rev-parse", "HEAD"]).unwrap(), base);
        // Killed before the directory was filled: the registration stays locked ("initializing")
        // and the directory is missing.
        git(repo, &["worktree", "lock", "--reason", "initializing", &dir.to_string_lossy()]);
        std::fs::remove_dir_all(&dir).unwrap();
        reset_checkout(&Git::new(repo), &dir, &base).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("code.txt")).unwrap(), "slow\n");
    }
}
