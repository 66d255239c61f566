//! Sandbox benchmark: what confining a command costs. Each command runs through `kit::exec::run`
//! (the real path: the plan, the argv, the spawn, the report pipe, the group kill) in a candidate's
//! checkout of a swarm home (a linked worktree, the home hidden), in each mode: `plain` (the
//! weak floor, what a user would otherwise get), bubblewrap and the namespaces launcher. The modes
//! are interleaved round by round, so a change in the machine's load hits all alike; the ratio is
//! the median of per-round ratios against plain.
//!
//! Run: `cargo bench -p ratchet-kit --bench sandbox`. Prints a markdown table and writes it to its
//! section of `BENCHMARKS.md` at the repository root.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use ratchet_kit::exec::{RunSpec, SandboxMode};

// The shared report and scratch modules name kit as the `ratchet-bench` crate does.
extern crate ratchet_kit as kit;
#[path = "../../benches/src/report.rs"]
mod common;
use common::{loadavg, write_section};
#[path = "../../benches/src/scratch.rs"]
mod scratch;

const ROUNDS: usize = 40;
const SECTION: &str = "## Sandbox (issue 8)";
/// The commands measured: (label, script).
const COMMANDS: [(&str, &str); 3] = [
    ("`true`", "true"),
    (
        "`git status` + `git log -1` in the checkout",
        "git status --porcelain >/dev/null && git log --oneline -1 >/dev/null",
    ),
    ("`sh tests/run.sh`-like: 20 small processes", "for i in $(seq 20); do cat f >/dev/null; done"),
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn main() {
    let load_before = loadavg();
    let probe_start = Instant::now();
    let report = ratchet_kit::sandbox::probe::probe_sandbox();
    let probe_ms = probe_start.elapsed().as_secs_f64() * 1e3;
    let modes: Vec<SandboxMode> = [SandboxMode::Plain, SandboxMode::Bwrap, SandboxMode::Namespaces]
        .into_iter()
        .filter(|m| report.mode(*m).is_some_and(|r| r.works))
        .collect();

    let tmp = tempfile::Builder::new().prefix("ratchet-sandbox-bench-").tempdir().expect("temp dir");
    let home = tmp.path().canonicalize().expect("canonical").join("home");
    scratch::init(&home, &[("f", "x\n"), (".gitignore", "worktrees/\n")], "bench").expect("the scratch home");
    scratch::git(&home, &["worktree", "add", "-q", "--detach", "worktrees/c1/tree"]).expect("git worktree add");
    std::fs::create_dir_all(home.join("worktrees/.swarm")).expect("swarm dir");
    let checkout = home.join("worktrees/c1/tree");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let run = |mode: SandboxMode, script: &str| -> Duration {
        let spec = RunSpec::new(script, &checkout)
            .with_sandbox(mode)
            .with_weak_sandbox_allowed(true)
            .with_repository(&home)
            .with_timeout(Duration::from_secs(60));
        let start = Instant::now();
        let out = rt.block_on(spec.run());
        let took = start.elapsed();
        assert!(out.success(), "{mode}: {script}: {out:?}");
        took
    };

    let mut rows: Vec<(String, String, String)> = vec![];
    for (label, script) in COMMANDS {
        // Warm-up: page cache, the launcher binary, bubblewrap.
        for &m in &modes {
            run(m, script);
        }
        let mut times: Vec<Vec<f64>> = vec![vec![]; modes.len()];
        let mut ratios: Vec<Vec<f64>> = vec![vec![]; modes.len()];
        for _ in 0..ROUNDS {
            let round: Vec<f64> = modes.iter().map(|&m| run(m, script).as_secs_f64() * 1e3).collect();
            for (i, t) in round.iter().enumerate() {
                times[i].push(*t);
                ratios[i].push(t / round[0]);
            }
        }
        for (i, m) in modes.iter().enumerate() {
            let t = median(&mut times[i]);
            let r = median(&mut ratios[i]);
            let note = if *m == SandboxMode::Plain {
                format!("the floor (weak: no confinement); median of {ROUNDS}")
            } else {
                format!("{r:.2}x plain, +{:.1} ms (median of per-round ratios)", t - median(&mut times[0].clone()))
            };
            rows.push((format!("{label}, {m}"), format!("{t:.1} ms"), note));
        }
    }

    let mut md = String::new();
    let _ = writeln!(md, "{SECTION}\n");
    let _ = writeln!(
        md,
        "Reproduce: `cargo bench -p ratchet-kit --bench sandbox` (release build; one run, ratios from the same run)."
    );
    let _ = writeln!(
        md,
        "Machine: {} CPUs; the checkout a linked worktree of a swarm home under {} (the system temp dir, hidden \
         by the sandbox and its path rebuilt read-only inside). Load average (1 min) {load_before} at the start and {} at \
         the end: compare ratios from one run, not absolute numbers across runs.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::env::temp_dir().display(),
        loadavg()
    );
    let _ = writeln!(md, "| command, mode | wall time per run | notes |");
    let _ = writeln!(md, "| --- | --- | --- |");
    for (a, b, c) in &rows {
        let _ = writeln!(md, "| {a} | {b} | {c} |");
    }
    let _ = writeln!(
        md,
        "\nA run is `kit::exec::run` from spec to outcome: building the plan (reading the checkout's git \
         metadata), spawning, the command, reaping, the group kill. The one-off probe that `auto` and \
         `ratchet sandbox` use (one confined run per mode) took {probe_ms:.0} ms in this run."
    );
    if modes.len() < 3 {
        let _ = writeln!(md, "\nNot measured here (does not work on this machine): {}.", report.why_not_confined());
    }
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("BENCHMARKS.md");
    write_section(&out, SECTION, &md).expect("writing BENCHMARKS.md");
    eprintln!("wrote its section of {}", out.display());
}
