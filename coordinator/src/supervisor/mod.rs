//! The `ratchet` supervisor: a process manager for the swarm, nothing more. The coordinator is an
//! agent like the others.
//!
//! # The contract with a child
//! - `command` (argv) runs in a new process group (pgid = its pid), cwd = the swarm home (the
//!   repository root). A bare program name is looked up beside the running `ratchet` binary,
//!   then on PATH.
//! - Environment: `RATCHET_AGENT_NAME`, `RATCHET_ROLE`, `RATCHET_SKILLS` (comma-separated, may be
//!   empty), `RATCHET_HOME` (absolute), `RATCHET_LISTEN=127.0.0.1:0`,
//!   `RATCHET_STATE_DIR=<home>/worktrees/.swarm/agents/<name>`,
//!   `RATCHET_SWARM_STATE=<home>/worktrees/.swarm/state.json`, plus the entry's `env`, and
//!   `RATCHET_TOKEN` (the swarm's bearer token, made fresh by each `ratchet up` in
//!   `worktrees/.swarm/token`, mode 0600; `RATCHET_OPEN` is never passed on); then
//!   `RATCHET_SWARM_ID` (this swarm instance, `state.json`'s `run_id`: leases and results carry
//!   it) and `RATCHET_LIFELINE=stdin`, which the entry cannot override.
//! - stdin is the child's lifeline: a pipe whose write end only the supervisor holds. End-of-file
//!   on it means the supervisor is gone; a Ratchet agent then shuts down (`kit::agent::lifeline`).
//!   A child that cannot see it (a wrapper that redirected stdin) is stopped by the next
//!   `ratchet up` instead (`leftovers.rs`), after its identity ([`identity`]) is checked.
//! - The child binds, then prints exactly one `RATCHET_LISTENING <url>` line on stdout. Every
//!   other stdout/stderr line is a log line, appended to `worktrees/.swarm/logs/<name>.log`.
//! - Ready = `GET <url>.well-known/agent.json` answers 200 with an Agent Card.
//! - SIGTERM to the process group asks it to stop; SIGKILL follows after a grace period.
//! - A `url` entry is not spawned: its card is probed and it is listed.
//! - A live edit of agents.toml is checked before anything stops (commands resolve, new urls
//!   answer their card, the roles of required members keep an agent) and refused otherwise; a
//!   changed member's successor is started and ready before the old one stops (not for
//!   coordinators); a successor that never comes up hands the slot back to the old entry.
//!
//! # Files (under `<home>/worktrees/.swarm/`)
//! `token` (0600), `state.json` ([`state::SwarmState`], temp + rename on every change), `events.jsonl` (typed
//! [`protocol::events::Event`]s, appended), `logs/<name>.log`, `agents/<name>/`, and
//! `supervisor.lock` (held by the running `ratchet up`).

mod child;
mod eventlog;
pub mod identity;
mod leftovers;

pub mod probe;
mod progress;
mod runner;
pub mod state;
mod status;
mod ui;
mod up;
mod watch;

use std::path::PathBuf;

pub use child::resolve_program;
pub use kit::layout::Layout;
pub use runner::RestartPolicy;
pub use status::{AgentStatus, JobStatus, StatusReport, Whereabouts, jobs_of, status, whereabouts};
pub use ui::{human_output_to_stderr, print_out, say};
pub use up::{CoordinatorView, LoopRequest, ReadySwarm, UpOptions, UpOutcome, on_swarm_ready, up};

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("the improvement loop failed: {reason}; fix: see worktrees/.swarm/logs/coordinator.log")]
    Loop { reason: String },
    #[error("{path}: cannot use it as the swarm home: {source}; fix: pass --repo with an existing repository")]
    Home { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}: cannot read: {source}; fix: run `ratchet init` to make this repository a swarm home (it writes agents.toml and the governance documents), or run `ratchet` in the repository root that holds agents.toml (or pass --repo PATH)"
    )]
    NoConfig { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] protocol::config::ConfigError),
    #[error("{path}: {source}; fix: check that worktrees/ is writable")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot handle signals: {source}")]
    Signal { source: std::io::Error },
    #[error(
        "a swarm is already running in {home} (supervisor pid {pid}); fix: use `ratchet status`, or stop it first (Ctrl-C in its terminal, or kill {pid})"
    )]
    AlreadyRunning { home: PathBuf, pid: String },
    #[error(
        "required agent {name:?} (role {role}) gave up: {reason}; fix: read {log}, or set required = false in its [[agent]] table to run without it"
    )]
    RequiredGaveUp { name: String, role: String, reason: String, log: PathBuf },
    #[error("no swarm is running in {home} ({detail}); fix: start one with `ratchet up`")]
    NotRunning { home: PathBuf, detail: String },
}

impl SupervisorError {
    /// The process exit code for this error: 2 for a refused configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SupervisorError::Config(_) | SupervisorError::NoConfig { .. } => 2,
            _ => 1,
        }
    }
}
