//! A seeded model of benchmark noise on the machines Ratchet runs on (laptops and shared 2-core
//! runners), for tests and benchmarks. The same seed always gives the same numbers, so the
//! decision procedure can be run hundreds of times over fixed seeds and its error rates checked
//! exactly (see `docs` in ARCHITECTURE.md, "Deciding on a noisy machine").
//!
//! What it models (measured on this project's machines, see EVALUATION.md):
//! - a true throughput (higher is better) per side, the candidate's set by a true `effect`;
//! - machine-wide bursts that halve throughput for 1 to 4 consecutive time slots (a slot is one
//!   benchmark run's duration), so consecutive runs are correlated;
//! - one-core bursts that slow one CPU only (by 25-45%) for 1 to 4 slots: in duet mode they hit
//!   one side of a round; in sequential mode they hit a run when the scheduler put it there;
//! - slow drift (a sinusoid of a few percent over tens of slots);
//! - run-to-run jitter (log-normal, 1.5%);
//! - rare outliers (2% of runs lose 20-70%).
//!
//! Every quantity is a pure function of (seed, slot, CPU), so a separate process (the
//! `noise-bench` fixture program) can compute the value of its own run from a slot counter.

use crate::stats::SplitMix64;

/// The knobs of the model. [`NoiseParams::MACHINE`] is this project's kind of machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseParams {
    /// Log-normal standard deviation of each run.
    pub jitter: f64,
    /// Chance that a machine-wide burst starts at a slot.
    pub burst_rate: f64,
    /// Throughput factor during a machine-wide burst.
    pub burst_factor: f64,
    /// Chance that a one-core burst starts at a slot, per CPU.
    pub core_burst_rate: f64,
    /// Throughput factor range on the CPU hit by a one-core burst.
    pub core_factor: (f64, f64),
    /// Amplitude of the slow drift (relative) and its period in slots.
    pub drift: f64,
    pub drift_period: f64,
    /// Chance that a run is an outlier, and its factor range.
    pub outlier_rate: f64,
    pub outlier_factor: (f64, f64),
    /// CPUs of the machine.
    pub cpus: u32,
}

impl NoiseParams {
    /// This project's kind of machine: 2 shared CPUs, throughput swinging by up to 1.7x from
    /// one run to the next in bursts of a few runs, sometimes on one core only.
    pub const MACHINE: NoiseParams = NoiseParams {
        jitter: 0.015,
        burst_rate: 0.10,
        burst_factor: 0.5,
        core_burst_rate: 0.05,
        core_factor: (0.55, 0.75),
        drift: 0.05,
        drift_period: 40.0,
        outlier_rate: 0.02,
        outlier_factor: (0.3, 0.8),
        cpus: 2,
    };

    /// A quiet machine: jitter only.
    pub const QUIET: NoiseParams = NoiseParams {
        jitter: 0.01,
        burst_rate: 0.0,
        burst_factor: 1.0,
        core_burst_rate: 0.0,
        core_factor: (1.0, 1.0),
        drift: 0.0,
        drift_period: 40.0,
        outlier_rate: 0.0,
        outlier_factor: (1.0, 1.0),
        cpus: 2,
    };
}

/// Longest burst, in slots.
const MAX_BURST: u64 = 4;

/// A machine under the model: throughput of a run at a slot on a CPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Machine {
    pub seed: u64,
    pub params: NoiseParams,
    /// True throughput of the baseline (units/s).
    pub base: f64,
}

/// Stream tags so the draws of different quantities never collide.
#[derive(Clone, Copy)]
enum Tag {
    Burst = 1,
    BurstLen = 2,
    Core = 3,
    CoreLen = 4,
    CoreFactor = 5,
    Jitter = 6,
    Outlier = 7,
    OutlierFactor = 8,
    Drift = 9,
    Scheduled = 10,
}

impl Machine {
    pub fn new(seed: u64, params: NoiseParams) -> Machine {
        Machine { seed, params, base: 200_000.0 }
    }

    fn draw(&self, tag: Tag, slot: u64, cpu: u64) -> SplitMix64 {
        let mut g = SplitMix64::new(self.seed ^ (tag as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        g.next_u64();
        let mut g = SplitMix64::new(g.next_u64() ^ slot.wrapping_mul(0xD1B5_4A32_D192_ED03));
        g.next_u64();
        SplitMix64::new(g.next_u64() ^ cpu.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7))
    }

    fn uniform(&self, tag: Tag, slot: u64, cpu: u64) -> f64 {
        self.draw(tag, slot, cpu).unit()
    }

    /// Whether a burst (machine-wide when `cpu` is `None`) covers `slot`, and the start slot of it.
    fn burst_start(&self, slot: u64, cpu: Option<u64>) -> Option<u64> {
        let (start_tag, len_tag, rate, c) = match cpu {
            None => (Tag::Burst, Tag::BurstLen, self.params.burst_rate, u64::MAX),
            Some(c) => (Tag::Core, Tag::CoreLen, self.params.core_burst_rate, c),
        };
        (slot.saturating_sub(MAX_BURST - 1)..=slot).rev().find(|&s| {
            self.uniform(start_tag, s, c) < rate && {
                let len = 1 + (self.draw(len_tag, s, c).next_u64() % MAX_BURST);
                s + len > slot
            }
        })
    }

    /// The machine's throughput factor at `slot` on `cpu` (everything but jitter and outliers).
    pub fn state(&self, slot: u64, cpu: u32) -> f64 {
        let p = &self.params;
        let mut f = 1.0;
        if self.burst_start(slot, None).is_some() {
            f *= p.burst_factor;
        }
        if let Some(s) = self.burst_start(slot, Some(cpu as u64)) {
            let u = self.uniform(Tag::CoreFactor, s, cpu as u64);
            f *= p.core_factor.0 + u * (p.core_factor.1 - p.core_factor.0);
        }
        let phase = self.uniform(Tag::Drift, 0, 0) * std::f64::consts::TAU;
        f *= (p.drift * (std::f64::consts::TAU * slot as f64 / p.drift_period + phase).sin()).exp();
        f
    }

    /// The CPU the scheduler gives an unpinned run at `slot`.
    pub fn scheduled_cpu(&self, slot: u64) -> u32 {
        (self.draw(Tag::Scheduled, slot, 0).next_u64() % self.params.cpus.max(1) as u64) as u32
    }

    /// The throughput one run measures: at `slot`, on `cpu` (`None`: wherever the scheduler puts
    /// it), of code whose true throughput is `base * (1 + effect)`.
    pub fn run(&self, slot: u64, cpu: Option<u32>, effect: f64) -> f64 {
        let p = &self.params;
        let cpu = cpu.unwrap_or_else(|| self.scheduled_cpu(slot));
        let mut g = self.draw(Tag::Jitter, slot, cpu as u64);
        let z = g.normal();
        let mut v = self.base * (1.0 + effect) * self.state(slot, cpu) * (p.jitter * z).exp();
        if self.uniform(Tag::Outlier, slot, cpu as u64) < p.outlier_rate {
            let u = self.uniform(Tag::OutlierFactor, slot, cpu as u64);
            v *= p.outlier_factor.0 + u * (p.outlier_factor.1 - p.outlier_factor.0);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped_like_the_machine() {
        let m = Machine::new(7, NoiseParams::MACHINE);
        assert_eq!(m.run(12, Some(1), 0.0), m.run(12, Some(1), 0.0));
        assert_ne!(m.run(12, Some(0), 0.0), m.run(12, Some(1), 0.0));
        let xs: Vec<f64> = (0..2000).map(|s| m.run(s, None, 0.0)).collect();
        let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().cloned().fold(0.0, f64::max);
        // Swings of well beyond 1.7x between runs of the same code.
        assert!(hi / lo > 1.7, "{lo} {hi}");
        // Bursts cover a sizeable share of slots but not most of them.
        let slowed = (0..2000).filter(|&s| m.burst_start(s, None).is_some()).count();
        assert!((300..700).contains(&slowed), "{slowed}");
        // The effect scales the throughput.
        assert!((m.run(5, Some(0), 0.5) / m.run(5, Some(0), 0.0) - 1.5).abs() < 1e-9);
    }
}
