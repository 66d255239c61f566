//! Where the supervisor keeps its files, all under `<home>/worktrees/.swarm/`.

use std::path::{Path, PathBuf};

/// The file-system layout of one swarm home (the repository root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmPaths {
    /// Absolute repository root.
    pub home: PathBuf,
    /// `<home>/worktrees/.swarm`.
    pub swarm: PathBuf,
}

impl SwarmPaths {
    pub fn new(home: impl Into<PathBuf>) -> SwarmPaths {
        let home = home.into();
        let swarm = home.join("worktrees").join(".swarm");
        SwarmPaths { home, swarm }
    }

    pub fn agents_toml(&self) -> PathBuf {
        self.home.join("agents.toml")
    }

    /// The state file `ratchet status` and the agents read (`RATCHET_SWARM_STATE`).
    pub fn state_file(&self) -> PathBuf {
        self.swarm.join("state.json")
    }

    /// Typed supervisor events, one JSON object per line.
    pub fn events_file(&self) -> PathBuf {
        self.swarm.join("events.jsonl")
    }

    /// Held (flock) by the running `ratchet up`, so two supervisors never share a home.
    pub fn lock_file(&self) -> PathBuf {
        self.swarm.join("supervisor.lock")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.swarm.join("logs")
    }

    /// Where an agent's stdout and stderr lines go (appended).
    pub fn log_file(&self, agent: &str) -> PathBuf {
        self.logs_dir().join(format!("{agent}.log"))
    }

    /// An agent's own state directory (`RATCHET_STATE_DIR`).
    pub fn agent_state_dir(&self, agent: &str) -> PathBuf {
        self.swarm.join("agents").join(agent)
    }

    /// A path relative to the home when it is inside it, for short messages.
    pub fn display<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        match path.strip_prefix(&self.home) {
            Ok(rel) => rel.to_string_lossy(),
            Err(_) => path.to_string_lossy(),
        }
    }
}
