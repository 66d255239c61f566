//! `worktrees/.swarm/state.json`: the running swarm as `ratchet status` and the agents see it.
//!
//! Written by `ratchet up` only, by temp file + rename on every change, so a reader never sees a
//! half-written file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the state file format; bump on an incompatible change.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmState {
    pub v: u32,
    pub supervisor_pid: u32,
    /// Fresh per `ratchet up`: the swarm instance id. Every event of that run carries it, and
    /// every member gets it as `RATCHET_SWARM_ID` (its leases and results carry it).
    pub run_id: String,
    /// RFC 3339.
    pub started_at: String,
    /// Absolute repository root.
    pub home: PathBuf,
    pub state: SwarmPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Why the swarm stopped, when it was not asked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub agents: Vec<AgentRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwarmPhase {
    /// Agents are starting; not every card has answered yet.
    Starting,
    /// Every agent answered its card or gave up (and none of those is required).
    Running,
    /// Stopping every agent.
    Stopping,
    /// No supervisor and no agent running; `agents` is empty.
    Stopped,
}

/// One swarm member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    pub role: String,
    /// The A2A endpoint, once the agent reported it.
    pub url: Option<String>,
    /// The child's pid, which is also its process group id; `None` for remote agents.
    pub pid: Option<u32>,
    /// Who `pid` is (start time, boot, session, executable), so a later `ratchet up` that finds
    /// this swarm dead stops this very process and never a stranger that got the pid since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<super::identity::ProcessIdentity>,
    pub state: AgentState,
    pub restarts: u32,
    /// Skill ids from the agent's card once it answered, before that the ones agents.toml asks for.
    pub skills: Vec<String>,
    pub required: bool,
    /// A `url` entry: not spawned by the supervisor.
    #[serde(default)]
    pub remote: bool,
    /// Why the agent gave up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Starting,
    Ready,
    Restarting,
    GaveUp,
    Stopping,
    Stopped,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Ready => "ready",
            AgentState::Restarting => "restarting",
            AgentState::GaveUp => "gave_up",
            AgentState::Stopping => "stopping",
            AgentState::Stopped => "stopped",
        }
    }

    /// Nothing more will happen to this agent without a config change.
    pub fn is_settled(self) -> bool {
        matches!(self, AgentState::Ready | AgentState::GaveUp | AgentState::Stopped)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: cannot read the swarm state: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write the swarm state: {source}; fix: check that worktrees/ is writable")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a swarm state file ({source}); fix: stop any `ratchet up` and delete the file")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {source}")]
    Newer { path: PathBuf, source: protocol::format::FormatError },
}

/// Write `state` to `path` atomically (temp file in the same directory, then rename).
pub fn write_state(path: &Path, state: &SwarmState) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_path_buf(), source };
    let mut bytes = serde_json::to_vec_pretty(state).expect("the swarm state always serializes");
    bytes.push(b'\n');
    kit::files::write_atomic(path, &bytes).map_err(err)
}

/// Read the state file; `Ok(None)` when there is none.
pub fn read_state(path: &Path) -> Result<Option<SwarmState>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path: path.to_path_buf(), source }),
    };
    protocol::format::parse_versioned(&bytes, "swarm state file", STATE_VERSION).map(Some).map_err(|e| match e {
        protocol::format::FormatError::Json { source, .. } => StateError::Parse { path: path.to_path_buf(), source },
        newer => StateError::Newer { path: path.to_path_buf(), source: newer },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_write() {
        let dir = std::env::temp_dir().join(format!("ratchet-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(read_state(&path).unwrap(), None);
        let s = SwarmState {
            v: STATE_VERSION,
            supervisor_pid: 42,
            run_id: "up-1".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            home: dir.clone(),
            state: SwarmPhase::Running,
            stopped_at: None,
            reason: None,
            agents: vec![AgentRecord {
                name: "critic".into(),
                role: "critic".into(),
                url: Some("http://127.0.0.1:1/".into()),
                pid: Some(7),
                identity: None,
                state: AgentState::GaveUp,
                restarts: 3,
                skills: vec![],
                required: false,
                remote: false,
                reason: Some("crashed".into()),
            }],
        };
        write_state(&path, &s).unwrap();
        assert_eq!(read_state(&path).unwrap(), Some(s));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"state\": \"gave_up\""), "{text}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.json")], "no temp file is left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
