//! The evaluator's earlier design, kept here only to compare against: a fixed number of
//! rounds, baseline then candidate, each side's samples taken as two independent samples;
//! Mann-Whitney U on them, a stability gate on each side's robust CV, and the median's relative
//! change against `min_effect`. This is the code the evaluator ran before issue 10 (the
//! statistics copied from it), so `evaluator-bench` compares the new designs against what users
//! had.

use protocol::governance::Direction;

/// Scale that makes the MAD a consistent estimator of the standard deviation for normal data.
const MAD_SCALE: f64 = 1.4826;
/// Both sides at most this large: the exact permutation distribution.
const EXACT_MAX_N: usize = 20;

/// The old gates (the template defaults: 7 repeats, min_samples 5, max_cv 10%).
#[derive(Debug, Clone, Copy)]
pub struct Old {
    pub direction: Direction,
    pub confidence: f64,
    pub min_effect: f64,
    pub min_samples: usize,
    pub max_cv: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Promote,
    Hold,
    Reject,
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn robust_cv(xs: &[f64]) -> Option<f64> {
    let m = median(xs)?;
    let dev: Vec<f64> = xs.iter().map(|x| (x - m).abs()).collect();
    let d = median(&dev)?;
    if d == 0.0 {
        Some(0.0)
    } else if m == 0.0 {
        None
    } else {
        Some(MAD_SCALE * d / m.abs())
    }
}

/// The old verdict over each side's samples.
pub fn decide(baseline: &[f64], candidate: &[f64], old: &Old) -> Verdict {
    let alpha = 1.0 - old.confidence;
    let exact = baseline.len() <= EXACT_MAX_N && candidate.len() <= EXACT_MAX_N;
    let Some(mw) =
        mann_whitney_by(baseline, candidate, old.direction, if exact { Method::Exact } else { Method::Normal })
    else {
        return Verdict::Hold;
    };
    let enough = baseline.len() >= old.min_samples && candidate.len() >= old.min_samples;
    if enough && mw.p_worse < alpha {
        return Verdict::Reject;
    }
    let stable = |xs: &[f64]| robust_cv(xs).is_some_and(|v| v <= old.max_cv);
    let improvement = median(baseline).zip(median(candidate)).filter(|(b, _)| *b != 0.0).map(|(b, c)| {
        let rel = (c - b) / b.abs();
        if old.direction == Direction::Lower { -rel } else { rel }
    });
    let better = improvement.is_some_and(|i| i > old.min_effect) && mw.p_better < alpha;
    if enough && stable(baseline) && stable(candidate) && better { Verdict::Promote } else { Verdict::Hold }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Exact,
    Normal,
}

struct MannWhitney {
    p_better: f64,
    p_worse: f64,
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
        return Some(MannWhitney { p_better, p_worse });
    }
    let (nbf, ncf, nf) = (nb as f64, nc as f64, n_total as f64);
    let mu = nbf * ncf / 2.0;
    let ties: f64 = tie_sizes.iter().map(|&t| (t * t * t - t) as f64).sum();
    let var = nbf * ncf / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return Some(MannWhitney { p_better: 1.0, p_worse: 1.0 });
    }
    let sd = var.sqrt();
    Some(MannWhitney {
        p_better: normal_sf((u - mu - 0.5) / sd).min(1.0),
        p_worse: normal_sf((mu - u - 0.5) / sd).min(1.0),
    })
}

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

fn normal_sf(z: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Conover's textbook example (SciPy's `mannwhitneyu` docs): exact one-sided p = 7/126.
    #[test]
    fn mann_whitney_textbook() {
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        let mw = mann_whitney_by(&females, &males, Direction::Higher, Method::Exact).unwrap();
        assert!((mw.p_better - 7.0 / 126.0).abs() < 1e-12);
        let normal = mann_whitney_by(&females, &males, Direction::Higher, Method::Normal).unwrap();
        assert!((2.0 * normal.p_better - 0.111_346_886_533_140_41).abs() < 1e-6);
    }

    #[test]
    fn the_old_gates() {
        let old = Old { direction: Direction::Lower, confidence: 0.95, min_effect: 0.03, min_samples: 5, max_cv: 0.10 };
        let b = [50.0, 50.3, 49.8, 50.4, 49.6, 50.1, 49.9];
        let better: Vec<f64> = b.iter().map(|x| x * 0.8).collect();
        let worse: Vec<f64> = b.iter().map(|x| x * 1.2).collect();
        assert_eq!(decide(&b, &better, &old), Verdict::Promote);
        assert_eq!(decide(&b, &worse, &old), Verdict::Reject);
        assert_eq!(decide(&b, &b, &old), Verdict::Hold);
        // Unstable: held however clear.
        let wild = [30.0, 55.0, 41.0, 70.0, 33.0, 48.0, 62.0];
        let wild_better: Vec<f64> = wild.iter().map(|x| x * 0.5).collect();
        assert_eq!(decide(&wild, &wild_better, &old), Verdict::Hold);
    }
}
