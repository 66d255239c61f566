//! The order in which benchmark runs happen.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Baseline,
    Candidate,
}

/// One benchmark run: which side, which round (0-based, counted separately for warmup and counted
/// runs) and whether it is an uncounted warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub side: Side,
    pub round: u32,
    pub warmup: bool,
}

/// The interleaved order: `warmup` rounds of baseline then candidate (uncounted), then `repeats`
/// counted rounds of baseline then candidate. Interleaving spreads slow drift of the machine
/// (thermal state, background load) over both sides instead of charging it to one.
pub fn schedule(repeats: u32, warmup: u32) -> Vec<Run> {
    let rounds = |n: u32, warmup: bool| {
        (0..n).flat_map(move |round| [Side::Baseline, Side::Candidate].map(|side| Run { side, round, warmup }))
    };
    rounds(warmup, true).chain(rounds(repeats, false)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmups_first_then_interleaved() {
        let order: Vec<String> = schedule(3, 1)
            .iter()
            .map(|r| {
                let s = if r.side == Side::Baseline { "B" } else { "C" };
                format!("{}{s}{}", if r.warmup { "w" } else { "" }, r.round)
            })
            .collect();
        assert_eq!(order, ["wB0", "wC0", "B0", "C0", "B1", "C1", "B2", "C2"]);
        assert!(schedule(0, 0).is_empty());
        assert_eq!(schedule(7, 2).len(), 18);
    }
}
