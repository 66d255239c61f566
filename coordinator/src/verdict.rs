//! One verdict line for a candidate, the same everywhere people read it: the live progress of
//! `ratchet up`, `up --once` and `ratchet demo`, the demo's history and the web page.
//!
//! `PROMOTE  r3be6b-c1-1 "set delay_ms from 300 to 100 in params.toml": ms 300.0 -> 100.0 (66.7%
//! better, interval 60.2% to 70.9% better)` or `HOLD ...: stability FAIL: robust CV ...`: the
//! approach by its summary (never a bare hash), the effect with its interval, and for anything
//! but a promotion the failing check(s) in words.

use crate::loop_state::Candidate;

/// Longest single reason shown on a line, in characters.
const REASON_MAX: usize = 240;

/// A relative change in words, positive = better: "12.3% better", "4.0% worse", "no change".
pub fn effect_words(effect: f64) -> String {
    let pct = effect.abs() * 100.0;
    if !effect.is_finite() {
        "an undefined change".into()
    } else if pct < 0.05 {
        "no change".into()
    } else if effect > 0.0 {
        format!("{pct:.1}% better")
    } else {
        format!("{pct:.1}% worse")
    }
}

/// An interval of relative changes in words: "interval 1.0% worse to 5.2% better".
pub fn interval_words(lo: Option<f64>, hi: Option<f64>) -> Option<String> {
    match (lo, hi) {
        (Some(l), Some(h)) => Some(format!("interval {} to {}", effect_words(l), effect_words(h))),
        (Some(l), None) => Some(format!("at least {}", effect_words(l))),
        (None, Some(h)) => Some(format!("at most {}", effect_words(h))),
        (None, None) => None,
    }
}

/// A measurement with three significant digits and at least one decimal.
pub fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x:.1}");
    }
    let prec = (2 - x.abs().log10().floor() as i32).clamp(1, 6) as usize;
    format!("{x:.prec$}")
}

/// "ms 300.0 -> 100.0 (66.7% better, interval 60.2% to 70.9% better)", or "" when unmeasured.
pub fn effect_text(c: &Candidate, metric: &str) -> String {
    let Some(e) = &c.eval else { return String::new() };
    let mut words = e.effect.map(effect_words).unwrap_or_default();
    if let Some(i) = interval(c).and_then(|(lo, hi)| interval_words(lo, hi)) {
        words = if words.is_empty() { i } else { format!("{words}, {i}") };
    }
    let r = rounds(c);
    if !r.is_empty() {
        words = if words.is_empty() { r } else { format!("{words}; {r}") };
    }
    let words = if words.is_empty() { String::new() } else { format!(" ({words})") };
    match (e.baseline_median, e.candidate_median) {
        (Some(b), Some(a)) => format!("{metric} {} -> {}{words}", num(b), num(a)),
        _ => words.trim().trim_start_matches('(').trim_end_matches(')').to_string(),
    }
}

/// The effect's interval (relative changes, positive = better), when the evaluation has one.
pub fn interval(c: &Candidate) -> Option<(Option<f64>, Option<f64>)> {
    let effect = c.eval.as_ref()?.sampling.as_ref()?.effect.as_ref()?;
    (effect.lo.is_some() || effect.hi.is_some()).then_some((effect.lo, effect.hi))
}

/// "7 sequential rounds, measured twice", or "".
pub fn rounds(c: &Candidate) -> String {
    let Some(s) = c.eval.as_ref().and_then(|e| e.sampling.as_ref()) else { return String::new() };
    let again = if c.remeasured && s.resumed > 0 { ", measured twice" } else { "" };
    format!("{} {} round(s){again}", s.rounds, s.pairing.as_str())
}

/// Why the candidate is not promoted, in words: the checks that failed (the evaluator's `FAIL`
/// lines, the critic's findings, the failed gate or stage), else the first reason given.
pub fn why(c: &Candidate) -> String {
    let clip = |r: &str| {
        let r = r.trim();
        if r.chars().count() > REASON_MAX {
            format!("{}...", r.chars().take(REASON_MAX).collect::<String>())
        } else {
            r.to_string()
        }
    };
    let failing: Vec<String> = c
        .reasons
        .iter()
        .filter(|r| {
            r.contains(" FAIL")
                || ["critic:", "execute", "reviewer ", "evaluation failed", "critique failed", "the second measurement"]
                    .iter()
                    .any(|p| r.starts_with(p))
        })
        .map(|r| clip(r))
        .collect();
    if !failing.is_empty() {
        return failing.join("; ");
    }
    c.reasons.first().map(|r| clip(r)).unwrap_or_default()
}

/// The candidate's one line: verdict (or stage while undecided), branch, summary, then
/// [`detail`].
pub fn line(c: &Candidate, metric: &str) -> String {
    let verdict = c.verdict.map_or_else(|| c.stage.as_str().to_string(), |v| v.to_string());
    let mut out = format!("{verdict:<8} {} \"{}\"", c.branch, summary(c));
    let detail = detail(c, metric);
    if !detail.is_empty() {
        out.push_str(": ");
        out.push_str(&detail);
    }
    out
}

/// The effect with its interval, and (but for a clean PROMOTE) why: "ms 300.0 -> 100.0 (66.7%
/// better); stability FAIL: ...".
pub fn detail(c: &Candidate, metric: &str) -> String {
    let effect = effect_text(c, metric);
    let clean_promote =
        c.verdict == Some(protocol::work::Verdict::Promote) && !c.reasons.iter().any(|r| r.contains(" FAIL"));
    let why = if clean_promote { String::new() } else { why(c) };
    let parts: Vec<&str> = [effect.as_str(), why.as_str()].into_iter().filter(|p| !p.is_empty()).collect();
    parts.join("; ")
}

/// The approach's summary in one line (the proposal's own words, never its hash).
pub fn summary(c: &Candidate) -> String {
    let s = c.proposal.summary.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
    if s.is_empty() { format!("{} change to {}", c.proposal.strategy, c.proposal.files.join(", ")) } else { s }
}

/// Where a long stage is, in words: "gate 2 of 3 (`sh tests/run.sh`)", "round 6 of at most 20:
/// 12.3% better so far", "calibration round 4 of 10".
pub fn progress_words(p: &protocol::work::StageProgress) -> String {
    match p.step.as_str() {
        "gate" => {
            let clip = |c: &str| match c.char_indices().nth(80) {
                Some((i, _)) => format!("{}...", &c[..i]),
                None => c.to_string(),
            };
            let cmd = p.command.as_deref().map(|c| format!(" (`{}`)", clip(c))).unwrap_or_default();
            format!("gate {} of {}{cmd}", p.done + 1, p.of)
        }
        "round" => {
            let so_far = p.estimate.map(|e| format!(": {} so far", effect_words(e))).unwrap_or_default();
            format!("round {} of at most {}{so_far}", p.done, p.of)
        }
        "calibration" => format!("calibration round {} of {}", p.done, p.of),
        other => format!("{other} {} of {}", p.done, p.of),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_in_words() {
        let p = |step: &str, done, of, command: Option<&str>, estimate| protocol::work::StageProgress {
            version: 1,
            step: step.into(),
            done,
            of,
            command: command.map(String::from),
            estimate,
            at: String::new(),
        };
        assert_eq!(progress_words(&p("gate", 1, 3, Some("sh tests/run.sh"), None)), "gate 2 of 3 (`sh tests/run.sh`)");
        assert_eq!(progress_words(&p("round", 6, 20, None, Some(-0.123))), "round 6 of at most 20: 12.3% worse so far");
        assert_eq!(progress_words(&p("round", 0, 20, None, None)), "round 0 of at most 20");
        assert_eq!(progress_words(&p("calibration", 4, 10, None, None)), "calibration round 4 of 10");
    }

    #[test]
    fn effects_read_the_same_whatever_their_sign() {
        assert_eq!(effect_words(0.842), "84.2% better");
        assert_eq!(effect_words(-0.842), "84.2% worse");
        assert_eq!(effect_words(-20.824), "2082.4% worse", "never `-2082.4% better`");
        assert_eq!(effect_words(0.0001), "no change");
        assert_eq!(interval_words(Some(-0.01), Some(0.052)).unwrap(), "interval 1.0% worse to 5.2% better");
        assert_eq!(interval_words(None, None), None);
        assert_eq!(num(176.396), "176.4");
        assert_eq!(num(3.6451), "3.65");
        assert_eq!(num(0.0), "0.0");
    }
}
