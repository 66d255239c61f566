//! The loop's side of promotions that wait for a person (see [`crate::approvals`]): the cycle's
//! best PROMOTE is marked `awaiting-approval` (not `rejected`), every other candidate gets the
//! state its verdict means, a cycle with a promotion waiting is not a stall, and what people
//! decided meanwhile (`ratchet approve`/`reject <branch>`) is taken into the loop's state at the
//! start of each cycle.

use kit::substrate::BranchState;
use protocol::events::EventKind;
use protocol::work::Verdict;

use super::{Candidate, CycleState, Engine, PromotionRecord};

/// The final `meta.json` state of a candidate the loop did not promote.
pub(super) fn final_state(verdict: Option<Verdict>) -> BranchState {
    match verdict {
        Some(Verdict::Reject | Verdict::Failed) => BranchState::Rejected,
        // HOLD, INFRA (never the candidate's fault), and a PROMOTE another candidate beat.
        _ => BranchState::Held,
    }
}

impl Engine {
    /// `w`, the cycle's best PROMOTE, waits for a person: its state says so, an event records
    /// why, and the progress says how to decide.
    pub(super) async fn await_approval(&self, w: &Candidate) -> anyhow::Result<()> {
        self.emit(
            Some(&w.branch),
            None,
            EventKind::PromotionRefused {
                candidate: w.proposal.id.clone(),
                reason: "awaiting human approval (cadence.md promotion = \"approval\")".into(),
            },
        );
        if let Ok(bd) = self.home.branch_dir(&w.branch)
            && bd.exists()
        {
            let note = "PROMOTE: waits for a person (cadence.md promotion = \"approval\")".to_string();
            tokio::task::spawn_blocking(move || bd.set_state(BranchState::AwaitingApproval, Some(&note))).await??;
        }
        self.say(&format!(
            "  AWAITING {} \"{}\": promotion = \"approval\" in cadence.md; run `ratchet approve {}` or `ratchet reject {}`",
            w.branch,
            crate::verdict::summary(w),
            w.branch,
            w.branch
        ));
        Ok(())
    }

    /// Give every candidate of `cycle` that is still active the state its verdict means
    /// (`held`, `rejected`); the promoted one and the one waiting for a person are left as they
    /// are. Unpromoted commits stay reachable (gc archives them).
    pub(super) async fn mark_decided(
        &self,
        cycle: &CycleState,
        promoted: Option<&PromotionRecord>,
        waiting: Option<&str>,
    ) -> anyhow::Result<()> {
        for c in &cycle.candidates {
            if promoted.is_some_and(|p| p.branch == c.branch) || waiting == Some(c.branch.as_str()) {
                continue;
            }
            if let Ok(bd) = self.home.branch_dir(&c.branch)
                && bd.exists()
                && bd.read_meta().ok().flatten().is_some_and(|m| m.state == BranchState::Active)
            {
                let note = match (c.verdict, waiting.or(promoted.map(|p| p.branch.as_str()))) {
                    (Some(Verdict::Promote), Some(best)) => format!("PROMOTE, but {best} was better in this cycle"),
                    (v, _) => format!("{}: {}", v.map_or("", Verdict::as_str), crate::verdict::why(c)),
                };
                let state = final_state(c.verdict);
                tokio::task::spawn_blocking(move || bd.set_state(state, Some(&note))).await??;
            }
        }
        Ok(())
    }

    /// Whether a candidate of `cycle` waits for a person (then the cycle is not a stall: the
    /// loop moved the metric, a person has yet to say yes).
    pub(super) fn waits_for_approval(&self, cycle: &CycleState) -> bool {
        cycle.candidates.iter().any(|c| {
            self.home
                .branch_dir(&c.branch)
                .ok()
                .and_then(|bd| bd.read_meta().ok().flatten())
                .is_some_and(|m| m.state == BranchState::AwaitingApproval)
        })
    }

    /// "; 1 promotion awaits approval: `ratchet approve r1-c2-1` (or reject)", or "".
    pub(super) fn waiting_note(&self) -> String {
        match crate::approvals::waiting(&self.ctx.home) {
            Ok(w) if !w.is_empty() => format!(
                "; {} promotion(s) await approval: `ratchet approve {}` (or `ratchet reject {}`)",
                w.len(),
                w[0].branch,
                w[0].branch
            ),
            _ => String::new(),
        }
    }

    /// Take what people decided since the last cycle into the loop's state: an approved
    /// promotion becomes one of the run's promotions (and ends a stall), a rejected approach is
    /// banned. A waiting candidate whose baseline is no longer `main` can never be promoted: it
    /// is marked stale.
    pub(super) fn absorb_decisions(&mut self) {
        let d = crate::approvals::decisions(&self.ctx.home);
        for a in d.approved {
            if self.st.promotions.iter().any(|p| p.commit == a.commit) {
                continue;
            }
            self.say(&format!(
                "  approved by a person: {} is on main ({})",
                a.branch,
                &a.commit[..12.min(a.commit.len())]
            ));
            self.st.stalls = 0;
            self.st.promotions.push(a);
        }
        for r in d.rejected {
            if self.st.banned.contains(&r.approach) {
                continue;
            }
            self.say(&format!("  rejected by {}: {} (its approach is banned)", r.by, r.branch));
            self.note_rejection(&r.approach, &r.by);
            self.st.banned.push(r.approach);
        }
        let main = self.main_commit().ok();
        let stale: Vec<String> = self
            .st
            .finished
            .iter()
            .filter(|cy| main.as_deref().is_some_and(|m| m != cy.baseline))
            .flat_map(|cy| cy.candidates.iter().map(|c| c.branch.clone()))
            .collect();
        for b in stale {
            let Ok(bd) = self.home.branch_dir(&b) else { continue };
            if bd.read_meta().ok().flatten().is_some_and(|m| m.state == BranchState::AwaitingApproval) {
                let _ = bd.set_state(BranchState::Stale, Some("main moved while it waited for approval"));
                self.say(&format!("  {b} no longer waits for approval: main moved past its baseline"));
            }
        }
    }
}
