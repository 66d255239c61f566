//! What the loop remembers of each attempt, for the proposer's briefing: the approach by its
//! summary, what became of it with the reason in words and the numbers, and the answers the
//! proposer dropped before they became candidates (a duplicate, an empty diff).

use protocol::work::{Dropped, Tried, Verdict};

use super::Engine;

impl Engine {
    /// `main`'s metric as last measured: the last promotion's, else the run's first baseline.
    pub(super) fn current_metric(&self) -> Option<f64> {
        self.st.promotions.last().and_then(|p| p.after).or(self.st.baseline_metric)
    }

    /// Record and say the proposer's dropped answers.
    pub(super) fn record_dropped(&mut self, cycle: u64, dropped: &[Dropped]) {
        for d in dropped {
            self.say(&format!("  dropped \"{}\": {}", d.summary, d.reason));
            self.st.tried.push(Tried {
                key: d.key.clone().unwrap_or_else(|| format!("dropped:{}", d.summary)),
                verdict: Verdict::Dropped,
                effect: None,
                cycle,
                summary: d.summary.clone(),
                reason: Some(d.reason.clone()),
                before: None,
                after: None,
            });
        }
    }

    /// A person rejected the promotion of `branch`: its history entry says so.
    pub(super) fn note_rejection(&mut self, approach: &str, by: &str) {
        if let Some(t) = self.st.tried.iter_mut().rev().find(|t| t.key == approach) {
            t.verdict = Verdict::Reject;
            t.reason = Some(format!("a person ({by}) rejected its promotion"));
        }
    }
}
