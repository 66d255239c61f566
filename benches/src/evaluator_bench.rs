//! `evaluator-bench`: how well the evaluator decides on a noisy machine (issue 10). Not a test:
//! it prints markdown tables and writes them into BENCHMARKS.md's "## Evaluator decisions on a
//! noisy machine (issue 10)" section with the command and the date.
//!
//! Three designs, side by side, with the same gates (confidence 0.95, min_effect 3%, one warmup
//! round):
//! - **old**: the evaluator before issue 10: 7 fixed rounds, baseline then candidate, each side
//!   taken as an independent sample (Mann-Whitney U, robust CV <= 10% per side, min 5 samples);
//! - **sequential**: paired rounds in a random order, the sequential sign/signed-rank test,
//!   5 to 30 rounds (and a re-measurement up to 60), the first look sized by a calibration;
//! - **duet**: the same with both sides at once, pinned to two CPUs, swapped within each round.
//!
//! Part 1, simulated: the seeded noise model of this project's machines
//! (`evaluator::noise::NoiseParams::MACHINE`) and a quiet machine, 200 seeds per cell, through
//! the production decision code (`evaluator::sim`): false promotions on A/A, power by effect,
//! rounds, benchmark runs and wall-time slots per decision.
//!
//! Part 2, real: a Python CPU-bound benchmark (about 0.1 s a run) in a scratch git repository,
//! measured by the evaluator's own `measure` (the code its task runs: checkouts, sandboxed runs,
//! CPU pinning, the decision), while a busy loop holds one CPU: A/A and a +30% candidate, several
//! trials per design.
//!
//! Reproduce: `cargo build --release -p ratchet-bench && target/release/evaluator-bench`
//! Options: `--seeds N` (200), `--trials N` (4), `--no-real`, `--no-write` (print only).
//!
//! `--aa-study N`: only the real A/A trials of the two current designs, N each, written to their
//! own section ("## Evaluator: real A/A study"): the false-decision rate measured on this machine,
//! with its exact (Clopper-Pearson) 95% interval, against the 5% the design allows per side.
//! Each real evaluation's whole output (rounds, order, every run) is kept in
//! `target/evaluator-bench/` for a look at any decision afterwards.

mod legacy;

use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};
use evaluator::noise::{Machine, NoiseParams};
use evaluator::sim::as_the_loop_does;
use evaluator::work::{Measured, measure};
use protocol::evaluation::Outcome;
use protocol::governance::{Direction, Ethos, Pairing};
use protocol::work::{CalibrateOutput, EvaluateInput, EvaluateMode, SandboxSettings};
use ratchet_bench::report::{loadavg, write_section};
use ratchet_bench::scratch;

const SECTION: &str = "## Evaluator decisions on a noisy machine (issue 10)";
const AA_SECTION: &str = "## Evaluator: real A/A study";
const REPRODUCE: &str = "cargo build --release -p ratchet-bench && target/release/evaluator-bench";
const MIN_EFFECT: f64 = 0.03;
const WARMUP: u32 = 1;
const OLD_ROUNDS: u32 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    Old,
    Sequential,
    Duet,
}

impl Design {
    const ALL: [Design; 3] = [Design::Old, Design::Sequential, Design::Duet];

    fn name(self) -> &'static str {
        match self {
            Design::Old => "old: 7 fixed rounds, unpaired",
            Design::Sequential => "sequential pairing",
            Design::Duet => "duet pairing",
        }
    }
}

fn ethos(pairing: Pairing) -> Ethos {
    Ethos {
        goal: "faster".into(),
        gates: vec![],
        test_command: "true".into(),
        trusted_tests: vec![],
        trusted_checkout: Default::default(),
        trusted_build: vec![],
        benchmark: "python3 bench/bench.py".into(),
        benchmark_paths: vec!["bench/**".into()],
        metric: "ops_per_s".into(),
        direction: Direction::Higher,
        metric_pattern: None,
        confidence: 0.95,
        min_effect: MIN_EFFECT,
        pairing,
        min_rounds: 5,
        max_rounds: 30,
        calibration_rounds: 8,
        measure: protocol::governance::Measure::Metric,
        count_tolerance: protocol::governance::DEFAULT_COUNT_TOLERANCE,
        guard_wall_time: false,
        gate_timeout_s: 60,
        bench_timeout_s: 60,
        guard: vec![],
        review: None,
    }
}

fn old_gates() -> legacy::Old {
    legacy::Old { direction: Direction::Higher, confidence: 0.95, min_effect: MIN_EFFECT, min_samples: 5, max_cv: 0.10 }
}

/// One cell: a design on an effect, over many trials.
#[derive(Debug, Default, Clone)]
struct Cell {
    trials: u32,
    promoted: u32,
    rejected: u32,
    held: u32,
    rounds: u64,
    runs: u64,
    slots: u64,
    seconds: f64,
    /// The A/A decisions that were not HOLD, with the evaluator's reason.
    wrong: Vec<String>,
}

impl Cell {
    fn add(&mut self, verdict: &str, rounds: u32, runs: u32, slots: u64, seconds: f64) {
        self.trials += 1;
        match verdict {
            "PROMOTE" => self.promoted += 1,
            "REJECT" => self.rejected += 1,
            _ => self.held += 1,
        }
        self.rounds += rounds as u64;
        self.runs += runs as u64;
        self.slots += slots;
        self.seconds += seconds;
    }

    fn mean(&self, x: u64) -> f64 {
        x as f64 / self.trials.max(1) as f64
    }

    fn share(&self, x: u32) -> String {
        format!("{:.1}%", 100.0 * x as f64 / self.trials.max(1) as f64)
    }
}

/// The old design on the model: a warmup round, then 7 rounds of baseline then candidate.
fn old_on_model(seed: u64, params: NoiseParams, effect: f64) -> &'static str {
    let m = Machine::new(seed, params);
    let mut slot = 2 * WARMUP as u64;
    let (mut b, mut c) = (vec![], vec![]);
    for _ in 0..OLD_ROUNDS {
        b.push(m.run(slot, None, 0.0));
        c.push(m.run(slot + 1, None, effect));
        slot += 2;
    }
    match legacy::decide(&b, &c, &old_gates()) {
        legacy::Verdict::Promote => "PROMOTE",
        legacy::Verdict::Reject => "REJECT",
        legacy::Verdict::Hold => "HOLD",
    }
}

const EFFECTS: [f64; 6] = [0.0, 0.05, 0.11, -0.13, 0.30, 0.75];

fn simulate(params: NoiseParams, seeds: u64) -> Vec<(Design, f64, Cell)> {
    let mut out = vec![];
    for design in Design::ALL {
        for effect in EFFECTS {
            let mut cell = Cell::default();
            for seed in 0..seeds {
                match design {
                    Design::Old => {
                        let runs = 2 * (OLD_ROUNDS + WARMUP);
                        cell.add(old_on_model(seed, params, effect), OLD_ROUNDS, runs, runs as u64, 0.0);
                    }
                    Design::Sequential | Design::Duet => {
                        let pairing = if design == Design::Duet { Pairing::Duet } else { Pairing::Sequential };
                        let run = as_the_loop_does(seed, params, effect, &ethos(pairing), WARMUP);
                        cell.add(run.last().verdict(), run.rounds(), run.runs, run.slots, 0.0);
                    }
                }
            }
            out.push((design, effect, cell));
        }
    }
    out
}

fn effect_name(e: f64) -> String {
    if e == 0.0 { "A/A (no change)".into() } else { format!("{:+.0}%", e * 100.0) }
}

fn sim_table(rows: &[(Design, f64, Cell)]) -> String {
    let mut t = String::from(
        "| design | true effect | promoted | rejected | held | mean rounds | mean runs | mean wall slots |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (d, e, c) in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
            d.name(),
            effect_name(*e),
            c.share(c.promoted),
            c.share(c.rejected),
            c.share(c.held),
            c.mean(c.rounds),
            c.mean(c.runs),
            c.mean(c.slots)
        ));
    }
    t
}

/// The target: same or better decisions than the old design with at most half its runs, for
/// effects of 30% or more. One line per new design and machine.
fn target_lines(label: &str, rows: &[(Design, f64, Cell)]) -> String {
    let mut o = String::new();
    let cell =
        |d: Design, e: f64| rows.iter().find(|(x, y, _)| *x == d && *y == e).map(|(_, _, c)| c.clone()).expect("cell");
    for d in [Design::Sequential, Design::Duet] {
        let mut parts = vec![];
        let mut decisions_ok = true;
        let (mut runs_ratio, mut slots_ratio): (f64, f64) = (0.0, 0.0);
        for e in [0.30, 0.75] {
            let (new, old) = (cell(d, e), cell(Design::Old, e));
            decisions_ok &= new.promoted >= old.promoted;
            let r = new.mean(new.runs) / old.mean(old.runs);
            let s = new.mean(new.slots) / old.mean(old.slots);
            runs_ratio = runs_ratio.max(r);
            slots_ratio = slots_ratio.max(s);
            parts.push(format!(
                "{}: promoted {} vs {}, runs {:.2}x, wall slots {:.2}x",
                effect_name(e),
                new.share(new.promoted),
                old.share(old.promoted),
                r,
                s
            ));
        }
        let aa = cell(d, 0.0);
        o.push_str(&format!(
            "- {label}, {}: {}; A/A false promotions {}. Decisions same or better: {}; at most half the runs: {} (wall time: {}).\n",
            d.name(),
            parts.join("; "),
            aa.share(aa.promoted),
            if decisions_ok { "yes" } else { "no" },
            if runs_ratio <= 0.5 { "yes" } else { "no" },
            if slots_ratio <= 0.5 { "at most half" } else { "more than half" },
        ));
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Part 2: real processes.

const PY_BENCH: &str = r#"import re, time
work = int(re.search(r"^work_per_op = (\d+)", open("params.toml").read(), re.M).group(1))
N = 50000
x = 1
t0 = time.perf_counter()
for i in range(N * work):
    x = (x * 31 + i) % 1000003
print('{"ops_per_s": %.1f}' % (N / (time.perf_counter() - t0)))
"#;

/// A scratch repository: the baseline (13 steps per operation) and a candidate 30% faster (10).
fn scratch_repo(dir: &Path) -> anyhow::Result<(String, String)> {
    let files = [("bench/bench.py", PY_BENCH), ("params.toml", "work_per_op = 13\n"), (".gitignore", "worktrees/\n")];
    let base = scratch::init(dir, &files, "baseline")?;
    std::fs::write(dir.join("params.toml"), "work_per_op = 10\n")?;
    let cand = scratch::commit_all(dir, "30% faster")?;
    Ok((base, cand))
}

/// A commit with `of`'s tree and `of` as parent, not on any branch: the same files under a
/// commit id of its own for trial `trial`. The evaluator draws a round's order (and in duet the
/// CPUs) from a seed of the two commits, so trials of one candidate commit would all share one
/// sequence of coins and their errors would not be independent; a user's candidates each have
/// their own commit.
fn trial_commit(dir: &Path, of: &str, trial: u32) -> anyhow::Result<String> {
    let tree = format!("{of}^{{tree}}");
    let msg = format!("trial {trial}: the same files, a commit of its own");
    scratch::git(dir, &["commit-tree", &tree, "-p", of, "-m", &msg])
}

fn input(base: &str, commit: &str, pairing: Pairing, mode: EvaluateMode) -> EvaluateInput {
    EvaluateInput {
        base: base.into(),
        commit: commit.into(),
        ethos: ethos(pairing),
        warmup: WARMUP,
        // The scratch repository is the bench's own: the plain mode, allowed here, keeps the
        // sandbox's start-up cost out of the comparison.
        sandbox: SandboxSettings {
            sandbox: protocol::governance::SandboxMode::Plain,
            allow_network: false,
            memory_mb: 0,
            allow_weak: true,
            jobs: Default::default(),
        },
        mode,
        first_look: None,
        resume: vec![],
        calibration: None,
    }
}

/// The old design on real runs, in two copies of the scratch files: a warmup round, then 7
/// rounds of baseline then candidate.
async fn old_real(dirs: [&Path; 2]) -> anyhow::Result<(&'static str, f64)> {
    let started = Instant::now();
    let (mut b, mut c) = (vec![], vec![]);
    for round in 0..(OLD_ROUNDS + WARMUP) {
        for (i, dir) in dirs.iter().enumerate() {
            // Plain like the new design's runs (allowed here: the bench's own scratch files).
            let spec = kit::exec::RunSpec::new("python3 bench/bench.py", *dir)
                .with_sandbox(kit::exec::SandboxMode::Plain)
                .with_weak_sandbox_allowed(true);
            let out = kit::exec::run(&spec).await;
            let v = evaluator::parse_metrics(&out.stdout, None, "ops_per_s")
                .map_err(|e| anyhow::anyhow!("{e} (the run: {:?}; stderr: {})", out.status, out.stderr.trim()))?["ops_per_s"];
            if round >= WARMUP {
                if i == 0 { b.push(v) } else { c.push(v) }
            }
        }
    }
    let v = match legacy::decide(&b, &c, &old_gates()) {
        legacy::Verdict::Promote => "PROMOTE",
        legacy::Verdict::Reject => "REJECT",
        legacy::Verdict::Hold => "HOLD",
    };
    Ok((v, started.elapsed().as_secs_f64()))
}

/// Where each real evaluation's whole output is kept (its rounds, the order of each, every run's
/// value and time), for a look at any decision afterwards: `target/evaluator-bench/`.
fn kept_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").join("target/evaluator-bench")
}

fn keep(
    design: &str,
    effect: &str,
    trial: u32,
    which: &str,
    output: &protocol::work::EvaluateOutput,
) -> anyhow::Result<()> {
    let dir = kept_dir();
    std::fs::create_dir_all(&dir)?;
    let slug: String =
        format!("{design}-{effect}").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let path = dir.join(format!("{slug}-trial{}-{which}.json", trial + 1));
    kit::files::write_atomic(&path, &serde_json::to_vec_pretty(output)?)?;
    Ok(())
}

/// Which real cells to run: all (designs by effects), or the A/A of the current designs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cells {
    All,
    AaStudy,
}

/// After each trial: the trials done, the cells so far and the calibrations.
type OnTrial<'a> = &'a mut dyn FnMut(u32, &[(Design, f64, Cell)], &str) -> anyhow::Result<()>;

async fn real(trials: u32, which: Cells, on_trial: OnTrial<'_>) -> anyhow::Result<(Vec<(Design, f64, Cell)>, String)> {
    let tmp = tempfile::Builder::new().prefix("evaluator-bench-").tempdir()?;
    let repo = tmp.path().join("repo");
    let (base, cand) = scratch_repo(&repo)?;
    // The old design runs in plain copies of each side's files.
    let copies = [tmp.path().join("old-base"), tmp.path().join("old-cand-aa"), tmp.path().join("old-cand-30")];
    for (dir, work) in copies.iter().zip([13, 13, 10]) {
        std::fs::create_dir_all(dir.join("bench"))?;
        std::fs::write(dir.join("bench/bench.py"), PY_BENCH)?;
        std::fs::write(dir.join("params.toml"), format!("work_per_op = {work}\n"))?;
    }
    let cpus = kit::exec::available_cpus();
    let hog_cpu = cpus.get(cpus.len().saturating_sub(2)).copied().unwrap_or(0);
    let mut hog = Command::new("taskset")
        .args(["-c", &hog_cpu.to_string(), "sh", "-c", "while :; do :; done"])
        .spawn()
        .context("starting the CPU hog (taskset, from util-linux)")?;
    let artifacts = tmp.path().join("artifacts");
    let mut cells: Vec<(Design, f64, Cell)> = vec![];
    for d in Design::ALL {
        for e in [0.0, 0.30] {
            if which == Cells::All || (d != Design::Old && e == 0.0) {
                cells.push((d, e, Cell::default()));
            }
        }
    }
    let mut calibrations = String::new();
    let result: anyhow::Result<()> = async {
        // Calibrate each pairing once, as the loop does at the start of a run.
        let mut first_look = [None, None];
        for (i, pairing) in [Pairing::Sequential, Pairing::Duet].into_iter().enumerate() {
            let Measured::Calibrated(CalibrateOutput { calibration, .. }) =
                measure(&input(&base, &base, pairing, EvaluateMode::Calibrate), &repo, &artifacts, || false)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            else {
                bail!("a calibration did not calibrate");
            };
            calibrations.push_str(&format!(
                "- {}: {}; first look at round {}\n",
                pairing.as_str(),
                calibration.describe(),
                calibration.first_look
            ));
            first_look[i] = Some((calibration.first_look, calibration));
        }
        for trial in 0..trials {
            for (design, effect, cell) in cells.iter_mut() {
                let commit = trial_commit(&repo, if *effect == 0.0 { &base } else { &cand }, trial)?;
                match design {
                    Design::Old => {
                        let other = if *effect == 0.0 { &copies[1] } else { &copies[2] };
                        let (v, secs) = old_real([&copies[0], other]).await?;
                        let runs = 2 * (OLD_ROUNDS + WARMUP);
                        cell.add(v, OLD_ROUNDS, runs, runs as u64, secs);
                    }
                    Design::Sequential | Design::Duet => {
                        let (pairing, i) =
                            if *design == Design::Duet { (Pairing::Duet, 1) } else { (Pairing::Sequential, 0) };
                        let (look, cal) = first_look[i].clone().expect("calibrated");
                        let mut inp = input(&base, &commit, pairing, EvaluateMode::Evaluate);
                        inp.first_look = Some(look);
                        inp.calibration = Some(cal);
                        let started = Instant::now();
                        let Measured::Evaluated { output, .. } =
                            measure(&inp, &repo, &artifacts, || false).await.map_err(|e| anyhow::anyhow!("{e}"))?
                        else {
                            bail!("an evaluation did not evaluate");
                        };
                        keep(design.name(), &effect_name(*effect), trial, "first", &output)?;
                        let mut verdict = output.verdict.to_string();
                        let mut why = output.reasons.first().cloned().unwrap_or_default();
                        let mut rounds = output.sampling.as_ref().map_or(0, |s| s.rounds);
                        let mut runs = output.runs.len() as u32;
                        // Undecided at the cap: measured once more, continuing, as the loop does.
                        if output.outcome == Some(Outcome::TooNoisy) {
                            inp.resume = output.sampling.as_ref().map(|s| s.pairs.clone()).unwrap_or_default();
                            if let Measured::Evaluated { output, .. } =
                                measure(&inp, &repo, &artifacts, || false).await.map_err(|e| anyhow::anyhow!("{e}"))?
                            {
                                keep(design.name(), &effect_name(*effect), trial, "again", &output)?;
                                verdict = output.verdict.to_string();
                                why = format!("re-measured: {}", output.reasons.first().cloned().unwrap_or_default());
                                rounds = output.sampling.as_ref().map_or(rounds, |s| s.rounds);
                                runs += output.runs.len() as u32;
                            }
                        }
                        if *effect == 0.0 && verdict != "HOLD" {
                            eprintln!("evaluator-bench: trial {} {} A/A decided: {why}", trial + 1, design.name());
                            cell.wrong.push(format!("trial {}: {why}", trial + 1));
                        }
                        let per_slot = if pairing == Pairing::Duet { 2 } else { 1 };
                        cell.add(&verdict, rounds, runs, (runs / per_slot) as u64, started.elapsed().as_secs_f64());
                    }
                }
                eprintln!(
                    "evaluator-bench: real trial {} {} {}: {}/{}/{} so far",
                    trial + 1,
                    design.name(),
                    effect_name(*effect),
                    cell.promoted,
                    cell.rejected,
                    cell.held
                );
            }
            on_trial(trial + 1, &cells, &calibrations)?;
        }
        Ok(())
    }
    .await;
    let _ = hog.kill();
    let _ = hog.wait();
    result?;
    Ok((cells, calibrations))
}

fn real_table(rows: &[(Design, f64, Cell)]) -> String {
    let mut t = String::from(
        "| design | candidate | promoted | rejected | held | mean rounds | mean runs | mean seconds per decision |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (d, e, c) in rows {
        t.push_str(&format!(
            "| {} | {} | {}/{} | {}/{} | {}/{} | {:.1} | {:.1} | {:.1} |\n",
            d.name(),
            effect_name(*e),
            c.promoted,
            c.trials,
            c.rejected,
            c.trials,
            c.held,
            c.trials,
            c.mean(c.rounds),
            c.mean(c.runs),
            c.seconds / c.trials.max(1) as f64
        ));
    }
    t
}

/// The exact (Clopper-Pearson) two-sided 95% interval of a binomial rate, `k` of `n`.
fn clopper_pearson(k: u32, n: u32) -> (f64, f64) {
    // The binomial tail P(X >= k | p), increasing in p; bisection on p for each bound.
    fn tail_ge(k: u32, n: u32, p: f64) -> f64 {
        let (mut term, mut below) = ((1.0 - p).powi(n as i32), 0.0);
        for i in 0..k {
            below += term;
            term *= (n - i) as f64 / (i + 1) as f64 * p / (1.0 - p).max(f64::MIN_POSITIVE);
        }
        (1.0 - below).clamp(0.0, 1.0)
    }
    let solve = |f: &dyn Fn(f64) -> bool| {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if f(mid) { hi = mid } else { lo = mid }
        }
        (lo + hi) / 2.0
    };
    let lower = if k == 0 { 0.0 } else { solve(&|p| tail_ge(k, n, p) >= 0.025) };
    let upper = if k == n { 1.0 } else { solve(&|p| 1.0 - tail_ge(k + 1, n, p) <= 0.025) };
    (lower, upper)
}

fn aa_study_main(trials: u32, args: &[String], write: bool) -> anyhow::Result<()> {
    let load_before = loadavg();
    let started = Instant::now();
    // The section is written after every trial, so a study stopped early leaves its table.
    let mut report = |done: u32, cells: &[(Design, f64, Cell)], calibrations: &str| -> anyhow::Result<()> {
        let o = aa_section(done, trials, cells, calibrations, &load_before, started, args);
        if done == trials {
            println!("{o}");
        }
        if write {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf();
            let path = root.join("BENCHMARKS.md");
            write_section(&path, AA_SECTION, &o)?;
            eprintln!(
                "evaluator-bench: wrote the \"{AA_SECTION}\" section of {} ({done} of {trials} trials)",
                path.display()
            );
        }
        Ok(())
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(real(
        trials,
        Cells::AaStudy,
        &mut report,
    ))?;
    Ok(())
}

fn aa_section(
    done: u32,
    trials: u32,
    cells: &[(Design, f64, Cell)],
    calibrations: &str,
    load_before: &str,
    started: Instant,
    args: &[String],
) -> String {
    let progress = if done < trials { format!(" ({done} of the {trials} trials done so far)") } else { String::new() };
    let mut o = format!(
        "{AA_SECTION}\n\nMeasured {} by `evaluator-bench` on this {}-core machine in {:.0} s{progress}; load average \
         before {load_before}, at the end {}.\n\nReproduce:\n\n```sh\n{REPRODUCE} {}\n```\n\n\
         The real trials of the section above, A/A only (the candidate is the baseline's files under a commit of its \
         own, so each trial has its own order seed), many trials per design: how often the evaluator decides \
         when there is nothing to find, on this machine under a CPU hog. The design bounds each side's error at \
         1 - confidence = 5%: a false promotion (a change that reaches `main` for nothing) at most 5%, a false \
         rejection at most 5%; the minimum effect (3%) keeps both lower. Each evaluation's whole output is kept in \
         `target/evaluator-bench/`. Calibrations at the start:\n\n{calibrations}\n",
        today(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        started.elapsed().as_secs_f64(),
        loadavg(),
        args.join(" "),
    );
    o.push_str(
        "| design | trials | falsely promoted | its exact 95% interval | falsely rejected | its exact 95% interval | mean rounds | mean seconds per decision |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (d, _, c) in cells {
        let interval = |k: u32| {
            let (lo, hi) = clopper_pearson(k, c.trials);
            format!("{:.1}%-{:.1}%", 100.0 * lo, 100.0 * hi)
        };
        o.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {} ({}) | {} | {:.1} | {:.1} |\n",
            d.name(),
            c.trials,
            c.promoted,
            c.share(c.promoted),
            interval(c.promoted),
            c.rejected,
            c.share(c.rejected),
            interval(c.rejected),
            c.mean(c.rounds),
            c.seconds / c.trials.max(1) as f64
        ));
    }
    o.push_str("\nThe false decisions, each with the evaluator's reason:\n\n");
    for (d, _, c) in cells {
        for w in &c.wrong {
            o.push_str(&format!("- {}, {w}\n", d.name()));
        }
    }
    o
}

fn today() -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    protocol::timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))[..10].to_string()
}

fn main() -> anyhow::Result<()> {
    let mut seeds = 200u64;
    let mut trials = 4u32;
    let (mut real_runs, mut write) = (true, true);
    let mut aa_study = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seeds" => seeds = it.next().context("--seeds needs a number")?.parse()?,
            "--trials" => trials = it.next().context("--trials needs a number")?.parse()?,
            "--no-real" => real_runs = false,
            "--no-write" => write = false,
            "--aa-study" => aa_study = Some(it.next().context("--aa-study needs a number of trials")?.parse()?),
            other => {
                bail!("unknown option {other}; options: --seeds N, --trials N, --no-real, --no-write, --aa-study N")
            }
        }
    }
    if let Some(n) = aa_study {
        return aa_study_main(n, &args, write);
    }
    let load_before = loadavg();
    let started = Instant::now();
    let machine = simulate(NoiseParams::MACHINE, seeds);
    let quiet = simulate(NoiseParams::QUIET, seeds);
    eprintln!(
        "evaluator-bench: simulated {} evaluations in {:.1} s",
        2 * 3 * EFFECTS.len() as u64 * seeds,
        started.elapsed().as_secs_f64()
    );
    let mut o = format!(
        "{SECTION}\n\nMeasured {} by `evaluator-bench` on this {}-core machine; load average before {load_before}, after {{LOAD_AFTER}}.\n\n\
         Reproduce:\n\n```sh\n{REPRODUCE}{}\n```\n\n\
         Every design decides with the same gates: confidence 0.95, min_effect 3%, one uncounted warmup round. \
         *old* is the evaluator before issue 10: 7 fixed rounds, baseline then candidate, the two sides taken as \
         independent samples (Mann-Whitney U, robust CV at most 10% on each side, at least 5 samples). *sequential* and \
         *duet* are the current evaluator (`pairing` in ethos.md): paired rounds, the sequential sign/signed-rank test \
         from round 5 (raised by the calibration) to 30, an undecided candidate measured once more up to 60, a \
         calibration of 8 A/A rounds first (not counted below: once per run). A sequential round is two runs one after \
         the other; a duet round is two slots of two simultaneous runs (CPUs swapped), so four runs in the wall time of two.\n\n",
        today(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if args.is_empty() { String::new() } else { format!(" {}", args.join(" ")) },
    );
    o.push_str(&format!(
        "### Simulated: the noise model of this machine ({seeds} seeds per row)\n\n\
         `evaluator::noise::NoiseParams::MACHINE`: bursts that halve throughput for 1-4 runs (10% chance per run slot), \
         one-core bursts (5% per slot per CPU, -25% to -45%), drift (±5%), 1.5% jitter, 2% outliers; a third of the \
         sequential rounds and a quarter of the duet slots have one side hit alone. The same `Session` and `evaluate` \
         as the evaluator's task, on values drawn from the model.\n\n{}\n{}\n",
        sim_table(&machine),
        target_lines("noisy machine", &machine)
    ));
    o.push_str(&format!(
        "\n### Simulated: a quiet machine ({seeds} seeds per row)\n\n1% jitter only.\n\n{}\n{}\n",
        sim_table(&quiet),
        target_lines("quiet machine", &quiet)
    ));
    o.push_str(
        "\nWhy no design here decides in fewer than 5 rounds at 95%: the paired tests rest on the randomized order of each \
         round alone (exact whatever the noise), and after n rounds the smallest p-value such a test can reach is 2^-n; \
         2^-4 = 0.0625 > 0.05. The old design's 7 rounds were a fixed cost with no such guarantee (on the noisy machine it \
         held or misjudged most real changes). Fewer runs than that for large effects would need a model of the noise \
         (a t-test, a calibrated variance), which is what failed on these machines.\n",
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf();
    if !real_runs && write {
        // The simulated part alone: the real part of the last run with real trials stays, saying so.
        let old = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
        if let Some(real) = old.find(SECTION).and_then(|at| {
            let section = &old[at..];
            let section =
                &section[..section[SECTION.len()..].find("\n## ").map_or(section.len(), |i| i + SECTION.len())];
            section.find("\n### Real:").map(|r| section[r..].to_string())
        }) {
            let kept = real.replacen(
                "\n### Real:",
                "\n### Real (kept from the last run with real trials; this run was `--no-real`):",
                1,
            );
            o.push_str(kept.trim_end());
            o.push('\n');
        }
    }
    if real_runs {
        let started = Instant::now();
        let (cells, calibrations) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(real(trials, Cells::All, &mut |_, _, _| Ok(())))?;
        o.push_str(&format!(
            "\n### Real: a Python CPU-bound benchmark under a CPU hog ({trials} trials per row, {:.0} s in all)\n\n\
             A scratch repository whose benchmark is a Python loop of 13 steps per operation (about 0.1 s a run); the \
             candidate takes 10 (+30% operations per second), or is the baseline itself (A/A); each trial evaluates a commit of its own with the same files, so each has its own order seed. A busy loop is pinned to \
             one of the two CPUs duet pairing uses for the whole run, besides whatever else the machine runs. The \
             current designs run through `evaluator::work::measure` (the evaluator task's code: checkouts, sandboxed \
             runs, CPU pinning, the decision; an undecided candidate measured once more); the old design runs 7 rounds \
             of the same command in two copies of the files. Calibrations at the start:\n\n{calibrations}\n{}\n",
            started.elapsed().as_secs_f64(),
            real_table(&cells)
        ));
    }
    let o = o.replace("{LOAD_AFTER}", &loadavg());
    println!("{o}");
    if write {
        let path = root.join("BENCHMARKS.md");
        write_section(&path, SECTION, &o)?;
        eprintln!("evaluator-bench: wrote the \"{SECTION}\" section of {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn clopper_pearson_matches_known_intervals() {
        // R: binom.test(2, 24)$conf.int = 0.01026 0.26999; binom.test(0, 40) = 0 0.08811.
        let (lo, hi) = super::clopper_pearson(2, 24);
        assert!((lo - 0.01026).abs() < 1e-4 && (hi - 0.26999).abs() < 1e-4, "{lo} {hi}");
        let (lo, hi) = super::clopper_pearson(0, 40);
        assert!(lo == 0.0 && (hi - 0.08811).abs() < 1e-4, "{hi}");
    }
}
