//! Promotions waiting for a person (cadence.md `promotion = "approval"`), as one state that
//! `ratchet status`, `ratchet governance`, the web page and `ratchet inspect` all read.
//!
//! The state is the branch's `meta.json`: the loop sets the cycle's best PROMOTE to
//! `awaiting-approval` instead of moving `main`; `ratchet approve <branch>` promotes it (through
//! the same compare-and-swap fast-forward as the loop's own) and records
//! `worktrees/.swarm/approvals/<branch>.json`; `ratchet reject <branch>` marks it `rejected`,
//! records `approvals/<branch>.rejected.json` and a `promotion_rejected` event. The loop reads
//! both records at the start of every cycle ([`decisions`]): an approved promotion counts as the
//! run's promotion, a rejected approach is banned. Waiting is not a stall.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kit::substrate::{BranchState, Home};
use protocol::events::{Event, EventKind};
use protocol::work::Verdict;
use serde::{Deserialize, Serialize};

use crate::engine::{Candidate, PromotionRecord, read_state};

/// A promotion waiting for a person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waiting {
    pub branch: String,
    pub cycle: u64,
    /// The candidate's commit and the baseline it was measured against (`main` still).
    pub commit: String,
    pub baseline: String,
    pub summary: String,
    pub approach: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// Relative improvement (positive = better).
    pub effect: Option<f64>,
    /// The verdict line, as the progress showed it, and the same without verdict, branch and
    /// summary (the effect with its interval).
    pub line: String,
    pub detail: String,
    /// When it started waiting (RFC 3339).
    pub since: String,
}

/// A person's rejection of a waiting promotion (`approvals/<branch>.rejected.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub branch: String,
    pub cycle: u64,
    pub candidate: String,
    pub approach: String,
    pub by: String,
    pub at: String,
}

fn approvals_dir(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).approvals_dir()
}

fn main_commit(home: &Path) -> Option<String> {
    kit::git::Git::new(home).resolve_commit("refs/heads/main").ok().flatten()
}

/// Every promotion waiting for a person in the swarm at `home`, oldest first. A candidate whose
/// baseline is no longer `main` cannot be promoted any more and is not listed (the loop marks it
/// stale).
pub fn waiting(home: &Path) -> anyhow::Result<Vec<Waiting>> {
    let Some(st) = read_state(home)? else { return Ok(vec![]) };
    let Ok(h) = Home::open(home) else { return Ok(vec![]) };
    let main = main_commit(home);
    let metric = crate::govern::load(home).map(|g| g.ethos.metric).unwrap_or_else(|_| "metric".into());
    let mut out = vec![];
    for cy in st.finished.iter().chain(st.current.iter()) {
        if main.as_deref() != Some(cy.baseline.as_str()) {
            continue;
        }
        for c in cy.candidates.iter().filter(|c| c.verdict == Some(Verdict::Promote)) {
            let Ok(bd) = h.branch_dir(&c.branch) else { continue };
            let Ok(Some(meta)) = bd.read_meta() else { continue };
            if meta.state != BranchState::AwaitingApproval {
                continue;
            }
            out.push(Waiting {
                branch: c.branch.clone(),
                cycle: cy.cycle,
                commit: c.exec.as_ref().map(|e| e.commit.clone()).unwrap_or_default(),
                baseline: cy.baseline.clone(),
                summary: crate::verdict::summary(c),
                approach: c.proposal.approach_key(),
                before: c.eval.as_ref().and_then(|e| e.baseline_median),
                after: c.eval.as_ref().and_then(|e| e.candidate_median),
                effect: c.eval.as_ref().and_then(|e| e.effect),
                line: crate::verdict::line(c, &metric),
                detail: crate::verdict::detail(c, &metric),
                since: meta.updated_at.clone().unwrap_or(meta.created_at.clone()),
            });
        }
    }
    Ok(out)
}

/// One line for `ratchet status`: "1 promotion awaiting approval: r1-c2-1 (...); `ratchet
/// approve r1-c2-1` or `ratchet reject r1-c2-1`", or "no promotion awaiting approval".
pub fn waiting_line(home: &Path) -> String {
    match waiting(home) {
        Ok(w) if w.is_empty() => "approvals: no promotion awaiting approval".into(),
        Ok(w) => {
            let items: Vec<String> = w.iter().map(|x| format!("{} \"{}\"", x.branch, x.summary)).collect();
            let b = &w[0].branch;
            format!(
                "approvals: {} promotion(s) awaiting approval: {}; run `ratchet approve {b}` or `ratchet reject {b}`",
                w.len(),
                items.join(", ")
            )
        }
        Err(e) => format!("approvals: cannot read the loop state: {e:#}"),
    }
}

/// The candidate named `branch` in the loop state, with its cycle number.
fn find_candidate(home: &Path, branch: &str) -> anyhow::Result<(u64, Candidate)> {
    let st = read_state(home)?.context("no loop has run here (no worktrees/.swarm/loop.json)")?;
    st.finished
        .iter()
        .chain(st.current.iter())
        .flat_map(|cy| cy.candidates.iter().map(move |c| (cy.cycle, c.clone())))
        .find(|(_, c)| c.branch == branch)
        .with_context(|| {
            format!("no candidate named {branch}; see `ratchet status` for the promotions awaiting approval")
        })
}

/// Why `branch` cannot be decided by a person now, if it cannot.
fn check_waiting(home: &Path, branch: &str) -> anyhow::Result<()> {
    protocol::names::check_branch(branch)?;
    let h = Home::open(home)?;
    let meta = h.open_branch(branch)?.read_meta()?.with_context(|| format!("{branch} has no meta.json"))?;
    match meta.state {
        BranchState::AwaitingApproval => Ok(()),
        // A loop state written before the state existed: its PROMOTE waited as `rejected`.
        BranchState::Active | BranchState::Rejected if legacy_wait(home, branch) => Ok(()),
        other => bail!(
            "{branch} is {}, not awaiting approval{}: only a promotion waiting for a person can be approved or rejected",
            other.as_str(),
            meta.note.map(|n| format!(" ({n})")).unwrap_or_default()
        ),
    }
}

/// A PROMOTE that waited for approval before `awaiting-approval` existed (meta `rejected` with
/// the verdict note), still on main's baseline and never decided by a person.
fn legacy_wait(home: &Path, branch: &str) -> bool {
    let decided = approvals_dir(home).join(format!("{branch}.json")).exists()
        || approvals_dir(home).join(format!("{branch}.rejected.json")).exists();
    let Ok(Some(st)) = read_state(home) else { return false };
    let main = main_commit(home);
    !decided
        && st.finished.iter().any(|cy| {
            main.as_deref() == Some(cy.baseline.as_str())
                && cy.candidates.iter().any(|c| c.branch == branch && c.verdict == Some(Verdict::Promote))
        })
        && !st.promotions.iter().any(|p| p.branch == branch)
}

/// `ratchet approve <branch>`: promote a waiting candidate.
pub fn approve(home: &Path, branch: &str, by: &str) -> anyhow::Result<PromotionRecord> {
    check_waiting(home, branch)?;
    crate::engine::approve_promotion(home, branch, by)
}

/// `ratchet reject <branch>`: discard a waiting promotion. `main` does not move; the branch is
/// marked rejected (its commit stays reachable: gc archives it), the approach is banned for the
/// rest of the run, and the decision is recorded with who took it.
pub fn reject(home: &Path, branch: &str, by: &str) -> anyhow::Result<Rejection> {
    check_waiting(home, branch)?;
    let (cycle, c) = find_candidate(home, branch)?;
    let st = read_state(home)?.context("no loop state")?;
    let h = Home::open(home)?.with_run_id(st.run_id.clone());
    let bd = h.open_branch(branch)?;
    let rec = Rejection {
        branch: branch.to_string(),
        cycle,
        candidate: c.proposal.id.clone(),
        approach: c.proposal.approach_key(),
        by: by.to_string(),
        at: protocol::timestamp(std::time::SystemTime::now()),
    };
    let dir = approvals_dir(home);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::govern::write_atomic(&dir.join(format!("{branch}.rejected.json")), &serde_json::to_vec_pretty(&rec)?)?;
    bd.set_state(BranchState::Rejected, Some(&format!("promotion rejected by {by}")))?;
    let mut ev =
        Event::new(st.run_id.clone(), EventKind::PromotionRejected { candidate: rec.candidate.clone(), by: by.into() });
    ev.branch = Some(branch.to_string());
    ev.cycle = Some(cycle);
    ev.agent = Some(format!("human:{by}"));
    if let Ok(g) = crate::govern::load(home) {
        ev.governance = g.hashes;
    }
    let layout = kit::layout::Layout::new(home);
    kit::substrate::append_event(&layout.events_file(), &ev)?;
    let _ = kit::substrate::append_event(&bd.events_file(), &ev);
    Ok(rec)
}

/// What people decided since the loop last looked: promotions they approved, approaches they
/// rejected.
#[derive(Debug, Default)]
pub struct Decisions {
    pub approved: Vec<PromotionRecord>,
    pub rejected: Vec<Rejection>,
}

/// Every recorded decision (`approvals/<branch>.json`, `approvals/<branch>.rejected.json`).
pub fn decisions(home: &Path) -> Decisions {
    let mut d = Decisions { approved: crate::engine::approved_promotions(home), rejected: vec![] };
    if let Ok(rd) = std::fs::read_dir(approvals_dir(home)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".rejected.json")
                && let Some(r) = std::fs::read_to_string(e.path()).ok().and_then(|t| serde_json::from_str(&t).ok())
            {
                d.rejected.push(r);
            }
        }
    }
    d.rejected.sort_by(|a: &Rejection, b| a.at.cmp(&b.at));
    d
}
