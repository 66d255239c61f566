//! The production decision code run on the seeded noise model ([`crate::noise`]): one
//! evaluation is the same [`Session`] and [`evaluate`] the evaluator's task uses, with each run's
//! value drawn from the model instead of measured. The statistical tests and `evaluator-bench`
//! use it; the `noise-bench` fixture program draws from the same model in separate processes.

use protocol::evaluation::{Outcome, Side};
use protocol::governance::{Direction, Ethos, Pairing};

use crate::eval::{Evaluation, evaluate};
use crate::noise::Machine;
use crate::session::{Plan, RoundPlan, RoundResult, RunResult, Session};

/// Time slots that pass between a measurement and its re-measurement (other candidates run).
pub const REMEASURE_GAP: u64 = 40;

/// One candidate, measured as the loop measures it.
#[derive(Debug, Clone)]
pub struct SimRun {
    /// The first measurement's evaluation.
    pub first: Evaluation,
    /// The re-measurement's, when the first was undecided at its cap.
    pub again: Option<Evaluation>,
    /// Benchmark runs, counted and warmup (two per sequential round, four per duet round).
    pub runs: u32,
    /// Time slots used (two per round either way: two runs one after the other, or two slots
    /// of simultaneous runs).
    pub slots: u64,
}

impl SimRun {
    /// The evaluation the loop acts on.
    pub fn last(&self) -> &Evaluation {
        self.again.as_ref().unwrap_or(&self.first)
    }

    pub fn outcome(&self) -> Outcome {
        self.last().outcome
    }

    /// Counted rounds, the re-measurement included.
    pub fn rounds(&self) -> u32 {
        self.last().sampling.rounds
    }
}

/// The simulated machine: a slot clock and the model.
pub struct SimMachine {
    pub machine: Machine,
    pub slot: u64,
}

impl SimMachine {
    pub fn new(machine: Machine) -> SimMachine {
        SimMachine { machine, slot: 0 }
    }

    /// The value a run prints: throughput (higher is better) or its inverse in µs per 1000
    /// units (lower is better).
    fn value(&self, slot: u64, cpu: Option<u32>, effect: f64, direction: Direction) -> f64 {
        let t = self.machine.run(slot, cpu, effect);
        match direction {
            Direction::Higher => t,
            Direction::Lower => 1e9 / t,
        }
    }

    /// Run one round as the evaluator would: two runs one after the other (sequential), or two
    /// slots of simultaneous runs with the CPUs swapped (duet).
    pub fn round(&mut self, plan: &RoundPlan, effect: f64, direction: Direction) -> RoundResult {
        let effect_of = |side: Side| if side == Side::Candidate { effect } else { 0.0 };
        match plan.slots() {
            Some(slots) => {
                let mut halves = slots.iter().map(|cpus| {
                    let s = self.slot;
                    self.slot += 1;
                    (
                        RunResult::ok(self.value(s, Some(cpus.baseline), 0.0, direction)),
                        RunResult::ok(self.value(s, Some(cpus.candidate), effect, direction)),
                    )
                });
                let (first, second) = (halves.next().expect("two slots"), halves.next().expect("two slots"));
                RoundResult::duet(plan, first, second)
            }
            None => {
                let s = self.slot;
                self.slot += 2;
                let (first, second) = (plan.first, plan.first.other());
                let v1 = RunResult::ok(self.value(s, None, effect_of(first), direction));
                let v2 = RunResult::ok(self.value(s + 1, None, effect_of(second), direction));
                if first == Side::Baseline { RoundResult::sequential(v1, v2) } else { RoundResult::sequential(v2, v1) }
            }
        }
    }

    /// Run a session to its end (warmup rounds first).
    pub fn run(&mut self, session: &mut Session, warmup: u32, effect: f64, direction: Direction) -> u32 {
        let per_round = if session.plan.pairing == Pairing::Duet { 4 } else { 2 };
        let mut runs = 0;
        for w in 0..warmup {
            let p = session.round_plan(w, true);
            let r = self.round(&p, effect, direction);
            session.record_warmup(p, r);
            runs += per_round;
        }
        while let Some(p) = session.next() {
            let r = self.round(&p, effect, direction);
            session.record(p, r);
            runs += per_round;
        }
        runs
    }
}

/// Evaluate a candidate whose true effect on throughput is `effect` on `machine`, under `ethos`
/// (its pairing, rounds, confidence, minimum effect and direction), with `warmup` rounds; an
/// undecided first measurement is measured once more, as the loop does, when `remeasure`.
pub fn evaluate_on(
    machine: Machine,
    effect: f64,
    ethos: &Ethos,
    warmup: u32,
    first_look: Option<u32>,
    remeasure: bool,
) -> SimRun {
    let mut m = SimMachine::new(machine);
    let seed = machine.seed ^ 0x5EED;
    let mut plan = Plan::evaluate(ethos, first_look, false, seed);
    if ethos.pairing == Pairing::Duet {
        plan = plan.with_cpus(0, 1);
    }
    let mut s = Session::new(plan);
    let mut runs = m.run(&mut s, warmup, effect, ethos.direction);
    let first = evaluate(&s, ethos, None);
    let mut again = None;
    if remeasure && first.outcome == Outcome::TooNoisy && s.stopped() == Some(protocol::evaluation::Stopping::Cap) {
        m.slot += REMEASURE_GAP;
        let plan = Plan { cap: plan.horizon, ..plan };
        let mut r = Session::resume(plan, &s.pairs);
        runs += m.run(&mut r, warmup, effect, ethos.direction);
        again = Some(evaluate(&r, ethos, None));
    }
    let slots = m.slot - if again.is_some() { REMEASURE_GAP } else { 0 };
    SimRun { first, again, runs, slots }
}

/// Calibrate on the model machine as the loop does at the start of a run: A/A rounds from slot 0.
pub fn calibrate_on(machine: Machine, ethos: &Ethos) -> protocol::evaluation::Calibration {
    let mut m = SimMachine::new(machine);
    let mut plan = Plan::calibrate(ethos, machine.seed ^ 0xCA11);
    if ethos.pairing == Pairing::Duet {
        plan = plan.with_cpus(0, 1);
    }
    let mut s = Session::new(plan);
    m.run(&mut s, 0, 0.0, ethos.direction);
    crate::calibration::calibration(&s, ethos, "aa", String::new())
}

/// What the loop does for one candidate on a fresh machine: calibrate, size the first look,
/// evaluate, and measure once more when undecided at the cap. The evaluation starts after the
/// calibration's time slots.
pub fn as_the_loop_does(
    seed: u64,
    params: crate::noise::NoiseParams,
    effect: f64,
    ethos: &Ethos,
    warmup: u32,
) -> SimRun {
    let machine = Machine::new(seed, params);
    let cal = (ethos.calibration_rounds > 0).then(|| calibrate_on(machine, ethos));
    // A new machine stream after calibration: the evaluation's slots follow the calibration's.
    let later = Machine { seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xE7A1, ..machine };
    evaluate_on(later, effect, ethos, warmup, cal.map(|c| c.first_look), true)
}

#[cfg(test)]
mod tests {
    //! The statistical guarantees, over 200 fixed seeds of the noise model of this project's
    //! machines (see `crate::noise`): deterministic, no timing.
    use super::*;
    use crate::noise::NoiseParams;

    const SEEDS: u64 = 200;

    fn ethos(pairing: Pairing) -> Ethos {
        Ethos { direction: Direction::Higher, min_effect: 0.03, max_rounds: 30, pairing, ..crate::eval::tests::ethos() }
    }

    struct Tally {
        outcomes: std::collections::BTreeMap<Outcome, u32>,
        rounds: Vec<u32>,
    }

    impl Tally {
        fn count(&self, o: Outcome) -> u32 {
            self.outcomes.get(&o).copied().unwrap_or(0)
        }
        fn median_rounds(&self) -> u32 {
            let mut r = self.rounds.clone();
            r.sort_unstable();
            r[r.len() / 2]
        }
        fn within(&self, n: u32) -> usize {
            self.rounds.iter().filter(|&&r| r <= n).count()
        }
    }

    fn tally(effect: f64, pairing: Pairing) -> Tally {
        let e = ethos(pairing);
        let mut t = Tally { outcomes: Default::default(), rounds: vec![] };
        for seed in 0..SEEDS {
            let run = as_the_loop_does(seed, NoiseParams::MACHINE, effect, &e, 0);
            *t.outcomes.entry(run.outcome()).or_default() += 1;
            t.rounds.push(run.rounds());
        }
        println!("{effect:+} {pairing:?}: {:?}, median rounds {}", t.outcomes, t.median_rounds());
        t
    }

    #[test]
    fn aa_false_promotions_stay_within_alpha() {
        for pairing in [Pairing::Sequential, Pairing::Duet] {
            let t = tally(0.0, pairing);
            assert!(t.count(Outcome::Better) <= 10, "{pairing:?}: {:?}", t.outcomes);
        }
    }

    /// Without a minimum effect, promoting an A/A comparison needs only the test to cross: the
    /// rate is then the design's error rate itself, at most 5% (at most 15 of 200 seeds: the
    /// binomial spread of a 5% rate over 200 trials reaches 7.5%). Testing after every round
    /// with a fixed-sample level would cross far more often.
    #[test]
    fn aa_crossings_without_a_minimum_effect_stay_within_alpha() {
        for pairing in [Pairing::Sequential, Pairing::Duet] {
            let e = Ethos { min_effect: 0.0, ..ethos(pairing) };
            let promoted = (0..SEEDS)
                .filter(|&seed| as_the_loop_does(seed, NoiseParams::MACHINE, 0.0, &e, 0).outcome() == Outcome::Better)
                .count();
            println!("A/A, min_effect 0, {pairing:?}: {promoted} of {SEEDS} promoted");
            assert!(promoted <= 15, "{pairing:?}: {promoted} of {SEEDS}");
        }
    }

    #[test]
    fn an_11_percent_improvement_is_promoted() {
        for pairing in [Pairing::Sequential, Pairing::Duet] {
            let t = tally(0.11, pairing);
            assert!(t.count(Outcome::Better) >= 190, "{pairing:?}: {:?}", t.outcomes);
        }
    }

    #[test]
    fn a_13_percent_regression_is_rejected() {
        for pairing in [Pairing::Sequential, Pairing::Duet] {
            let t = tally(-0.13, pairing);
            assert!(t.count(Outcome::Worse) >= 190, "{pairing:?}: {:?}", t.outcomes);
        }
    }

    #[test]
    fn a_75_percent_improvement_is_decided_within_6_rounds() {
        for pairing in [Pairing::Sequential, Pairing::Duet] {
            let t = tally(0.75, pairing);
            assert_eq!(t.count(Outcome::Better), 200, "{pairing:?}: {:?}", t.outcomes);
            println!("{pairing:?}: within 6 rounds: {} of 200", t.within(6));
            assert!(t.median_rounds() <= 6, "{pairing:?}: {:?}", t.rounds);
        }
    }

    /// On a quiet machine every clear change is decided at the first look, in 5 rounds.
    #[test]
    fn a_quiet_machine_decides_at_the_first_look() {
        let e = ethos(Pairing::Sequential);
        for (effect, outcome) in [(0.11, Outcome::Better), (-0.13, Outcome::Worse), (0.75, Outcome::Better)] {
            for seed in 0..20 {
                let run = as_the_loop_does(seed, NoiseParams::QUIET, effect, &e, 0);
                assert_eq!((run.outcome(), run.rounds(), run.runs), (outcome, 5, 10), "{effect} seed {seed}");
            }
        }
    }
}
