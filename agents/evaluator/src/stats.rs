//! Small, dependency-free statistics for benchmark samples.
//!
//! Everything is deterministic: the bootstrap draws from a splitmix64 generator seeded from the
//! samples themselves, so the same samples always give the same interval.
//!
//! Direction: "better" means lower for [`Direction::Lower`] and higher for
//! [`Direction::Higher`]; the one-sided tests ask "is the candidate better than the baseline".

use protocol::governance::Direction;
use serde::{Deserialize, Serialize};

/// Scale that makes the MAD a consistent estimator of the standard deviation for normal data.
pub const MAD_SCALE: f64 = 1.4826;
/// Both sides at most this large: the Mann-Whitney p-value comes from the exact permutation
/// distribution (ties included); beyond it, from the normal approximation.
pub const EXACT_MAX_N: usize = 20;
/// Bootstrap resamples.
pub const RESAMPLES: u32 = 2000;

pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Median absolute deviation from the median (unscaled).
pub fn mad(xs: &[f64]) -> Option<f64> {
    let m = median(xs)?;
    let dev: Vec<f64> = xs.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// Robust coefficient of variation: `1.4826 * MAD / |median|`. `Some(0.0)` when there is no
/// spread at all; `None` when there are no samples or the median is 0 with some spread.
pub fn robust_cv(xs: &[f64]) -> Option<f64> {
    let m = median(xs)?;
    let d = mad(xs)?;
    if d == 0.0 {
        Some(0.0)
    } else if m == 0.0 {
        None
    } else {
        Some(MAD_SCALE * d / m.abs())
    }
}

pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample standard deviation (n - 1 in the denominator); `None` below two samples.
pub fn stddev(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

/// Relative change of `to` against `from`, signed so that positive means better.
/// `None` when `from` is 0 (no scale to be relative to).
pub fn improvement(from: f64, to: f64, direction: Direction) -> Option<f64> {
    if from == 0.0 {
        return None;
    }
    let rel = (to - from) / from.abs();
    Some(match direction {
        Direction::Lower => 0.0 - rel,
        Direction::Higher => rel + 0.0,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The exact permutation distribution of the rank sum (conditional on ties).
    Exact,
    /// Normal approximation with tie and continuity corrections.
    Normal,
}

/// A one-sided Mann-Whitney U test in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// The candidate's U: baseline/candidate pairs where the candidate is better, ties counting 1/2.
    pub u: f64,
    /// P(U >= observed) under "no difference": small when the candidate is better.
    pub p_better: f64,
    /// P(U <= observed) under "no difference": small when the candidate is worse.
    pub p_worse: f64,
    pub method: Method,
}

/// Mann-Whitney U test of "candidate better than baseline" (and of "worse"). `None` when a side
/// has no samples. Exact when both sides have at most [`EXACT_MAX_N`] samples.
pub fn mann_whitney(baseline: &[f64], candidate: &[f64], direction: Direction) -> Option<MannWhitney> {
    let exact = baseline.len() <= EXACT_MAX_N && candidate.len() <= EXACT_MAX_N;
    mann_whitney_by(baseline, candidate, direction, if exact { Method::Exact } else { Method::Normal })
}

fn mann_whitney_by(baseline: &[f64], candidate: &[f64], direction: Direction, method: Method) -> Option<MannWhitney> {
    if baseline.is_empty() || candidate.is_empty() {
        return None;
    }
    // Score so that larger is better, then rank ascending with midranks. Ranks are kept in half
    // units (2 * rank) so they stay integers with ties.
    let score = |x: f64| match direction {
        Direction::Lower => -x,
        Direction::Higher => x,
    };
    let mut all: Vec<(f64, bool)> =
        baseline.iter().map(|&x| (score(x), false)).chain(candidate.iter().map(|&x| (score(x), true))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_total = all.len();
    let mut half_ranks = vec![0u64; n_total];
    let mut tie_sizes = Vec::new();
    let mut i = 0;
    while i < n_total {
        let mut j = i;
        while j + 1 < n_total && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        for r in &mut half_ranks[i..=j] {
            *r = (i + 1 + j + 1) as u64;
        }
        tie_sizes.push(j - i + 1);
        i = j + 1;
    }
    let (nb, nc) = (baseline.len(), candidate.len());
    let observed: u64 = all.iter().zip(&half_ranks).filter(|((_, c), _)| *c).map(|(_, r)| r).sum();
    let u = observed as f64 / 2.0 - (nc * (nc + 1)) as f64 / 2.0;

    if method == Method::Exact {
        let (p_better, p_worse) = exact_rank_sum(&half_ranks, nc, observed);
        return Some(MannWhitney { u, p_better, p_worse, method: Method::Exact });
    }
    let (nbf, ncf, nf) = (nb as f64, nc as f64, n_total as f64);
    let mu = nbf * ncf / 2.0;
    let ties: f64 = tie_sizes.iter().map(|&t| (t * t * t - t) as f64).sum();
    let var = nbf * ncf / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return Some(MannWhitney { u, p_better: 1.0, p_worse: 1.0, method: Method::Normal });
    }
    let sd = var.sqrt();
    Some(MannWhitney {
        u,
        p_better: normal_sf((u - mu - 0.5) / sd).min(1.0),
        p_worse: normal_sf((mu - u - 0.5) / sd).min(1.0),
        method: Method::Normal,
    })
}

/// Exact tail probabilities of the rank sum of `k` items drawn without replacement from
/// `half_ranks`: (P(sum >= observed), P(sum <= observed)).
fn exact_rank_sum(half_ranks: &[u64], k: usize, observed: u64) -> (f64, f64) {
    let max_sum: u64 = half_ranks.iter().sum();
    let width = max_sum as usize + 1;
    // ways[j][s]: subsets of size j with half-rank sum s. Counts stay below 2^53 for n <= 40.
    let mut ways = vec![vec![0f64; width]; k + 1];
    ways[0][0] = 1.0;
    for (seen, &r) in half_ranks.iter().enumerate() {
        let r = r as usize;
        for j in (1..=k.min(seen + 1)).rev() {
            let (lower, upper) = ways.split_at_mut(j);
            let (prev, cur) = (&lower[j - 1], &mut upper[0]);
            for s in (r..width).rev() {
                cur[s] += prev[s - r];
            }
        }
    }
    let dist = &ways[k];
    let total: f64 = dist.iter().sum();
    let obs = observed as usize;
    let ge: f64 = dist[obs..].iter().sum();
    let le: f64 = dist[..=obs].iter().sum();
    (ge / total, le / total)
}

/// Upper tail of the standard normal distribution, P(Z > z).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes `erfcc`, fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// splitmix64: a tiny, fast, well-mixed generator; plenty for resampling.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A seed derived from the samples' bits, so a given data set always resamples the same way.
    pub fn from_data(sets: &[&[f64]]) -> Self {
        let mut g = SplitMix64(0x5241_5443_4845_5421); // "RATCHET!"
        for set in sets {
            g.0 ^= set.len() as u64;
            g.next_u64();
            for x in *set {
                g.0 ^= x.to_bits();
                g.next_u64();
            }
        }
        g
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-50 for the sizes used here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Bootstrap interval of the median difference (candidate - baseline), in metric units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapCi {
    /// The observed median difference, candidate - baseline.
    pub diff: f64,
    /// The `1 - confidence` quantile of the resampled differences.
    pub lo: f64,
    /// The `confidence` quantile. Each end is a one-sided bound at `confidence`, so the pair is a
    /// two-sided interval at `2 * confidence - 1`.
    pub hi: f64,
    pub confidence: f64,
    pub resamples: u32,
    /// Share of resampled differences that are not better (zero counts as not better).
    pub p_better: f64,
    /// Share of resampled differences that are not worse (zero counts as not worse).
    pub p_worse: f64,
}

impl BootstrapCi {
    /// Whether the one-sided bound on the good side excludes 0.
    pub fn better(&self, direction: Direction) -> bool {
        match direction {
            Direction::Lower => self.hi < 0.0,
            Direction::Higher => self.lo > 0.0,
        }
    }

    /// Whether the one-sided bound on the bad side excludes 0.
    pub fn worse(&self, direction: Direction) -> bool {
        match direction {
            Direction::Lower => self.lo > 0.0,
            Direction::Higher => self.hi < 0.0,
        }
    }

    /// The bound that must exclude 0 for the candidate to be better.
    pub fn good_bound(&self, direction: Direction) -> f64 {
        match direction {
            Direction::Lower => self.hi,
            Direction::Higher => self.lo,
        }
    }
}

/// Percentile bootstrap of the median difference, resampling each side with replacement.
/// `None` when a side has no samples.
pub fn bootstrap_median_diff(
    baseline: &[f64],
    candidate: &[f64],
    direction: Direction,
    confidence: f64,
    resamples: u32,
) -> Option<BootstrapCi> {
    let diff = median(candidate)? - median(baseline)?;
    let resamples = resamples.max(1);
    let mut rng = SplitMix64::from_data(&[baseline, candidate]);
    let mut draw = |xs: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        buf.extend((0..xs.len()).map(|_| xs[rng.below(xs.len())]));
        median(buf).expect("a resample of a non-empty side is non-empty")
    };
    let mut buf = Vec::with_capacity(baseline.len().max(candidate.len()));
    let mut diffs: Vec<f64> = (0..resamples)
        .map(|_| {
            let b = draw(baseline, &mut buf);
            draw(candidate, &mut buf) - b
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let n = diffs.len() as f64;
    let share = |pred: fn(f64) -> bool| diffs.iter().filter(|&&d| pred(d)).count() as f64 / n;
    let (p_better, p_worse) = match direction {
        Direction::Lower => (share(|d| d >= 0.0), share(|d| d <= 0.0)),
        Direction::Higher => (share(|d| d <= 0.0), share(|d| d >= 0.0)),
    };
    Some(BootstrapCi {
        diff,
        lo: quantile(&diffs, 1.0 - confidence),
        hi: quantile(&diffs, confidence),
        confidence,
        resamples,
        p_better,
        p_worse,
    })
}

/// Linear-interpolation quantile of sorted, non-empty data.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Higher, Lower};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn descriptive() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // deviations from 2: 1 1 0 0 2 4 -> MAD 1
        assert_eq!(mad(&[1.0, 1.0, 2.0, 2.0, 4.0, 6.0]), Some(1.0));
        assert!(close(robust_cv(&[9.0, 10.0, 11.0]).unwrap(), 0.14826, 1e-12));
        assert_eq!(robust_cv(&[5.0, 5.0, 5.0]), Some(0.0));
        assert_eq!(robust_cv(&[-1.0, 0.0, 1.0]), None);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert!(close(stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap(), 2.138_089_935, 1e-9));
        assert_eq!(stddev(&[1.0]), None);
        assert!(close(improvement(40.0, 30.0, Lower).unwrap(), 0.25, 1e-12));
        assert!(close(improvement(40.0, 30.0, Higher).unwrap(), -0.25, 1e-12));
        assert_eq!(improvement(0.0, 1.0, Lower), None);
    }

    #[test]
    fn normal_tail() {
        assert!(close(normal_sf(0.0), 0.5, 1e-7));
        assert!(close(normal_sf(1.959_964), 0.025, 1e-7));
        assert!(close(normal_sf(-1.644_854), 0.95, 1e-7));
        assert!(close(normal_sf(3.090_232), 0.001, 1e-8));
    }

    /// Conover's textbook example, as used in SciPy's `mannwhitneyu` docs: U = 17, exact
    /// two-sided p = 0.1111 (one-sided 7/126), asymptotic two-sided p = 0.11134688653314041.
    #[test]
    fn mann_whitney_textbook() {
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        // "Higher is better": is the candidate (males) higher than the baseline (females)?
        let mw = mann_whitney(&females, &males, Higher).unwrap();
        assert_eq!((mw.u, mw.method), (17.0, Method::Exact));
        assert!(close(mw.p_better, 7.0 / 126.0, 1e-12), "{mw:?}");
        assert!(close(mw.p_worse, 1.0 - 4.0 / 126.0, 1e-12), "{mw:?}");
        // The same data under "lower is better" swaps the tails.
        let low = mann_whitney(&females, &males, Lower).unwrap();
        assert_eq!(low.u, 20.0 - 17.0);
        assert!(close(low.p_worse, 7.0 / 126.0, 1e-12), "{low:?}");

        // The normal approximation (with continuity correction) matches SciPy's asymptotic p.
        let normal = mann_whitney_by(&females, &males, Higher, Method::Normal).unwrap();
        assert!(close(2.0 * normal.p_better, 0.111_346_886_533_140_41, 1e-6), "{normal:?}");
    }

    #[test]
    fn mann_whitney_exact_extremes_and_symmetry() {
        // Complete separation: p = 1 / C(n1 + n2, n1).
        let b = [10.0, 11.0, 12.0];
        let c = [7.0, 8.0, 9.0];
        let mw = mann_whitney(&b, &c, Lower).unwrap();
        assert_eq!(mw.u, 9.0);
        assert!(close(mw.p_better, 1.0 / 20.0, 1e-12));
        let b5 = [40.0, 41.0, 42.0, 43.0, 44.0];
        let c5 = [30.0, 31.0, 32.0, 33.0, 34.0];
        assert!(close(mann_whitney(&b5, &c5, Lower).unwrap().p_better, 1.0 / 252.0, 1e-12));
        // A clearly separated pair is significant at 1%.
        let b7 = [41.0, 41.5, 40.8, 41.9, 41.2, 40.6, 41.4];
        let c7 = [35.0, 35.4, 34.8, 35.9, 35.2, 34.6, 35.1];
        let mw = mann_whitney(&b7, &c7, Lower).unwrap();
        assert!(mw.p_better < 0.01 && mw.p_worse > 0.99, "{mw:?}");
        // Interleaved samples from the same distribution: no evidence either way.
        let b = [1.0, 4.0, 5.0, 8.0];
        let c = [2.0, 3.0, 6.0, 7.0];
        let mw = mann_whitney(&b, &c, Lower).unwrap();
        assert_eq!(mw.u, 8.0);
        assert!(mw.p_better > 0.4 && mw.p_better < 0.7, "{mw:?}");
        assert!(close(mw.p_better, mw.p_worse, 1e-12), "{mw:?}");
        // All tied: U sits at its mean and both tails are certain.
        let mw = mann_whitney(&[5.0; 4], &[5.0; 4], Lower).unwrap();
        assert_eq!((mw.u, mw.p_better, mw.p_worse), (8.0, 1.0, 1.0));
    }

    #[test]
    fn mann_whitney_ties_exact_and_normal_agree() {
        // Heavy ties: the exact conditional distribution and the tie-corrected normal
        // approximation must roughly agree for moderate n.
        let b = [3.0, 3.0, 4.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0, 8.0];
        let c = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0];
        let mw = mann_whitney(&b, &c, Lower).unwrap();
        assert_eq!(mw.method, Method::Exact);
        let normal = mann_whitney_by(&b, &c, Lower, Method::Normal).unwrap();
        assert!(close(mw.p_better, normal.p_better, 0.01), "exact {mw:?} normal {normal:?}");
        assert!(close(mw.p_worse, normal.p_worse, 0.01), "exact {mw:?} normal {normal:?}");
        assert!(mw.p_better < 0.05, "{mw:?}");
    }

    /// Hand computation: Higher is better, baseline [1 2 2], candidate [2 3 3]. Midranks 1, 3 3 3,
    /// 5.5 5.5: U = 14 - 6 = 8, mean 4.5; tie term (27-3)+(8-2) = 30, var = 9/12 * (7 - 30/30) =
    /// 4.5; z = (8 - 4.5 - 0.5)/sqrt(4.5) = sqrt(2); p = P(Z > 1.41421) = 0.0786496. Without the
    /// tie correction the variance would be 5.25 and p = 0.0952.
    #[test]
    fn mann_whitney_normal_tie_and_continuity_correction() {
        let mw = mann_whitney_by(&[1.0, 2.0, 2.0], &[2.0, 3.0, 3.0], Higher, Method::Normal).unwrap();
        assert_eq!(mw.u, 8.0);
        assert!(close(mw.p_better, 0.078_649_6, 1e-6), "{mw:?}");
    }

    #[test]
    fn mann_whitney_normal_path_for_large_samples() {
        let b: Vec<f64> = (0..25).map(|i| 100.0 + (i % 5) as f64).collect();
        let c: Vec<f64> = (0..25).map(|i| 97.0 + (i % 5) as f64).collect();
        let mw = mann_whitney(&b, &c, Lower).unwrap();
        assert_eq!(mw.method, Method::Normal);
        assert!(mw.p_better < 1e-4, "{mw:?}");
        assert!(mw.p_worse > 0.999, "{mw:?}");
        let same = mann_whitney(&b, &b, Higher).unwrap();
        assert!(close(same.p_better, 0.5, 0.05), "{same:?}");
    }

    #[test]
    fn bootstrap_interval_covers_the_true_shift_and_is_reproducible() {
        // Baseline around 50, candidate shifted by exactly -5 with its own jitter.
        let mut rng = SplitMix64::new(7);
        let mut jitter = || (rng.next_u64() % 1000) as f64 / 1000.0;
        let b: Vec<f64> = (0..15).map(|_| 50.0 + jitter()).collect();
        let c: Vec<f64> = (0..15).map(|_| 45.0 + jitter()).collect();
        let ci = bootstrap_median_diff(&b, &c, Lower, 0.95, RESAMPLES).unwrap();
        assert!(ci.lo <= -5.0 + 0.5 && -5.0 - 0.5 <= ci.hi, "{ci:?}");
        assert!(ci.lo < -4.0 && ci.hi < -4.0 && ci.lo > -6.0, "{ci:?}");
        assert!(ci.lo <= ci.diff && ci.diff <= ci.hi, "{ci:?}");
        assert!(ci.better(Lower) && !ci.worse(Lower) && ci.worse(Higher));
        assert_eq!(ci.p_better, 0.0);
        assert_eq!(bootstrap_median_diff(&b, &c, Lower, 0.95, RESAMPLES), Some(ci));
        // Same distribution: the interval straddles 0.
        let same = bootstrap_median_diff(&b, &b, Lower, 0.95, RESAMPLES).unwrap();
        assert!(same.lo < 0.0 && same.hi > 0.0, "{same:?}");
        assert!(!same.better(Lower) && !same.worse(Lower));
        assert_eq!(bootstrap_median_diff(&[], &c, Lower, 0.95, RESAMPLES), None);
    }

    #[test]
    fn splitmix_is_the_reference_sequence() {
        // First outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut g = SplitMix64::new(1);
        assert!((0..1000).all(|_| g.below(7) < 7));
    }
}
