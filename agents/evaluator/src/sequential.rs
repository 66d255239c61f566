//! Sequential decisions over paired rounds, with error rates that hold under optional stopping.
//!
//! After each round from the first look on, [`look`] asks whether the answer is clear; if not,
//! another round runs, up to the horizon. Testing again and again as data arrive would inflate
//! the false-promotion rate of a fixed-sample test, so the critical values come from a table
//! computed for the whole procedure ([`table`]): at each look `n` two one-sided tests run at a
//! nominal level chosen so that, under "no difference", the chance that either crosses at *any*
//! look of the design is at most `alpha` (on each side, better and worse):
//! - the **sign test** (how many rounds favour the candidate): it weighs a round hit by a burst on
//!   one side as one round, whatever the size of the hit, so it keeps its power when a third of
//!   the rounds are such outliers (the noise of shared machines);
//! - the **Wilcoxon signed-rank test**: it also weighs how far each round is from zero, so a
//!   large effect with one small contrary round is decided in few rounds.
//!
//! The table is computed by simulating the procedure itself on null paths. The order of each
//! round (or, in duet mode, which side gets which CPU) is a fair coin, so under "no difference"
//! the sign of every score is a fair coin whatever the machine does: at any one look both tests
//! are randomization tests, exact without any assumption on the noise, and the sign test stays
//! exact across looks too. The signed-rank statistic's path across looks, though, depends on the
//! order in which the magnitudes arrive: when the machine grows noisier during an evaluation
//! (each round louder than the ones before), W+ at each look is dominated by the newest rounds
//! and crosses more often than on exchangeable magnitudes (measured on this table's design at
//! 95%: 6.9% per side instead of 4.8%, where a step in the load or regimes gave 5.1-5.6%). So the
//! table is computed on both arrival orders, exchangeable and always-growing, and takes the
//! lower level: the error rate holds on each (`crossing` is the larger of the two), and the
//! arrival orders tried besides (steps, regimes, sawtooth, decreasing) stay below it
//! (`tests::the_error_rate_holds_however_the_noise_grows`).
//!
//! Inverting both tests at each look gives repeated confidence intervals for the centre of the
//! scores: the set of shifts neither test rejects, which holds simultaneously over all looks with
//! probability at least `1 - 2 * alpha`. Every decision is read off them (see [`look`]), so each
//! decision's error rate stays bounded whatever the stopping rule.
//!
//! The design spends most of its error budget early (the nominal level falls as `(first/n)^2.5`):
//! a clear change is decided in the first few rounds, and later looks still hold enough to find
//! medium effects before the horizon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::paired::{signed_rank_tail, walsh_averages};
use crate::stats::{SplitMix64, median};

/// Null paths simulated to compute a table.
pub const PATHS: usize = 20_000;
/// How fast the nominal level falls with the look: `level * (first / n)^FRONT`.
pub const FRONT: f64 = 2.5;

/// The shape of a sequential design: looks at every round from `first` to `horizon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Design {
    /// The first round at which a decision may be taken.
    pub first: u32,
    /// The last round (a measurement's cap and its re-measurement's).
    pub horizon: u32,
    /// One-sided error rate on each side, 1 - confidence, in millionths (so designs hash).
    pub alpha_ppm: u32,
}

impl Design {
    pub fn new(first: u32, horizon: u32, confidence: f64) -> Design {
        let alpha = (1.0 - confidence).clamp(1e-6, 0.5);
        let first = first.max(1);
        Design { first, horizon: horizon.max(first), alpha_ppm: (alpha * 1e6).round() as u32 }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha_ppm as f64 / 1e6
    }
}

/// Critical values of a design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub design: Design,
    /// The nominal one-sided level at the first look; at look n it is `level * (first/n)^2.5`.
    pub level: f64,
    /// For each look `n = first ..= horizon` (index `n - first`): the rounds favouring one side
    /// at or beyond which the sign test rejects (`None`: no outcome at that look is that extreme).
    pub sign: Vec<Option<u32>>,
    /// Likewise for the signed-rank statistic W+.
    pub signed_rank: Vec<Option<u32>>,
    /// The simulated chance, under "no difference", that some look crosses (at most alpha).
    pub crossing: f64,
}

impl Table {
    fn at(&self, v: &[Option<u32>], n: u32) -> Option<u32> {
        if n < self.design.first || n > self.design.horizon {
            return None;
        }
        v[(n - self.design.first) as usize]
    }

    /// The sign test's critical count at look `n`.
    pub fn sign_critical(&self, n: u32) -> Option<u32> {
        self.at(&self.sign, n)
    }

    /// The signed-rank test's critical W+ at look `n`.
    pub fn signed_rank_critical(&self, n: u32) -> Option<u32> {
        self.at(&self.signed_rank, n)
    }

    /// The nominal one-sided level at look `n`.
    pub fn nominal(&self, n: u32) -> f64 {
        self.level * shape(&self.design, n)
    }
}

fn shape(design: &Design, n: u32) -> f64 {
    (design.first as f64 / n as f64).powf(FRONT)
}

/// Exact upper tails of the number of successes in `n` fair coin flips: `tail[s] = P(S >= s)`.
pub fn binomial_tail(n: usize) -> Vec<f64> {
    let mut pmf = vec![1.0f64];
    for _ in 0..n {
        let mut next = vec![0.0; pmf.len() + 1];
        for (s, p) in pmf.iter().enumerate() {
            next[s] += p / 2.0;
            next[s + 1] += p / 2.0;
        }
        pmf = next;
    }
    let mut tail = vec![0.0; n + 2];
    for s in (0..=n).rev() {
        tail[s] = tail[s + 1] + pmf[s];
    }
    tail.truncate(n + 1);
    tail
}

/// The table of `design`, computed once per process and cached (tens of milliseconds).
pub fn table(design: Design) -> Arc<Table> {
    static CACHE: OnceLock<Mutex<HashMap<Design, Arc<Table>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().expect("table cache lock").get(&design) {
        return t.clone();
    }
    let t = Arc::new(compute(design));
    cache.lock().expect("table cache lock").insert(design, t.clone());
    t
}

/// How the magnitudes of the scores arrive, for the null paths of [`compute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Each new score's rank among those so far is uniform (a machine whose noise is steady).
    Exchangeable,
    /// Each new score is the largest so far (a machine growing noisier round after round): the
    /// arrival order under which the signed-rank path crosses most often of those tried.
    Growing,
}

/// For each of [`PATHS`] null paths (fair signs, magnitudes arriving as `arrival` says): the
/// smallest (p-value / shape) over its looks and both tests, sorted.
fn null_minima(design: Design, arrival: Arrival, sign_tails: &[Vec<f64>], rank_tails: &[Vec<f64>]) -> Vec<f64> {
    let (first, horizon) = (design.first, design.horizon);
    let mut rng = SplitMix64::new(0x5345_5155_454E_5449); // "SEQUENTI"
    let mut minima = Vec::with_capacity(PATHS);
    let mut signs: Vec<bool> = Vec::with_capacity(horizon as usize);
    for _ in 0..PATHS {
        signs.clear();
        let (mut w, mut s) = (0usize, 0usize);
        let mut m = f64::INFINITY;
        for n in 1..=horizon as usize {
            // The new score's rank r (1-based) among n; every score ranked at or above r moves
            // up one.
            let r = match arrival {
                Arrival::Exchangeable => 1 + rng.below(n),
                Arrival::Growing => n,
            };
            let positive = rng.next_u64() & 1 == 1;
            w += signs[r - 1..].iter().filter(|&&x| x).count() + if positive { r } else { 0 };
            s += positive as usize;
            signs.insert(r - 1, positive);
            if n as u32 >= first {
                let p = sign_tails[n][s].min(rank_tails[n][w]);
                m = m.min(p / shape(&design, n as u32));
            }
        }
        minima.push(m);
    }
    minima.sort_by(f64::total_cmp);
    minima
}

/// The largest level t with #{paths whose minimum <= t} <= alpha * PATHS (`minima` sorted).
fn largest_level(minima: &[f64], alpha: f64) -> f64 {
    let allowed = (alpha * PATHS as f64).floor() as usize;
    match minima.get(allowed) {
        None => 1.0,
        Some(&cut) => minima.iter().take_while(|&&m| m < cut).last().copied().unwrap_or(0.0),
    }
}

/// Simulate [`PATHS`] null paths for each [`Arrival`] and find the largest nominal level whose
/// crossing rate is at most alpha on both. Deterministic: the generator's seed is fixed.
fn compute(design: Design) -> Table {
    let (first, horizon) = (design.first, design.horizon);
    let sign_tails: Vec<Vec<f64>> = (0..=horizon as usize).map(binomial_tail).collect();
    let rank_tails: Vec<Vec<f64>> = (0..=horizon as usize).map(signed_rank_tail).collect();
    let paths: Vec<Vec<f64>> = [Arrival::Exchangeable, Arrival::Growing]
        .into_iter()
        .map(|a| null_minima(design, a, &sign_tails, &rank_tails))
        .collect();
    let level = paths.iter().map(|m| largest_level(m, design.alpha())).fold(1.0, f64::min);
    let crossing =
        paths.iter().map(|m| m.iter().filter(|&&x| x <= level).count() as f64 / PATHS as f64).fold(0.0, f64::max);
    let critical = |tails: &[Vec<f64>]| -> Vec<Option<u32>> {
        (first..=horizon)
            .map(|n| {
                let t = &tails[n as usize];
                let lim = level * shape(&design, n) * (1.0 + 1e-9);
                (0..t.len()).find(|&c| t[c] <= lim).map(|c| c as u32)
            })
            .collect()
    };
    Table { design, level, sign: critical(&sign_tails), signed_rank: critical(&rank_tails), crossing }
}

pub use protocol::evaluation::{Call, Look};

/// Look at the scores so far (`threshold`: the minimum effect on the score scale, > 0).
///
/// - Better: the interval excludes 0 on the good side and the median is at least `threshold`.
/// - Worse: the interval excludes 0 on the bad side and the median is at most `-threshold`.
/// - Same: the interval lies within `(-threshold, threshold)`.
pub fn look(scores: &[f64], table: &Table, threshold: f64) -> Look {
    let n = scores.len() as u32;
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let estimate = median(&sorted).unwrap_or(0.0);
    let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
    let sign_critical = table.sign_critical(n);
    // The sign test rejects "centre <= t" when at least k scores exceed t: the interval's lower
    // end is the k-th largest score, its upper end the k-th smallest.
    if let Some(k) = sign_critical.filter(|&k| k >= 1 && k <= n) {
        lo = lo.max(sorted[(n - k) as usize]);
        hi = hi.min(sorted[k as usize - 1]);
    }
    let signed_rank_critical = table.signed_rank_critical(n);
    let mut walsh = walsh_averages(scores);
    let w_plus = walsh.iter().filter(|&&a| a > 0.0).count() as u32;
    if let Some(w) = signed_rank_critical.filter(|&w| w >= 1 && w as usize <= walsh.len()) {
        // The w-th largest and the w-th smallest Walsh averages (selection, not a sort).
        let m = walsh.len();
        lo = lo.max(*walsh.select_nth_unstable_by(m - w as usize, f64::total_cmp).1);
        hi = hi.min(*walsh.select_nth_unstable_by(w as usize - 1, f64::total_cmp).1);
    }
    let call = if lo > 0.0 && estimate >= threshold {
        Call::Better
    } else if hi < 0.0 && estimate <= -threshold {
        Call::Worse
    } else if lo > -threshold && hi < threshold {
        Call::Same
    } else {
        Call::Unclear
    };
    Look {
        n,
        call,
        estimate,
        lo,
        hi,
        above: scores.iter().filter(|&&s| s > 0.0).count() as u32,
        below: scores.iter().filter(|&&s| s < 0.0).count() as u32,
        w_plus,
        sign_critical,
        signed_rank_critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tails() {
        let t = binomial_tail(5);
        assert_eq!(t.len(), 6);
        assert_eq!(t[0], 1.0);
        assert_eq!(t[5], 1.0 / 32.0);
        assert_eq!(t[4], 6.0 / 32.0);
    }

    /// The table holds alpha over every look, exactly computed for the sign test alone: the
    /// simulated crossing of the union never exceeds alpha, and each test on its own at the
    /// table's critical values crosses less (checked exactly for the sign test by dynamic
    /// programming over its random walk).
    #[test]
    fn tables_hold_alpha_over_every_look() {
        for d in [Design::new(5, 60, 0.95), Design::new(8, 40, 0.95), Design::new(4, 20, 0.9)] {
            let t = table(d);
            assert!(t.crossing <= d.alpha() && t.crossing > 0.5 * d.alpha(), "{t:?}");
            assert_eq!(*t, compute(d), "deterministic");
            // Exact crossing of the sign part alone.
            let mut dist = vec![1.0f64];
            let mut crossed = 0.0;
            for n in 1..=d.horizon {
                let mut next = vec![0.0; n as usize + 1];
                for (s, p) in dist.iter().enumerate() {
                    next[s] += p / 2.0;
                    next[s + 1] += p / 2.0;
                }
                if let Some(k) = t.sign_critical(n) {
                    for p in next.iter_mut().skip(k as usize) {
                        crossed += *p;
                        *p = 0.0;
                    }
                }
                dist = next;
            }
            assert!(crossed <= d.alpha(), "{crossed}");
        }
        // At 95% nothing can be decided before 5 rounds: 2^-4 > 0.05.
        let t = table(Design::new(4, 30, 0.95));
        assert_eq!((t.sign_critical(4), t.signed_rank_critical(4)), (None, None));
        assert_eq!(t.sign_critical(5), Some(5));
    }

    fn design() -> Arc<Table> {
        table(Design::new(5, 60, 0.95))
    }

    /// The chance, on null paths whose magnitudes come from `magnitude(round, rng)`, that the
    /// table's tests cross on the better side and on the worse side at some look (10,000 paths;
    /// a seed of its own, not the table's). W+ is kept exactly as the scores arrive.
    fn crossing_rates(t: &Table, seed: u64, magnitude: &dyn Fn(u32, &mut SplitMix64) -> f64) -> (f64, f64) {
        const N: usize = 10_000;
        let d = t.design;
        let mut rng = SplitMix64::new(seed);
        let (mut better, mut worse) = (0, 0);
        for _ in 0..N {
            // (magnitude, positive), kept sorted by magnitude: W+ is the sum of the positive
            // scores' ranks.
            let mut seen: Vec<(f64, bool)> = vec![];
            let (mut w, mut s) = (0u32, 0u32);
            for n in 1..=d.horizon {
                let m = magnitude(n - 1, &mut rng);
                let positive = rng.next_u64() & 1 == 1;
                let r = seen.partition_point(|&(x, _)| x < m);
                w += seen[r..].iter().filter(|&&(_, p)| p).count() as u32 + if positive { r as u32 + 1 } else { 0 };
                s += positive as u32;
                seen.insert(r, (m, positive));
                let total = n * (n + 1) / 2;
                let (k, c) = (t.sign_critical(n), t.signed_rank_critical(n));
                if k.is_some_and(|k| s >= k) || c.is_some_and(|c| w >= c) {
                    better += 1;
                    break;
                }
                if k.is_some_and(|k| n - s >= k) || c.is_some_and(|c| total - w >= c) {
                    worse += 1;
                    break;
                }
            }
        }
        (better as f64 / N as f64, worse as f64 / N as f64)
    }

    /// The sign of each score is a fair coin whatever the machine does, but the signed-rank path
    /// across looks depends on the order in which the magnitudes arrive: with noise that grows
    /// round after round, a table computed on exchangeable magnitudes alone crossed 6.9% per
    /// side at 95%. The table holds alpha (within the simulation's error) on every arrival
    /// order tried: steady, growing (linearly, geometrically), shrinking, a step up early or at
    /// the re-measurement, regimes, a sawtooth.
    #[test]
    fn the_error_rate_holds_however_the_noise_grows() {
        type Magnitude = fn(u32, &mut SplitMix64) -> f64;
        let orders: [(&str, Magnitude); 8] = [
            ("steady", |_, r| r.unit()),
            ("growing linearly", |i, r| (i as f64 + 1.0) * (0.9 + 0.2 * r.unit())),
            ("growing 10% a round", |i, r| 1.1f64.powi(i as i32) * (0.9 + 0.2 * r.unit())),
            ("shrinking", |i, r| (0.9 + 0.2 * r.unit()) / (i as f64 + 1.0)),
            ("a step up at round 10", |i, r| if i < 10 { 0.1 * r.unit() } else { 1.0 + r.unit() }),
            ("a step up at the re-measurement", |i, r| if i < 30 { 0.1 * r.unit() } else { 1.0 + r.unit() }),
            ("regimes of 8 rounds", |i, r| if (i / 8) % 2 == 0 { 0.1 * r.unit() } else { 1.0 + r.unit() }),
            ("a sawtooth of 10", |i, r| ((i % 10) as f64 + 1.0) * (0.95 + 0.1 * r.unit())),
        ];
        let t = design();
        let alpha = t.design.alpha();
        // 10,000 paths: the standard error at 5% is 0.22 points; 2.7 of them above alpha.
        let bound = alpha + 0.006;
        for (seed, (name, magnitude)) in orders.iter().enumerate() {
            let (better, worse) = crossing_rates(&t, 0xA11CE + seed as u64, magnitude);
            assert!(better <= bound && worse <= bound, "{name}: better {better}, worse {worse} (alpha {alpha})");
        }
    }

    #[test]
    fn looks_call_each_outcome() {
        let thr = 1.03f64.ln();
        let t = design();
        // Five rounds, all clearly better: decided at the first look.
        let l = look(&[0.20, 0.22, 0.18, 0.21, 0.19], &t, thr);
        assert_eq!(l.call, Call::Better, "{l:?}");
        assert!(l.lo > 0.0 && (l.estimate - 0.20).abs() < 1e-12);
        assert_eq!((l.above, l.below, l.sign_critical), (5, 0, Some(5)));
        // Mirror: worse.
        assert_eq!(look(&[-0.20, -0.22, -0.18, -0.21, -0.19], &t, thr).call, Call::Worse);
        // One contrary round among five: not yet.
        assert_eq!(look(&[0.20, 0.22, -0.18, 0.21, 0.19], &t, thr).call, Call::Unclear);
        // ... but a small contrary round among eight is outweighed by the signed-rank test,
        // while the sign test alone would need all eight.
        let l = look(&[0.56, 0.55, -0.05, 0.57, 0.54, 0.56, 0.55, 0.58], &t, thr);
        assert_eq!(
            (l.call, l.w_plus, l.signed_rank_critical, l.sign_critical),
            (Call::Better, 35, Some(35), Some(8)),
            "{l:?}"
        );
        // A large contrary round (a burst on the candidate's side) is not outweighed that early.
        assert_eq!(look(&[0.56, 0.55, -0.60, 0.57, 0.54, 0.56, 0.55, 0.58], &t, thr).call, Call::Unclear);
        // Significantly better, but the median is below the minimum effect: not a promotion.
        let small: Vec<f64> = (0..30).map(|i| 0.01 + 0.001 * (i % 5) as f64).collect();
        let l = look(&small, &t, thr);
        assert_eq!(l.call, Call::Same, "{l:?}");
        assert!(l.lo > 0.0 && l.hi < thr);
        // Pure noise of +-1%, many rounds: within the minimum effect.
        let noise: Vec<f64> = (0..20).map(|i| if i % 2 == 0 { 0.01 } else { -0.01 } * (1 + i % 3) as f64).collect();
        assert_eq!(look(&noise, &t, thr).call, Call::Same);
        // Too few rounds to bound anything.
        let l = look(&[0.1, 0.1, 0.1], &t, thr);
        assert_eq!((l.call, l.lo, l.hi), (Call::Unclear, f64::NEG_INFINITY, f64::INFINITY));
    }
}
