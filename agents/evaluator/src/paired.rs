//! Statistics of paired rounds: each round gives one baseline and one candidate value measured
//! back to back (or at the same time), and the statistics work on one number per round, the
//! *score*: the log of the candidate/baseline ratio (or, for metrics that reach zero, the
//! difference relative to the baseline's median), signed so that positive is better.
//!
//! Noise common to both runs of a round cancels in the score. What is left is summarised by
//! the median and by rank statistics, which a burst hitting one side of a round (an outlier
//! pair) moves by one rank, not by its size: signs, and the Wilcoxon signed-rank statistic over
//! the Walsh averages (whose inversion gives the Hodges-Lehmann-type interval).
//!
//! Everything here is pure and deterministic.

use protocol::governance::Direction;

use crate::stats::{MAD_SCALE, mad, median};

pub use protocol::evaluation::Scale;

/// The score scale for these values: log ratios when every value is positive.
pub fn scale_for(values: impl IntoIterator<Item = f64>) -> Scale {
    if values.into_iter().all(|v| v > 0.0) { Scale::LogRatio } else { Scale::Difference }
}

/// The score of one round, positive when the candidate is better. `norm` is the absolute median
/// of the baselines (used by [`Scale::Difference`] only; `None` when it is 0).
pub fn score(baseline: f64, candidate: f64, direction: Direction, scale: Scale, norm: Option<f64>) -> Option<f64> {
    let raw = match scale {
        Scale::LogRatio => (candidate / baseline).ln(),
        Scale::Difference => (candidate - baseline) / norm?,
    };
    let s = match direction {
        Direction::Higher => raw,
        Direction::Lower => -raw,
    };
    s.is_finite().then_some(s + 0.0)
}

/// The relative change of the metric that a score (or a bound on it) means, positive = better:
/// for "higher is better" `c/b - 1`, for "lower is better" `1 - c/b`, on the log scale; the score
/// itself on the difference scale.
pub fn relative(score: f64, direction: Direction, scale: Scale) -> f64 {
    match (scale, direction) {
        (Scale::Difference, _) => score,
        (Scale::LogRatio, Direction::Higher) => score.exp() - 1.0,
        (Scale::LogRatio, Direction::Lower) => 1.0 - (-score).exp(),
    }
}

/// The score that a relative change means (the inverse of [`relative`]); `None` beyond -100%.
pub fn score_of(relative_change: f64, direction: Direction, scale: Scale) -> Option<f64> {
    let s = match (scale, direction) {
        (Scale::Difference, _) => relative_change,
        (Scale::LogRatio, Direction::Higher) => (1.0 + relative_change).ln(),
        (Scale::LogRatio, Direction::Lower) => -(1.0 - relative_change).ln(),
    };
    s.is_finite().then_some(s)
}

/// The n(n+1)/2 Walsh averages `(d_i + d_j) / 2`, `i <= j` (in no particular order).
pub fn walsh_averages(d: &[f64]) -> Vec<f64> {
    let mut w = Vec::with_capacity(d.len() * (d.len() + 1) / 2);
    for i in 0..d.len() {
        for j in i..d.len() {
            w.push((d[i] + d[j]) / 2.0);
        }
    }
    w
}

/// Robust standard deviation of the scores: 1.4826 * MAD.
pub fn spread(d: &[f64]) -> Option<f64> {
    mad(d).map(|m| MAD_SCALE * m)
}

/// Exact upper tails of the Wilcoxon signed-rank statistic W+ (the sum of the ranks of the
/// positive scores among n, without ties) under "no difference": `tail[w] = P(W+ >= w)` for
/// `w = 0 ..= n(n+1)/2`.
pub fn signed_rank_tail(n: usize) -> Vec<f64> {
    let max = n * (n + 1) / 2;
    // ways[s]: subsets of {1..n} with sum s (as f64: exact up to 2^53, i.e. n <= 55 exactly and
    // with a relative error below 1e-15 beyond).
    let mut ways = vec![0f64; max + 1];
    ways[0] = 1.0;
    for r in 1..=n {
        for s in (r..=max).rev() {
            ways[s] += ways[s - r];
        }
    }
    let total = 2f64.powi(n as i32);
    let mut tail = vec![0f64; max + 2];
    for s in (0..=max).rev() {
        tail[s] = tail[s + 1] + ways[s] / total;
    }
    tail.truncate(max + 1);
    tail
}

/// Pairs whose score is far from the others (beyond 5 robust standard deviations of the scores,
/// and beyond 10% in relative terms): reported with the evidence, never dropped.
pub fn outliers(d: &[f64]) -> Vec<bool> {
    let (Some(m), Some(s)) = (median(d), spread(d)) else { return vec![false; d.len()] };
    let limit = (5.0 * s).max(0.1);
    d.iter().map(|x| (x - m).abs() > limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn scores_are_signed_so_positive_is_better() {
        let up = score(100.0, 125.0, Direction::Higher, Scale::LogRatio, None).unwrap();
        assert!(close(up, 1.25f64.ln(), 1e-12));
        assert!(close(relative(up, Direction::Higher, Scale::LogRatio), 0.25, 1e-12));
        let down = score(100.0, 80.0, Direction::Lower, Scale::LogRatio, None).unwrap();
        assert!(close(relative(down, Direction::Lower, Scale::LogRatio), 0.20, 1e-12), "time 100 -> 80 is 20% better");
        assert!(close(score_of(0.20, Direction::Lower, Scale::LogRatio).unwrap(), down, 1e-12));
        assert!(close(score_of(0.25, Direction::Higher, Scale::LogRatio).unwrap(), up, 1e-12));
        let diff = score(-2.0, 1.0, Direction::Higher, Scale::Difference, Some(4.0)).unwrap();
        assert_eq!(diff, 0.75);
        assert_eq!(score(0.0, 1.0, Direction::Higher, Scale::Difference, None), None);
        assert_eq!(scale_for([1.0, 2.0]), Scale::LogRatio);
        assert_eq!(scale_for([1.0, 0.0]), Scale::Difference);
    }

    #[test]
    fn walsh_and_outliers() {
        assert_eq!(walsh_averages(&[1.0, 3.0]), vec![1.0, 2.0, 3.0]);
        // A wild score is flagged (and kept).
        let d = [0.10, 0.11, 0.09, 0.12, -0.60];
        assert_eq!(outliers(&d), vec![false, false, false, false, true]);
    }

    /// Textbook values: n = 5: P(W+ >= 15) = 1/32; n = 10: P(W+ >= 45) = 0.0420 (one-sided
    /// critical value for 5% is 45, from the standard tables).
    #[test]
    fn signed_rank_tails() {
        let t5 = signed_rank_tail(5);
        assert_eq!(t5.len(), 16);
        assert!(close(t5[15], 1.0 / 32.0, 1e-15));
        assert!(close(t5[14], 2.0 / 32.0, 1e-15));
        assert_eq!(t5[0], 1.0);
        let t10 = signed_rank_tail(10);
        assert!(close(t10[45], 0.0420, 5e-5), "{}", t10[45]);
        assert!(t10[44] > 0.05);
    }
}
