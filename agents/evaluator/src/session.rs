//! One evaluation as a state machine, with no I/O: it plans each round (which side runs first,
//! or which CPU each side gets), takes the round's two results, looks at the scores after each
//! round, and says when to stop. The evaluator's task runs real benchmark commands through it;
//! the tests and `evaluator-bench` run the seeded noise model ([`crate::noise`]) through the very
//! same code.

use std::collections::BTreeMap;
use std::sync::Arc;

use protocol::evaluation::{Calibration, Counter, Cpus, Effect, Pair, Sampling, Side, Slot, Stopping};
use protocol::governance::{Direction, Ethos, Measure, Pairing, decision_floor};
use serde::{Deserialize, Serialize};

use crate::paired::{Scale, outliers, scale_for, score, score_of};
use crate::sequential::{Call, Design, Look, Table, look, table};
use crate::stats::{SplitMix64, median};

/// Instruction counts: the most rounds of one measurement (a re-measurement continues up to
/// twice as many).
pub const COUNT_CAP: u32 = 5;
/// Instruction counts: the most A/A rounds of a calibration.
pub const COUNT_CALIBRATION: u32 = 3;

/// After this many rounds in which the candidate failed and the baseline did not (with no
/// success after a failure that would make it a cold start), sampling stops.
pub const FAILURE_STOP: usize = 3;

/// How an evaluation samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub pairing: Pairing,
    pub direction: Direction,
    pub confidence: f64,
    pub min_effect: f64,
    /// The first round at which a decision may be taken.
    pub first_look: u32,
    /// This measurement's last round.
    pub cap: u32,
    /// The design's last round (the table spans it).
    pub horizon: u32,
    /// Seeds the order of the rounds (a pure function of it and the round number).
    pub seed: u64,
    /// Duet: the two CPUs the sides are pinned to.
    pub cpus: Option<(u32, u32)>,
    /// A calibration: a fixed number of rounds, no decision.
    pub fixed: bool,
    /// Instruction counts (ethos.md `measure = "instructions"`): two runs of each side must
    /// agree within this relative tolerance; `None` for the benchmark's metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counting: Option<f64>,
    /// Instruction counts: the tool that counts them (set by whoever runs the rounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<Counter>,
}

impl Plan {
    /// An evaluation under `ethos`. `sized` is the first look the calibration suggests;
    /// `resuming` says this measurement continues an earlier one (the cap is then the horizon).
    pub fn evaluate(ethos: &Ethos, sized: Option<u32>, resuming: bool, seed: u64) -> Plan {
        if ethos.measure == Measure::Instructions {
            return Plan::count(ethos, resuming, seed);
        }
        let horizon = 2 * ethos.max_rounds;
        let first_look =
            ethos.min_rounds.max(decision_floor(ethos.confidence)).max(sized.unwrap_or(0)).min(ethos.max_rounds);
        Plan {
            pairing: ethos.pairing,
            direction: ethos.direction,
            confidence: ethos.confidence,
            min_effect: ethos.min_effect,
            first_look,
            cap: if resuming { horizon } else { ethos.max_rounds },
            horizon,
            seed,
            cpus: None,
            fixed: false,
            counting: None,
            counter: None,
        }
    }

    /// An instruction-count comparison: from the first round that can give two runs a side (one
    /// duet round runs each side twice), until two runs of each side agree within
    /// `count_tolerance`, at most [`COUNT_CAP`] rounds (twice that with a re-measurement).
    fn count(ethos: &Ethos, resuming: bool, seed: u64) -> Plan {
        let horizon = 2 * COUNT_CAP;
        Plan {
            pairing: ethos.pairing,
            direction: Direction::Lower,
            confidence: ethos.confidence,
            min_effect: ethos.min_effect,
            first_look: if ethos.pairing == Pairing::Duet { 1 } else { 2 },
            cap: if resuming { horizon } else { COUNT_CAP },
            horizon,
            seed,
            cpus: None,
            fixed: false,
            counting: Some(ethos.count_tolerance),
            counter: None,
        }
    }

    /// The wall-time check that guards an instruction-count PROMOTE (ethos.md
    /// `guard_wall_time`): the sequential design over the command's wall time (lower is
    /// better), from `min_rounds` to `max_rounds`, in the ethos' pairing.
    pub fn wall_time(ethos: &Ethos, seed: u64) -> Plan {
        let metric = Ethos { measure: Measure::Metric, direction: Direction::Lower, ..ethos.clone() };
        Plan::evaluate(&metric, None, false, seed)
    }

    pub fn with_counter(mut self, counter: Counter) -> Plan {
        self.counter = Some(counter);
        self
    }

    /// A calibration: `ethos.calibration_rounds` A/A rounds (at most [`COUNT_CALIBRATION`] for
    /// instruction counts, which repeat to the last digits or nearly).
    pub fn calibrate(ethos: &Ethos, seed: u64) -> Plan {
        let rounds = match ethos.measure {
            Measure::Metric => ethos.calibration_rounds.max(1),
            Measure::Instructions => ethos.calibration_rounds.clamp(1, COUNT_CALIBRATION),
        };
        Plan {
            first_look: rounds,
            cap: rounds,
            horizon: rounds,
            fixed: true,
            ..Plan::evaluate(ethos, None, false, seed)
        }
    }

    pub fn with_cpus(mut self, a: u32, b: u32) -> Plan {
        self.cpus = Some((a, b));
        self
    }

    pub fn design(&self) -> Design {
        Design::new(self.first_look, self.horizon, self.confidence)
    }
}

/// The order seed of a comparison: a hash of the two commits, so the same comparison always runs
/// in the same order and a re-measurement continues it.
pub fn order_seed(base: &str, commit: &str) -> u64 {
    let mut g = SplitMix64::new(0x4F52_4445_5253_4545); // "ORDERSEE"
    for b in base.bytes().chain([0]).chain(commit.bytes()) {
        g = SplitMix64::new(g.next_u64() ^ b as u64);
    }
    g.next_u64()
}

/// What to run in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundPlan {
    pub round: u32,
    pub warmup: bool,
    /// Sequential: the side that runs first. Duet: the side on the lower CPU in the first slot.
    pub first: Side,
    /// Duet: each side's CPU in the first slot; the second slot swaps them.
    pub cpus: Option<Cpus>,
}

impl RoundPlan {
    /// Duet: the CPUs of the two slots, in order.
    pub fn slots(&self) -> Option<[Cpus; 2]> {
        self.cpus.map(|c| [c, Cpus { baseline: c.candidate, candidate: c.baseline }])
    }

    /// Duet: the side started first in each slot, the one on the lower CPU. Starting two runs
    /// takes a few milliseconds (the sandbox), and the one started first has the machine to
    /// itself meanwhile; as the second slot swaps the CPUs, each side starts first once a round.
    pub fn slot_starts(&self) -> Option<[Side; 2]> {
        self.slots().map(|s| s.map(|c| if c.baseline < c.candidate { Side::Baseline } else { Side::Candidate }))
    }
}

/// A round's results: one run per side (sequential), or in duet two slots per round whose runs
/// are combined per side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundResult {
    pub baseline: RunResult,
    pub candidate: RunResult,
    pub slots: Vec<Slot>,
}

impl RoundResult {
    pub fn sequential(baseline: RunResult, candidate: RunResult) -> RoundResult {
        RoundResult { baseline, candidate, slots: vec![] }
    }

    /// A duet round from its two slots (`plan.slots()` order): each side's value is the
    /// geometric mean of its two runs (the arithmetic mean when a value is not positive), so
    /// the round's log ratio is the mean of the two slots' and a slow CPU cancels.
    pub fn duet(plan: &RoundPlan, first: (RunResult, RunResult), second: (RunResult, RunResult)) -> RoundResult {
        let cpus = plan.slots().expect("a duet round has CPUs");
        let slots = vec![
            Slot { cpus: cpus[0], baseline: first.0.value, candidate: first.1.value, started_first: None },
            Slot { cpus: cpus[1], baseline: second.0.value, candidate: second.1.value, started_first: None },
        ];
        RoundResult { baseline: combine(first.0, second.0), candidate: combine(first.1, second.1), slots }
    }

    /// A duet round's evidence of which side was started first in each slot (as it happened,
    /// not as planned).
    pub fn with_starts(mut self, starts: [Option<Side>; 2]) -> RoundResult {
        for (slot, started) in self.slots.iter_mut().zip(starts) {
            slot.started_first = started;
        }
        self
    }
}

fn mean2(a: f64, b: f64) -> f64 {
    if a > 0.0 && b > 0.0 { (a * b).sqrt() } else { (a + b) / 2.0 }
}

/// One side's two duet runs as one result: both values combined, guards likewise; the first
/// failure when either failed.
fn combine(a: RunResult, b: RunResult) -> RunResult {
    if let Some(f) = a.failure.clone().or(b.failure.clone()) {
        return RunResult::failed(f);
    }
    let value = a.value.zip(b.value).map(|(x, y)| mean2(x, y));
    let guards = a.guards.iter().filter_map(|(k, x)| b.guards.get(k).map(|y| (k.clone(), mean2(*x, *y)))).collect();
    RunResult { value, guards, failure: None }
}

/// One side's run in a round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunResult {
    /// The main metric; `None` when the run failed.
    pub value: Option<f64>,
    /// Guard metrics it printed.
    pub guards: BTreeMap<String, f64>,
    /// Why it failed (when `value` is `None`).
    pub failure: Option<String>,
}

impl RunResult {
    pub fn ok(value: f64) -> RunResult {
        RunResult { value: Some(value), ..RunResult::default() }
    }

    pub fn failed(reason: impl Into<String>) -> RunResult {
        RunResult { value: None, guards: BTreeMap::new(), failure: Some(reason.into()) }
    }
}

/// A guard metric's (baseline, candidate) values in one round.
pub type GuardPair = (Option<f64>, Option<f64>);

pub use protocol::evaluation::Failure;

/// The state of one evaluation.
#[derive(Debug, Clone)]
pub struct Session {
    pub plan: Plan,
    table: Option<Arc<Table>>,
    /// Counted rounds, in order (including resumed ones).
    pub pairs: Vec<Pair>,
    pub warmup: Vec<Pair>,
    /// Guard metric -> (baseline, candidate) per counted round.
    pub guards: BTreeMap<String, Vec<GuardPair>>,
    pub failures: Vec<Failure>,
    /// Counted rounds carried over from an earlier measurement.
    pub resumed: u32,
    last: Option<Look>,
    stopped: Option<Stopping>,
}

fn coin(seed: u64, round: u32, warmup: bool) -> bool {
    let mut g = SplitMix64::new(seed ^ (round as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407) ^ warmup as u64);
    g.next_u64() & 1 == 1
}

impl Session {
    pub fn new(plan: Plan) -> Session {
        let table = (!plan.fixed && plan.counting.is_none()).then(|| table(plan.design()));
        Session {
            plan,
            table,
            pairs: vec![],
            warmup: vec![],
            guards: BTreeMap::new(),
            failures: vec![],
            resumed: 0,
            last: None,
            stopped: None,
        }
    }

    /// Continue an earlier measurement of the same comparison: its rounds count here.
    pub fn resume(plan: Plan, earlier: &[Pair]) -> Session {
        let mut s = Session::new(plan);
        for p in earlier {
            let round = s.pairs.len() as u32;
            s.pairs.push(Pair { round, score: None, outlier: false, ..p.clone() });
            for series in s.guards.values_mut() {
                series.push((None, None));
            }
        }
        s.resumed = s.pairs.len() as u32;
        s.update();
        s
    }

    /// The `i`-th round's plan (`warmup`: an uncounted round before the counted ones).
    pub fn round_plan(&self, round: u32, warmup: bool) -> RoundPlan {
        let heads = coin(self.plan.seed, round, warmup);
        match (self.plan.pairing, self.plan.cpus) {
            (Pairing::Duet, Some((a, b))) => {
                let (lo, hi) = (a.min(b), a.max(b));
                let cpus =
                    if heads { Cpus { baseline: lo, candidate: hi } } else { Cpus { baseline: hi, candidate: lo } };
                RoundPlan {
                    round,
                    warmup,
                    first: if heads { Side::Baseline } else { Side::Candidate },
                    cpus: Some(cpus),
                }
            }
            _ => RoundPlan { round, warmup, first: if heads { Side::Baseline } else { Side::Candidate }, cpus: None },
        }
    }

    /// The next counted round to run, or `None` when sampling has stopped.
    pub fn next(&self) -> Option<RoundPlan> {
        if self.stopped.is_some() {
            return None;
        }
        Some(self.round_plan(self.pairs.len() as u32, false))
    }

    /// Record a warmup round (uncounted).
    pub fn record_warmup(&mut self, plan: RoundPlan, result: RoundResult) {
        let (pair, _, _) = self.take(&plan, result, true);
        self.warmup.push(pair);
    }

    /// A round's result as its pair (unscored), its failures recorded; the two sides' results
    /// back for their guard metrics.
    fn take(&mut self, plan: &RoundPlan, result: RoundResult, warmup: bool) -> (Pair, RunResult, RunResult) {
        let RoundResult { baseline, candidate, slots } = result;
        for (side, r) in [(Side::Baseline, &baseline), (Side::Candidate, &candidate)] {
            if let Some(reason) = &r.failure {
                self.failures.push(Failure { round: plan.round, warmup, side, reason: reason.clone() });
            }
        }
        let pair = Pair {
            round: plan.round,
            first: plan.first,
            cpus: plan.cpus,
            baseline: baseline.value,
            candidate: candidate.value,
            slots,
            score: None,
            outlier: false,
        };
        (pair, baseline, candidate)
    }

    /// Record the counted round `plan` (from [`Session::next`]) and look again.
    pub fn record(&mut self, plan: RoundPlan, result: RoundResult) {
        debug_assert_eq!(plan.round as usize, self.pairs.len());
        let (pair, baseline, candidate) = self.take(&plan, result, false);
        let names: Vec<String> = baseline.guards.keys().chain(candidate.guards.keys()).cloned().collect();
        for name in names {
            self.guards.entry(name).or_insert_with(|| vec![(None, None); self.pairs.len()]);
        }
        for (name, series) in self.guards.iter_mut() {
            series.push((baseline.guards.get(name).copied(), candidate.guards.get(name).copied()));
        }
        self.pairs.push(pair);
        self.update();
    }

    /// The score scale and the baseline norm (difference scale) of the values so far.
    pub fn scale(&self) -> (Scale, Option<f64>) {
        let values = self.pairs.iter().flat_map(|p| [p.baseline, p.candidate]).flatten();
        let scale = scale_for(values);
        let baselines: Vec<f64> = self.pairs.iter().filter_map(|p| p.baseline).collect();
        let norm = median(&baselines).map(f64::abs).filter(|m| *m > 0.0);
        (scale, norm)
    }

    /// The minimum effect on the score scale.
    pub fn threshold(&self) -> f64 {
        let (scale, _) = self.scale();
        score_of(self.plan.min_effect, self.plan.direction, scale).unwrap_or(f64::INFINITY).max(1e-12)
    }

    /// Recompute every score (the scale may change when a value reaches zero), flag outliers,
    /// look, and decide whether to stop.
    fn update(&mut self) {
        let (scale, norm) = self.scale();
        for p in &mut self.pairs {
            p.score = match (p.baseline, p.candidate) {
                (Some(b), Some(c)) => score(b, c, self.plan.direction, scale, norm),
                _ => None,
            };
        }
        let scores = self.scores();
        let flags = outliers(&scores);
        let mut flags = flags.into_iter();
        for p in self.pairs.iter_mut().filter(|p| p.score.is_some()) {
            p.outlier = flags.next().unwrap_or(false);
        }
        let rounds = self.pairs.len() as u32;
        self.last = None;
        if let Some(t) = &self.table
            && scores.len() as u32 >= self.plan.first_look
        {
            self.last = Some(look(&scores, t, self.threshold()));
        }
        self.stopped = if self.plan.fixed {
            (rounds >= self.plan.cap).then_some(Stopping::Fixed)
        } else if self.failing() {
            Some(Stopping::Failures)
        } else if self.agreed().is_some() {
            Some(Stopping::Agreed)
        } else if self.last.is_some_and(|l| l.call != Call::Unclear) {
            Some(Stopping::Boundary)
        } else if rounds >= self.plan.horizon {
            Some(Stopping::Horizon)
        } else if rounds >= self.plan.cap {
            Some(Stopping::Cap)
        } else {
            None
        };
    }

    /// The candidate keeps failing where the baseline does not (and it is not a cold start that
    /// recovered), or the baseline never produced a value.
    fn failing(&self) -> bool {
        let counted = |side: Side| self.failures.iter().filter(move |f| !f.warmup && f.side == side);
        let baseline_failed: Vec<u32> = counted(Side::Baseline).map(|f| f.round).collect();
        let against: Vec<u32> =
            counted(Side::Candidate).map(|f| f.round).filter(|r| !baseline_failed.contains(r)).collect();
        let recovered =
            self.pairs.iter().any(|p| p.candidate.is_some() && against.first().is_some_and(|&first| p.round > first));
        let scattered =
            self.pairs.iter().any(|p| p.candidate.is_some() && against.last().is_some_and(|&l| p.round < l));
        let baseline_dead = self.pairs.len() >= FAILURE_STOP && self.pairs.iter().all(|p| p.baseline.is_none());
        baseline_dead || (against.len() >= FAILURE_STOP && (!recovered || scattered))
    }

    /// Instruction counts: the two agreeing runs of each side (baseline, candidate), once both
    /// sides have them.
    pub fn agreed(&self) -> Option<((f64, f64), (f64, f64))> {
        let tolerance = self.plan.counting?;
        let b = crate::counts::agreement(&crate::counts::side_runs(&self.pairs, Side::Baseline), tolerance)?;
        let c = crate::counts::agreement(&crate::counts::side_runs(&self.pairs, Side::Candidate), tolerance)?;
        Some((b, c))
    }

    /// The scores of the complete rounds, in order.
    pub fn scores(&self) -> Vec<f64> {
        self.pairs.iter().filter_map(|p| p.score).collect()
    }

    /// The last look (`None` before the first look).
    pub fn last_look(&self) -> Option<Look> {
        self.last
    }

    pub fn stopped(&self) -> Option<Stopping> {
        self.stopped
    }

    /// How this session sampled (its plan, rounds, why it stopped, every pair), with the
    /// decision's `rule` and `effect`, and the `calibration` in force: the one place both
    /// decisions (`eval` on the metric, `counts` on instruction counts) make it.
    pub fn sampling(&self, rule: String, effect: Option<Effect>, calibration: Option<Calibration>) -> Sampling {
        let plan = &self.plan;
        Sampling {
            pairing: plan.pairing,
            first_look: plan.first_look,
            cap: plan.cap,
            horizon: plan.horizon,
            rounds: self.pairs.len() as u32,
            resumed: self.resumed,
            stopping: self.stopped.unwrap_or(Stopping::Cap),
            rule,
            effect,
            pairs: self.pairs.clone(),
            warmup: self.warmup.clone(),
            calibration,
            measure: if plan.counting.is_some() { Measure::Instructions } else { Measure::Metric },
            counter: plan.counting.and(plan.counter),
            tolerance: plan.counting,
            wall_time: None,
        }
    }

    pub fn table(&self) -> Option<&Table> {
        self.table.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethos() -> Ethos {
        crate::eval::tests::ethos()
    }

    fn run(s: &mut Session, b: f64, c: f64) {
        let p = s.next().expect("not stopped");
        s.record(p, RoundResult::sequential(RunResult::ok(b), RunResult::ok(c)));
    }

    #[test]
    fn plans_and_order() {
        let e = Ethos { min_rounds: 3, max_rounds: 20, ..ethos() };
        let p = Plan::evaluate(&e, None, false, 1);
        assert_eq!((p.first_look, p.cap, p.horizon), (5, 20, 40), "raised to what 95% allows");
        assert_eq!(Plan::evaluate(&e, Some(8), false, 1).first_look, 8);
        assert_eq!(Plan::evaluate(&e, Some(99), true, 1).first_look, 20, "never beyond the cap");
        assert_eq!(Plan::evaluate(&e, None, true, 1).cap, 40);
        // The order is a fair coin per round, reproducible from the seed.
        let s = Session::new(Plan::evaluate(&e, None, false, order_seed("a", "b")));
        let firsts: Vec<Side> = (0..200).map(|r| s.round_plan(r, false).first).collect();
        let baseline_first = firsts.iter().filter(|&&f| f == Side::Baseline).count();
        assert!((80..120).contains(&baseline_first), "{baseline_first}");
        assert_eq!(firsts, (0..200).map(|r| s.round_plan(r, false).first).collect::<Vec<_>>());
        assert_ne!(order_seed("a", "b"), order_seed("b", "a"));
        // Duet: the CPUs swap with the coin, each side on its own CPU.
        let d = Session::new(Plan { pairing: Pairing::Duet, ..Plan::evaluate(&e, None, false, 9) }.with_cpus(3, 1));
        let plans: Vec<RoundPlan> = (0..50).map(|r| d.round_plan(r, false)).collect();
        assert!(
            plans.iter().all(|p| p.cpus.is_some_and(|c| c.baseline != c.candidate && c.baseline.min(c.candidate) == 1))
        );
        assert!(
            plans.iter().any(|p| p.cpus.unwrap().baseline == 1) && plans.iter().any(|p| p.cpus.unwrap().baseline == 3)
        );
        assert!(plans.iter().all(|p| (p.first == Side::Baseline) == (p.cpus.unwrap().baseline == 1)));
        // Each round has two slots with the CPUs swapped: each side runs once on each CPU.
        let [a, b] = plans[0].slots().unwrap();
        assert_eq!((a.baseline, a.candidate), (b.candidate, b.baseline));
        // Each side is started first once a round, and which one opens the round is the coin.
        let starts: Vec<[Side; 2]> = plans.iter().map(|p| p.slot_starts().unwrap()).collect();
        assert!(starts.iter().all(|[x, y]| *y == x.other()), "{starts:?}");
        assert!(starts.iter().zip(&plans).all(|([x, _], p)| *x == p.first), "{starts:?}");
        assert!(starts.iter().any(|s| s[0] == Side::Baseline) && starts.iter().any(|s| s[0] == Side::Candidate));
        assert_eq!(s.round_plan(0, false).slot_starts(), None, "sequential rounds have no slots");
    }

    /// A slow CPU slows whichever side it holds; the duet round, each side once on each CPU,
    /// cancels it: the round's score is the mean of its two slots' log ratios.
    #[test]
    fn a_duet_round_cancels_a_slow_cpu() {
        let e = Ethos { pairing: Pairing::Duet, direction: Direction::Higher, ..ethos() };
        let mut s = Session::new(Plan::evaluate(&e, None, false, 4).with_cpus(0, 1));
        // CPU 0 runs at half speed; the candidate is 30% faster.
        let speed = |cpu: u32| if cpu == 0 { 0.5 } else { 1.0 };
        while let Some(p) = s.next() {
            let [x, y] = p.slots().unwrap();
            let run = |c: Cpus| (RunResult::ok(100.0 * speed(c.baseline)), RunResult::ok(130.0 * speed(c.candidate)));
            s.record(p, RoundResult::duet(&p, run(x), run(y)));
        }
        assert_eq!((s.stopped(), s.pairs.len()), (Some(Stopping::Boundary), 5));
        assert!(s.scores().iter().all(|d| (d - 1.3f64.ln()).abs() < 1e-12), "{:?}", s.scores());
        assert_eq!(s.pairs[0].slots.len(), 2);
        // A failure in either slot fails the side for the round.
        let p = s.round_plan(9, false);
        let r = RoundResult::duet(
            &p,
            (RunResult::ok(1.0), RunResult::failed("exit status 1")),
            (RunResult::ok(1.0), RunResult::ok(1.0)),
        );
        assert_eq!((r.candidate.value, r.candidate.failure.as_deref()), (None, Some("exit status 1")));
    }

    #[test]
    fn stops_at_the_boundary_or_the_cap() {
        let e = Ethos { max_rounds: 10, ..ethos() };
        let mut s = Session::new(Plan::evaluate(&e, None, false, 3));
        for _ in 0..4 {
            run(&mut s, 50.0, 40.0);
            assert_eq!(s.stopped(), None);
        }
        run(&mut s, 50.0, 40.0);
        assert_eq!(s.stopped(), Some(Stopping::Boundary));
        assert_eq!(s.last_look().unwrap().call, Call::Better);
        assert_eq!(s.next(), None);
        // Alternating +-10%: never clear; stops at the cap, resumable to the horizon.
        let mut s = Session::new(Plan::evaluate(&e, None, false, 3));
        for i in 0..10 {
            run(&mut s, 50.0, if i % 2 == 0 { 45.0 } else { 55.0 });
        }
        assert_eq!((s.stopped(), s.pairs.len()), (Some(Stopping::Cap), 10));
        let mut r = Session::resume(Plan::evaluate(&e, None, true, 3), &s.pairs);
        assert_eq!((r.resumed, r.stopped()), (10, None));
        assert_eq!(r.next().unwrap().round, 10);
        for i in 0..10 {
            run(&mut r, 50.0, if i % 2 == 0 { 45.0 } else { 55.0 });
        }
        assert_eq!((r.stopped(), r.pairs.len()), (Some(Stopping::Horizon), 20));
    }

    #[test]
    fn scores_use_the_difference_scale_when_values_reach_zero() {
        let e = Ethos { direction: Direction::Higher, ..ethos() };
        let mut s = Session::new(Plan::evaluate(&e, None, false, 3));
        run(&mut s, 10.0, 12.0);
        assert_eq!(s.scale().0, Scale::LogRatio);
        assert!((s.scores()[0] - 1.2f64.ln()).abs() < 1e-12);
        run(&mut s, 0.0, 2.0);
        assert_eq!(s.scale(), (Scale::Difference, Some(5.0)));
        assert_eq!(s.scores(), vec![0.4, 0.4]);
    }

    #[test]
    fn a_failing_candidate_stops_early_and_a_cold_start_does_not() {
        let mut s = Session::new(Plan::evaluate(&ethos(), None, false, 3));
        for _ in 0..3 {
            let p = s.next().unwrap();
            s.record(p, RoundResult::sequential(RunResult::ok(50.0), RunResult::failed("exit status 1")));
        }
        assert_eq!(s.stopped(), Some(Stopping::Failures));
        // Two leading failures, then fine: sampling goes on.
        let mut s = Session::new(Plan::evaluate(&ethos(), None, false, 3));
        for i in 0..4 {
            let p = s.next().unwrap();
            let c = if i < 2 { RunResult::failed("exit status 1") } else { RunResult::ok(40.0) };
            s.record(p, RoundResult::sequential(RunResult::ok(50.0), c));
        }
        assert_eq!(s.stopped(), None);
        // A baseline that never runs stops it too.
        let mut s = Session::new(Plan::evaluate(&ethos(), None, false, 3));
        for _ in 0..3 {
            let p = s.next().unwrap();
            s.record(
                p,
                RoundResult::sequential(RunResult::failed("exit status 2"), RunResult::failed("exit status 2")),
            );
        }
        assert_eq!(s.stopped(), Some(Stopping::Failures));
    }
}
