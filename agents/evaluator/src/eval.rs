//! The verdict: gates over baseline and candidate samples, each with a reason carrying numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use protocol::governance::{Direction, Ethos, StatTest};
use serde::{Deserialize, Serialize};

use crate::diagnose::{Diagnosis, diagnose_with};
use crate::stats::{self, BootstrapCi, MannWhitney, RESAMPLES};

/// A benchmark run that produced no metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// 0-based round, counted separately for warmup and counted runs (as in [`crate::Run`]).
    pub round: u32,
    /// An uncounted warmup run.
    #[serde(default)]
    pub warmup: bool,
    /// Short reason: "exit status 1", "timeout after 60 s", "no metric: ...".
    pub reason: String,
}

/// Everything one side (baseline or candidate) produced. Each counted round yields either one
/// value in `samples` (and one in each guard series) or one entry in `failures`; rounds are
/// recovered from that, so `samples` must be in round order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runs {
    /// The main metric of each counted run that succeeded, in round order.
    #[serde(default)]
    pub samples: Vec<f64>,
    /// Guard metric name -> its value in each counted run that succeeded, in round order.
    #[serde(default)]
    pub guards: BTreeMap<String, Vec<f64>>,
    /// Counted and warmup runs that failed.
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// The main metric of each warmup run that succeeded (never counted).
    #[serde(default)]
    pub warmup: Vec<f64>,
}

impl Runs {
    pub fn counted_failures(&self) -> impl Iterator<Item = &Failure> {
        self.failures.iter().filter(|f| !f.warmup)
    }

    fn failed_rounds(&self) -> BTreeSet<u32> {
        self.counted_failures().map(|f| f.round).collect()
    }

    /// Counted rounds that ran (succeeded or failed).
    pub fn rounds(&self) -> usize {
        self.samples.len() + self.failed_rounds().len()
    }

    /// Warmup rounds that ran (succeeded or failed).
    pub fn warmup_rounds(&self) -> usize {
        self.warmup.len() + self.failures.iter().filter(|f| f.warmup).map(|f| f.round).collect::<BTreeSet<_>>().len()
    }

    /// Each counted round in order: its sample, or `None` when the run failed.
    pub fn outcomes(&self) -> Vec<Option<f64>> {
        let failed = self.failed_rounds();
        let mut samples = self.samples.iter().copied();
        (0..self.rounds()).map(|r| if failed.contains(&(r as u32)) { None } else { samples.next() }).collect()
    }
}

/// What the evaluator measured for one candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalInput {
    pub baseline: Runs,
    pub candidate: Runs,
}

impl EvalInput {
    /// The (repeats, warmup) rounds that actually ran: the cadence in force for this evaluation.
    pub fn ran(&self) -> (u32, u32) {
        let (b, c) = (&self.baseline, &self.candidate);
        (b.rounds().max(c.rounds()) as u32, b.warmup_rounds().max(c.warmup_rounds()) as u32)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every gate passed: the candidate is better beyond noise and the minimum effect.
    Promote,
    /// Not enough evidence either way (too few samples, unstable, effect too small or noise).
    Hold,
    /// Significantly worse, a guard metric regressed, or the candidate's runs fail.
    Reject,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Promote => "PROMOTE",
            Verdict::Hold => "HOLD",
            Verdict::Reject => "REJECT",
        })
    }
}

/// Summary statistics of one side, with every sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideStats {
    /// Valid counted samples.
    pub n: usize,
    /// Counted runs that failed.
    pub failed: usize,
    pub median: Option<f64>,
    pub mad: Option<f64>,
    /// Robust coefficient of variation, 1.4826 * MAD / |median|.
    pub cv: Option<f64>,
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
    pub samples: Vec<f64>,
    pub warmup: Vec<f64>,
    pub failures: Vec<Failure>,
}

impl SideStats {
    fn of(runs: &Runs) -> SideStats {
        let xs = &runs.samples;
        SideStats {
            n: xs.len(),
            failed: runs.counted_failures().count(),
            median: stats::median(xs),
            mad: stats::mad(xs),
            cv: stats::robust_cv(xs),
            mean: stats::mean(xs),
            stddev: stats::stddev(xs),
            samples: xs.clone(),
            warmup: runs.warmup.clone(),
            failures: runs.failures.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardStats {
    pub metric: String,
    pub direction: Direction,
    /// Medians of the guard metric.
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// Relative change of the median in the bad direction (positive = worse).
    pub regression: Option<f64>,
    pub max_regression: f64,
    pub passed: bool,
}

/// The numbers behind a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub metric: String,
    pub direction: Direction,
    /// The test that decides significance.
    pub test: StatTest,
    pub confidence: f64,
    pub baseline: SideStats,
    pub candidate: SideStats,
    /// Relative change of the median, (candidate - baseline) / |baseline|.
    pub effect: Option<f64>,
    /// `effect` signed so that positive is better.
    pub improvement: Option<f64>,
    /// One-sided p-value of "candidate better" under `test`.
    pub p_value: Option<f64>,
    pub mann_whitney: Option<MannWhitney>,
    /// Bootstrap interval of the median difference (candidate - baseline).
    pub ci: Option<BootstrapCi>,
    pub guards: Vec<GuardStats>,
}

/// The evaluator's answer for one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub verdict: Verdict,
    /// First the verdict's headline, then one line per gate ("<gate> pass: ..." / "<gate> FAIL: ...").
    pub reasons: Vec<String>,
    pub stats: Stats,
    pub diagnosis: Diagnosis,
}

struct Gate {
    name: String,
    pass: bool,
    detail: String,
}

/// Judge a candidate against its baseline under `ethos`. The diagnosis uses the repeats and
/// warmup that actually ran ([`EvalInput::ran`]); [`crate::diagnose`] takes them from a cadence.
pub fn evaluate(input: &EvalInput, ethos: &Ethos) -> Evaluation {
    let dir = ethos.direction;
    let alpha = 1.0 - ethos.confidence;
    let (b, c) = (&input.baseline, &input.candidate);
    let mann_whitney = stats::mann_whitney(&b.samples, &c.samples, dir);
    let ci = stats::bootstrap_median_diff(&b.samples, &c.samples, dir, ethos.confidence, RESAMPLES);
    let (bs, cs) = (SideStats::of(b), SideStats::of(c));
    let effect = bs.median.zip(cs.median).filter(|(bm, _)| *bm != 0.0).map(|(bm, cm)| (cm - bm) / bm.abs());
    let improvement = bs.median.zip(cs.median).and_then(|(bm, cm)| stats::improvement(bm, cm, dir));
    let p_value = match ethos.test {
        StatTest::MannWhitney => mann_whitney.as_ref().map(|m| m.p_better),
        StatTest::Bootstrap => ci.as_ref().map(|c| c.p_better),
    };

    let mut gates = Vec::new();
    let mut rejects = Vec::new();
    let mut gate = |name: &str, pass: bool, detail: String| gates.push(Gate { name: name.into(), pass, detail });

    // Runs: a candidate whose runs fail is broken, unless the failures are a cold start or the
    // baseline fails as well (then the benchmark or the machine is at fault).
    let (b_shape, c_shape) = (shape(&b.outcomes()), shape(&c.outcomes()));
    let mut detail =
        format!("baseline {}/{} and candidate {}/{} counted runs succeeded", bs.n, b.rounds(), cs.n, c.rounds());
    for (side, runs) in [("baseline", b), ("candidate", c)] {
        if runs.counted_failures().next().is_some() {
            detail.push_str(&format!("; {side} failed {}", list_failures(runs)));
        }
    }
    match c_shape {
        Shape::Clean => {}
        Shape::Leading(k) => detail.push_str(&format!(
            "; the candidate's first {k} counted run(s) failed and all later ones passed: a cold start, not counted against it"
        )),
        Shape::Scattered | Shape::All if matches!(b_shape, Shape::Scattered | Shape::All) => detail.push_str(
            "; the baseline fails too, so the benchmark or the machine is unreliable: not evidence against the candidate",
        ),
        Shape::Scattered | Shape::All => {
            rejects.push(format!("candidate runs fail: {}/{} counted runs failed ({})", cs.failed, c.rounds(), list_failures(c)))
        }
    }
    gate("runs", c_shape == Shape::Clean, detail);

    let min = ethos.min_samples as usize;
    let enough = bs.n >= min && cs.n >= min;
    gate(
        "samples",
        enough,
        format!("baseline {} and candidate {} valid samples; min_samples is {min} per side", bs.n, cs.n),
    );

    let cv_text = |cv: Option<f64>| cv.map(pct).unwrap_or_else(|| "undefined".into());
    let stable = |cv: Option<f64>| cv.is_some_and(|v| v <= ethos.max_cv);
    gate(
        "stability",
        stable(bs.cv) && stable(cs.cv),
        format!("robust CV baseline {}, candidate {}; max_cv is {}", cv_text(bs.cv), cv_text(cs.cv), pct(ethos.max_cv)),
    );

    let change = change_text(bs.median, cs.median);
    let (effect_pass, effect_detail) = match improvement {
        _ if bs.median.is_none() || cs.median.is_none() => {
            (false, "no median: a side has no valid samples".to_string())
        }
        None => (false, format!("{change}: no relative change, the baseline median is 0")),
        Some(i) if i > ethos.min_effect => {
            (true, format!("{change}: better by {} > min_effect {}", pct(i), pct(ethos.min_effect)))
        }
        Some(i) if i > 0.0 => {
            (false, format!("{change}: better by {}, not beyond min_effect {}", pct(i), pct(ethos.min_effect)))
        }
        Some(i) => (false, format!("{change}: not better ({} worse; {} is better)", pct(-i), better_word(dir))),
    };
    gate("improvement", effect_pass, effect_detail);

    let (better, worse, sig_short, worse_short, sig_detail) = match (ethos.test, &mann_whitney, &ci) {
        (StatTest::MannWhitney, Some(mw), _) => {
            let (better, worse) = (mw.p_better < alpha, mw.p_worse < alpha);
            let cmp = if better { "<" } else { ">=" };
            let method = match mw.method {
                stats::Method::Exact => "exact",
                stats::Method::Normal => "normal approximation",
            };
            (
                better,
                worse,
                format!("Mann-Whitney p={} {cmp} {}", p_text(mw.p_better), trim(alpha)),
                format!("Mann-Whitney p={} < {} that it is worse", p_text(mw.p_worse), trim(alpha)),
                format!(
                    "Mann-Whitney U={} ({method}), one-sided p={} {cmp} {} that the candidate is better (p={} that it is worse)",
                    trim(mw.u),
                    p_text(mw.p_better),
                    trim(alpha),
                    p_text(mw.p_worse)
                ),
            )
        }
        (StatTest::Bootstrap, _, Some(ci)) => {
            let (better, worse) = (ci.better(dir), ci.worse(dir));
            let bound = ci.good_bound(dir);
            let cmp = match (dir, better) {
                (Direction::Lower, true) => "< 0",
                (Direction::Higher, true) => "> 0",
                (_, false) => "does not exclude 0",
            };
            let level = pct(ethos.confidence);
            (
                better,
                worse,
                format!("bootstrap {level} bound of the median difference {} {cmp}", num(bound)),
                format!(
                    "bootstrap {level} bound of the median difference {} {} 0",
                    num(ci.good_bound(flip(dir))),
                    if dir == Direction::Lower { ">" } else { "<" }
                ),
                format!(
                    "bootstrap median difference {}, one-sided {level} bound {} {cmp} (interval [{}, {}], {} resamples)",
                    num(ci.diff),
                    num(bound),
                    num(ci.lo),
                    num(ci.hi),
                    ci.resamples
                ),
            )
        }
        _ => (false, false, String::new(), String::new(), "no test: a side has no valid samples".to_string()),
    };
    gate("significance", better, sig_detail);
    if enough && worse {
        rejects.push(format!("candidate significantly worse: {change}, {worse_short}"));
    }

    let mut guards = Vec::new();
    for g in &ethos.guard {
        let bm = b.guards.get(&g.metric).and_then(|xs| stats::median(xs));
        let cm = c.guards.get(&g.metric).and_then(|xs| stats::median(xs));
        let name = format!("guard {}", g.metric);
        let (Some(bv), Some(cv)) = (bm, cm) else {
            let side = if bm.is_none() { "baseline" } else { "candidate" };
            gate(
                &name,
                false,
                format!(
                    "no samples of `{}` on the {side} side; fix: make the benchmark print `{}` in its JSON line (guards are read from the JSON form, not metric_pattern)",
                    g.metric, g.metric
                ),
            );
            guards.push(GuardStats {
                metric: g.metric.clone(),
                direction: g.direction,
                baseline: bm,
                candidate: cm,
                regression: None,
                max_regression: g.max_regression,
                passed: false,
            });
            continue;
        };
        let regression = stats::improvement(bv, cv, g.direction).map(|i| 0.0 - i);
        let passed = match regression {
            Some(r) => r <= g.max_regression,
            None => !g.direction.better(bv, cv),
        };
        let change = change_text(bm, cm);
        let verdict_text = match regression {
            Some(r) if passed => format!("regression {} <= max_regression {}", pct(r.max(0.0)), pct(g.max_regression)),
            Some(r) => format!("regression {} > max_regression {}", pct(r), pct(g.max_regression)),
            None if passed => "not worse than the baseline median 0".to_string(),
            None => "worse than the baseline median 0".to_string(),
        };
        if !passed {
            rejects.push(format!("guard {} regressed: {change}, {verdict_text}", g.metric));
        }
        gate(&name, passed, format!("{change}, {verdict_text} ({} is better)", better_word(g.direction)));
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

    let verdict = if !rejects.is_empty() {
        Verdict::Reject
    } else if gates.iter().all(|g| g.pass) {
        Verdict::Promote
    } else {
        Verdict::Hold
    };
    let headline = match verdict {
        Verdict::Promote => format!("PROMOTE: {} {change}, {sig_short}; every gate passed", ethos.metric),
        Verdict::Reject => format!("REJECT: {}", rejects.join("; ")),
        Verdict::Hold => {
            let failed: Vec<&str> = gates.iter().filter(|g| !g.pass).map(|g| g.name.as_str()).collect();
            format!("HOLD: not enough evidence to promote: {} did not pass", failed.join(", "))
        }
    };
    let mut reasons = vec![headline];
    reasons.extend(gates.iter().map(|g| format!("{} {}: {}", g.name, if g.pass { "pass" } else { "FAIL" }, g.detail)));

    let (repeats, warmup) = input.ran();
    Evaluation {
        verdict,
        reasons,
        stats: Stats {
            metric: ethos.metric.clone(),
            direction: dir,
            test: ethos.test,
            confidence: ethos.confidence,
            baseline: bs,
            candidate: cs,
            effect,
            improvement,
            p_value,
            mann_whitney,
            ci,
            guards,
        },
        diagnosis: diagnose_with(input, ethos, repeats, warmup),
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

fn list_failures(runs: &Runs) -> String {
    const SHOWN: usize = 3;
    let failed: Vec<&Failure> = runs.counted_failures().collect();
    let mut s =
        failed.iter().take(SHOWN).map(|f| format!("round {} ({})", f.round, f.reason)).collect::<Vec<_>>().join(", ");
    if failed.len() > SHOWN {
        s.push_str(&format!(" and {} more", failed.len() - SHOWN));
    }
    s
}

fn flip(dir: Direction) -> Direction {
    match dir {
        Direction::Lower => Direction::Higher,
        Direction::Higher => Direction::Lower,
    }
}

fn better_word(dir: Direction) -> &'static str {
    match dir {
        Direction::Lower => "lower",
        Direction::Higher => "higher",
    }
}

/// "median 41.2 -> 35.0 (-15.0%)".
pub(crate) fn change_text(from: Option<f64>, to: Option<f64>) -> String {
    let show = |x: Option<f64>| x.map(num).unwrap_or_else(|| "none".into());
    let rel = match (from, to) {
        (Some(f), Some(t)) if f != 0.0 => format!(" ({:+.1}%)", (t - f) / f.abs() * 100.0),
        _ => String::new(),
    };
    format!("median {} -> {}{rel}", show(from), show(to))
}

/// A measurement with at least three significant digits and at least one decimal.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x:.1}");
    }
    let prec = (2 - x.abs().log10().floor() as i32).clamp(1, 6) as usize;
    format!("{x:.prec$}")
}

/// A ratio as a percentage: 0.0123 -> "1.2%".
pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn p_text(p: f64) -> String {
    if p < 1e-4 { format!("{p:.1e}") } else { format!("{p:.4}") }
}

/// A setting or statistic without float noise: 0.050000000000000044 -> "0.05", 49.0 -> "49".
fn trim(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::governance::Guard;

    pub(crate) fn ethos() -> Ethos {
        Ethos {
            goal: "make it faster".into(),
            gates: vec!["cargo build".into()],
            test_command: "cargo test".into(),
            benchmark: "./bench.sh".into(),
            benchmark_paths: vec!["bench/**".into()],
            metric: "time_ms".into(),
            direction: Direction::Lower,
            metric_pattern: None,
            test: StatTest::MannWhitney,
            confidence: 0.95,
            min_effect: 0.02,
            min_samples: 5,
            max_cv: 0.10,
            gate_timeout_s: 60,
            bench_timeout_s: 60,
            guard: vec![],
            review: None,
        }
    }

    /// Low noise: +-1% around `center`, in a fixed order.
    pub(crate) fn around(center: f64, n: usize) -> Vec<f64> {
        const JITTER: [f64; 7] = [0.0, 0.006, -0.004, 0.009, -0.007, 0.003, -0.01];
        (0..n).map(|i| center * (1.0 + JITTER[i % 7]) + (i / 7) as f64 * 0.001).collect()
    }

    pub(crate) fn runs(samples: Vec<f64>) -> Runs {
        Runs { samples, ..Runs::default() }
    }

    pub(crate) fn input(b: Vec<f64>, c: Vec<f64>) -> EvalInput {
        EvalInput { baseline: runs(b), candidate: runs(c) }
    }

    fn reason<'a>(e: &'a Evaluation, gate: &str) -> &'a str {
        e.reasons.iter().find(|r| r.starts_with(&format!("{gate} "))).map(String::as_str).unwrap_or("")
    }

    #[test]
    fn promotes_a_clear_improvement() {
        let e = evaluate(&input(around(50.0, 7), around(40.0, 7)), &ethos());
        assert_eq!(e.verdict, Verdict::Promote, "{:#?}", e.reasons);
        assert_eq!(
            e.reasons[0],
            "PROMOTE: time_ms median 50.0 -> 40.0 (-20.0%), Mann-Whitney p=0.0003 < 0.05; every gate passed"
        );
        assert_eq!(
            reason(&e, "improvement"),
            "improvement pass: median 50.0 -> 40.0 (-20.0%): better by 20.0% > min_effect 2.0%"
        );
        assert_eq!(e.reasons.len(), 1 + 5);
        assert!(e.reasons[1..].iter().all(|r| r.contains(" pass: ")), "{:#?}", e.reasons);
    }

    #[test]
    fn promotes_higher_is_better_and_with_the_bootstrap() {
        let mut ethos = ethos();
        ethos.direction = Direction::Higher;
        ethos.test = StatTest::Bootstrap;
        let e = evaluate(&input(around(100.0, 7), around(120.0, 7)), &ethos);
        assert_eq!(e.verdict, Verdict::Promote, "{:#?}", e.reasons);
        let sig = reason(&e, "significance");
        assert!(
            sig.starts_with("significance pass: bootstrap median difference 20.0, one-sided 95.0% bound "),
            "{sig}"
        );
        assert!(sig.contains("> 0 (interval ["), "{sig}");
        assert_eq!(e.stats.p_value, Some(0.0));
        // The same improvement under "lower is better" is a regression.
        ethos.direction = Direction::Lower;
        assert_eq!(evaluate(&input(around(100.0, 7), around(120.0, 7)), &ethos).verdict, Verdict::Reject);
    }

    #[test]
    fn rejects_a_clear_regression() {
        let e = evaluate(&input(around(50.0, 7), around(60.0, 7)), &ethos());
        assert_eq!(e.verdict, Verdict::Reject, "{:#?}", e.reasons);
        assert_eq!(
            e.reasons[0],
            "REJECT: candidate significantly worse: median 50.0 -> 60.0 (+20.0%), Mann-Whitney p=0.0003 < 0.05 that it is worse"
        );
        assert!(reason(&e, "improvement").contains("not better (20.0% worse; lower is better)"), "{:#?}", e.reasons);
    }

    #[test]
    fn holds_on_pure_noise() {
        let b = vec![100.0, 102.0, 98.0, 101.0, 99.0, 103.0, 97.0];
        let c = vec![101.0, 99.0, 102.0, 98.0, 100.0, 97.0, 103.0];
        for test in [StatTest::MannWhitney, StatTest::Bootstrap] {
            let e = evaluate(&input(b.clone(), c.clone()), &Ethos { test, ..ethos() });
            assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
            assert!(reason(&e, "significance").starts_with("significance FAIL: "), "{:#?}", e.reasons);
            assert!(e.stats.p_value.unwrap() > 0.3, "{:?}", e.stats);
        }
    }

    #[test]
    fn holds_an_improvement_below_the_minimum_effect() {
        // 1% better with 0.1% noise: significant, but below min_effect 2%.
        let b: Vec<f64> = around(1000.0, 7).iter().map(|x| 1000.0 + (x - 1000.0) / 10.0).collect();
        let c: Vec<f64> = b.iter().map(|x| x * 0.99).collect();
        let e = evaluate(&input(b, c), &ethos());
        assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
        assert_eq!(e.reasons[0], "HOLD: not enough evidence to promote: improvement did not pass");
        assert_eq!(
            reason(&e, "improvement"),
            "improvement FAIL: median 1000.0 -> 990.0 (-1.0%): better by 1.0%, not beyond min_effect 2.0%"
        );
        assert!(reason(&e, "significance").starts_with("significance pass: "), "{:#?}", e.reasons);
    }

    #[test]
    fn holds_unstable_samples_and_rejects_when_unstable_but_clearly_worse() {
        let wild = vec![30.0, 55.0, 41.0, 70.0, 33.0, 48.0, 62.0];
        let e = evaluate(&input(around(50.0, 7), wild), &ethos());
        assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
        let st = reason(&e, "stability");
        assert!(st.starts_with("stability FAIL: robust CV baseline 0.9%, candidate 43.2%; max_cv is 10.0%"), "{st}");

        let wild_and_worse = vec![80.0, 120.0, 95.0, 140.0, 85.0, 100.0, 130.0];
        let e = evaluate(&input(around(50.0, 7), wild_and_worse), &ethos());
        assert_eq!(e.verdict, Verdict::Reject, "{:#?}", e.reasons);
        assert!(reason(&e, "stability").starts_with("stability FAIL"), "{:#?}", e.reasons);
    }

    #[test]
    fn holds_too_few_samples() {
        let e = evaluate(&input(around(50.0, 3), around(40.0, 3)), &ethos());
        assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
        assert_eq!(
            reason(&e, "samples"),
            "samples FAIL: baseline 3 and candidate 3 valid samples; min_samples is 5 per side"
        );
        let e = evaluate(&input(around(50.0, 7), vec![]), &ethos());
        assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
        assert_eq!(reason(&e, "significance"), "significance FAIL: no test: a side has no valid samples");
    }

    #[test]
    fn rejects_a_guard_regression_and_holds_a_missing_guard() {
        let mut ethos = ethos();
        ethos.guard = vec![Guard { metric: "rss_mb".into(), direction: Direction::Lower, max_regression: 0.05 }];
        let mut i = input(around(50.0, 7), around(40.0, 7));
        i.baseline.guards.insert("rss_mb".into(), around(100.0, 7));
        i.candidate.guards.insert("rss_mb".into(), around(103.0, 7));
        let e = evaluate(&i, &ethos);
        assert_eq!(e.verdict, Verdict::Promote, "{:#?}", e.reasons);
        assert_eq!(
            reason(&e, "guard rss_mb"),
            "guard rss_mb pass: median 100.0 -> 103.0 (+3.0%), regression 3.0% <= max_regression 5.0% (lower is better)"
        );

        i.candidate.guards.insert("rss_mb".into(), around(120.0, 7));
        let e = evaluate(&i, &ethos);
        assert_eq!(e.verdict, Verdict::Reject, "{:#?}", e.reasons);
        assert_eq!(
            e.reasons[0],
            "REJECT: guard rss_mb regressed: median 100.0 -> 120.0 (+20.0%), regression 20.0% > max_regression 5.0%"
        );
        assert!(!e.stats.guards[0].passed);

        i.candidate.guards.clear();
        let e = evaluate(&i, &ethos);
        assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
        assert!(
            reason(&e, "guard rss_mb")
                .starts_with("guard rss_mb FAIL: no samples of `rss_mb` on the candidate side; fix:")
        );
    }

    fn fail(round: u32, reason: &str) -> Failure {
        Failure { round, warmup: false, reason: reason.into() }
    }

    #[test]
    fn candidate_run_failures() {
        // Failures between successes: the candidate is broken.
        let mut i = input(around(50.0, 7), around(40.0, 5));
        i.candidate.failures = vec![fail(2, "exit status 1"), fail(5, "exit status 101")];
        let e = evaluate(&i, &ethos());
        assert_eq!(e.verdict, Verdict::Reject, "{:#?}", e.reasons);
        assert_eq!(
            e.reasons[0],
            "REJECT: candidate runs fail: 2/7 counted runs failed (round 2 (exit status 1), round 5 (exit status 101))"
        );
        assert_eq!(i.candidate.outcomes().iter().filter(|o| o.is_none()).count(), 2);
        assert_eq!(i.candidate.outcomes()[2], None);

        // The same failures on the baseline side too: the benchmark is flaky, not the candidate.
        i.baseline.samples.truncate(5);
        i.baseline.failures = vec![fail(1, "killed by signal 9"), fail(4, "killed by signal 9")];
        let e = evaluate(&i, &ethos());
        assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
        assert!(reason(&e, "runs").contains("the baseline fails too"), "{:#?}", e.reasons);

        // Leading failures then passes: a cold start, held (and diagnosed), not rejected.
        let mut i = input(around(50.0, 7), around(40.0, 5));
        i.candidate.failures = vec![fail(0, "exit status 1"), fail(1, "exit status 1")];
        let e = evaluate(&i, &ethos());
        assert_eq!(e.verdict, Verdict::Hold, "{:#?}", e.reasons);
        assert_eq!(e.reasons[0], "HOLD: not enough evidence to promote: runs did not pass");
        assert!(reason(&e, "runs").contains("a cold start"), "{:#?}", e.reasons);
        assert_eq!(e.diagnosis.pattern, crate::Pattern::ColdStart);

        // Every run fails: rejected.
        let mut i = input(around(50.0, 7), vec![]);
        i.candidate.failures = (0..7).map(|r| fail(r, "exit status 1")).collect();
        let e = evaluate(&i, &ethos());
        assert_eq!(e.verdict, Verdict::Reject, "{:#?}", e.reasons);
        assert!(e.reasons[0].contains("7/7 counted runs failed (round 0 (exit status 1), round 1 (exit status 1), round 2 (exit status 1) and 4 more)"), "{}", e.reasons[0]);
    }

    #[test]
    fn evaluation_json_snapshot() {
        let mut ethos = ethos();
        ethos.guard = vec![Guard { metric: "rss_mb".into(), direction: Direction::Lower, max_regression: 0.05 }];
        let mut i = input(vec![41.2, 41.5, 40.9, 41.8, 41.0], vec![35.0, 35.3, 34.8, 35.6, 34.9]);
        i.baseline.warmup = vec![47.0];
        i.candidate.warmup = vec![39.5];
        i.baseline.guards.insert("rss_mb".into(), vec![100.0, 101.0, 100.0, 99.0, 100.0]);
        i.candidate.guards.insert("rss_mb".into(), vec![101.0, 100.0, 102.0, 101.0, 101.0]);
        i.candidate.failures = vec![Failure { round: 0, warmup: true, reason: "exit status 1".into() }];
        let json = serde_json::to_string_pretty(&evaluate(&i, &ethos)).expect("serializable");
        expect_test::expect![[r#"
            {
              "verdict": "PROMOTE",
              "reasons": [
                "PROMOTE: time_ms median 41.2 -> 35.0 (-15.0%), Mann-Whitney p=0.0040 < 0.05; every gate passed",
                "runs pass: baseline 5/5 and candidate 5/5 counted runs succeeded",
                "samples pass: baseline 5 and candidate 5 valid samples; min_samples is 5 per side",
                "stability pass: robust CV baseline 1.1%, candidate 0.8%; max_cv is 10.0%",
                "improvement pass: median 41.2 -> 35.0 (-15.0%): better by 15.0% > min_effect 2.0%",
                "significance pass: Mann-Whitney U=25 (exact), one-sided p=0.0040 < 0.05 that the candidate is better (p=1.0000 that it is worse)",
                "guard rss_mb pass: median 100.0 -> 101.0 (+1.0%), regression 1.0% <= max_regression 5.0% (lower is better)"
              ],
              "stats": {
                "metric": "time_ms",
                "direction": "lower",
                "test": "mann-whitney",
                "confidence": 0.95,
                "baseline": {
                  "n": 5,
                  "failed": 0,
                  "median": 41.2,
                  "mad": 0.29999999999999716,
                  "cv": 0.01079563106796106,
                  "mean": 41.279999999999994,
                  "stddev": 0.37013511046643416,
                  "samples": [
                    41.2,
                    41.5,
                    40.9,
                    41.8,
                    41.0
                  ],
                  "warmup": [
                    47.0
                  ],
                  "failures": []
                },
                "candidate": {
                  "n": 5,
                  "failed": 0,
                  "median": 35.0,
                  "mad": 0.20000000000000284,
                  "cv": 0.00847200000000012,
                  "mean": 35.12,
                  "stddev": 0.3271085446759236,
                  "samples": [
                    35.0,
                    35.3,
                    34.8,
                    35.6,
                    34.9
                  ],
                  "warmup": [
                    39.5
                  ],
                  "failures": [
                    {
                      "round": 0,
                      "warmup": true,
                      "reason": "exit status 1"
                    }
                  ]
                },
                "effect": -0.15048543689320396,
                "improvement": 0.15048543689320396,
                "p_value": 0.003968253968253968,
                "mann_whitney": {
                  "u": 25.0,
                  "p_better": 0.003968253968253968,
                  "p_worse": 1.0,
                  "method": "exact"
                },
                "ci": {
                  "diff": -6.200000000000003,
                  "lo": -6.700000000000003,
                  "hi": -5.700000000000003,
                  "confidence": 0.95,
                  "resamples": 2000,
                  "p_better": 0.0,
                  "p_worse": 1.0
                },
                "guards": [
                  {
                    "metric": "rss_mb",
                    "direction": "lower",
                    "baseline": 100.0,
                    "candidate": 101.0,
                    "regression": 0.01,
                    "max_regression": 0.05,
                    "passed": true
                  }
                ]
              },
              "diagnosis": {
                "pattern": "steady",
                "summary": "steady: robust CV baseline 1.1%, candidate 0.8% within max_cv 10.0%",
                "recommendation": null
              }
            }"#]].assert_eq(&json);
    }

    #[test]
    fn formatting() {
        assert_eq!(num(41.2), "41.2");
        assert_eq!(num(35.0), "35.0");
        assert_eq!(num(1234.5), "1234.5");
        assert_eq!(num(0.012345), "0.0123");
        assert_eq!(num(-5.0), "-5.00");
        assert_eq!(trim(1.0 - 0.95), "0.05");
        assert_eq!(trim(49.0), "49");
        assert_eq!(p_text(0.000_291), "0.0003");
        assert_eq!(p_text(0.000_012), "1.2e-5");
        assert_eq!(change_text(Some(41.2), Some(35.0)), "median 41.2 -> 35.0 (-15.0%)");
        assert_eq!(shape(&[None, Some(1.0), Some(2.0)]), Shape::Leading(1));
        assert_eq!(shape(&[Some(1.0), None, Some(2.0)]), Shape::Scattered);
        assert_eq!(shape(&[None, None]), Shape::All);
        assert_eq!(shape(&[Some(1.0)]), Shape::Clean);
        assert_eq!(shape(&[]), Shape::Clean);
    }
}
