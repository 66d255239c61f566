//! Promotion: `main` moves to a candidate only by fast-forward, as a compare-and-swap, one
//! promotion at a time. Never a merge commit, never a force, never under uncommitted work.

use std::fs::{self, OpenOptions};

use protocol::events::{Event, EventKind};
use serde::Serialize;

use super::events::{append_event, read_events};
use super::home::{BranchDir, BranchState, Home};
use super::{Result, SubstrateError};

const MAIN_REF: &str = "refs/heads/main";

/// What [`promote`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PromoteOutcome {
    /// `main` moved from `from` to `to` (or already had, when a promotion is repeated after a crash).
    Promoted { from: String, to: String },
    /// `main` is not the candidate's base (or the candidate does not descend from it): the
    /// branch is marked stale; re-base and re-evaluate it.
    Stale { main_now: String },
    /// `main` is checked out with uncommitted changes (or the checkout refused the
    /// fast-forward): nothing moved; `reason` says where and what to do.
    Held { reason: String },
}

/// Fast-forwards `main` from `expected_base` to `candidate_commit` (a commit of `branch`).
/// Serialized by an exclusive lock on `worktrees/.promote.lock`.
///
/// A promotion is announced once: `announce(from, to)` makes its `promoted` event (the caller
/// knows the run, the cycle, the evidence), which goes to the swarm's event log and the branch's,
/// each unless it already holds a `promoted` event for this commit (a promotion repeated after a
/// crash completes its records and duplicates none).
pub fn promote(
    home: &Home,
    branch: &str,
    candidate_commit: &str,
    expected_base: &str,
    announce: impl FnOnce(&str, &str) -> Event,
) -> Result<PromoteOutcome> {
    let bd = home.open_branch(branch)?;
    let git = home.git();
    let resolve = |rev: &str| -> Result<String> {
        git.resolve_commit(rev)?
            .ok_or_else(|| SubstrateError::NoSuchCommit { commit: rev.to_string(), repo: home.root().to_path_buf() })
    };
    let cand = resolve(candidate_commit)?;
    let base = resolve(expected_base)?;

    let lock_path = home.promote_lock_path();
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(SubstrateError::io("opening promotion lock", &lock_path))?;
    lock.lock().map_err(SubstrateError::io("locking", &lock_path))?;

    let main_now = resolve(MAIN_REF)?;
    let descends = git.is_ancestor(&base, &cand)?;
    if main_now == cand && descends {
        // Already done (a promotion repeated after a crash): make the records complete, once.
        record_promoted(home, &bd, &cand, &base, announce)?;
        return Ok(PromoteOutcome::Promoted { from: base, to: cand });
    }
    if main_now != base {
        let reason = format!("main is at {main_now}, not at the candidate's base {base}: re-base and re-evaluate");
        return refuse_stale(&bd, main_now, reason);
    }
    if !descends {
        let reason = format!("candidate {cand} does not descend from its base {base}");
        return refuse_stale(&bd, main_now, reason);
    }

    let checkout = git.worktrees()?.into_iter().find(|w| w.branch.as_deref() == Some(MAIN_REF) && !w.prunable);
    match checkout {
        Some(wt) => {
            let wgit = git.at(&wt.path);
            // Pending edits of the governance documents are governed by `ratchet approve`, and no
            // candidate may touch those files (the critic blocks it), so they never stand in the
            // way; any other uncommitted work holds the promotion.
            let dirty: Vec<String> =
                wgit.dirty_paths()?.into_iter().filter(|p| !protocol::governance::DOCS.contains(&p.as_str())).collect();
            if !dirty.is_empty() {
                let reason = format!(
                    "main is checked out at {} with uncommitted changes to tracked files ({}); commit or stash them and the promotion of {branch} can go ahead",
                    wt.path.display(),
                    dirty.join(", ")
                );
                return hold(&bd, reason);
            }
            let head = wgit.resolve_commit("HEAD")?;
            if head.as_deref() != Some(base.as_str()) {
                let now = head.unwrap_or_default();
                let reason = format!("the checkout of main at {} is at {now}, not {base}", wt.path.display());
                return refuse_stale(&bd, now, reason);
            }
            if let Err(e) = wgit.run(["merge", "--ff-only", "--quiet", "--no-edit", cand.as_str()]) {
                let reason = format!(
                    "fast-forwarding the checkout of main at {} failed: {}; fix the checkout and promote again",
                    wt.path.display(),
                    e.stderr()
                );
                return hold(&bd, reason);
            }
        }
        None => {
            let msg = format!("ratchet: promote {branch}");
            if git.run(["update-ref", "-m", msg.as_str(), MAIN_REF, cand.as_str(), base.as_str()]).is_err() {
                let now = resolve(MAIN_REF)?;
                let reason = format!("main moved to {now} during the promotion");
                return refuse_stale(&bd, now, reason);
            }
        }
    }
    let moved_to = resolve(MAIN_REF)?;
    if moved_to != cand {
        let reason = format!("main ended at {moved_to}, not at the candidate {cand}");
        return refuse_stale(&bd, moved_to, reason);
    }
    record_promoted(home, &bd, &cand, &base, announce)?;
    drop(lock);
    Ok(PromoteOutcome::Promoted { from: base, to: cand })
}

fn record_promoted(
    home: &Home,
    bd: &BranchDir,
    cand: &str,
    base: &str,
    announce: impl FnOnce(&str, &str) -> Event,
) -> Result<()> {
    {
        let _guard = bd.lock_coord()?;
        bd.update_meta(|m| {
            m.state = BranchState::Promoted;
            m.promoted_commit = Some(cand.to_string());
            m.note = Some(format!("main fast-forwarded from {base}"));
        })?;
    }
    let mut event = announce(base, cand);
    event.branch = Some(bd.branch().to_string());
    let swarm_log = crate::layout::Layout::new(home.root()).events_file();
    for log in [swarm_log, bd.events_file()] {
        let announced = read_events(&log)?
            .events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Promoted { commit, .. } if commit == cand));
        if !announced {
            if let Some(dir) = log.parent() {
                fs::create_dir_all(dir).map_err(SubstrateError::io("creating", dir))?;
            }
            append_event(&log, &event)?;
        }
    }
    Ok(())
}

fn refuse_stale(bd: &BranchDir, main_now: String, reason: String) -> Result<PromoteOutcome> {
    {
        let _guard = bd.lock_coord()?;
        bd.update_meta(|m| {
            m.state = BranchState::Stale;
            m.note = Some(reason.clone());
        })?;
    }
    let kind = EventKind::PromotionRefused { candidate: bd.branch().to_string(), reason };
    bd.emit(&bd.event(None, kind))?;
    Ok(PromoteOutcome::Stale { main_now })
}

fn hold(bd: &BranchDir, reason: String) -> Result<PromoteOutcome> {
    let kind = EventKind::PromotionRefused { candidate: bd.branch().to_string(), reason: format!("held: {reason}") };
    bd.emit(&bd.event(None, kind))?;
    Ok(PromoteOutcome::Held { reason })
}
