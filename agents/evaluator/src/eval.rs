//! The verdict over a finished [`Session`]: its sequential decision, the runs that failed and the
//! guard metrics, each reason carrying its numbers.

use protocol::evaluation::{Calibration, Effect, Outcome, Pair, Sampling, Side, Stopping};
use protocol::governance::{Direction, Ethos};
use serde::{Deserialize, Serialize};

use crate::diagnose::{Diagnosis, diagnose};
use crate::paired::{Scale, relative, spread};
use crate::sequential::{Call, Look};
use crate::session::{Failure, Session};
use crate::stats;

pub use protocol::evaluation::{GuardStats, SideStats, Stats};

/// The evaluator's answer for one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub outcome: Outcome,
    /// The headline first, then one line per part of the evidence.
    pub reasons: Vec<String>,
    pub stats: Stats,
    pub sampling: Sampling,
    pub diagnosis: Diagnosis,
}

impl Evaluation {
    /// "PROMOTE", "HOLD" or "REJECT".
    pub fn verdict(&self) -> &'static str {
        self.outcome.verdict()
    }
}

/// How a side's counted runs failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Clean,
    /// The first k failed, every later one passed.
    Leading(usize),
    /// Every run failed.
    All,
    /// Failures after a success.
    Scattered,
}

pub(crate) fn shape(outcomes: &[Option<f64>]) -> Shape {
    let leading = outcomes.iter().take_while(|o| o.is_none()).count();
    if outcomes.iter().all(Option::is_some) {
        Shape::Clean
    } else if leading == outcomes.len() {
        Shape::All
    } else if outcomes[leading..].iter().all(Option::is_some) {
        Shape::Leading(leading)
    } else {
        Shape::Scattered
    }
}

/// The side's values in round order (`None`: failed).
pub(crate) fn outcomes(pairs: &[Pair], side: Side) -> Vec<Option<f64>> {
    pairs
        .iter()
        .map(|p| match side {
            Side::Baseline => p.baseline,
            Side::Candidate => p.candidate,
        })
        .collect()
}

fn list_failures(failures: &[&Failure]) -> String {
    const SHOWN: usize = 3;
    let mut s =
        failures.iter().take(SHOWN).map(|f| format!("round {} ({})", f.round, f.reason)).collect::<Vec<_>>().join(", ");
    if failures.len() > SHOWN {
        s.push_str(&format!(" and {} more", failures.len() - SHOWN));
    }
    s
}

fn better_word(dir: Direction) -> &'static str {
    match dir {
        Direction::Lower => "lower",
        Direction::Higher => "higher",
    }
}

/// A relative change with its sign: 0.123 -> "+12.3%".
pub(crate) fn signed_pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// A ratio as a percentage: 0.0123 -> "1.2%".
pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A measurement with at least three significant digits and at least one decimal.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x:.1}");
    }
    let prec = (2 - x.abs().log10().floor() as i32).clamp(1, 6) as usize;
    format!("{x:.prec$}")
}

/// "[+12.1%, +27.5%]", with "-inf"/"+inf" for an unbounded end.
fn interval_text(lo: Option<f64>, hi: Option<f64>) -> String {
    let end = |x: Option<f64>, inf: &str| x.map(signed_pct).unwrap_or_else(|| inf.into());
    format!("[{}, {}]", end(lo, "-inf"), end(hi, "+inf"))
}

/// Rounds that would resolve an undecided look, from the interval's half-width now and the
/// half-width a decision needs; `None` when the estimate sits on a boundary (hundreds or more).
pub(crate) fn rounds_needed(look: &Look, threshold: f64) -> Option<u32> {
    if !look.lo.is_finite() || !look.hi.is_finite() || look.n == 0 {
        return None;
    }
    let half = (look.hi - look.lo) / 2.0;
    let e = look.estimate.abs();
    // Excluding 0 when the estimate is beyond the minimum effect; fitting within it otherwise.
    let need = if e >= threshold { e } else { threshold - e };
    if need <= threshold * 0.05 {
        return None;
    }
    let n = (look.n as f64 * (half / need).powi(2)).ceil();
    (n < 10_000.0).then_some(n.max(look.n as f64 + 1.0) as u32)
}

/// The runs of a session: how many succeeded on each side, and what their failures decide, if
/// anything (a broken candidate, an unreliable baseline, a cold start).
pub(crate) struct RunsPart {
    pub line: String,
    pub decision: Option<(Outcome, String)>,
    pub baseline: SideStats,
    pub candidate: SideStats,
}

/// Runs: a candidate whose runs fail is broken, unless the failures are a cold start or the
/// baseline fails as well (then the benchmark or the machine is at fault).
pub(crate) fn runs_part(session: &Session) -> RunsPart {
    let pairs = &session.pairs;
    let (b_out, c_out) = (outcomes(pairs, Side::Baseline), outcomes(pairs, Side::Candidate));
    let side = |o: &[Option<f64>]| {
        let xs: Vec<f64> = o.iter().flatten().copied().collect();
        SideStats { n: xs.len(), failed: o.len() - xs.len(), median: stats::median(&xs) }
    };
    let (bs, cs) = (side(&b_out), side(&c_out));
    let rounds = pairs.len() as u32;
    // What the runs decide, if anything: (outcome, headline).
    let mut runs_decision: Option<(Outcome, String)> = None;
    let counted: Vec<&Failure> = session.failures.iter().filter(|f| !f.warmup).collect();
    let of = |s: Side| counted.iter().copied().filter(|f| f.side == s).collect::<Vec<&Failure>>();
    let (b_fail, c_fail) = (of(Side::Baseline), of(Side::Candidate));
    let mut runs = format!("runs: baseline {}/{rounds} and candidate {}/{rounds} counted rounds succeeded", bs.n, cs.n);
    for (name, f) in [("baseline", &b_fail), ("candidate", &c_fail)] {
        if !f.is_empty() {
            runs.push_str(&format!("; {name} failed {}", list_failures(f)));
        }
    }
    match (shape(&b_out), shape(&c_out)) {
        (_, Shape::Clean) => {}
        (_, Shape::Leading(k)) => {
            runs.push_str(&format!(
                "; the candidate's first {k} counted run(s) failed and all later ones passed: a cold start, not counted against it"
            ));
            runs_decision = Some((
                Outcome::Unmeasurable,
                format!(
                    "HOLD: not measurable: the candidate's first {k} counted run(s) failed (a cold start); raise cadence warmup"
                ),
            ));
        }
        (Shape::Scattered | Shape::All, _) => {
            runs.push_str(
                "; the baseline fails too, so the benchmark or the machine is unreliable: not evidence against the candidate",
            );
            runs_decision = Some((
                Outcome::Unmeasurable,
                "HOLD: not measurable: the baseline's runs fail too (the benchmark or the machine is unreliable)"
                    .into(),
            ));
        }
        (_, Shape::Scattered | Shape::All) => {
            runs_decision = Some((
                Outcome::CandidateFails,
                format!(
                    "REJECT: candidate runs fail: {}/{rounds} counted rounds failed ({})",
                    cs.failed,
                    list_failures(&c_fail)
                ),
            ));
        }
    }
    RunsPart { line: runs, decision: runs_decision, baseline: bs, candidate: cs }
}

/// The guard metrics of a session: one line each, and the first regression or missing metric.
pub(crate) struct GuardsPart {
    pub lines: Vec<String>,
    pub stats: Vec<GuardStats>,
    /// The headline of the first guard that regressed beyond its tolerance.
    pub regressed: Option<String>,
    /// The headline of the first guard with no paired samples.
    pub missing: Option<String>,
}

/// Guards: paired changes of each guard metric.
pub(crate) fn guards_part(session: &Session, ethos: &Ethos) -> GuardsPart {
    let mut lines = Vec::new();
    let mut guards = Vec::new();
    let (mut guard_regressed, mut guard_missing) = (None, None);
    for g in &ethos.guard {
        let series = session.guards.get(&g.metric).cloned().unwrap_or_default();
        let bvals: Vec<f64> = series.iter().filter_map(|(b, _)| *b).collect();
        let cvals: Vec<f64> = series.iter().filter_map(|(_, c)| *c).collect();
        let changes: Vec<f64> = series
            .iter()
            .filter_map(|(b, c)| b.zip(*c))
            .filter(|(b, _)| *b != 0.0)
            .map(|(b, c)| {
                let rel = (c - b) / b.abs();
                match g.direction {
                    Direction::Lower => rel,
                    Direction::Higher => -rel,
                }
            })
            .collect();
        let regression = stats::median(&changes);
        let passed = regression.is_some_and(|r| r <= g.max_regression);
        let (bm, cm) = (stats::median(&bvals), stats::median(&cvals));
        let detail = match regression {
            None => {
                let missing = if cvals.is_empty() { "candidate" } else { "baseline" };
                guard_missing.get_or_insert(format!("HOLD: not measurable: guard metric `{}` missing", g.metric));
                format!(
                    "no paired samples of `{}` (none on the {missing} side); fix: print it in the benchmark's JSON line, or remove the guard from ethos.md",
                    g.metric
                )
            }
            Some(r) => {
                if !passed {
                    guard_regressed.get_or_insert(format!(
                        "REJECT: guard {} regressed: median paired change {} worse > max_regression {}",
                        g.metric,
                        pct(r),
                        pct(g.max_regression)
                    ));
                }
                format!(
                    "median {} -> {}, median paired regression {} {} max_regression {} ({} is better)",
                    bm.map(num).unwrap_or_else(|| "none".into()),
                    cm.map(num).unwrap_or_else(|| "none".into()),
                    signed_pct(r),
                    if passed { "<=" } else { ">" },
                    pct(g.max_regression),
                    better_word(g.direction)
                )
            }
        };
        lines.push(format!("guard {} {}: {detail}", g.metric, if passed { "pass" } else { "FAIL" }));
        guards.push(GuardStats {
            metric: g.metric.clone(),
            direction: g.direction,
            baseline: bm,
            candidate: cm,
            regression,
            max_regression: g.max_regression,
            passed,
        });
    }

    GuardsPart { lines, stats: guards, regressed: guard_regressed, missing: guard_missing }
}

/// The outcome of an evaluation: a broken candidate, a guard regression, significantly worse,
/// unmeasurable, then what the measurement found.
pub(crate) fn precedence(
    runs: Option<(Outcome, String)>,
    guard_regressed: Option<String>,
    guard_missing: Option<String>,
    measured: (Outcome, String),
) -> (Outcome, String) {
    match (runs, guard_regressed, guard_missing) {
        (Some(d), _, _) if d.0 == Outcome::CandidateFails => d,
        (_, Some(h), _) => (Outcome::GuardRegressed, h),
        _ if measured.0 == Outcome::Worse => measured,
        (Some(d), _, _) => d,
        (_, _, Some(h)) => (Outcome::Unmeasurable, h),
        _ => measured,
    }
}

/// Judge a finished session under `ethos`.
pub fn evaluate(session: &Session, ethos: &Ethos, calibration: Option<Calibration>) -> Evaluation {
    if session.plan.counting.is_some() {
        return crate::counts::evaluate(session, ethos, calibration);
    }
    let dir = ethos.direction;
    let plan = &session.plan;
    let pairs = &session.pairs;
    let (scale, _) = session.scale();
    let threshold = session.threshold();
    let scores = session.scores();
    let rel = |s: f64| relative(s, dir, scale);
    let look = session.last_look();
    let table = session.table();
    let alpha = 1.0 - ethos.confidence;

    let RunsPart { line: runs, decision: runs_decision, baseline: bs, candidate: cs } = runs_part(session);
    let effect = stats::median(&scores).map(rel);
    let spread_rel = spread(&scores).map(|s| rel(s).abs());
    let n_outliers = pairs.iter().filter(|p| p.outlier).count();
    let rounds = pairs.len() as u32;
    let pairing = plan.pairing.as_str();

    let mut lines: Vec<String> = Vec::new();
    lines.push(runs);

    // The paired rounds and their spread.
    let order = match plan.pairing {
        protocol::governance::Pairing::Sequential => "order randomized per round",
        protocol::governance::Pairing::Duet => "both at once, each pinned to its own CPU, the CPUs swapped at random",
    };
    let resumed = if session.resumed > 0 {
        format!(", {} of them from the earlier measurement it continues", session.resumed)
    } else {
        String::new()
    };
    lines.push(format!(
        "pairs: {rounds} {pairing} rounds ({order}){resumed}; {} complete; scores spread {} per round; {n_outliers} outlier round(s), reported and weighed as one round each",
        scores.len(),
        spread_rel.map(|s| format!("±{}", pct(s))).unwrap_or_else(|| "undefined".into()),
    ));

    // The effect with its interval.
    let (lo, hi) = match look {
        Some(l) => (l.lo.is_finite().then(|| rel(l.lo)), l.hi.is_finite().then(|| rel(l.hi))),
        None => (None, None),
    };
    let coverage = ((1.0 - 2.0 * alpha) * 1e6).round() / 1e6;
    // For people, the metric's own change (a time that went up is "+"), whatever its direction.
    let change = |i: f64| match dir {
        Direction::Lower => -i,
        Direction::Higher => i,
    };
    let change_interval = match dir {
        Direction::Lower => interval_text(hi.map(change), lo.map(change)),
        Direction::Higher => interval_text(lo, hi),
    };
    if let Some(e) = effect {
        lines.push(format!(
            "effect: median paired change of {} {} ({} is better), {} repeated interval {change_interval} (min_effect {})",
            ethos.metric,
            signed_pct(change(e)),
            better_word(dir),
            pct(coverage),
            pct(ethos.min_effect)
        ));
    }

    // The stopping rule.
    let stopping = session.stopped().unwrap_or(Stopping::Cap);
    let tests_text = |l: &Look| {
        let sign = match l.sign_critical {
            Some(k) => format!("sign test: {} of {} rounds better, {} worse, a side needs {k}", l.above, l.n, l.below),
            None => "the sign test cannot decide at this look".into(),
        };
        let total = l.n * (l.n + 1) / 2;
        let sr = match l.signed_rank_critical {
            Some(w) => format!("signed-rank W+ {} of {total} (better needs >= {w}, worse <= {})", l.w_plus, total - w),
            None => "the signed-rank test cannot decide at this look".into(),
        };
        format!(
            "{sign}; {sr}; nominal level {} at this look",
            table.map(|t| format!("{:.4}", t.nominal(l.n))).unwrap_or_default()
        )
    };
    let rule = match (stopping, look) {
        (Stopping::Boundary, Some(l)) => {
            let why = match l.call {
                Call::Better => format!(
                    "the interval excludes 0 on the better side and the median change {} is beyond min_effect {}",
                    signed_pct(change(rel(l.estimate))),
                    pct(ethos.min_effect)
                ),
                Call::Worse => format!(
                    "the interval excludes 0 on the worse side and the median change {} is beyond min_effect {}",
                    signed_pct(change(rel(l.estimate))),
                    pct(ethos.min_effect)
                ),
                _ => format!("the interval lies within ±{}", pct(ethos.min_effect)),
            };
            format!("stopped at round {rounds} (first look {}): {why} ({})", plan.first_look, tests_text(&l))
        }
        (Stopping::Failures, _) => format!("stopped at round {rounds}: the runs kept failing"),
        (Stopping::Fixed, _) => format!("a calibration of {rounds} fixed rounds"),
        // Instruction counts are judged in `counts`; a metric session never stops this way.
        (Stopping::Agreed, _) => format!("stopped at round {rounds}: two runs of each side agreed"),
        (Stopping::Cap, l) | (Stopping::Horizon, l) | (Stopping::Boundary, l) => {
            let which = if stopping == Stopping::Horizon {
                format!(
                    "the design's last round {} (max_rounds {} twice: a measurement and its re-measurement)",
                    plan.horizon, ethos.max_rounds
                )
            } else {
                format!("this measurement's cap max_rounds {}", plan.cap)
            };
            match l {
                Some(l) => format!("stopped at {which} undecided ({})", tests_text(&l)),
                None => format!(
                    "stopped at {which} with {} complete rounds, fewer than the first look {}",
                    scores.len(),
                    plan.first_look
                ),
            }
        }
    };
    lines.push(format!("stopping: {rule}"));

    let GuardsPart { lines: guard_lines, stats: guards, regressed: guard_regressed, missing: guard_missing } =
        guards_part(session, ethos);
    lines.extend(guard_lines);

    if let Some(c) = &calibration {
        lines.push(format!("calibration: {}", c.describe()));
    }

    // The decision of the sequential test, unless the runs or a guard decided already.
    let one_sided = pct(ethos.confidence);
    let sequential = match (look, stopping) {
        (Some(l), Stopping::Boundary) if l.call == Call::Better => (
            Outcome::Better,
            format!(
                "PROMOTE: {} better by {} (median of {} paired rounds, {pairing}; with {one_sided} confidence at least {} better), beyond min_effect {}",
                ethos.metric,
                pct(rel(l.estimate)),
                l.n,
                pct(rel(l.lo)),
                pct(ethos.min_effect)
            ),
        ),
        (Some(l), Stopping::Boundary) if l.call == Call::Worse => (
            Outcome::Worse,
            format!(
                "REJECT: {} worse by {} (median of {} paired rounds, {pairing}; with {one_sided} confidence at least {} worse), beyond min_effect {}",
                ethos.metric,
                pct(-rel(l.estimate)),
                l.n,
                pct(-rel(l.hi)),
                pct(ethos.min_effect)
            ),
        ),
        (Some(l), Stopping::Boundary) => (
            Outcome::NoChange,
            format!(
                "HOLD: no change that matters: {} {} with interval {change_interval} within ±{} after {} paired rounds ({pairing})",
                ethos.metric,
                signed_pct(change(rel(l.estimate))),
                pct(ethos.min_effect),
                l.n
            ),
        ),
        (l, _) => {
            let needed = l.and_then(|l| rounds_needed(&l, threshold));
            let would = match needed {
                Some(n) => format!("about {n} rounds would decide"),
                None => "it sits on the min_effect boundary: hundreds of rounds would be needed".into(),
            };
            let at = if stopping == Stopping::Horizon { "the design's last round" } else { "the cap" };
            (
                Outcome::TooNoisy,
                format!(
                    "HOLD: too noisy: undecided at {at} after {rounds} paired rounds ({pairing}): {} {} with interval {change_interval}; the paired ratios spread {} per round ({n_outliers} outlier rounds); {would}; fix: raise max_rounds, use pairing = \"duet\" (single-threaded CPU-bound benchmarks), or quiet the machine",
                    ethos.metric,
                    effect.map(|e| signed_pct(change(e))).unwrap_or_else(|| "no estimate".into()),
                    spread_rel.map(|s| format!("±{}", pct(s))).unwrap_or_else(|| "undefined".into()),
                ),
            )
        }
    };
    // Precedence: broken candidate, guard regression, significantly worse, unmeasurable, then
    // what the sequential test found.
    let (outcome, headline) = precedence(runs_decision, guard_regressed, guard_missing, sequential);
    let mut reasons = vec![headline];
    reasons.extend(lines);

    let effect_record = |e| Effect {
        estimate: e,
        lo,
        hi,
        coverage,
        scale: match scale {
            Scale::LogRatio => "log-ratio".into(),
            Scale::Difference => "difference".into(),
        },
    };
    let sampling = session.sampling(rule, effect.map(effect_record), calibration);
    let stats = Stats {
        metric: ethos.metric.clone(),
        direction: dir,
        confidence: ethos.confidence,
        min_effect: ethos.min_effect,
        scale,
        baseline: bs,
        candidate: cs,
        effect,
        spread: spread_rel,
        outliers: n_outliers,
        look,
        nominal_level: table.map(|t| t.level),
        guards,
        failures: session.failures.clone(),
    };
    let diagnosis = diagnose(session, outcome, &stats, ethos);
    Evaluation { outcome, reasons, stats, sampling, diagnosis }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::session::{Plan, RoundResult, RunResult};
    use protocol::governance::{Guard, Pairing};

    pub(crate) fn ethos() -> Ethos {
        Ethos {
            goal: "faster".into(),
            gates: vec![],
            test_command: "true".into(),
            benchmark: "bench".into(),
            benchmark_paths: vec![],
            metric: "time_ms".into(),
            direction: Direction::Lower,
            metric_pattern: None,
            confidence: 0.95,
            min_effect: 0.02,
            pairing: Pairing::Sequential,
            min_rounds: 5,
            max_rounds: 20,
            calibration_rounds: 8,
            measure: protocol::governance::Measure::Metric,
            count_tolerance: protocol::governance::DEFAULT_COUNT_TOLERANCE,
            guard_wall_time: false,
            gate_timeout_s: 60,
            bench_timeout_s: 60,
            guard: vec![],
            review: None,
            trusted_tests: vec![],
            trusted_checkout: Default::default(),
            trusted_build: vec![],
        }
    }

    /// Low noise: +-1% around `center`, in a fixed order.
    pub(crate) fn around(center: f64, i: usize) -> f64 {
        const JITTER: [f64; 7] = [0.0, 0.006, -0.004, 0.009, -0.007, 0.003, -0.01];
        center * (1.0 + JITTER[i % 7])
    }

    /// Run rounds from `f(round) -> (baseline, candidate)` until the session stops.
    pub(crate) fn session(ethos: &Ethos, f: impl Fn(usize) -> (RunResult, RunResult)) -> Session {
        let mut s = Session::new(Plan::evaluate(ethos, None, false, 11));
        while let Some(p) = s.next() {
            let (b, c) = f(p.round as usize);
            s.record(p, RoundResult::sequential(b, c));
        }
        s
    }

    fn values(b: f64, c: f64) -> impl Fn(usize) -> (RunResult, RunResult) {
        move |i| (RunResult::ok(around(b, i)), RunResult::ok(around(c, i + 3)))
    }

    fn line<'a>(e: &'a Evaluation, prefix: &str) -> &'a str {
        e.reasons.iter().find(|r| r.starts_with(prefix)).map(String::as_str).unwrap_or("")
    }

    #[test]
    fn promotes_a_clear_improvement_at_the_first_look() {
        let e = evaluate(&session(&ethos(), values(50.0, 40.0)), &ethos(), None);
        assert_eq!((e.outcome, e.verdict()), (Outcome::Better, "PROMOTE"), "{:#?}", e.reasons);
        assert_eq!(e.sampling.rounds, 5);
        assert_eq!(e.sampling.stopping, Stopping::Boundary);
        assert!(
            e.reasons[0].starts_with("PROMOTE: time_ms better by 19.")
                && e.reasons[0].contains("(median of 5 paired rounds, sequential; with 95.0% confidence at least 1"),
            "{}",
            e.reasons[0]
        );
        assert!(e.reasons[0].ends_with("beyond min_effect 2.0%"), "{}", e.reasons[0]);
        assert!(
            line(&e, "stopping: ")
                .starts_with("stopping: stopped at round 5 (first look 5): the interval excludes 0 on the better side"),
            "{:#?}",
            e.reasons
        );
        assert!(
            line(&e, "stopping: ").contains("sign test: 5 of 5 rounds better, 0 worse, a side needs 5"),
            "{:#?}",
            e.reasons
        );
        let effect = e.sampling.effect.as_ref().unwrap();
        assert!(effect.lo.unwrap() > 0.0 && (effect.estimate - 0.2).abs() < 0.02, "{effect:?}");
        assert_eq!(e.sampling.pairs.len(), 5);
        assert!(e.sampling.pairs.iter().all(|p| p.score.is_some_and(|s| s > 0.0)));
    }

    #[test]
    fn rejects_a_clear_regression() {
        let e = evaluate(&session(&ethos(), values(50.0, 60.0)), &ethos(), None);
        assert_eq!((e.outcome, e.verdict()), (Outcome::Worse, "REJECT"), "{:#?}", e.reasons);
        assert!(e.reasons[0].starts_with("REJECT: time_ms worse by 20."), "{}", e.reasons[0]);
        // Higher is better: the same numbers are an improvement.
        let higher = Ethos { direction: Direction::Higher, ..ethos() };
        assert_eq!(evaluate(&session(&higher, values(50.0, 60.0)), &higher, None).outcome, Outcome::Better);
    }

    #[test]
    fn holds_a_change_within_the_minimum_effect() {
        // 0.5% better, +-1% noise: confidently within 2% after enough rounds.
        let e = evaluate(&session(&ethos(), values(100.0, 99.5)), &ethos(), None);
        assert_eq!(e.outcome, Outcome::NoChange, "{:#?}", e.reasons);
        assert!(
            e.reasons[0].starts_with("HOLD: no change that matters: time_ms +0.2% with interval [-1.8%, +0.3%]"),
            "{}",
            e.reasons[0]
        );
        assert!(e.reasons[0].contains("within ±2.0% after"), "{}", e.reasons[0]);
        assert!(e.sampling.rounds > 5 && e.sampling.rounds < 20, "{}", e.sampling.rounds);
    }

    #[test]
    fn undecided_at_the_cap_says_the_spread_and_the_rounds_it_would_take() {
        // +-15% alternating around a 3% improvement: never clear within 10 rounds.
        let e10 = Ethos { max_rounds: 10, ..ethos() };
        let s = session(&e10, |i| {
            let c = if i % 2 == 0 { 85.0 } else { 109.0 };
            (RunResult::ok(100.0), RunResult::ok(c))
        });
        let e = evaluate(&s, &e10, None);
        assert_eq!(
            (e.outcome, e.sampling.stopping, e.sampling.rounds),
            (Outcome::TooNoisy, Stopping::Cap, 10),
            "{:#?}",
            e.reasons
        );
        let h = &e.reasons[0];
        assert!(
            h.starts_with("HOLD: too noisy: undecided at the cap after 10 paired rounds (sequential): time_ms -"),
            "{h}"
        );
        assert!(
            h.contains("the paired ratios spread ±")
                && h.contains("rounds would decide; fix: raise max_rounds, use pairing = \"duet\""),
            "{h}"
        );
        assert_eq!(e.diagnosis.pattern, crate::Pattern::TooNoisy);
        assert!(e.diagnosis.recommendation.is_none(), "no recommendation to raise rounds: sampling is sequential");
    }

    #[test]
    fn guards_are_paired() {
        let mut ethos = ethos();
        ethos.guard = vec![Guard { metric: "rss_mb".into(), direction: Direction::Lower, max_regression: 0.05 }];
        let with_rss = |rss: f64| {
            move |i: usize| {
                let mut b = RunResult::ok(around(50.0, i));
                let mut c = RunResult::ok(around(40.0, i + 3));
                b.guards.insert("rss_mb".into(), 100.0);
                c.guards.insert("rss_mb".into(), rss);
                (b, c)
            }
        };
        let e = evaluate(&session(&ethos, with_rss(103.0)), &ethos, None);
        assert_eq!(e.outcome, Outcome::Better, "{:#?}", e.reasons);
        assert_eq!(
            line(&e, "guard rss_mb"),
            "guard rss_mb pass: median 100.0 -> 103.0, median paired regression +3.0% <= max_regression 5.0% (lower is better)"
        );
        let e = evaluate(&session(&ethos, with_rss(120.0)), &ethos, None);
        assert_eq!(e.outcome, Outcome::GuardRegressed, "{:#?}", e.reasons);
        assert_eq!(
            e.reasons[0],
            "REJECT: guard rss_mb regressed: median paired change 20.0% worse > max_regression 5.0%"
        );
        let e = evaluate(&session(&ethos, values(50.0, 40.0)), &ethos, None);
        assert_eq!(e.outcome, Outcome::Unmeasurable, "{:#?}", e.reasons);
        assert!(
            line(&e, "guard rss_mb FAIL: no paired samples of `rss_mb` (none on the candidate side); fix:").len() > 10
        );
    }

    #[test]
    fn failing_runs() {
        // Failures scattered among successes: the candidate is broken.
        let s = session(&ethos(), |i| {
            let c = if i % 2 == 1 { RunResult::failed(format!("exit status {i}")) } else { RunResult::ok(40.0) };
            (RunResult::ok(50.0), c)
        });
        let e = evaluate(&s, &ethos(), None);
        assert_eq!((e.outcome, e.sampling.stopping), (Outcome::CandidateFails, Stopping::Failures), "{:#?}", e.reasons);
        assert_eq!(
            e.reasons[0],
            "REJECT: candidate runs fail: 3/6 counted rounds failed (round 1 (exit status 1), round 3 (exit status 3), round 5 (exit status 5))"
        );
        // Every run fails: rejected at once, a capability ceiling.
        let s = session(&ethos(), |_| (RunResult::ok(50.0), RunResult::failed("exit status 1")));
        let e = evaluate(&s, &ethos(), None);
        assert_eq!((e.outcome, e.sampling.rounds), (Outcome::CandidateFails, 3));
        assert_eq!(e.diagnosis.pattern, crate::Pattern::CapabilityCeiling);
        // The baseline fails as often: the benchmark is flaky, not evidence against the candidate.
        let s = session(&ethos(), |i| {
            let r = |v| if i % 3 == 1 { RunResult::failed("killed by signal 9") } else { RunResult::ok(v) };
            (r(50.0), r(40.0))
        });
        let e = evaluate(&s, &ethos(), None);
        assert_eq!(e.outcome, Outcome::Unmeasurable, "{:#?}", e.reasons);
        assert!(line(&e, "runs: ").contains("the baseline fails too"), "{:#?}", e.reasons);
        // Leading failures then fine: a cold start, held, with a warmup recommendation.
        let s = session(&ethos(), |i| {
            let c = if i < 2 { RunResult::failed("exit status 1") } else { RunResult::ok(around(40.0, i)) };
            (RunResult::ok(around(50.0, i)), c)
        });
        let e = evaluate(&s, &ethos(), None);
        assert_eq!(e.outcome, Outcome::Unmeasurable, "{:#?}", e.reasons);
        assert_eq!(e.diagnosis.pattern, crate::Pattern::ColdStart);
        let r = e.diagnosis.recommendation.as_ref().expect("warmup");
        assert_eq!((r.setting.as_str(), r.from, r.to), ("cadence.warmup", 0, 2));
    }

    #[test]
    fn evaluation_json_snapshot() {
        let e = evaluate(&session(&ethos(), values(41.2, 35.0)), &ethos(), None);
        let json = serde_json::to_string_pretty(
            &serde_json::json!({"outcome": e.outcome, "reasons": e.reasons, "sampling": e.sampling}),
        )
        .expect("serializable");
        expect_test::expect![[r#"
            {
              "outcome": "better",
              "reasons": [
                "PROMOTE: time_ms better by 14.5% (median of 5 paired rounds, sequential; with 95.0% confidence at least 14.3% better), beyond min_effect 2.0%",
                "runs: baseline 5/5 and candidate 5/5 counted rounds succeeded",
                "pairs: 5 sequential rounds (order randomized per round); 5 complete; scores spread ±0.3% per round; 0 outlier round(s), reported and weighed as one round each",
                "effect: median paired change of time_ms -14.5% (lower is better), 90.0% repeated interval [-16.6%, -14.3%] (min_effect 2.0%)",
                "stopping: stopped at round 5 (first look 5): the interval excludes 0 on the better side and the median change -14.5% is beyond min_effect 2.0% (sign test: 5 of 5 rounds better, 0 worse, a side needs 5; signed-rank W+ 15 of 15 (better needs >= 15, worse <= 0); nominal level 0.0351 at this look)"
              ],
              "sampling": {
                "cap": 20,
                "effect": {
                  "coverage": 0.9,
                  "estimate": 0.1445149530159474,
                  "hi": 0.1664822423431832,
                  "lo": 0.1428398058252428,
                  "scale": "log-ratio"
                },
                "first_look": 5,
                "horizon": 40,
                "pairing": "sequential",
                "pairs": [
                  {
                    "baseline": 41.2,
                    "candidate": 35.315,
                    "first": "candidate",
                    "round": 0,
                    "score": 0.15413045349459523
                  },
                  {
                    "baseline": 41.4472,
                    "candidate": 34.755,
                    "first": "candidate",
                    "round": 1,
                    "score": 0.17609688148057887
                  },
                  {
                    "baseline": 41.0352,
                    "candidate": 35.105,
                    "first": "baseline",
                    "round": 2,
                    "score": 0.15608666448872988
                  },
                  {
                    "baseline": 41.5708,
                    "candidate": 34.65,
                    "first": "baseline",
                    "round": 3,
                    "score": 0.18210027209104038
                  },
                  {
                    "baseline": 40.9116,
                    "candidate": 35.0,
                    "first": "candidate",
                    "round": 4,
                    "score": 0.1560655799291026
                  }
                ],
                "resumed": 0,
                "rounds": 5,
                "rule": "stopped at round 5 (first look 5): the interval excludes 0 on the better side and the median change -14.5% is beyond min_effect 2.0% (sign test: 5 of 5 rounds better, 0 worse, a side needs 5; signed-rank W+ 15 of 15 (better needs >= 15, worse <= 0); nominal level 0.0351 at this look)",
                "stopping": "boundary"
              }
            }"#]].assert_eq(&json);
    }
}
