//! Calibration: the baseline measured against itself for a few rounds gives the machine's noise
//! for this benchmark: the spread of a round's ratio when nothing changed, and how often one side
//! of a round is hit alone (an outlier round). The loop records it as an event at the start of a
//! run and sizes the first look of every evaluation from it: on a machine where many rounds are
//! outliers, the first rounds rarely agree, and looking at them would only spend the error
//! budget the later looks need.

use protocol::evaluation::Calibration;
use protocol::governance::{Ethos, decision_floor};

use crate::paired::{relative, spread};
use crate::session::Session;

/// Outlier shares above this are treated as this (half the rounds).
const MAX_SHARE: f64 = 0.5;

/// The first look a calibrated outlier share suggests. A burst that hits one side of a round
/// makes the round go the wrong way for a clear change when it hits the better side: half the
/// outlier rounds. The first look is raised so that, on average, the smallest decisive number of
/// rounds (`first`) go the right way: `ceil(first / (1 - share / 2))`, never beyond `max_rounds`.
pub fn first_look(ethos: &Ethos, outlier_share: f64) -> u32 {
    let first = ethos.min_rounds.max(decision_floor(ethos.confidence));
    let wrong_way = outlier_share.clamp(0.0, MAX_SHARE) / 2.0;
    ((first as f64 / (1.0 - wrong_way)).ceil() as u32).clamp(first, ethos.max_rounds)
}

/// The calibration a finished A/A session measured.
pub fn calibration(session: &Session, ethos: &Ethos, base: &str, at: String) -> Calibration {
    let (scale, _) = session.scale();
    let scores = session.scores();
    let complete = session.pairs.iter().filter(|p| p.score.is_some()).count();
    let outliers = session.pairs.iter().filter(|p| p.outlier).count();
    let outlier_share = if complete == 0 { 0.0 } else { outliers as f64 / complete as f64 };
    Calibration {
        pairing: session.plan.pairing,
        base: base.to_string(),
        rounds: session.pairs.len() as u32,
        spread: spread(&scores).map(|s| relative(s, ethos.direction, scale).abs()),
        outlier_share,
        first_look: first_look(ethos, outlier_share),
        at,
        pairs: session.pairs.clone(),
        counter: session.plan.counting.and(session.plan.counter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Plan, RoundResult, RunResult};

    #[test]
    fn the_outlier_share_sizes_the_first_look() {
        let e = crate::eval::tests::ethos();
        assert_eq!(first_look(&e, 0.0), 5);
        assert_eq!(first_look(&e, 0.125), 6);
        assert_eq!(first_look(&e, 0.25), 6);
        assert_eq!(first_look(&e, 0.375), 7);
        assert_eq!(first_look(&e, 0.9), 7, "capped at half the rounds being outliers");
        assert_eq!(first_look(&Ethos { max_rounds: 6, ..e.clone() }, 0.5), 6, "never beyond max_rounds");
        assert_eq!(first_look(&Ethos { min_rounds: 9, ..e }, 0.0), 9);
    }

    #[test]
    fn an_aa_session_gives_spread_and_outliers() {
        let e = crate::eval::tests::ethos();
        let mut s = Session::new(Plan::calibrate(&e, 5));
        let values = [
            (100.0, 101.0),
            (100.0, 99.0),
            (100.0, 100.5),
            (100.0, 50.0),
            (100.0, 99.5),
            (100.0, 100.0),
            (100.0, 102.0),
            (100.0, 98.0),
        ];
        for (b, c) in values {
            let p = s.next().expect("fixed rounds");
            s.record(p, RoundResult::sequential(RunResult::ok(b), RunResult::ok(c)));
        }
        assert_eq!(s.next(), None);
        let c = calibration(&s, &e, "abc", "now".into());
        assert_eq!((c.rounds, c.outlier_share, c.first_look), (8, 0.125, 6));
        let spread = c.spread.unwrap();
        assert!((0.005..0.02).contains(&spread), "{spread}");
    }
}
