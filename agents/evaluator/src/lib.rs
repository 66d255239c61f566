//! The evaluator agent's domain logic: pure functions, no I/O.
//!
//! - [`schedule`]: the order of benchmark runs (warmups, then baseline and candidate interleaved).
//! - [`parse_metrics`]: the metric(s) from one run's stdout (a JSON last line, or a pattern).
//! - [`evaluate`]: gates over the samples and a verdict, PROMOTE, HOLD or REJECT, every reason
//!   carrying its numbers, plus the statistics behind it.
//! - [`diagnose`]: the sample pattern (cold start, capability ceiling, high variance, steady) and
//!   a recommendation for the loop's own cadence settings (never the governance texts).
//!
//! The statistics ([`stats`]) are our own small code: median, MAD, robust CV, Mann-Whitney U
//! (exact for small samples, normal approximation beyond), and a bootstrap interval of the median
//! difference seeded from the data, so every verdict is reproducible from its samples.

mod diagnose;
mod eval;
mod metric;
mod schedule;
pub mod stats;
pub mod work;

pub use diagnose::{Diagnosis, MAX_REPEATS, MAX_WARMUP, Pattern, Recommendation, diagnose};
pub use eval::{EvalInput, Evaluation, Failure, GuardStats, Runs, SideStats, Stats, Verdict, evaluate};
pub use metric::{MetricError, parse_metrics};
pub use schedule::{Run, Side, schedule};
