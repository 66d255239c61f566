//! `ratchet status`: the running swarm, from the state file, with every card checked live.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::Serialize;

use super::state::{AgentState, SwarmPhase, read_state};
use super::{SupervisorError, probe, ui};
use kit::layout::Layout;

/// How long `ratchet status` waits for one card.
const CARD_TIMEOUT: Duration = Duration::from_millis(800);

/// One row of `ratchet status` (and one object of `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStatus {
    pub name: String,
    pub role: String,
    pub url: Option<String>,
    pub pid: Option<u32>,
    /// The supervisor's view (`ready`, `restarting`, `gave_up`, ...), or `unreachable` when it
    /// says ready but the card did not answer just now.
    pub state: String,
    pub restarts: u32,
    pub required: bool,
    pub remote: bool,
    pub skills: Vec<String>,
    /// Whether the card answered just now.
    pub card: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub paths: Layout,
    pub supervisor_pid: u32,
    pub phase: SwarmPhase,
    pub started_at: String,
    pub agents: Vec<AgentStatus>,
    /// One line about governance: pending edits and proposals (`ratchet governance` shows them).
    pub governance: String,
    /// One line about promotions waiting for a person (`ratchet approve|reject <branch>`).
    pub approvals: String,
}

impl StatusReport {
    /// The `--json` output: an array of agents.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.agents).expect("status rows always serialize")
    }

    pub fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .agents
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.role.clone(),
                    a.url.clone().unwrap_or_default(),
                    a.pid
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| if a.remote { "remote".into() } else { String::new() }),
                    a.state.clone(),
                    a.restarts.to_string(),
                ]
            })
            .collect();
        let phase = match self.phase {
            SwarmPhase::Starting => "starting",
            SwarmPhase::Running => "running",
            SwarmPhase::Stopping => "stopping",
            SwarmPhase::Stopped => "stopped",
        };
        let mut out = format!(
            "swarm in {} (supervisor pid {}, {phase} since {})\n",
            self.paths.home().display(),
            self.supervisor_pid,
            self.started_at
        );
        out.push_str(&ui::table(&["NAME", "ROLE", "URL", "PID", "STATE", "RESTARTS"], &rows));
        out.push_str(&format!("{}\n", self.governance));
        out.push_str(&format!("{}\n", self.approvals));
        out
    }
}

/// Whether process `pid` exists (EPERM: it does, owned by someone else).
fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| !matches!(kill(Pid::from_raw(p), None), Err(nix::errno::Errno::ESRCH)))
}

/// Read the swarm of the repository at `repo` and check every card live.
pub async fn status(repo: &Path) -> Result<StatusReport, SupervisorError> {
    let home =
        std::fs::canonicalize(repo).map_err(|source| SupervisorError::Home { path: repo.to_path_buf(), source })?;
    let paths = Layout::new(home);
    let not_running = |detail: String| SupervisorError::NotRunning { home: paths.home().to_path_buf(), detail };
    let Some(state) = read_state(&paths.state_file())? else {
        return Err(not_running(format!("no {}", paths.display(&paths.state_file()))));
    };
    if state.state == SwarmPhase::Stopped {
        let when = state.stopped_at.clone().unwrap_or_default();
        let why = state.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        return Err(not_running(format!("the last one stopped at {when}{why}")));
    }
    if !alive(state.supervisor_pid) {
        return Err(not_running(format!(
            "its supervisor, pid {}, is gone without stopping it; its agents exit when they notice (their lifeline), and the next `ratchet up` stops any that did not",
            state.supervisor_pid
        )));
    }
    let client = probe::client(CARD_TIMEOUT);
    let mut checks = tokio::task::JoinSet::new();
    for (i, a) in state.agents.iter().enumerate() {
        if let Some(url) = a.url.clone() {
            let client = client.clone();
            checks.spawn(async move { (i, probe::fetch_card(&client, &url).await.is_ok()) });
        }
    }
    let mut card_ok = vec![false; state.agents.len()];
    while let Some(done) = checks.join_next().await {
        if let Ok((i, ok)) = done {
            card_ok[i] = ok;
        }
    }
    let agents = state
        .agents
        .into_iter()
        .zip(card_ok)
        .map(|(a, card)| {
            let state = if a.state == AgentState::Ready && !card {
                "unreachable".to_string()
            } else {
                a.state.as_str().to_string()
            };
            AgentStatus {
                name: a.name,
                role: a.role,
                url: a.url,
                pid: a.pid,
                state,
                restarts: a.restarts,
                required: a.required,
                remote: a.remote,
                skills: a.skills,
                card,
                reason: a.reason,
            }
        })
        .collect();
    let governance = crate::govern::pending_line(paths.home());
    let approvals = crate::approvals::waiting_line(paths.home());
    Ok(StatusReport {
        paths,
        supervisor_pid: state.supervisor_pid,
        phase: state.state,
        started_at: state.started_at,
        agents,
        governance,
        approvals,
    })
}
