//! The coordination substrate: per-branch worktrees and control directories, task files, lease
//! files with fencing tokens, the reaper, fast-forward-only promotion, gc and inspection.
//!
//! Synchronous std code (async callers use `spawn_blocking`); git through the CLI ([`crate::git`]).
//!
//! Layout under `<repo>/worktrees/`:
//! ```text
//! .promote.lock              flock serializing promotions
//! <branch>/
//!   meta.json                BranchMeta: branch, base, state (active|promoted|rejected|archived|stale)
//!   .coord.lock              flock held by whoever changes tasks/ or meta.json (coordinator side)
//!   tree/                    the git worktree checkout of <branch>
//!   tasks/<task>.json        TaskFile, written only by the coordinator (temp + rename)
//!   leases/<task>.lock       LeaseFile, created O_EXCL and flock'ed by the claiming agent
//!   leases/expired/<task>.<token>.lock   an expired lease; its existence also kills <token>
//!   results/<task>.<token>.json          ResultFile, written by the holder (temp + rename)
//!   results/accepted/, results/refused/  results after the reaper judged them
//!   artifacts/<task>/...     what agents produce
//!   jobs/<name>.json         JobFile: an engine job a holder submitted (`crate::jobs`), until it ended
//!   events/events.jsonl      typed events, one JSON line each, appended with O_APPEND
//!   */quarantine/            corrupt files moved aside by the reaper
//! ```
//!
//! Invariants (argued in ARCHITECTURE.md):
//! - Every branch, task and artefact name is checked with `protocol::names` before it is joined.
//! - Only the reaper (the coordinator) removes or moves a lease file, and only under the branch's
//!   `.coord.lock`. A holder never unlinks its lease: if it had been expired while stopped, the
//!   path may already name its successor's lease.
//! - A claimer reads the task's token after creating its lease and before checking that its lease
//!   is still at the path; the reaper kills a token by renaming the lease to
//!   `leases/expired/<task>.<token>.lock` *before* it bumps the token, and a claimer refuses a
//!   token that has such a file. So at most one holder is ever valid for a given token.

mod events;
mod fsutil;
mod gc;
mod home;
mod inspect;
mod lease;
mod promote;
mod reaper;
mod tasks;
mod watch;

use std::path::PathBuf;

pub use events::{CorruptLine, EventLog, all_events, append_event, read_events};
pub use fsutil::hostname;
pub(crate) use fsutil::pid_alive;
pub use gc::{GcReport, ORPHAN_GRACE, gc, remove_checkout};
pub use home::{BranchDir, BranchMeta, BranchState, Home, META_VERSION, SWARM_ID_ENV, add_worktree, swarm_id_from_env};
pub use inspect::{ArtifactInfo, InspectReport, LeaseInfo, TaskInfo, inspect, read_lease_info, render_text};
pub use lease::{Lease, try_claim};
pub use promote::{PromoteOutcome, promote};
pub use reaper::{DEFAULT_REAP_INTERVAL, EMPTY_LEASE_GRACE, reap, reap_all};
pub use tasks::{accepted_result, list_tasks, queue_task, read_task, write_task};
pub use watch::{RESCAN_INTERVAL, TaskWatcher, Wakeup, Wakeups, find_claimable};

use crate::git::GitError;
use protocol::names::NameError;

pub type Result<T, E = SubstrateError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SubstrateError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON for a {what}: {source}; move the file aside (the reaper quarantines it) or rewrite it", path.display())]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    Format {
        path: PathBuf,
        #[source]
        source: protocol::lease::FormatError,
    },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{} is not inside a git repository: run `git init` there or pass the repository root", path.display())]
    NotARepo { path: PathBuf },
    #[error("no branch directory {}: create it with add_worktree (or check the branch name)", path.display())]
    NoSuchBranch { path: PathBuf },
    #[error("branch directory {} already exists: pick another branch name or gc the old one", path.display())]
    BranchExists { path: PathBuf },
    #[error("no task file {}: the coordinator has not queued task {task:?} on this branch", path.display())]
    NoSuchTask { task: String, path: PathBuf },
    #[error(
        "task file for {task:?} names branch {found:?} but is being written under branch {expected:?}: set TaskFile.branch to the branch directory it goes in"
    )]
    TaskBranchMismatch { task: String, expected: String, found: String },
    #[error("lease on task {task:?} (token {token}) was lost: {reason}; stop working on it, a result would be refused")]
    LeaseLost { task: String, token: u64, reason: String },
    #[error("{commit:?} is not a commit in {}: pass a commit id or a ref that resolves to one", repo.display())]
    NoSuchCommit { commit: String, repo: PathBuf },
}

impl SubstrateError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SubstrateError {
        let path = path.into();
        move |source| SubstrateError::Io { op, path, source }
    }
}
