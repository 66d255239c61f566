//! Decisions on instruction counts (ethos.md `measure = "instructions"`): a near-deterministic
//! metric needs no statistics of many rounds, only proof that it repeats.
//!
//! Each round runs baseline and candidate once under the counter (in duet pairing, twice each,
//! at the same time on two CPUs). Sampling stops as soon as two runs of each side agree within
//! `count_tolerance` (relative); at most [`crate::session::COUNT_CAP`] rounds (a re-measurement
//! continues to twice that). Each side's count is the mean of its two agreeing runs, the effect
//! is `1 - candidate / baseline` (positive: fewer instructions), and its interval runs from the
//! worst to the best ratio of the agreeing runs. Then, as for the metric:
//! - PROMOTE: the interval excludes 0 on the better side and the effect is at least `min_effect`;
//! - REJECT: the same on the worse side;
//! - HOLD, no change that matters: otherwise (with `count_tolerance <= min_effect / 2`, which
//!   ethos.md enforces, the interval is then within `min_effect` or straddles it by less than
//!   the tolerance);
//! - HOLD, too noisy: the counts of a side never repeated within the tolerance (a benchmark
//!   whose work depends on a random seed, the time, or the machine's state).
//!
//! An instruction count is a proxy for time. With `guard_wall_time`, a PROMOTE is checked by a
//! short paired wall-time measurement with the sequential test ([`with_wall_time`]): a
//! significant regression (worse by at least `min_effect`) turns it into REJECT.

use protocol::evaluation::{Calibration, Effect, Outcome, Pair, Side, Stopping};
use protocol::governance::{Direction, Ethos, Measure};

use crate::diagnose::diagnose;
use crate::eval::{Evaluation, GuardStats, GuardsPart, RunsPart, Stats, guards_part, pct, precedence, runs_part};
use crate::paired::Scale;
use crate::session::Session;

/// What counts are called in reasons.
pub const NAME: &str = "instructions";
/// What the wall-time guard's values are called.
pub const WALL_TIME: &str = "wall_time_ms";

/// The runs of one side in round order: each round's value, or in duet pairing each slot's
/// (both of a side's runs in a round).
pub fn side_runs(pairs: &[Pair], side: Side) -> Vec<f64> {
    let pick = |b: Option<f64>, c: Option<f64>| if side == Side::Baseline { b } else { c };
    pairs
        .iter()
        .flat_map(|p| {
            if p.slots.is_empty() {
                vec![pick(p.baseline, p.candidate)]
            } else {
                p.slots.iter().map(|s| pick(s.baseline, s.candidate)).collect()
            }
        })
        .flatten()
        .collect()
}

/// The relative difference of two counts: `|a - b| / max(a, b)`.
pub fn disagreement(a: f64, b: f64) -> f64 {
    let hi = a.max(b);
    if hi <= 0.0 { 0.0 } else { (a - b).abs() / hi }
}

/// The two runs closest together, `(lower, higher)`, when they agree within `tolerance`
/// (ties: the earlier pair).
pub fn agreement(runs: &[f64], tolerance: f64) -> Option<(f64, f64)> {
    let mut best: Option<(f64, (f64, f64))> = None;
    for i in 0..runs.len() {
        for j in i + 1..runs.len() {
            let d = disagreement(runs[i], runs[j]);
            if d <= tolerance && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, (runs[i].min(runs[j]), runs[i].max(runs[j]))));
            }
        }
    }
    best.map(|(_, pair)| pair)
}

/// `454123021` -> "454,123,021".
pub fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// A change of a count with the digits small changes need: "+4.0%", "-0.022%", "+0%".
pub fn signed_fine(x: f64) -> String {
    let text = protocol::evaluation::fine_pct(x);
    if x >= 0.0 { format!("+{text}") } else { text }
}

fn runs_text(runs: &[f64]) -> String {
    if runs.is_empty() { "none".into() } else { runs.iter().map(|r| grouped(*r)).collect::<Vec<_>>().join(", ") }
}

/// The largest disagreement among a side's runs.
fn widest(runs: &[f64]) -> f64 {
    let (lo, hi) = runs.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    if runs.len() < 2 { 0.0 } else { disagreement(lo, hi) }
}

/// Judge a finished instruction-count session under `ethos`.
pub fn evaluate(session: &Session, ethos: &Ethos, calibration: Option<Calibration>) -> Evaluation {
    let plan = &session.plan;
    let tolerance = plan.counting.expect("an instruction-count plan");
    let counter = plan.counter.map(|c| c.as_str()).unwrap_or("the counter");
    let pairs = &session.pairs;
    let rounds = pairs.len() as u32;
    let pairing = plan.pairing.as_str();
    let RunsPart { line: runs_line, decision: runs_decision, baseline: mut bs, candidate: mut cs } = runs_part(session);
    let (b_runs, c_runs) = (side_runs(pairs, Side::Baseline), side_runs(pairs, Side::Candidate));
    let (b_agreed, c_agreed) = (agreement(&b_runs, tolerance), agreement(&c_runs, tolerance));
    let mean = |(a, b): (f64, f64)| (a + b) / 2.0;
    let (b, c) = (b_agreed.map(mean), c_agreed.map(mean));
    bs.median = b;
    cs.median = c;
    // Relative change, positive = fewer instructions, and its interval over the agreeing runs.
    let (effect, lo, hi) = match (b_agreed, c_agreed) {
        (Some((b_lo, b_hi)), Some((c_lo, c_hi))) if b_lo > 0.0 => {
            let (b, c) = (mean((b_lo, b_hi)), mean((c_lo, c_hi)));
            (Some(1.0 - c / b), Some(1.0 - c_hi / b_lo), Some(1.0 - c_lo / b_hi))
        }
        _ => (None, None, None),
    };
    let spread = match (b_agreed, c_agreed) {
        (Some(x), Some(y)) => Some(disagreement(x.0, x.1).max(disagreement(y.0, y.1))),
        _ => None,
    };
    let tol = crate::eval::pct(tolerance);
    let fine = protocol::evaluation::fine_pct;

    let mut lines = vec![runs_line];
    lines.push(format!(
        "counts: instructions counted by {counter} (user space, every process of the tree; address randomization off, PYTHONHASHSEED=0) in {rounds} {pairing} round(s): baseline {}; candidate {}",
        runs_text(&b_runs),
        runs_text(&c_runs)
    ));
    // For people: the count's own change (more instructions is "+").
    let change_interval = match (lo, hi) {
        (Some(lo), Some(hi)) => format!("[{}, {}]", signed_fine(-hi), signed_fine(-lo)),
        _ => "undefined".into(),
    };
    if let (Some(e), Some(b), Some(c)) = (effect, b, c) {
        lines.push(format!(
            "effect: instructions {} (fewer is better): baseline {}, candidate {}; {change_interval} over the agreeing runs (min_effect {})",
            signed_fine(-e),
            grouped(b),
            grouped(c),
            pct(ethos.min_effect)
        ));
    }
    let stopping = session.stopped().unwrap_or(Stopping::Cap);
    let unrepeated = || {
        [("baseline", &b_runs, b_agreed), ("candidate", &c_runs, c_agreed)]
            .into_iter()
            .filter(|(_, _, a)| a.is_none())
            .map(|(side, runs, _)| {
                format!("the {side}'s runs ({}) differ by up to {}", runs_text(runs), fine(widest(runs)))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let rule = match stopping {
        Stopping::Agreed => {
            let (b2, c2) = (b_agreed.unwrap_or_default(), c_agreed.unwrap_or_default());
            format!(
                "stopped at round {rounds}: two runs of each side agree within count_tolerance {tol} (baseline {} and {}, {} apart; candidate {} and {}, {} apart)",
                grouped(b2.0),
                grouped(b2.1),
                fine(disagreement(b2.0, b2.1)),
                grouped(c2.0),
                grouped(c2.1),
                fine(disagreement(c2.0, c2.1))
            )
        }
        Stopping::Failures => format!("stopped at round {rounds}: the runs kept failing"),
        Stopping::Fixed => format!("a calibration of {rounds} fixed rounds"),
        Stopping::Cap | Stopping::Horizon | Stopping::Boundary => format!(
            "stopped at {} {rounds} rounds without two runs of each side within count_tolerance {tol}: {}",
            if stopping == Stopping::Horizon { "the design's last round," } else { "the cap," },
            unrepeated()
        ),
    };
    lines.push(format!("stopping: {rule}"));
    let GuardsPart { lines: guard_lines, stats: guards, regressed, missing } = guards_part(session, ethos);
    lines.extend(guard_lines);
    if let Some(cal) = &calibration {
        lines.push(format!("calibration: {}", cal.describe()));
    }

    let how = |b: f64, c: f64| {
        format!(
            "{counter}: baseline {}, candidate {}; two runs of each side agree within {tol}",
            grouped(b),
            grouped(c)
        )
    };
    let measured = match (effect, lo, hi, b, c) {
        (Some(e), Some(lo), _, Some(b), Some(c)) if lo > 0.0 && e >= ethos.min_effect => (
            Outcome::Better,
            format!(
                "PROMOTE: instructions fewer by {} ({}), beyond min_effect {}",
                pct(e),
                how(b, c),
                pct(ethos.min_effect)
            ),
        ),
        (Some(e), _, Some(hi), Some(b), Some(c)) if hi < 0.0 && e <= -ethos.min_effect => (
            Outcome::Worse,
            format!(
                "REJECT: instructions more by {} ({}), beyond min_effect {}",
                pct(-e),
                how(b, c),
                pct(ethos.min_effect)
            ),
        ),
        (Some(e), _, _, Some(b), Some(c)) => (
            Outcome::NoChange,
            format!(
                "HOLD: no change that matters: instructions {} ({}) within ±{}",
                signed_fine(-e),
                how(b, c),
                pct(ethos.min_effect)
            ),
        ),
        _ => (
            Outcome::TooNoisy,
            format!(
                "HOLD: too noisy: the instruction counts do not repeat within count_tolerance {tol} after {rounds} round(s): {}; fix: make the benchmark do the same work on every run (seed its random numbers; hash seeds and address randomization are already fixed), or raise count_tolerance in ethos.md",
                unrepeated()
            ),
        ),
    };
    let (outcome, headline) = precedence(runs_decision, regressed, missing, measured);
    let mut reasons = vec![headline];
    reasons.extend(lines);
    let record = |estimate| Effect { estimate, lo, hi, coverage: 1.0, scale: "instruction-count".into() };
    let sampling = session.sampling(rule, effect.map(record), calibration);
    let stats = Stats {
        metric: NAME.into(),
        direction: Direction::Lower,
        confidence: ethos.confidence,
        min_effect: ethos.min_effect,
        scale: Scale::LogRatio,
        baseline: bs,
        candidate: cs,
        effect,
        spread,
        outliers: 0,
        look: None,
        nominal_level: None,
        guards,
        failures: session.failures.clone(),
    };
    let diagnosis = diagnose(session, outcome, &stats, ethos);
    Evaluation { outcome, reasons, stats, sampling, diagnosis }
}

/// The ethos the wall-time guard is judged under: the command's wall time in milliseconds,
/// lower is better, no guard metrics of its own.
pub fn wall_time_ethos(ethos: &Ethos) -> Ethos {
    Ethos {
        metric: WALL_TIME.into(),
        direction: Direction::Lower,
        metric_pattern: None,
        measure: Measure::Metric,
        guard_wall_time: false,
        guard: vec![],
        ..ethos.clone()
    }
}

/// An instruction-count evaluation with its wall-time guard: the guard's verdict (`wall`,
/// judged by the sequential test on the command's wall time) fails when it is significantly
/// worse by at least `min_effect` or the candidate's native runs fail (REJECT), and cannot
/// pass when it could not measure (HOLD); otherwise the counts' verdict stands. Both are
/// recorded: the guard's headline and rule in the reasons, its sampling in `wall_time`, its
/// medians among the guards.
pub fn with_wall_time(mut counts: Evaluation, wall: Evaluation, ethos: &Ethos) -> Evaluation {
    let regression = wall.stats.effect.map(|e| -e);
    let passed = !matches!(wall.outcome, Outcome::Worse | Outcome::CandidateFails | Outcome::Unmeasurable);
    let said = wall.reasons.first().cloned().unwrap_or_default();
    counts.reasons.push(format!(
        "wall-time guard {}: {} paired native run(s) a side ({}): {said}",
        if passed { "pass" } else { "FAIL" },
        wall.sampling.rounds,
        wall.sampling.pairing.as_str()
    ));
    counts.reasons.push(format!("wall-time guard stopping: {}", wall.sampling.rule));
    counts.stats.guards.push(GuardStats {
        metric: WALL_TIME.into(),
        direction: Direction::Lower,
        baseline: wall.stats.baseline.median,
        candidate: wall.stats.candidate.median,
        regression,
        max_regression: ethos.min_effect,
        passed,
    });
    if !passed {
        let headline = match wall.outcome {
            Outcome::Worse => format!(
                "REJECT: guard wall_time regressed: {}; yet the candidate executes {} fewer instructions (instruction counts miss sleeping, waiting and memory stalls)",
                said.trim_start_matches("REJECT: "),
                counts.stats.effect.map(pct).unwrap_or_default()
            ),
            Outcome::CandidateFails => {
                format!(
                    "REJECT: guard wall_time: the candidate's native runs fail: {}",
                    said.trim_start_matches("REJECT: ")
                )
            }
            _ => format!("HOLD: not measurable: the wall-time guard could not measure: {said}"),
        };
        counts.outcome =
            if wall.outcome == Outcome::Unmeasurable { Outcome::Unmeasurable } else { Outcome::GuardRegressed };
        counts.reasons[0] = headline;
    }
    counts.sampling.wall_time = Some(Box::new(wall.sampling));
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{COUNT_CAP, Plan, RoundResult, RunResult};
    use protocol::evaluation::Counter;
    use protocol::governance::Pairing;

    fn ethos() -> Ethos {
        Ethos { measure: Measure::Instructions, count_tolerance: 0.001, ..crate::eval::tests::ethos() }
    }

    /// Rounds of (baseline, candidate) counts from `f` until the session stops.
    fn session(ethos: &Ethos, f: impl Fn(usize) -> (f64, f64)) -> Session {
        let mut s = Session::new(Plan::evaluate(ethos, None, false, 7).with_counter(Counter::Callgrind));
        while let Some(p) = s.next() {
            let (b, c) = f(p.round as usize);
            s.record(p, RoundResult::sequential(RunResult::ok(b), RunResult::ok(c)));
        }
        s
    }

    #[test]
    fn agreement_picks_the_closest_runs_within_the_tolerance() {
        assert_eq!(agreement(&[100.0], 0.01), None);
        assert_eq!(agreement(&[100.0, 150.0, 100.5], 0.01), Some((100.0, 100.5)));
        assert_eq!(agreement(&[100.0, 150.0, 100.5, 100.2], 0.01), Some((100.0, 100.2)));
        assert_eq!(agreement(&[100.0, 102.0], 0.01), None);
        assert_eq!(agreement(&[7.0, 7.0], 0.0), Some((7.0, 7.0)), "a tolerance of 0 asks for equal counts");
        assert_eq!(grouped(454_123_021.0), "454,123,021");
        assert_eq!(grouped(21.0), "21");
        assert_eq!(grouped(-1000.0), "-1,000");
    }

    #[test]
    fn a_few_percent_fewer_instructions_is_promoted_in_two_rounds() {
        let e = ethos();
        let s = session(&e, |i| (236_000_000.0 + i as f64, 226_560_000.0 - i as f64));
        let ev = evaluate(&s, &e, None);
        assert_eq!((ev.outcome, ev.sampling.rounds, ev.sampling.stopping), (Outcome::Better, 2, Stopping::Agreed));
        assert_eq!(
            ev.reasons[0],
            "PROMOTE: instructions fewer by 4.0% (callgrind: baseline 236,000,000, candidate 226,560,000; two runs of each side agree within 0.1%), beyond min_effect 2.0%"
        );
        assert!(ev.reasons.iter().any(|r| r.starts_with("stopping: stopped at round 2: two runs of each side agree")));
        assert!(
            ev.reasons.iter().any(|r| r.starts_with("counts: instructions counted by callgrind")
                && r.ends_with("baseline 236,000,000, 236,000,001; candidate 226,560,000, 226,559,999")),
            "{:#?}",
            ev.reasons
        );
        assert_eq!((ev.sampling.measure, ev.sampling.counter), (Measure::Instructions, Some(Counter::Callgrind)));
        assert_eq!(ev.stats.baseline.median, Some(236_000_000.5));
        let effect = ev.sampling.effect.as_ref().unwrap();
        assert!(effect.lo.unwrap() > 0.0 && (effect.estimate - 0.04).abs() < 1e-6, "{effect:?}");
        // More instructions: rejected; the same: no change.
        let worse = evaluate(&session(&e, |_| (100e6, 104e6)), &e, None);
        assert_eq!(worse.outcome, Outcome::Worse, "{:#?}", worse.reasons);
        assert!(worse.reasons[0].starts_with("REJECT: instructions more by 4.0% (callgrind"), "{}", worse.reasons[0]);
        let same = evaluate(&session(&e, |i| (100e6, 100e6 + 5.0 * i as f64)), &e, None);
        assert_eq!(same.outcome, Outcome::NoChange, "{:#?}", same.reasons);
        assert!(
            same.reasons[0].starts_with("HOLD: no change that matters: instructions +0.0000025% (callgrind"),
            "{}",
            same.reasons[0]
        );
        // Just below min_effect: no change that matters either.
        assert_eq!(evaluate(&session(&e, |_| (100e6, 98.1e6)), &e, None).outcome, Outcome::NoChange);
        assert_eq!(evaluate(&session(&e, |_| (100e6, 97.9e6)), &e, None).outcome, Outcome::Better);
    }

    /// A first run that counts a build (a cold start) does not agree with the later ones and
    /// is left out; counts that never repeat are too noisy, saying which side and by how much.
    #[test]
    fn counts_that_do_not_repeat_take_more_runs_or_are_too_noisy() {
        let e = ethos();
        let s = session(&e, |i| (if i == 0 { 150e6 } else { 100e6 }, 90e6));
        let ev = evaluate(&s, &e, None);
        assert_eq!((ev.outcome, ev.sampling.rounds), (Outcome::Better, 3), "{:#?}", ev.reasons);
        let wild = session(&e, |i| (100e6 * (1.0 + 0.01 * i as f64), 90e6));
        let ev = evaluate(&wild, &e, None);
        assert_eq!(
            (ev.outcome, ev.sampling.rounds, ev.sampling.stopping),
            (Outcome::TooNoisy, COUNT_CAP, Stopping::Cap),
            "{:#?}",
            ev.reasons
        );
        assert!(
            ev.reasons[0].starts_with("HOLD: too noisy: the instruction counts do not repeat within count_tolerance 0.1% after 5 round(s): the baseline's runs (100,000,000, 101,000,000,")
                && ev.reasons[0].contains("differ by up to 3.8%"),
            "{}",
            ev.reasons[0]
        );
        assert_eq!(ev.diagnosis.pattern, crate::Pattern::TooNoisy);
        // A re-measurement continues the rounds up to twice the cap.
        let again = Session::resume(Plan::evaluate(&e, None, true, 7), &wild.pairs);
        assert_eq!((again.plan.cap, again.stopped()), (2 * COUNT_CAP, None));
    }

    /// Duet: one round runs each side twice (its two slots), so one round can decide.
    #[test]
    fn a_duet_round_gives_two_runs_a_side() {
        let e = Ethos { pairing: Pairing::Duet, ..ethos() };
        let mut s = Session::new(Plan::evaluate(&e, None, false, 3).with_cpus(0, 1).with_counter(Counter::Perf));
        let p = s.next().unwrap();
        let run = (RunResult::ok(50e6), RunResult::ok(45e6));
        s.record(p, RoundResult::duet(&p, run.clone(), run));
        assert_eq!(s.stopped(), Some(Stopping::Agreed));
        let ev = evaluate(&s, &e, None);
        assert_eq!((ev.outcome, ev.sampling.rounds), (Outcome::Better, 1), "{:#?}", ev.reasons);
        assert!(ev.reasons[0].contains("(perf: baseline 50,000,000"), "{}", ev.reasons[0]);
    }

    /// The wall-time guard turns a PROMOTE into REJECT when the candidate's wall time is
    /// significantly worse, and records both either way.
    #[test]
    fn the_wall_time_guard_blocks_a_slower_candidate_and_records_both() {
        let e = Ethos { guard_wall_time: true, ..ethos() };
        let counts = || evaluate(&session(&e, |_| (100e6, 90e6)), &e, None);
        let wall = |c: f64| {
            let we = wall_time_ethos(&e);
            let mut s = Session::new(Plan::wall_time(&e, 5));
            while let Some(p) = s.next() {
                let i = p.round as usize;
                s.record(
                    p,
                    RoundResult::sequential(
                        RunResult::ok(crate::eval::tests::around(100.0, i)),
                        RunResult::ok(crate::eval::tests::around(c, i + 3)),
                    ),
                );
            }
            crate::evaluate(&s, &we, None)
        };
        let slow = with_wall_time(counts(), wall(400.0), &e);
        assert_eq!(slow.outcome, Outcome::GuardRegressed, "{:#?}", slow.reasons);
        assert!(
            slow.reasons[0].starts_with("REJECT: guard wall_time regressed: wall_time_ms worse by 3")
                && slow.reasons[0]
                    .contains("; yet the candidate executes 10.0% fewer instructions (instruction counts miss"),
            "{}",
            slow.reasons[0]
        );
        let w = slow.sampling.wall_time.as_ref().expect("the guard's sampling");
        assert_eq!((w.measure, w.rounds), (Measure::Metric, 5));
        assert!(slow.reasons.iter().any(|r| r.starts_with("wall-time guard FAIL: 5 paired native run(s) a side")));
        let g = slow.stats.guards.iter().find(|g| g.metric == WALL_TIME).expect("a guard entry");
        assert!(!g.passed && g.regression.unwrap() > 2.0, "{g:?}");
        // As fast (or faster): the counts' PROMOTE stands, with the guard's evidence.
        let fine = with_wall_time(counts(), wall(99.0), &e);
        assert_eq!(fine.outcome, Outcome::Better, "{:#?}", fine.reasons);
        assert!(fine.reasons[0].starts_with("PROMOTE: instructions fewer by 10.0%"));
        assert!(fine.reasons.iter().any(|r| r.starts_with("wall-time guard pass:")), "{:#?}", fine.reasons);
        assert!(fine.sampling.wall_time.is_some());
    }
}
