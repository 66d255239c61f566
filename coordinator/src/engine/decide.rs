//! Decision and promotion: the cycle's winner goes onto `main` (or waits for a person when
//! cadence.md says so) through [`record_promotion`], the one path the loop and `ratchet approve
//! <branch>` share; every other candidate is marked with its verdict.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kit::substrate::{self, Home, PromoteOutcome};
use protocol::events::{Event, EventKind};
use protocol::governance::PromotionMode;
use protocol::work::Verdict;

use super::{Candidate, CycleState, Engine, PromotionRecord, fmt_effect, read_state};

impl Engine {
    /// Promote the best PROMOTE candidate; mark the others.
    pub(super) async fn decide(&mut self) -> anyhow::Result<Option<PromotionRecord>> {
        let cycle = self.st.current.clone().expect("a cycle is running");
        let mut promoted = None;
        let mut waiting = None;
        if let Some(w) = cycle.winner() {
            w.exec.as_ref().context("a PROMOTE candidate without a commit")?;
            if self.gov.cadence.promotion == PromotionMode::Approval {
                self.await_approval(w).await?;
                waiting = Some(w.branch.clone());
            } else {
                let announce = self.event_about(None, Some(&w.branch), None, placeholder());
                let (home, cy, cand) = (self.home.clone(), cycle.clone(), (*w).clone());
                let (outcome, rec) =
                    tokio::task::spawn_blocking(move || record_promotion(&home, &cy, &cand, announce)).await??;
                match outcome {
                    PromoteOutcome::Promoted { to, .. } => {
                        let rec = rec.expect("a promotion has its record");
                        self.say(&format!(
                            "  PROMOTED {} -> main at {} ({})",
                            w.branch,
                            &to[..12],
                            fmt_effect(rec.before, rec.after, w.eval.as_ref().and_then(|e| e.effect))
                        ));
                        promoted = Some(rec);
                    }
                    PromoteOutcome::Stale { main_now } => {
                        self.say(&format!(
                            "  {} is stale: main moved to {}; it will be re-proposed on the new baseline",
                            w.branch,
                            &main_now[..12]
                        ));
                    }
                    PromoteOutcome::Held { reason } => {
                        self.say(&format!("  promotion of {} held: {reason}", w.branch));
                        self.emit(
                            Some(&w.branch),
                            None,
                            EventKind::PromotionRefused { candidate: w.proposal.id.clone(), reason },
                        );
                    }
                }
            }
        }
        self.mark_decided(&cycle, promoted.as_ref(), waiting.as_deref()).await?;
        Ok(promoted)
    }
}

fn approvals_dir(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).approvals_dir()
}

/// An event whose kind its recorder fills in.
fn placeholder() -> EventKind {
    EventKind::Promoted {
        candidate: String::new(),
        commit: String::new(),
        from: String::new(),
        before: None,
        after: None,
    }
}

/// Promote `cand`, a candidate of `cycle`, the one way both the loop and `ratchet approve
/// <branch>` do: the substrate's serialized compare-and-swap fast-forward of `main`, announced
/// once by a `promoted` event made from `announce` (run, agent, cycle, governance, models) with
/// the promotion's commits and metric. Returns the substrate's outcome and, when main moved (or
/// had, before a crash), the record of the promotion.
pub fn record_promotion(
    home: &Home,
    cycle: &CycleState,
    cand: &Candidate,
    announce: Event,
) -> anyhow::Result<(PromoteOutcome, Option<PromotionRecord>)> {
    let commit = cand.exec.as_ref().map(|e| e.commit.clone()).context("the candidate has no commit")?;
    let e = cand.eval.as_ref();
    let (before, after) = (e.and_then(|e| e.baseline_median), e.and_then(|e| e.candidate_median));
    let governance = announce.governance.clone();
    let candidate = cand.proposal.id.clone();
    let outcome = substrate::promote(home, &cand.branch, &commit, &cycle.baseline, |from, to| {
        let mut ev = announce;
        ev.kind = EventKind::Promoted { candidate, commit: to.into(), from: from.into(), before, after };
        ev
    })?;
    let rec = match &outcome {
        PromoteOutcome::Promoted { from, to } => Some(PromotionRecord {
            cycle: cycle.cycle,
            branch: cand.branch.clone(),
            commit: to.clone(),
            from: from.clone(),
            before,
            after,
            governance,
            models: cand.models.clone(),
        }),
        _ => None,
    };
    Ok((outcome, rec))
}

/// Promotions a person approved (`ratchet approve <branch>`, cadence promotion = "approval").
pub fn approved_promotions(home: &Path) -> Vec<PromotionRecord> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(approvals_dir(home)) {
        for e in rd.flatten() {
            if let Some(r) = std::fs::read_to_string(e.path()).ok().and_then(|t| serde_json::from_str(&t).ok()) {
                out.push(r);
            }
        }
    }
    out.sort_by_key(|a: &PromotionRecord| a.cycle);
    out
}

/// `ratchet approve <branch>`: a person approves the promotion of a candidate that the
/// evaluator judged PROMOTE while cadence.md says promotion needs approval. The promotion goes
/// through the same serialized compare-and-swap fast-forward as the loop's own.
pub fn approve_promotion(home_path: &Path, branch: &str, by: &str) -> anyhow::Result<PromotionRecord> {
    protocol::names::check_branch(branch)?;
    let st = read_state(home_path)?.context("no loop has run here (no worktrees/.swarm/loop.json)")?;
    let (cycle, cand) = st
        .finished
        .iter()
        .flat_map(|cy| cy.candidates.iter().map(move |c| (cy, c)))
        .find(|(_, c)| c.branch == branch)
        .with_context(|| {
            format!("no finished candidate named {branch}; see `ratchet inspect` or worktrees/.swarm/loop.json")
        })?;
    if cand.verdict != Some(Verdict::Promote) {
        bail!(
            "{branch} was judged {}, not PROMOTE: only a promotable candidate can be approved",
            cand.verdict.map_or("undecided", |v| v.as_str())
        );
    }
    let gov = crate::govern::load(home_path)?;
    let home = Home::open(home_path)?.with_run_id(st.run_id.clone());
    let mut announce = Event::new(st.run_id.clone(), placeholder());
    announce.cycle = Some(cycle.cycle);
    announce.agent = Some(format!("human:{by}"));
    announce.governance = gov.hashes.clone();
    announce.models = cand.models.clone();
    match record_promotion(&home, cycle, cand, announce)? {
        (PromoteOutcome::Promoted { .. }, Some(rec)) => {
            let path = approvals_dir(home_path).join(format!("{branch}.json"));
            kit::files::write_atomic(&path, &serde_json::to_vec_pretty(&rec)?)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(rec)
        }
        (PromoteOutcome::Promoted { .. }, None) => unreachable!("record_promotion records every promotion"),
        (PromoteOutcome::Stale { main_now }, _) => bail!(
            "{branch} is stale: main moved to {} since its baseline {}; it must be re-based and re-evaluated",
            &main_now[..12],
            &cycle.baseline[..12]
        ),
        (PromoteOutcome::Held { reason }, _) => bail!("promotion of {branch} held: {reason}"),
    }
}
