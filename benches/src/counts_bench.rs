//! `counts-bench`: instruction counts against wall time on this machine (issue 15). Not a test:
//! it prints markdown tables and writes them into BENCHMARKS.md's "## Instruction counts vs
//! wall time (issue 15)" section with the command, the date and the load.
//!
//! The workload is the kind the issue measured: a small Python word analysis (20,000 generated
//! words counted in a dict, `passes` times; about a tenth of a second natively), in a scratch git
//! repository, while a busy loop holds one CPU, all in the same run:
//! 1. **Spread.** The baseline run again and again, natively (its wall time) and under the counter
//!    the evaluator chooses here (its instruction count), both with the hash seed fixed: the
//!    relative spread of each (max - min over the median) and the slowdown under the counter.
//! 2. **Time per decision.** The evaluator's own `measure` (the code its task runs: checkouts,
//!    runs, the decision) judges the same candidates in both modes, with the same gates
//!    (confidence 0.95, min_effect 2%, 5 to 30 rounds, sequential pairing, no calibration): a
//!    no-op, 5% less work, 30% less work. Verdict, rounds, benchmark runs, seconds.
//!
//! The interpreter is the real binary (`sys.executable`), not a shim: under callgrind every
//! process of a shim's tree pays valgrind's start-up (pyenv's shim is about 40 processes).
//!
//! Reproduce: `cargo run -p ratchet-bench --bin counts-bench` (what it times are the benchmark's
//! processes, not Ratchet's code, so a debug build measures the same).
//! Options: `--runs N` (spread runs per kind, 6), `--trials N` (decisions per cell, 1),
//! `--no-write` (print only).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use evaluator::work::{Measured, measure};
use kit::counters::Counter;
use kit::exec::{RunSpec, SandboxMode};
use protocol::governance::{DEFAULT_COUNT_TOLERANCE, Direction, Ethos, Measure, Pairing};
use protocol::work::{EvaluateInput, EvaluateMode, SandboxSettings};
use ratchet_bench::report::{loadavg, write_section};
use ratchet_bench::scratch::{self, git};

const SECTION: &str = "## Instruction counts vs wall time (issue 15)";
const REPRODUCE: &str = "cargo run -p ratchet-bench --bin counts-bench";
const MIN_EFFECT: f64 = 0.02;

/// 20,000 words from a fixed generator, counted `passes` times; prints its own wall time.
const PY_BENCH: &str = r#"import re, time
passes = int(re.search(r"^passes = (\d+)", open("params.toml").read(), re.M).group(1))
t0 = time.perf_counter()
syll = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi"]
seed, words = 12345, []
for _ in range(20000):
    seed = (seed * 1103515245 + 12345) % 2147483648
    words.append(syll[seed % 8] + syll[(seed >> 8) % 8] + syll[(seed >> 16) % 8])
for _ in range(passes):
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
print('{"ms": %.3f, "top": "%s"}' % ((time.perf_counter() - t0) * 1000, top[0][0]))
"#;

/// The candidates: (name, params.toml, true effect on the work).
const CANDIDATES: [(&str, &str, &str); 3] = [
    ("no-op (a comment)", "passes = 20\n# tuned\n", "0%"),
    ("5% less work", "passes = 19\n", "-5% passes"),
    ("30% less work", "passes = 14\n", "-30% passes"),
];

fn ethos(measure: Measure, benchmark: &str) -> Ethos {
    Ethos {
        goal: "faster".into(),
        gates: vec![],
        test_command: "true".into(),
        trusted_tests: vec![],
        trusted_checkout: Default::default(),
        trusted_build: vec![],
        benchmark: benchmark.into(),
        benchmark_paths: vec!["bench/**".into()],
        metric: "ms".into(),
        direction: Direction::Lower,
        metric_pattern: None,
        confidence: 0.95,
        min_effect: MIN_EFFECT,
        pairing: Pairing::Sequential,
        min_rounds: 5,
        max_rounds: 30,
        calibration_rounds: 0,
        measure,
        count_tolerance: DEFAULT_COUNT_TOLERANCE,
        guard_wall_time: false,
        gate_timeout_s: 60,
        bench_timeout_s: 600,
        guard: vec![],
        review: None,
    }
}

fn sandbox() -> SandboxSettings {
    // The scratch repository is the bench's own: the plain mode keeps the sandbox's start-up
    // out of both modes' times.
    SandboxSettings {
        sandbox: SandboxMode::Plain,
        allow_network: false,
        memory_mb: 0,
        allow_weak: true,
        jobs: Default::default(),
    }
}

/// The scratch repository: the baseline and one commit per candidate, each on its own branch.
fn scratch_repo(dir: &Path) -> anyhow::Result<(String, Vec<String>)> {
    let files = [("bench/bench.py", PY_BENCH), ("params.toml", "passes = 20\n"), (".gitignore", "worktrees/\n")];
    let base = scratch::init(dir, &files, "baseline")?;
    let mut commits = vec![];
    for (i, (name, params, _)) in CANDIDATES.iter().enumerate() {
        git(dir, &["checkout", "-q", "-b", &format!("c{i}"), &base])?;
        std::fs::write(dir.join("params.toml"), params)?;
        commits.push(scratch::commit_all(dir, name)?);
    }
    git(dir, &["checkout", "-q", "main"])?;
    Ok((base, commits))
}

/// The real interpreter behind `python3` (a shim would be counted too, at a valgrind start-up
/// per process).
fn python() -> anyhow::Result<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("running python3 (the workload is a Python program)")?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if exe.is_empty() {
        bail!("python3 does not say where its executable is");
    }
    Ok(exe)
}

/// (max - min) / median.
fn spread(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    (v[v.len() - 1] - v[0]) / median
}

struct Spread {
    counter: Counter,
    native_ms: Vec<f64>,
    counted_ms: Vec<f64>,
    counts: Vec<f64>,
}

/// Part 1: the baseline's wall time and instruction count, run after run.
async fn spreads(dir: &Path, command: &str, runs: u32) -> anyhow::Result<Spread> {
    let report = kit::counters::probe(SandboxMode::Plain, true).await;
    let counter = report.chosen.with_context(|| report.why_none())?;
    let spec = kit::counters::deterministic(
        RunSpec::new(command, dir)
            .with_sandbox(SandboxMode::Plain)
            .with_weak_sandbox_allowed(true)
            .with_timeout(Duration::from_secs(600)),
    );
    let mut s = Spread { counter, native_ms: vec![], counted_ms: vec![], counts: vec![] };
    for i in 0..runs {
        let out = kit::exec::run(&spec).await;
        if !out.success() {
            bail!("the baseline failed natively: {}", out.describe());
        }
        s.native_ms.push(out.duration.as_secs_f64() * 1000.0);
        let counted = kit::counters::run_counted(&spec, counter).await;
        let count = counted.count.map_err(|e| anyhow::anyhow!("the baseline's count: {e}"))?;
        s.counted_ms.push(counted.outcome.duration.as_secs_f64() * 1000.0);
        s.counts.push(count.instructions as f64);
        eprintln!("counts-bench: spread run {}/{runs}: {} instructions", i + 1, count.instructions);
    }
    Ok(s)
}

/// A candidate (its index in [`CANDIDATES`]), the mode, and its decisions.
type Decided = (usize, Measure, Cell);

#[derive(Default)]
struct Cell {
    trials: u32,
    verdicts: Vec<String>,
    rounds: u32,
    runs: u32,
    seconds: f64,
}

/// Part 2: one decision by the evaluator's `measure`, as its task runs it (an undecided
/// candidate measured once more, continuing, as the loop does).
async fn decide(repo: &Path, artifacts: &Path, base: &str, commit: &str, ethos: Ethos) -> anyhow::Result<Cell> {
    let mut input = EvaluateInput {
        base: base.into(),
        commit: commit.into(),
        ethos,
        warmup: 0,
        sandbox: sandbox(),
        mode: EvaluateMode::Evaluate,
        first_look: None,
        resume: vec![],
        calibration: None,
    };
    let started = Instant::now();
    let mut cell = Cell { trials: 1, ..Cell::default() };
    for again in [false, true] {
        let Measured::Evaluated { output, .. } =
            measure(&input, repo, artifacts, || false).await.map_err(|e| anyhow::anyhow!("{e}"))?
        else {
            bail!("an evaluation did not evaluate");
        };
        cell.rounds = output.sampling.as_ref().map_or(cell.rounds, |s| s.rounds);
        cell.runs += output.runs.len() as u32;
        let undecided = output.outcome == Some(protocol::evaluation::Outcome::TooNoisy);
        cell.verdicts = vec![format!("{}{}", output.verdict, if undecided { " (too noisy)" } else { "" })];
        if again || !undecided {
            break;
        }
        input.resume = output.sampling.as_ref().map(|s| s.pairs.clone()).unwrap_or_default();
    }
    cell.seconds = started.elapsed().as_secs_f64();
    Ok(cell)
}

fn today() -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    protocol::timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))[..10].to_string()
}

fn main() -> anyhow::Result<()> {
    let (mut runs, mut trials, mut write) = (6u32, 1u32, true);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs needs a number")?.parse()?,
            "--trials" => trials = it.next().context("--trials needs a number")?.parse()?,
            "--no-write" => write = false,
            other => bail!("unknown argument {other}; use --runs N, --trials N, --no-write"),
        }
    }
    if runs < 2 {
        bail!("--runs must be at least 2 (a spread needs two runs)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let tmp = tempfile::Builder::new().prefix("counts-bench-").tempdir()?;
    let repo = tmp.path().join("repo");
    let artifacts = tmp.path().join("artifacts");
    let (base, commits) = scratch_repo(&repo)?;
    let command = format!("{} bench/bench.py", python()?);
    let load_before = loadavg();
    let cpus = kit::exec::available_cpus();
    let hog_cpu = *cpus.last().context("no CPU")?;
    let mut hog = Command::new("taskset")
        .args(["-c", &hog_cpu.to_string(), "sh", "-c", "while :; do :; done"])
        .spawn()
        .context("starting the CPU hog (taskset, from util-linux)")?;
    let result: anyhow::Result<(Spread, Vec<Decided>)> = rt.block_on(async {
        let s = spreads(&repo, &command, runs).await?;
        let mut cells = vec![];
        for (i, commit) in commits.iter().enumerate() {
            for m in [Measure::Metric, Measure::Instructions] {
                let mut total = Cell::default();
                for t in 0..trials {
                    let c = decide(&repo, &artifacts, &base, commit, ethos(m, &command)).await?;
                    eprintln!(
                        "counts-bench: {} by {} (trial {}): {} in {} rounds, {:.1} s",
                        CANDIDATES[i].0,
                        m.as_str(),
                        t + 1,
                        c.verdicts.join(""),
                        c.rounds,
                        c.seconds
                    );
                    total.trials += 1;
                    total.verdicts.extend(c.verdicts);
                    total.rounds += c.rounds;
                    total.runs += c.runs;
                    total.seconds += c.seconds;
                }
                cells.push((i, m, total));
            }
        }
        Ok((s, cells))
    });
    let _ = hog.kill();
    let _ = hog.wait();
    let (s, cells) = result?;

    let median = |xs: &[f64]| {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut o = format!("{SECTION}\n\n");
    o.push_str(&format!(
        "Measured {} with `{REPRODUCE}` (load average {load_before} before the run), while a busy loop held CPU {hog_cpu}. The workload: a Python word analysis (20,000 generated words counted in a dict, 20 passes), `PYTHONHASHSEED=0`, run by `{}`; sandbox `plain` (the bench's own scratch repository). The counter the evaluator chose here: **{}**.\n\n",
        today(),
        python()?,
        s.counter
    ));
    o.push_str("### Run-to-run spread of the same baseline\n\n");
    o.push_str("| measure | runs | median | min | max | spread (max - min) / median |\n| --- | --- | --- | --- | --- | --- |\n");
    let row = |name: &str, xs: &[f64], unit: &str| {
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(0.0, f64::max);
        format!(
            "| {name} | {} | {:.1}{unit} | {:.1}{unit} | {:.1}{unit} | {} |\n",
            xs.len(),
            median(xs),
            lo,
            hi,
            protocol::evaluation::fine_pct(spread(xs))
        )
    };
    o.push_str(&row("wall time, native", &s.native_ms, " ms"));
    o.push_str(&row(&format!("wall time under {}", s.counter), &s.counted_ms, " ms"));
    o.push_str(&row(&format!("instructions ({})", s.counter), &s.counts, ""));
    let ratio = spread(&s.native_ms) / spread(&s.counts).max(1e-12);
    o.push_str(&format!(
        "\nThe wall time's spread is {ratio:.0}x the instruction count's; counting costs a slowdown of {:.1}x (median counted run {:.0} ms against {:.0} ms native).\n\n",
        median(&s.counted_ms) / median(&s.native_ms),
        median(&s.counted_ms),
        median(&s.native_ms)
    ));
    o.push_str("### Time per decision, the same candidates in each mode\n\n");
    o.push_str(&format!(
        "The evaluator's `measure`, confidence 0.95, min_effect {:.0}%, sequential pairing, 5 to 30 rounds (an undecided candidate measured once more, up to 60, as the loop does); instructions: until two runs of each side agree within {}. {trials} trial(s) per cell.\n\n",
        MIN_EFFECT * 100.0,
        protocol::evaluation::fine_pct(DEFAULT_COUNT_TOLERANCE)
    ));
    o.push_str("| candidate | measure | verdicts | mean rounds | mean benchmark runs | mean seconds per decision |\n| --- | --- | --- | --- | --- | --- |\n");
    let mut secs = std::collections::BTreeMap::new();
    for (i, m, c) in &cells {
        let n = c.trials.max(1) as f64;
        o.push_str(&format!(
            "| {} ({}) | {} | {} | {:.1} | {:.1} | {:.1} |\n",
            CANDIDATES[*i].0,
            CANDIDATES[*i].2,
            m.as_str(),
            c.verdicts.join(", "),
            c.rounds as f64 / n,
            c.runs as f64 / n,
            c.seconds / n
        ));
        secs.entry(*i).or_insert_with(Vec::new).push(c.seconds / n);
    }
    o.push_str("\nSeconds per decision, instructions / metric (below 1: counting decided faster):");
    for (i, v) in &secs {
        if let [metric, counts] = v.as_slice() {
            o.push_str(&format!(" {} {:.2};", CANDIDATES[*i].0, counts / metric.max(1e-9)));
        }
    }
    o.push_str("\n\nRead with care: instruction counts are a proxy for time. They repeat to a few instructions whatever the machine does, so a decision takes two rounds; wall time is what users feel, but on a shared machine it needs many rounds for a few percent (or cannot decide). Where a change could trade instructions for waiting or memory traffic, `guard_wall_time = true` adds a paired wall-time check after a counts PROMOTE.\n");
    print!("{o}");
    if write {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace root")?;
        let path = root.join("BENCHMARKS.md");
        write_section(&path, SECTION, &o)?;
        eprintln!("counts-bench: wrote the \"{SECTION}\" section of {}", path.display());
    }
    Ok(())
}
