//! Diagnosis of the sample pattern, with a recommendation the loop may apply to its own
//! operational settings (cadence.md's repeats and warmup). Never to governance texts: a
//! recommendation names a cadence setting and the loop records the change it makes.

use protocol::governance::{Cadence, Direction, Ethos};
use serde::{Deserialize, Serialize};

use crate::eval::{EvalInput, Runs, Shape, num, pct, shape};
use crate::stats::{self, MAD_SCALE};

/// Repeats are never recommended above this.
pub const MAX_REPEATS: u32 = 25;
/// Warmup is never recommended above this.
pub const MAX_WARMUP: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Early runs failed or were clearly worse, later ones fine: more warmup.
    ColdStart,
    /// Every candidate run failed: no setting helps; stop proposing along this line.
    CapabilityCeiling,
    /// Spread beyond the stability bound: more repeats.
    HighVariance,
    /// Nothing to correct.
    Steady,
}

/// A change to one cadence setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// "cadence.repeats" or "cadence.warmup".
    pub setting: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub pattern: Pattern,
    /// What the samples show, with numbers, and what to do.
    pub summary: String,
    pub recommendation: Option<Recommendation>,
}

/// Diagnose the samples under the cadence in force.
pub fn diagnose(input: &EvalInput, ethos: &Ethos, cadence: &Cadence) -> Diagnosis {
    diagnose_with(input, ethos, cadence.repeats, cadence.warmup)
}

pub(crate) fn diagnose_with(input: &EvalInput, ethos: &Ethos, repeats: u32, warmup: u32) -> Diagnosis {
    let (b, c) = (&input.baseline, &input.candidate);

    // Capability ceiling: the candidate never produced a number.
    if c.rounds() > 0 && c.samples.is_empty() {
        let mut reasons: Vec<&str> = c.counted_failures().map(|f| f.reason.as_str()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        let how = match reasons.as_slice() {
            [one] => format!("each with {one:?}"),
            many => format!("with {} distinct reasons ({})", many.len(), quoted(many)),
        };
        let mut summary = format!(
            "capability ceiling: every counted candidate run failed ({n}/{n}), {how}; no operational setting fixes that, stop proposing along this line",
            n = c.rounds()
        );
        if b.rounds() > 0 && b.samples.is_empty() {
            summary.push_str(
                "; the baseline fails as well, so the benchmark itself is broken: fix the benchmark command in ethos.md (a human change)",
            );
        }
        return Diagnosis { pattern: Pattern::CapabilityCeiling, summary, recommendation: None };
    }

    // Cold start: leading failures and/or leading samples clearly worse than the rest.
    let cold: Vec<(usize, String)> = [("baseline", b), ("candidate", c)]
        .into_iter()
        .filter_map(|(side, runs)| cold_start(side, runs, ethos))
        .collect();
    if let Some(streak) = cold.iter().map(|(k, _)| *k).max() {
        let what = cold.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("; ");
        let to = (warmup + streak.min(2) as u32).min(MAX_WARMUP);
        let (summary, recommendation) = if to > warmup {
            (
                format!("cold start: {what}; raise warmup from {warmup} to {to}"),
                Some(Recommendation {
                    setting: "cadence.warmup".into(),
                    from: warmup,
                    to,
                    reason: format!(
                        "the first {streak} counted run(s) were still warming up; {to} uncounted warmup run(s) per side absorb that"
                    ),
                }),
            )
        } else {
            (
                format!(
                    "cold start: {what}; warmup is already at its cap {MAX_WARMUP}: make the benchmark warm itself up"
                ),
                None,
            )
        };
        return Diagnosis { pattern: Pattern::ColdStart, summary, recommendation };
    }

    // High variance: either side beyond the stability bound.
    let cvs = [("baseline", stats::robust_cv(&b.samples)), ("candidate", stats::robust_cv(&c.samples))];
    let noisy: Vec<String> = cvs
        .iter()
        .filter(|(_, cv)| cv.is_some_and(|v| v > ethos.max_cv))
        .map(|(side, cv)| format!("{side} robust CV {}", pct(cv.expect("filtered on is_some"))))
        .collect();
    if !noisy.is_empty() {
        let to = (repeats * 3).div_ceil(2).min(MAX_REPEATS);
        let what = format!("high variance: {} > max_cv {}", noisy.join(", "), pct(ethos.max_cv));
        let (summary, recommendation) = if to > repeats {
            (
                format!("{what}; raise repeats from {repeats} to {to}"),
                Some(Recommendation {
                    setting: "cadence.repeats".into(),
                    from: repeats,
                    to,
                    reason: format!(
                        "more rounds narrow the uncertainty of the medians (roughly as 1/sqrt(n)): {repeats} -> {to} rounds"
                    ),
                }),
            )
        } else {
            (
                format!(
                    "{what}; repeats is already at its cap {MAX_REPEATS}: reduce the benchmark's noise (a human change)"
                ),
                None,
            )
        };
        return Diagnosis { pattern: Pattern::HighVariance, summary, recommendation };
    }

    let show = |cv: Option<f64>| cv.map(pct).unwrap_or_else(|| "undefined".into());
    let mut summary = format!(
        "steady: robust CV baseline {}, candidate {} within max_cv {}",
        show(cvs[0].1),
        show(cvs[1].1),
        pct(ethos.max_cv)
    );
    let failed: usize = b.counted_failures().count() + c.counted_failures().count();
    if failed > 0 {
        summary.push_str(&format!("; {failed} counted run(s) failed without a cold-start pattern"));
    }
    Diagnosis { pattern: Pattern::Steady, summary, recommendation: None }
}

/// A side's cold-start streak (leading failed runs plus leading samples clearly worse than the
/// rest) and its description, if any.
fn cold_start(side: &str, runs: &Runs, ethos: &Ethos) -> Option<(usize, String)> {
    let failed = match shape(&runs.outcomes()) {
        Shape::Clean => 0,
        Shape::Leading(k) => k,
        Shape::All | Shape::Scattered => return None,
    };
    let slow = slow_start(&runs.samples, ethos.direction, ethos.max_cv);
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(format!("the {side}'s first {failed} counted run(s) failed, then all passed"));
    }
    if slow > 0 {
        let rest = stats::median(&runs.samples[slow..]).expect("slow_start keeps at least 3 samples");
        let firsts = runs.samples[..slow].iter().map(|x| num(*x)).collect::<Vec<_>>().join(", ");
        parts.push(format!(
            "the {side}'s first {slow} sample(s) ({firsts}) are clearly worse than the median {} of the rest",
            num(rest)
        ));
    }
    let streak = failed + slow;
    (streak > 0).then(|| (streak, parts.join(" and ")))
}

/// How many leading samples (at most 2) are worse than every later sample and beyond the noise:
/// off the median of the later ones by more than 3 robust standard deviations and more than the
/// stability bound. At least 3 later samples are required to judge.
fn slow_start(samples: &[f64], direction: Direction, max_cv: f64) -> usize {
    let mut k = 0;
    while k < 2 && samples.len() >= k + 4 {
        let first = samples[k];
        let rest = &samples[k + 1..];
        let m = stats::median(rest).expect("rest is non-empty");
        let spread = MAD_SCALE * stats::mad(rest).expect("rest is non-empty");
        let worse_by = match direction {
            Direction::Lower => first - m,
            Direction::Higher => m - first,
        };
        let worse_than_all = rest.iter().all(|&x| direction.better(x, first));
        if worse_than_all && worse_by > (3.0 * spread).max(max_cv * m.abs()) {
            k += 1;
        } else {
            break;
        }
    }
    k
}

fn quoted(xs: &[&str]) -> String {
    xs.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tests::{around, ethos, input};
    use crate::eval::{Failure, evaluate};
    use protocol::governance::PromotionMode;

    fn cadence(repeats: u32, warmup: u32) -> Cadence {
        Cadence {
            candidates: 2,
            repeats,
            warmup,
            stall_limit: 3,
            breaker_limit: 5,
            lease_ttl_s: 30,
            max_attempts: 3,
            promotion: PromotionMode::Auto,
            max_cycles: 0,
            max_wall_s: 0,
            max_tokens: 0,
        }
    }

    fn fail(round: u32, reason: &str) -> Failure {
        Failure { round, warmup: false, reason: reason.into() }
    }

    #[test]
    fn steady_has_no_recommendation() {
        let d = diagnose(&input(around(50.0, 7), around(40.0, 7)), &ethos(), &cadence(7, 1));
        assert_eq!(d.pattern, Pattern::Steady);
        assert_eq!(d.recommendation, None);
        assert_eq!(d.summary, "steady: robust CV baseline 0.9%, candidate 0.9% within max_cv 10.0%");
    }

    #[test]
    fn early_failures_then_passes_is_a_cold_start() {
        let mut i = input(around(50.0, 7), around(40.0, 6));
        i.candidate.failures = vec![fail(0, "exit status 1")];
        let d = diagnose(&i, &ethos(), &cadence(7, 1));
        assert_eq!(d.pattern, Pattern::ColdStart);
        assert_eq!(
            d.recommendation,
            Some(Recommendation {
                setting: "cadence.warmup".into(),
                from: 1,
                to: 2,
                reason:
                    "the first 1 counted run(s) were still warming up; 2 uncounted warmup run(s) per side absorb that"
                        .into()
            })
        );
        assert_eq!(
            d.summary,
            "cold start: the candidate's first 1 counted run(s) failed, then all passed; raise warmup from 1 to 2"
        );
        // A longer streak raises warmup by 2 at most, and never beyond the cap.
        let mut i = input(around(50.0, 7), around(40.0, 4));
        i.candidate.failures = (0..3).map(|r| fail(r, "exit status 1")).collect();
        assert_eq!(diagnose(&i, &ethos(), &cadence(7, 0)).recommendation.map(|r| r.to), Some(2));
        assert_eq!(diagnose(&i, &ethos(), &cadence(7, 9)).recommendation.map(|r| r.to), Some(10));
        let capped = diagnose(&i, &ethos(), &cadence(7, 10));
        assert_eq!((capped.pattern, capped.recommendation), (Pattern::ColdStart, None));
        // Failures after a success are not a cold start.
        let mut i = input(around(50.0, 7), around(40.0, 6));
        i.candidate.failures = vec![fail(3, "exit status 1")];
        assert_eq!(diagnose(&i, &ethos(), &cadence(7, 1)).pattern, Pattern::Steady);
    }

    #[test]
    fn a_slow_first_sample_is_a_cold_start() {
        let mut b = around(41.0, 7);
        b[0] = 58.0;
        let d = diagnose(&input(b.clone(), around(35.0, 7)), &ethos(), &cadence(7, 0));
        assert_eq!(d.pattern, Pattern::ColdStart, "{d:?}");
        assert_eq!(
            d.recommendation.as_ref().map(|r| (r.setting.as_str(), r.from, r.to)),
            Some(("cadence.warmup", 0, 1))
        );
        assert!(
            d.summary.contains("the baseline's first 1 sample(s) (58.0) are clearly worse than the median 41.0"),
            "{d:?}"
        );
        // Two slow samples: +2.
        b[1] = 52.0;
        let d = diagnose(&input(b, around(35.0, 7)), &ethos(), &cadence(7, 0));
        assert_eq!(d.recommendation.map(|r| r.to), Some(2));
        // Higher is better: a low first sample is the slow one; a high one is not.
        let higher = Ethos { direction: Direction::Higher, ..ethos() };
        let mut c = around(100.0, 7);
        c[0] = 60.0;
        assert_eq!(diagnose(&input(around(100.0, 7), c.clone()), &higher, &cadence(7, 0)).pattern, Pattern::ColdStart);
        c[0] = 140.0;
        assert_eq!(diagnose(&input(around(100.0, 7), c), &higher, &cadence(7, 0)).pattern, Pattern::Steady);
        // A first sample worse than all the others but within the stability bound is not flagged.
        let mut b = around(41.0, 7);
        b[0] = 43.0;
        assert_eq!(diagnose(&input(b, around(35.0, 7)), &ethos(), &cadence(7, 0)).pattern, Pattern::Steady);
    }

    #[test]
    fn all_failing_is_a_capability_ceiling() {
        let mut i = input(around(50.0, 7), vec![]);
        i.candidate.failures = (0..7).map(|r| fail(r, "exit status 1")).collect();
        let d = diagnose(&i, &ethos(), &cadence(7, 1));
        assert_eq!(d.pattern, Pattern::CapabilityCeiling);
        assert_eq!(d.recommendation, None);
        assert_eq!(
            d.summary,
            "capability ceiling: every counted candidate run failed (7/7), each with \"exit status 1\"; no operational setting fixes that, stop proposing along this line"
        );
        i.candidate.failures[3].reason = "timeout after 60 s".into();
        i.baseline.samples.clear();
        i.baseline.failures = (0..7).map(|r| fail(r, "exit status 1")).collect();
        let d = diagnose(&i, &ethos(), &cadence(7, 1));
        assert!(d.summary.contains("with 2 distinct reasons (\"exit status 1\", \"timeout after 60 s\")"), "{d:?}");
        assert!(
            d.summary
                .ends_with("the benchmark itself is broken: fix the benchmark command in ethos.md (a human change)")
        );
    }

    #[test]
    fn high_variance_raises_repeats_up_to_the_cap() {
        let wild = vec![30.0, 55.0, 41.0, 70.0, 33.0, 48.0, 62.0];
        let i = input(around(50.0, 7), wild);
        let d = diagnose(&i, &ethos(), &cadence(7, 1));
        assert_eq!(d.pattern, Pattern::HighVariance);
        assert_eq!(
            d.recommendation.as_ref().map(|r| (r.setting.as_str(), r.from, r.to)),
            Some(("cadence.repeats", 7, 11))
        );
        assert_eq!(d.summary, "high variance: candidate robust CV 43.2% > max_cv 10.0%; raise repeats from 7 to 11");
        assert_eq!(diagnose(&i, &ethos(), &cadence(20, 1)).recommendation.map(|r| r.to), Some(25));
        let capped = diagnose(&i, &ethos(), &cadence(25, 1));
        assert_eq!((capped.pattern, capped.recommendation), (Pattern::HighVariance, None));
        assert!(
            capped.summary.ends_with("repeats is already at its cap 25: reduce the benchmark's noise (a human change)")
        );
    }

    #[test]
    fn evaluate_diagnoses_with_the_rounds_that_ran() {
        let mut i = input(around(50.0, 7), vec![30.0, 55.0, 41.0, 70.0, 33.0, 48.0, 62.0]);
        i.baseline.warmup = vec![60.0, 51.0];
        i.candidate.warmup = vec![45.0];
        i.candidate.failures = vec![Failure { round: 1, warmup: true, reason: "exit status 1".into() }];
        assert_eq!(i.ran(), (7, 2));
        assert_eq!(evaluate(&i, &ethos()).diagnosis, diagnose(&i, &ethos(), &cadence(7, 2)));
    }
}
