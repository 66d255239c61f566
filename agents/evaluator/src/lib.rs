//! The evaluator agent's domain logic: pure functions and a state machine, no I/O.
//!
//! - [`session`]: one evaluation as a state machine: the plan of each paired round (the order, or
//!   each side's CPU in duet mode), the results, and when to stop.
//! - [`paired`]: the score of a round (the log of the candidate/baseline ratio, signed so that
//!   positive is better) and rank statistics over scores.
//! - [`sequential`]: the sequential sign and signed-rank tests, their threshold table (computed
//!   by simulating the procedure, so the false-promotion rate holds under optional stopping), and
//!   the decision of each look.
//! - [`evaluate`]: the verdict over a finished session, PROMOTE, HOLD or REJECT with a typed
//!   [`protocol::evaluation::Outcome`], every reason carrying its numbers.
//! - [`diagnose`]: the pattern (cold start, capability ceiling, too noisy, steady) and a
//!   recommendation for cadence.md's warmup (never the governance texts).
//! - [`parse_metrics`]: the metric(s) from one run's stdout.
//! - [`counts`]: decisions on instruction counts (ethos.md `measure = "instructions"`): runs
//!   until two of each side agree, and the wall-time guard of a PROMOTE.
//! - [`calibration`]: the machine's noise from A/A rounds, and the first look it suggests.
//! - [`noise`] and [`sim`]: a seeded model of a noisy machine and the same decision code run on
//!   it, for the statistical tests and `evaluator-bench`.
//! - [`work`]: the leased `evaluate` skill that runs the benchmark commands.

pub mod calibration;
pub mod counts;
mod diagnose;
mod eval;
mod metric;
pub mod noise;
pub mod paired;
pub mod sequential;
pub mod session;
pub mod sim;
pub mod stats;
pub mod work;

pub use diagnose::{Diagnosis, MAX_WARMUP, Pattern, Recommendation, diagnose};
pub use eval::{Evaluation, GuardStats, SideStats, Stats, evaluate};
pub use metric::{MetricError, parse_metrics};
