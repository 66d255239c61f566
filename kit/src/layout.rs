//! The one owner of the on-disk layout under a swarm home (a repository root): every path under
//! `<home>/worktrees/` is named here and nowhere else.
//!
//! ```text
//! <home>/agents.toml                        the swarm's members
//! <home>/worktrees/                         the coordination substrate (ignored by git)
//!   .promote.lock                           flock serializing promotions
//!   .swarm/                                 the running swarm's private files
//!     state.json  events.jsonl  loop.json  supervisor.lock
//!     token                                 the swarm's bearer token (mode 0600)
//!     logs/<agent>.log                      each agent's stdout/stderr
//!     agents/<agent>/                       each agent's own state directory (task log, scratch checkouts)
//!     approvals/<branch>.json               promotions a person approved
//!     governance/  governance.lock          agent proposals, the approval lock
//!     baselines/<commit>/  candidate/       the evaluator's checkouts (trusted benchmark copy)
//!     bench.lock                            one benchmark at a time on this machine
//!   <branch>/                               one candidate branch (see `substrate::BranchDir`)
//! ```
//!
//! Agents own their private directories (`agents/<agent>/`, the evaluator's checkouts) and clean
//! them themselves; other processes only read what is documented as shared.

use std::path::{Path, PathBuf};

/// The directory (under the home) that holds the substrate: candidate branches and `.swarm/`.
pub const WORKTREES: &str = "worktrees";
/// The swarm's private directory under `worktrees/`.
pub const SWARM: &str = ".swarm";

/// Every path of one swarm home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    /// The layout of the swarm whose home (repository root) is `home`. Creates nothing.
    pub fn new(home: impl Into<PathBuf>) -> Layout {
        Layout { home: home.into() }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/agents.toml`.
    pub fn agents_toml(&self) -> PathBuf {
        self.home.join("agents.toml")
    }

    /// `<home>/worktrees`.
    pub fn worktrees(&self) -> PathBuf {
        self.home.join(WORKTREES)
    }

    /// `<home>/worktrees/<branch>`: a candidate branch's directory (the name is not validated
    /// here; `substrate::Home::branch_dir` validates).
    pub fn branch_dir(&self, branch: &str) -> PathBuf {
        self.worktrees().join(branch)
    }

    /// `worktrees/.promote.lock`.
    pub fn promote_lock(&self) -> PathBuf {
        self.worktrees().join(".promote.lock")
    }

    /// `worktrees/.swarm`.
    pub fn swarm(&self) -> PathBuf {
        self.worktrees().join(SWARM)
    }

    /// The running swarm (written only by `ratchet up`).
    pub fn state_file(&self) -> PathBuf {
        self.swarm().join("state.json")
    }

    /// Swarm-level typed events (append-only).
    pub fn events_file(&self) -> PathBuf {
        self.swarm().join("events.jsonl")
    }

    /// The loop's state (the coordinator's).
    pub fn loop_state(&self) -> PathBuf {
        self.swarm().join("loop.json")
    }

    /// The swarm's bearer token (mode 0600, made by each `ratchet up`; see `kit::auth`).
    pub fn swarm_token(&self) -> PathBuf {
        self.swarm().join("token")
    }

    /// Held (flock) by the running `ratchet up`, so two supervisors never share a home.
    pub fn supervisor_lock(&self) -> PathBuf {
        self.swarm().join("supervisor.lock")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.swarm().join("logs")
    }

    /// Where an agent's stdout and stderr lines go (appended).
    pub fn log_file(&self, agent: &str) -> PathBuf {
        self.logs_dir().join(format!("{agent}.log"))
    }

    /// `worktrees/.swarm/agents`: every agent's own state directory lives below.
    pub fn agents_dir(&self) -> PathBuf {
        self.swarm().join("agents")
    }

    /// An agent's own state directory (`RATCHET_STATE_DIR` by default).
    pub fn agent_state_dir(&self, agent: &str) -> PathBuf {
        self.agents_dir().join(agent)
    }

    /// Promotions a person approved (`ratchet approve <branch>`).
    pub fn approvals_dir(&self) -> PathBuf {
        self.swarm().join("approvals")
    }

    /// Governance proposals made by agents.
    pub fn governance_dir(&self) -> PathBuf {
        self.swarm().join("governance")
    }

    /// Serializes governance approvals.
    pub fn governance_lock(&self) -> PathBuf {
        self.swarm().join("governance.lock")
    }

    /// The evaluator's checkouts of baselines (the trusted benchmark copy), one per baseline.
    pub fn baselines_dir(&self) -> PathBuf {
        self.swarm().join("baselines")
    }

    /// The evaluator's reusable checkout of the candidate under test.
    pub fn candidate_checkout(&self) -> PathBuf {
        self.swarm().join("candidate")
    }

    /// `ratchet check`'s scratch checkout of `main`, where it runs the gates and the benchmark once.
    pub fn check_dir(&self) -> PathBuf {
        self.swarm().join("check")
    }

    /// One benchmark at a time on this machine.
    pub fn bench_lock(&self) -> PathBuf {
        self.swarm().join("bench.lock")
    }

    /// The bare repository remote holders push their result commits into (objects borrowed from
    /// the home's repository by alternates); the coordinator fetches from it only after checking.
    pub fn incoming_repo(&self) -> PathBuf {
        self.swarm().join("incoming.git")
    }

    /// The remote holders the coordinator has seen (`ratchet status` shows where they run).
    pub fn remote_members(&self) -> PathBuf {
        self.swarm().join("remote.json")
    }

    /// A path relative to the home when it is inside it, for short messages.
    pub fn display<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        match path.strip_prefix(&self.home) {
            Ok(rel) => rel.to_string_lossy(),
            Err(_) => path.to_string_lossy(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_the_home() {
        let l = Layout::new("/r");
        assert_eq!(l.state_file(), Path::new("/r/worktrees/.swarm/state.json"));
        assert_eq!(l.agent_state_dir("critic"), Path::new("/r/worktrees/.swarm/agents/critic"));
        assert_eq!(l.promote_lock(), Path::new("/r/worktrees/.promote.lock"));
        assert_eq!(l.branch_dir("b1"), Path::new("/r/worktrees/b1"));
        assert_eq!(l.display(Path::new("/r/worktrees/.swarm/logs/x.log")), "worktrees/.swarm/logs/x.log");
        assert_eq!(l.display(Path::new("/elsewhere")), "/elsewhere");
    }
}
