//! `ratchet calibrate`: measure the machine's noise for this repository's benchmark now, under
//! the approved governance: the evaluator runs the baseline (main) against itself for ethos.md's
//! `calibration_rounds` rounds, in its pairing, and reports the spread of the paired ratios, the
//! share of outlier rounds and the first look that noise suggests. The result is appended to the
//! swarm's event log as a `calibrated` event. The loop does the same at the start of every run.
//!
//! It runs the evaluator binary once (`evaluator --once`, found beside `ratchet`), so the
//! measurement is the evaluator's own code, serialized with any running swarm's benchmarks by
//! the benchmark lock.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use kit::layout::Layout;
use protocol::events::{Event, EventKind};
use protocol::governance::Measure;
use protocol::work::{CalibrateOutput, EvaluateInput, EvaluateMode, SandboxSettings};

/// Rounds used when ethos.md turns the loop's calibration off (`calibration_rounds = 0`).
pub const ON_DEMAND_ROUNDS: u32 = 8;

/// Calibrate now and record the event; `measure` overrides ethos.md's for this calibration
/// (`instructions` also reports the counters, the slowdown and the wall time's spread).
pub fn calibrate(home: &Path, what: Option<Measure>) -> anyhow::Result<CalibrateOutput> {
    let gov = crate::govern::load(home)?;
    let result = measure(home, &gov, None, what)?;
    record(home, &gov, &result)?;
    Ok(result)
}

/// The evaluator's A/A measurement of `main` under `gov`, for `rounds` rounds (default: ethos.md's
/// `calibration_rounds`, or [`ON_DEMAND_ROUNDS`]), without recording it. `ratchet check` uses it
/// with one round to see that the benchmark runs and its metric parses, by the evaluator's own
/// parser. `what` measures instructions or the metric instead of ethos.md's `measure`.
pub fn measure(
    home: &Path,
    gov: &protocol::governance::Governance,
    rounds: Option<u32>,
    what: Option<Measure>,
) -> anyhow::Result<CalibrateOutput> {
    let main = kit::git::Git::new(home)
        .resolve_commit("refs/heads/main")?
        .context("the repository has no main branch; fix: create it (git branch -M main) and commit")?;
    let mut ethos = gov.ethos.clone();
    if ethos.calibration_rounds == 0 {
        ethos.calibration_rounds = ON_DEMAND_ROUNDS;
    }
    if let Some(r) = rounds {
        ethos.calibration_rounds = r;
    }
    if let Some(m) = what
        && m != ethos.measure
    {
        ethos.measure = m;
        ethos.guard_wall_time = false;
        if m == Measure::Instructions {
            // Counts are better when fewer, whatever the benchmark's own metric.
            ethos.direction = protocol::governance::Direction::Lower;
        }
    }
    let input = EvaluateInput {
        base: main.clone(),
        commit: main,
        ethos,
        warmup: gov.cadence.warmup,
        sandbox: SandboxSettings::from(&gov.constitution),
        mode: EvaluateMode::Calibrate,
        first_look: None,
        resume: vec![],
        calibration: None,
    };
    let program = crate::housekeeping::agent_program("evaluator")?;
    let mut child = Command::new(&program)
        .arg("--once")
        .env("RATCHET_HOME", home)
        // The error's own words, not a backtrace, are what a person reads.
        .env("RUST_BACKTRACE", "0")
        .current_dir(home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&serde_json::to_vec(&input)?)
        .context("writing the calibration request to the evaluator")?;
    let out = child.wait_with_output().context("waiting for the evaluator")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = err
            .lines()
            .find(|l| l.starts_with("Error: "))
            .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("no output")
            .trim_start_matches("Error: ");
        bail!("calibration failed: {why}");
    }
    let result: CalibrateOutput = serde_json::from_slice(&out.stdout).with_context(|| {
        format!("the evaluator's answer is not a calibration: {}", String::from_utf8_lossy(&out.stdout))
    })?;
    Ok(result)
}

/// Append the `calibrated` event.
fn record(home: &Path, gov: &protocol::governance::Governance, result: &CalibrateOutput) -> anyhow::Result<()> {
    let mut event = Event::new(
        format!("calibrate-{}", &result.calibration.at),
        EventKind::Calibrated { calibration: result.calibration.clone() },
    );
    event.governance = gov.hashes.clone();
    event.agent = Some("ratchet calibrate".into());
    let layout = Layout::new(home);
    std::fs::create_dir_all(layout.swarm()).with_context(|| format!("creating {}", layout.swarm().display()))?;
    kit::substrate::append_event(&layout.events_file(), &event)?;
    Ok(())
}

/// The calibration for people: the summary line, the first look and every pair.
pub fn render(out: &CalibrateOutput) -> String {
    let c = &out.calibration;
    let mut o = format!("calibrated: {}\n", c.describe());
    match &out.counting {
        None => o.push_str(&format!(
            "first look: round {} (ethos.md min_rounds, raised for the outlier rounds seen)\n",
            c.first_look
        )),
        Some(counting) => o.push_str(&render_counting(counting, c)),
    }
    let sampling = protocol::evaluation::Sampling {
        pairing: c.pairing,
        first_look: c.first_look,
        cap: c.rounds,
        horizon: c.rounds,
        rounds: c.rounds,
        resumed: 0,
        stopping: protocol::evaluation::Stopping::Fixed,
        rule: format!("{} fixed A/A rounds", c.rounds),
        effect: None,
        pairs: c.pairs.clone(),
        warmup: vec![],
        calibration: None,
        measure: protocol::governance::Measure::Metric,
        counter: c.counter,
        tolerance: None,
        wall_time: None,
    };
    let text = crate::explain::render_sampling(&sampling);
    // Only the pairs table: the summary above says the rest.
    if let Some(i) = text.find("  pairs (") {
        o.push_str(&text[i..]);
    }
    o.push_str(&format!("benchmark runs: {} ({} ms in benchmark commands)\n", out.runs.len(), out.command_ms));
    o
}

/// What a calibration of instruction counts adds, for people: each counter and why it does or
/// does not work here, the slowdown under the chosen one, and the two spreads side by side.
pub fn render_counting(counting: &protocol::evaluation::Counting, c: &protocol::evaluation::Calibration) -> String {
    let mut o = String::from("counters (probed in the benchmark's sandbox):\n");
    for t in &counting.counters.tools {
        o.push_str(&format!("  {}: {}: {}\n", t.counter, if t.works { "works" } else { "not usable" }, t.detail));
    }
    let chosen = counting.counters.chosen.map(|c| c.as_str()).unwrap_or("none");
    match (counting.slowdown(), counting.counted_ms, counting.native_ms) {
        (Some(x), Some(cm), Some(nm)) => o.push_str(&format!(
            "slowdown under {chosen}: {x:.1}x (a counted run {cm} ms, a native run {nm} ms; medians)\n"
        )),
        _ => o.push_str(&format!("slowdown under {chosen}: not measured (no successful runs of both kinds)\n")),
    }
    let pct = |s: Option<f64>, fine: bool| match s {
        Some(s) if fine => format!("±{}", protocol::evaluation::fine_pct(s)),
        Some(s) => format!("±{:.1}%", s * 100.0),
        None => "undefined".into(),
    };
    o.push_str(&format!(
        "run-to-run spread per round: instruction counts {}, wall time {} ({} A/A rounds each): counts decide when two runs of each side agree within count_tolerance; wall time needs the sequential test's rounds\n",
        pct(c.spread, true),
        pct(counting.wall_spread, false),
        c.rounds
    ));
    o
}
