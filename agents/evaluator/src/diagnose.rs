//! Diagnosis of what the rounds show, with a recommendation the loop may apply to its own
//! operational settings (cadence.md's warmup). Never to governance texts: a recommendation names
//! a cadence setting and the loop records the change it makes.
//!
//! There is no recommendation to raise the number of rounds: sampling is sequential, so a noisy
//! comparison already gets more rounds, up to ethos.md's `max_rounds` (which only a person
//! changes), and an undecided candidate is measured once more by the loop.

use protocol::evaluation::{Outcome, Side};
use protocol::governance::Ethos;

use crate::eval::{Shape, Stats, outcomes, pct, rounds_needed, shape};
use crate::session::Session;

/// Warmup is never recommended above this.
pub const MAX_WARMUP: u32 = 10;

pub use protocol::evaluation::{Diagnosis, Pattern};
pub use protocol::work::Recommendation;

fn warmup_recommendation(warmup: u32, streak: usize, what: String) -> Diagnosis {
    let to = (warmup + streak.clamp(1, 2) as u32).min(MAX_WARMUP);
    if to > warmup {
        Diagnosis {
            pattern: Pattern::ColdStart,
            summary: format!("cold start: {what}; raise warmup from {warmup} to {to}"),
            recommendation: Some(Recommendation {
                setting: "cadence.warmup".into(),
                from: warmup,
                to,
                reason: format!(
                    "the first {streak} counted round(s) were still warming up; {to} uncounted warmup round(s) absorb that"
                ),
            }),
        }
    } else {
        Diagnosis {
            pattern: Pattern::ColdStart,
            summary: format!(
                "cold start: {what}; warmup is already at its cap {MAX_WARMUP}: make the benchmark warm itself up"
            ),
            recommendation: None,
        }
    }
}

/// Diagnose a finished session.
pub fn diagnose(session: &Session, outcome: Outcome, stats: &Stats, _ethos: &Ethos) -> Diagnosis {
    let pairs = &session.pairs;
    let warmup = session.warmup.len() as u32;
    let (b, c) = (outcomes(pairs, Side::Baseline), outcomes(pairs, Side::Candidate));

    // Capability ceiling: the candidate never produced a number.
    if !c.is_empty() && c.iter().all(Option::is_none) {
        let mut reasons: Vec<&str> = session
            .failures
            .iter()
            .filter(|f| !f.warmup && f.side == Side::Candidate)
            .map(|f| f.reason.as_str())
            .collect();
        reasons.sort_unstable();
        reasons.dedup();
        let how = match reasons.as_slice() {
            [one] => format!("each with {one:?}"),
            many => format!(
                "with {} distinct reasons ({})",
                many.len(),
                many.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ")
            ),
        };
        let mut summary = format!(
            "capability ceiling: every counted candidate run failed ({n}/{n}), {how}; no operational setting fixes that, stop proposing along this line",
            n = c.len()
        );
        if b.iter().all(Option::is_none) {
            summary.push_str(
                "; the baseline fails as well, so the benchmark itself is broken: fix the benchmark command in ethos.md (a human change)",
            );
        }
        return Diagnosis { pattern: Pattern::CapabilityCeiling, summary, recommendation: None };
    }

    // Cold start: leading failures on a side, then only successes.
    let leading: Vec<(usize, &str)> = [("baseline", &b), ("candidate", &c)]
        .into_iter()
        .filter_map(|(name, o)| match shape(o) {
            Shape::Leading(k) => Some((k, name)),
            _ => None,
        })
        .collect();
    if let Some(&(k, _)) = leading.iter().max() {
        let what = leading
            .iter()
            .map(|(k, side)| format!("the {side}'s first {k} counted run(s) failed, then all passed"))
            .collect::<Vec<_>>()
            .join("; ");
        return warmup_recommendation(warmup, k, what);
    }
    // ... or the very first round is an outlier whose slow side is the one that ran first (cold
    // caches after a build hit whichever side runs first).
    if let Some(first) = pairs.first().filter(|p| p.outlier)
        && let Some(score) = first.score
    {
        let slow = if score > 0.0 { Side::Baseline } else { Side::Candidate };
        if slow == first.first && session.plan.pairing == protocol::governance::Pairing::Sequential {
            let what = format!(
                "round 0 is an outlier ({} ran first and was the slow one: score {:+.3} against a median of {:+.3})",
                slow.as_str(),
                score,
                crate::stats::median(&session.scores()).unwrap_or(0.0)
            );
            return warmup_recommendation(warmup, 1, what);
        }
    }

    let spread = stats.spread.map(|s| format!("±{}", pct(s))).unwrap_or_else(|| "undefined".into());
    if outcome == Outcome::TooNoisy && session.plan.counting.is_some() {
        return Diagnosis {
            pattern: Pattern::TooNoisy,
            summary: format!(
                "too noisy: the instruction counts did not repeat within count_tolerance in {} round(s); the benchmark does different work from run to run (a random seed, the time, the machine's state)",
                pairs.len()
            ),
            recommendation: None,
        };
    }
    if outcome == Outcome::TooNoisy {
        let needed = session.last_look().and_then(|l| rounds_needed(&l, session.threshold()));
        return Diagnosis {
            pattern: Pattern::TooNoisy,
            summary: format!(
                "too noisy: the paired ratios spread {spread} per round with {} outlier round(s) of {}; {}",
                stats.outliers,
                pairs.len(),
                match needed {
                    Some(n) => format!("about {n} rounds would decide (max_rounds is a human setting in ethos.md)"),
                    None => "the effect sits on the min_effect boundary".into(),
                }
            ),
            recommendation: None,
        };
    }
    let mut summary = format!(
        "steady: the paired ratios spread {spread} per round, {} outlier round(s) of {}",
        stats.outliers,
        pairs.len()
    );
    let failed = session.failures.iter().filter(|f| !f.warmup).count();
    if failed > 0 {
        summary.push_str(&format!("; {failed} counted run(s) failed without a cold-start pattern"));
    }
    Diagnosis { pattern: Pattern::Steady, summary, recommendation: None }
}
