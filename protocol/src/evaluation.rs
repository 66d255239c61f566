//! What the evaluator measured and decided, as it crosses processes (the evaluate result, the
//! `evaluated` and `calibrated` events, `ratchet explain`): paired rounds, the typed outcome, the
//! rule that stopped sampling, the effect with its interval, the calibrated noise, the numbers
//! behind a verdict ([`Stats`]) and the diagnosis of what the rounds show ([`Diagnosis`]).

use serde::{Deserialize, Deserializer, Serialize};

use crate::governance::{Direction, Measure, Pairing, SandboxMode};
use crate::work::Recommendation;

/// The tool that counted instructions (ethos.md `measure = "instructions"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Counter {
    /// `perf stat -e instructions:u`: the CPU's own counter (user space, every process of the
    /// tree), near native speed; needs the counters exposed to this machine.
    Perf,
    /// valgrind's callgrind, following child processes: the instructions it executed on a
    /// simulated CPU, the same on every machine with the same binaries; tens of times slower.
    Callgrind,
}

impl Counter {
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Perf => "perf",
            Counter::Callgrind => "callgrind",
        }
    }
}

impl std::fmt::Display for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tool on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolReport {
    pub counter: Counter,
    /// It counted the instructions of a probe command inside the sandbox.
    pub works: bool,
    /// What it counted (`counted 126,559 instructions of `true``), or why it does not work.
    pub detail: String,
}

/// Which counters work here, inside which sandbox, and the one a counted run uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterReport {
    /// The sandbox mode the probes ran in (the one benchmarks run in).
    pub sandbox: SandboxMode,
    pub tools: Vec<ToolReport>,
    /// perf when it works, else callgrind when it works, else none.
    pub chosen: Option<Counter>,
}

impl CounterReport {
    pub fn tool(&self, counter: Counter) -> Option<&ToolReport> {
        self.tools.iter().find(|t| t.counter == counter)
    }

    /// Why nothing can count here, with the fix (for a `measure = "instructions"` that cannot run).
    pub fn why_none(&self) -> String {
        let each: Vec<String> = self.tools.iter().map(|t| format!("{}: {}", t.counter, t.detail)).collect();
        format!(
            "measure = \"instructions\" needs perf with the CPU's counters or valgrind, and neither counts here ({}); fix: install valgrind (apt-get install valgrind), or set measure = \"metric\" in ethos.md",
            each.join("; ")
        )
    }
}

/// What a calibration of `measure = "instructions"` adds: the counters that work here and how
/// much slower the benchmark runs under the chosen one (the counted A/A runs against as many
/// native runs of the same baseline, medians).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counting {
    pub counters: CounterReport,
    /// Median wall milliseconds of one counted run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_ms: Option<u64>,
    /// Median wall milliseconds of one native run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_ms: Option<u64>,
    /// The spread of the paired wall-time ratios of those native A/A rounds (the noise
    /// `measure = "metric"` would face here), to compare with the counts' spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_spread: Option<f64>,
}

impl Counting {
    /// counted / native, when both were measured.
    pub fn slowdown(&self) -> Option<f64> {
        match (self.counted_ms, self.native_ms) {
            (Some(c), Some(n)) if n > 0 => Some(c as f64 / n as f64),
            _ => None,
        }
    }
}

/// One side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Baseline,
    Candidate,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Baseline => Side::Candidate,
            Side::Candidate => Side::Baseline,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Baseline => "baseline",
            Side::Candidate => "candidate",
        }
    }
}

/// The CPUs each side was pinned to in a duet round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpus {
    pub baseline: u32,
    pub candidate: u32,
}

/// One duet slot: baseline and candidate at the same time, each pinned to its CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub cpus: Cpus,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// The side whose process the evaluator started first in this slot, read from when each
    /// process was spawned (starting a sandboxed run takes milliseconds, which the side started
    /// first has to itself); `None` when a run never started, and in evidence written before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_first: Option<Side>,
}

/// One round: a baseline run and a candidate run back to back (sequential pairing; `first` ran
/// first), or in duet pairing two slots of simultaneous runs with the CPUs swapped between them,
/// so each side ran once on each CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// 0-based; counted rounds and warmup rounds are numbered separately.
    pub round: u32,
    /// Sequential pairing: the side that ran first. Duet: the side on the lower CPU in the first
    /// slot.
    pub first: Side,
    /// Duet: the first slot's CPUs (the second slot's are swapped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// The metric of each side (duet: the geometric mean of its two slots, or their mean for
    /// metrics that reach zero); `None` when a run failed (see the evaluation's failures).
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// Duet: the two slots, in the order they ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<Slot>,
    /// The round's score, positive = the candidate is better: the log of candidate/baseline (its
    /// sign flipped when lower is better), or their difference over the baseline median for
    /// metrics that reach zero. `None` when a run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The score is far from the others (reported, never dropped: rank statistics weigh it as
    /// one round).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outlier: bool,
}

/// What the evaluation concluded, typed. [`Outcome::verdict`] is its PROMOTE/HOLD/REJECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Better by at least `min_effect`, with the required confidence: PROMOTE.
    Better,
    /// Worse by at least `min_effect`, with the required confidence: REJECT (banned).
    Worse,
    /// A guard metric regressed beyond its tolerance: REJECT.
    GuardRegressed,
    /// The candidate's runs fail where the baseline's do not: REJECT.
    CandidateFails,
    /// Confidently within `±min_effect`: HOLD, no change that matters.
    NoChange,
    /// Undecided at the cap: HOLD, too noisy (the evaluation says the spread and the rounds it
    /// would take). The loop measures such a candidate once more.
    TooNoisy,
    /// Not measurable: the baseline fails too, a cold start, a guard metric missing: HOLD.
    Unmeasurable,
}

impl Outcome {
    /// "PROMOTE", "HOLD" or "REJECT".
    pub fn verdict(self) -> &'static str {
        self.verdict_of().as_str()
    }

    /// The verdict this outcome gives: PROMOTE, HOLD or REJECT.
    pub fn verdict_of(self) -> crate::work::Verdict {
        use crate::work::Verdict;
        match self {
            Outcome::Better => Verdict::Promote,
            Outcome::Worse | Outcome::GuardRegressed | Outcome::CandidateFails => Verdict::Reject,
            Outcome::NoChange | Outcome::TooNoisy | Outcome::Unmeasurable => Verdict::Hold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Better => "better",
            Outcome::Worse => "worse",
            Outcome::GuardRegressed => "guard-regressed",
            Outcome::CandidateFails => "candidate-fails",
            Outcome::NoChange => "no-change",
            Outcome::TooNoisy => "too-noisy",
            Outcome::Unmeasurable => "unmeasurable",
        }
    }
}

/// Why sampling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stopping {
    /// The repeated confidence interval crossed a decision boundary (better, worse, or within
    /// the minimum effect).
    Boundary,
    /// This measurement's cap (`max_rounds`) came first; a re-measurement may continue it.
    Cap,
    /// The design's last round (twice `max_rounds`: a measurement and its re-measurement).
    Horizon,
    /// The candidate's runs kept failing.
    Failures,
    /// A fixed number of rounds (a calibration).
    Fixed,
    /// Instruction counts: two runs of each side agreed within the tolerance.
    Agreed,
}

/// The effect with its interval, as relative changes of the metric (positive = better).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// The median of the paired scores, as a relative change.
    pub estimate: f64,
    /// The repeated confidence interval at the last look (`None`: unbounded on that side, too
    /// few rounds for this look to bound it).
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    /// Its simultaneous coverage over every look of the design: 1 - 2 * (1 - confidence).
    pub coverage: f64,
    /// "log-ratio" or "difference".
    pub scale: String,
}

/// How the sampling was planned and how it ended: the evidence behind a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub pairing: Pairing,
    /// The first round at which a decision could be taken (ethos `min_rounds`, raised to what
    /// the confidence allows and to what the calibrated noise suggests).
    pub first_look: u32,
    /// This measurement's last round, and the design's last round (the threshold table spans it).
    pub cap: u32,
    pub horizon: u32,
    /// Counted rounds measured (including those of an earlier measurement this one continued).
    pub rounds: u32,
    /// Rounds carried over from the earlier measurement of the same candidate.
    #[serde(default)]
    pub resumed: u32,
    pub stopping: Stopping,
    /// The rule in words, with its numbers.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    pub pairs: Vec<Pair>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warmup: Vec<Pair>,
    /// The calibration in force when this was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// What the values are: the benchmark's metric, or instruction counts.
    #[serde(default, skip_serializing_if = "Measure::is_metric")]
    pub measure: Measure,
    /// Instruction counts: the tool that counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<Counter>,
    /// Instruction counts: the relative difference within which two runs of a side agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Instruction counts with ethos.md `guard_wall_time`: the paired wall-time check that ran
    /// after the counts said PROMOTE (values in milliseconds), with its own rule and interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<Box<Sampling>>,
}

/// The machine's noise for this benchmark, measured by running the baseline against itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub pairing: Pairing,
    /// The commit measured against itself.
    pub base: String,
    pub rounds: u32,
    /// Robust standard deviation (1.4826 * MAD) of the A/A scores, as a relative change: the
    /// spread of one round's ratio when nothing changed.
    pub spread: Option<f64>,
    /// Share of A/A rounds flagged as outliers (one side hit by a burst).
    pub outlier_share: f64,
    /// The first look this noise suggests (ethos `min_rounds` is raised to it).
    pub first_look: u32,
    /// RFC 3339.
    pub at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<Pair>,
    /// Instruction counts (ethos.md `measure = "instructions"`): the tool that counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<Counter>,
}

impl Calibration {
    /// One line for people: "spread ±2.1% per round, 1 of 8 rounds an outlier (sequential)";
    /// instruction counts say so and show the spread to the precision counts have.
    pub fn describe(&self) -> String {
        let spread = self
            .spread
            .map(|s| if self.counter.is_some() { format!("±{}", fine_pct(s)) } else { format!("±{:.1}%", s * 100.0) })
            .unwrap_or_else(|| "undefined".into());
        let what = match self.counter {
            Some(c) => format!("instruction counts ({c}): "),
            None => String::new(),
        };
        let outliers = (self.outlier_share * self.rounds as f64).round() as u32;
        format!(
            "{what}spread {spread} per round, {outliers} of {} rounds an outlier ({} pairing, A/A on {})",
            self.rounds,
            self.pairing.as_str(),
            &self.base[..12.min(self.base.len())]
        )
    }
}

/// A relative change as a percentage with the digits small values need: 0.021 -> "2.1%",
/// How a round's two values become its score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// `ln(candidate / baseline)` (sign flipped when lower is better): every value is positive.
    LogRatio,
    /// `(candidate - baseline) / |median of the baselines|`: some value is zero or negative.
    Difference,
}

/// What one look of the sequential test concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    /// Better by at least the minimum effect: PROMOTE.
    Better,
    /// Worse by at least the minimum effect: REJECT.
    Worse,
    /// Within the minimum effect: HOLD, no change that matters.
    Same,
    /// Not clear yet: another round (at the horizon: HOLD, undecided).
    Unclear,
}

/// The numbers of one look, on the score scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Look {
    /// Scores looked at.
    pub n: u32,
    pub call: Call,
    /// The median of the scores.
    pub estimate: f64,
    /// The repeated confidence interval; infinite where this look cannot bound it (written as
    /// `null`, which JSON has for an infinity, and read back as the infinity).
    #[serde(deserialize_with = "null_as_neg_infinity")]
    pub lo: f64,
    #[serde(deserialize_with = "null_as_infinity")]
    pub hi: f64,
    /// Scores above and below zero, and the signed-rank statistic W+ (Walsh averages above 0).
    pub above: u32,
    pub below: u32,
    pub w_plus: u32,
    /// This look's critical values: sign count, W+ (`None`: that test cannot reject here).
    pub sign_critical: Option<u32>,
    pub signed_rank_critical: Option<u32>,
}

fn null_as_neg_infinity<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

fn null_as_infinity<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// A failed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub round: u32,
    #[serde(default)]
    pub warmup: bool,
    pub side: Side,
    pub reason: String,
}

/// Summary of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideStats {
    /// Counted runs that produced the metric.
    pub n: usize,
    /// Counted runs that failed.
    pub failed: usize,
    pub median: Option<f64>,
}

/// A guard metric (ethos.md `guards`, or the wall-time guard of instruction counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardStats {
    pub metric: String,
    pub direction: Direction,
    /// Medians of the guard metric on each side.
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    /// Median of the paired relative changes in the bad direction (positive = worse).
    pub regression: Option<f64>,
    pub max_regression: f64,
    pub passed: bool,
}

/// The numbers behind a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub metric: String,
    pub direction: Direction,
    pub confidence: f64,
    pub min_effect: f64,
    pub scale: Scale,
    pub baseline: SideStats,
    pub candidate: SideStats,
    /// The median paired change, relative, positive = better.
    pub effect: Option<f64>,
    /// Robust standard deviation of the scores (as a relative change per round).
    pub spread: Option<f64>,
    /// Rounds flagged as outliers.
    pub outliers: usize,
    /// The last look of the sequential test (score scale).
    pub look: Option<Look>,
    /// The design's nominal level at the first look and the simulated crossing rate.
    pub nominal_level: Option<f64>,
    pub guards: Vec<GuardStats>,
    pub failures: Vec<Failure>,
}

/// What the rounds show, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Early runs failed, or the very first run was an outlier on the side that ran first:
    /// more warmup.
    ColdStart,
    /// Every candidate run failed: no setting helps; stop proposing along this line.
    CapabilityCeiling,
    /// Undecided at the cap: the paired ratios spread too much for `max_rounds`.
    TooNoisy,
    /// Nothing to correct.
    Steady,
}

/// The diagnosis of an evaluation, with the change to a cadence setting it recommends (applied
/// by the loop only within the bounds approved cadence.md sets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub pattern: Pattern,
    /// What the rounds show, with numbers, and what to do.
    pub summary: String,
    pub recommendation: Option<Recommendation>,
}

/// 0.0000123 -> "0.0012%", 0 -> "0%".
pub fn fine_pct(x: f64) -> String {
    let p = x * 100.0;
    if p == 0.0 || !p.is_finite() {
        return format!("{p}%");
    }
    let digits = (1 - p.abs().log10().floor() as i32).clamp(1, 8) as usize;
    format!("{p:.digits$}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn wire_shapes() {
        let p = Pair {
            round: 3,
            first: Side::Candidate,
            cpus: Some(Cpus { baseline: 1, candidate: 0 }),
            baseline: Some(200.0),
            candidate: Some(220.0),
            slots: vec![],
            score: Some(0.0953),
            outlier: false,
        };
        expect![[r#"{"round":3,"first":"candidate","cpus":{"baseline":1,"candidate":0},"baseline":200.0,"candidate":220.0,"score":0.0953}"#]]
            .assert_eq(&serde_json::to_string(&p).unwrap());
        assert_eq!(serde_json::to_string(&Outcome::TooNoisy).unwrap(), "\"too-noisy\"");
        assert_eq!(Outcome::TooNoisy.verdict(), "HOLD");
        assert_eq!(Outcome::Worse.verdict(), "REJECT");
        assert_eq!(serde_json::to_string(&Stopping::Boundary).unwrap(), "\"boundary\"");
        let c = Calibration {
            pairing: Pairing::Duet,
            base: "0123456789abcdef".into(),
            rounds: 8,
            spread: Some(0.021),
            outlier_share: 0.25,
            first_look: 7,
            at: "2026-01-01T00:00:00Z".into(),
            pairs: vec![],
            counter: None,
        };
        assert_eq!(
            c.describe(),
            "spread ±2.1% per round, 2 of 8 rounds an outlier (duet pairing, A/A on 0123456789ab)"
        );
        let counts = Calibration { spread: Some(0.0000123), counter: Some(Counter::Callgrind), ..c };
        assert_eq!(
            counts.describe(),
            "instruction counts (callgrind): spread ±0.0012% per round, 2 of 8 rounds an outlier (duet pairing, A/A on 0123456789ab)"
        );
        assert_eq!(
            (fine_pct(0.0), fine_pct(0.155), fine_pct(-0.000002)),
            ("0%".into(), "15.5%".into(), "-0.00020%".into())
        );
        assert_eq!(serde_json::to_string(&Counter::Perf).unwrap(), "\"perf\"");
        assert_eq!(serde_json::to_string(&Stopping::Agreed).unwrap(), "\"agreed\"");
    }
}
