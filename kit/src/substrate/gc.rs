//! gc: remove the checkouts and branches of finished candidates, keep their control files
//! (tasks, artefacts, events, meta.json) inspectable, never lose a commit.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::events::EventKind;
use protocol::names;
use serde::Serialize;

use super::fsutil::age;
use super::home::{BranchDir, Home};
use super::{Result, SubstrateError};
use crate::git::WorktreeEntry;

/// What [`gc`] did and what it left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GcReport {
    /// Branches whose checkout was removed.
    pub removed_checkouts: Vec<String>,
    /// Branches whose ref was deleted (their commits are on `main` or archived).
    pub deleted_branches: Vec<String>,
    /// `(branch, ref)`: unpromoted commits kept under `refs/ratchet/archive/<branch>`.
    pub archived: Vec<(String, String)>,
    /// `(branch, why)`: branches gc did not delete.
    pub kept_branches: Vec<(String, String)>,
    /// Directories removed because git did not know them (a checkout left by a crash).
    pub orphans_removed: Vec<PathBuf>,
    /// `(path, why)`: directories under `worktrees/` gc does not understand and left alone.
    pub orphans_reported: Vec<(PathBuf, String)>,
    /// `git worktree prune` ran (stale registrations are gone).
    pub pruned: bool,
}

/// A branch directory without meta.json younger than this may be an add in progress.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(60);

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

fn registered(list: &[WorktreeEntry], path: &Path) -> bool {
    list.iter().any(|w| same_path(&w.path, path))
}

/// Removes a branch's checkout (`git worktree remove --force`), or its directory when git does
/// not know it. Returns whether there was anything to remove.
pub fn remove_checkout(bd: &BranchDir) -> Result<bool> {
    let git = bd.home().git();
    let tree = bd.tree();
    // What an executor that died during the baseline's tests had moved aside.
    let aside = bd.aside_dir();
    if aside.exists() {
        fs::remove_dir_all(&aside).map_err(SubstrateError::io("removing", &aside))?;
    }
    // The fresh checkout of the baseline's tests an executor that died during them left (its
    // registration goes with the `git worktree prune` that follows).
    let fresh = bd.fresh_checkout();
    if fresh.exists() {
        fs::remove_dir_all(&fresh).map_err(SubstrateError::io("removing", &fresh))?;
    }
    if !tree.exists() {
        // A registration whose directory is gone is cleared by `git worktree prune`.
        return Ok(false);
    }
    let args: [&std::ffi::OsStr; 4] = ["worktree".as_ref(), "remove".as_ref(), "--force".as_ref(), tree.as_os_str()];
    match git.run(args) {
        Ok(_) => Ok(true),
        Err(e) if !registered(&git.worktrees()?, &tree) => {
            // Not a worktree git knows (a checkout left by a crash): just a directory.
            tracing::debug!(tree = %tree.display(), error = %e, "removing an unregistered checkout directory");
            fs::remove_dir_all(&tree).map_err(SubstrateError::io("removing", &tree))?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Cleans up every branch whose state is final (promoted, rejected, archived, stale): checkout
/// removed, branch deleted if its tip is on `main` or archived under
/// `refs/ratchet/archive/<branch>` first; then `git worktree prune`. Active branches are left
/// alone; directories gc does not understand are reported.
pub fn gc(home: &Home) -> Result<GcReport> {
    let mut report = GcReport::default();
    let git = home.git();
    let main = git.resolve_commit("refs/heads/main")?;
    for branch in home.branches()? {
        let bd = home.branch_dir(&branch)?;
        let meta = match bd.read_meta() {
            Ok(m) => m,
            Err(e) => {
                report.orphans_reported.push((bd.dir().to_path_buf(), format!("{e}")));
                continue;
            }
        };
        match meta {
            Some(m) if m.state.is_final() => finish_branch(&bd, main.as_deref(), &mut report)?,
            Some(_) => {
                let tree = bd.tree();
                if tree.exists() && !registered(&git.worktrees()?, &tree) {
                    let why = "checkout of an active branch that git does not know; remove it or re-add the worktree";
                    report.orphans_reported.push((tree, why.to_string()));
                }
            }
            None => orphan_branch_dir(&bd, main.as_deref(), &mut report)?,
        }
    }
    report_unknown_entries(home, &mut report)?;
    git.run(["worktree", "prune"])?;
    report.pruned = true;
    Ok(report)
}

fn finish_branch(bd: &BranchDir, main: Option<&str>, report: &mut GcReport) -> Result<()> {
    let removed = remove_checkout(bd)?;
    if removed {
        report.removed_checkouts.push(bd.branch().to_string());
    }
    let (deleted, archived) = retire_branch_ref(bd, main, report)?;
    if removed || deleted {
        let _guard = bd.lock_coord()?;
        bd.update_meta(|m| {
            m.checkout_removed = true;
            if archived.is_some() {
                m.archived_ref = archived.clone();
            }
        })?;
        bd.emit(&bd.event(None, EventKind::WorktreeRemoved { archived }))?;
    }
    Ok(())
}

/// Deletes `refs/heads/<branch>` when no commit would be lost; archives unpromoted commits
/// first. Returns (deleted, archive ref).
fn retire_branch_ref(bd: &BranchDir, main: Option<&str>, report: &mut GcReport) -> Result<(bool, Option<String>)> {
    let git = bd.home().git();
    let branch = bd.branch();
    let head_ref = format!("refs/heads/{branch}");
    let Some(tip) = git.resolve_commit(&head_ref)? else { return Ok((false, None)) };
    if git.worktrees()?.iter().any(|w| w.branch.as_deref() == Some(head_ref.as_str())) {
        report.kept_branches.push((branch.to_string(), "it is checked out in another worktree".into()));
        return Ok((false, None));
    }
    let on_main = match main {
        Some(m) => git.is_ancestor(&tip, m)?,
        None => false,
    };
    let mut archived = None;
    if !on_main {
        let archive_ref = format!("refs/ratchet/archive/{branch}");
        match git.resolve_commit(&archive_ref)? {
            Some(kept) if git.is_ancestor(&tip, &kept)? => {}
            Some(kept) => {
                let why = format!("{archive_ref} already holds {kept}, which does not contain the tip {tip}");
                report.kept_branches.push((branch.to_string(), why));
                return Ok((false, None));
            }
            None => {
                git.run(["update-ref", "-m", "ratchet gc: archive unpromoted commits", &archive_ref, &tip, ""])?;
            }
        }
        report.archived.push((branch.to_string(), archive_ref.clone()));
        archived = Some(archive_ref);
    }
    git.run(["update-ref", "-d", &head_ref, &tip])?;
    report.deleted_branches.push(branch.to_string());
    Ok((true, archived))
}

/// A branch directory without meta.json: a worktree add that stopped half way, or something
/// else. Its checkout and branch go (commits archived); the directory goes if nothing else is in it.
fn orphan_branch_dir(bd: &BranchDir, main: Option<&str>, report: &mut GcReport) -> Result<()> {
    let young = fs::metadata(bd.dir()).and_then(|m| m.modified()).map(|t| age(t) < ORPHAN_GRACE).unwrap_or(true);
    if young {
        let why = "no meta.json yet; may be a worktree add in progress, left for a later gc";
        report.orphans_reported.push((bd.dir().to_path_buf(), why.to_string()));
        return Ok(());
    }
    if remove_checkout(bd)? {
        report.orphans_removed.push(bd.tree());
    }
    retire_branch_ref(bd, main, report)?;
    if has_files(bd.dir()) {
        let why = "no meta.json but control files inside; inspect and remove it by hand";
        report.orphans_reported.push((bd.dir().to_path_buf(), why.to_string()));
    } else {
        fs::remove_dir_all(bd.dir()).map_err(SubstrateError::io("removing", bd.dir()))?;
        report.orphans_removed.push(bd.dir().to_path_buf());
    }
    Ok(())
}

/// Whether any regular file lies under `dir` (lock files do not count).
fn has_files(dir: &Path) -> bool {
    let Ok(rd) = fs::read_dir(dir) else { return false };
    rd.flatten().any(|e| {
        let name = e.file_name();
        match e.file_type() {
            Ok(t) if t.is_dir() => has_files(&e.path()),
            Ok(_) => name != ".coord.lock",
            Err(_) => true,
        }
    })
}

/// Entries under `worktrees/` that are not branch directories.
fn report_unknown_entries(home: &Home, report: &mut GcReport) -> Result<()> {
    let dir = home.worktrees_dir();
    let Ok(rd) = fs::read_dir(dir) else { return Ok(()) };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Dot entries are infrastructure (the promotion lock, agents' state directories).
        if name.starts_with('.') || names::check_branch(&name).is_ok() {
            continue;
        }
        report.orphans_reported.push((entry.path(), "not a valid branch directory name; left alone".into()));
    }
    Ok(())
}
