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
    /// Where it runs: this host for members `ratchet up` started, the URL's host for a `url`
    /// member, the host a remote member reported when it claimed.
    pub host: String,
    /// Where its heavy commands (gates, benchmark runs) execute: `local` or `slurm`
    /// (approved constitution.md `[constitution.jobs]`, for executors and evaluators).
    pub engine: String,
    /// The task a remote member holds (`<branch>/<task>`), and its engine jobs running now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobStatus>,
}

/// An engine job of a member, running or recently ended (`squeue`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    pub engine: String,
    pub id: String,
    pub state: String,
    pub node: String,
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
                    a.host.clone(),
                    match a.jobs.iter().find(|j| j.state == "RUNNING") {
                        Some(j) => format!("{} (job {} on {})", a.engine, j.id, j.node),
                        None => a.engine.clone(),
                    },
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
        out.push_str(&ui::table(&["NAME", "ROLE", "URL", "PID", "STATE", "RESTARTS", "HOST", "ENGINE"], &rows));
        out.push_str(&format!("{}\n", self.governance));
        out.push_str(&format!("{}\n", self.approvals));
        out
    }
}

/// The Slurm jobs of this user named `ratchet-*` (`squeue --states=all`): name and status. Empty
/// when squeue is missing or does not answer within 2 s.
async fn slurm_jobs() -> Vec<(String, JobStatus)> {
    let mut cmd = tokio::process::Command::new("squeue");
    cmd.args(["-h", "--states=all", "-o", "%j %i %T %N"]).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(2), cmd.output()).await else { return vec![] };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3 && w[0].starts_with("ratchet-")).then(|| {
                let job = JobStatus {
                    engine: "slurm".into(),
                    id: w[1].to_string(),
                    state: w[2].to_string(),
                    node: w.get(3).unwrap_or(&"").to_string(),
                };
                (w[0].to_string(), job)
            })
        })
        .collect()
}

/// The rows of the members `ratchet up` started (`card_ok[i]`: whether agent i's card answered;
/// `None`: not asked, the recorded state stands),
/// then those on other hosts that claim work from this coordinator: where each runs (host,
/// engine) and its engine jobs.
fn rows(
    home: &Path,
    agents: Vec<super::state::AgentRecord>,
    card_ok: Option<&[bool]>,
    jobs_engine: protocol::governance::JobEngine,
    slurm_jobs: &[(String, JobStatus)],
) -> Vec<AgentStatus> {
    let this_host = kit::substrate::hostname();
    let engine_of = |role: &str| match role {
        "executor" | "evaluator" => serde_json::to_value(jobs_engine)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| "local".into()),
        _ => "local".to_string(),
    };
    let mut out: Vec<AgentStatus> = agents
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let card = card_ok.and_then(|c| c.get(i).copied());
            let host = match (&a.url, a.remote) {
                (Some(u), true) => {
                    u.split("://").nth(1).unwrap_or(u).split(['/', ':']).next().unwrap_or_default().to_string()
                }
                _ => this_host.clone(),
            };
            let jobs = a.pid.map(|p| jobs_of(slurm_jobs, p)).unwrap_or_default();
            let engine = engine_of(&a.role);
            let state = if a.state == AgentState::Ready && card == Some(false) {
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
                card: card.unwrap_or(false),
                reason: a.reason,
                engine,
                host,
                task: None,
                jobs,
            }
        })
        .collect();
    // Members on other hosts that claim work from this coordinator (`ratchet up` did not start
    // them): where they said they run, and what they hold.
    for (name, m) in crate::remote::read_members(home) {
        out.push(AgentStatus {
            name,
            role: m.role,
            url: None,
            pid: None,
            state: format!("remote (seen {})", m.last_seen),
            restarts: 0,
            required: false,
            remote: true,
            skills: vec![],
            card: false,
            reason: None,
            host: m.host,
            engine: m.engine,
            task: m.task,
            jobs: vec![],
        });
    }
    out
}

/// The jobs of the process `pid` (named `ratchet-<pid>-<n>` by kit::jobs).
pub fn jobs_of(slurm_jobs: &[(String, JobStatus)], pid: u32) -> Vec<JobStatus> {
    let prefix = format!("ratchet-{pid}-");
    slurm_jobs.iter().filter(|(name, _)| name.starts_with(&prefix)).map(|(_, j)| j.clone()).collect()
}

/// Where each member runs, from files alone (no card is asked: `card` is false, the recorded
/// state stands), with the engine jobs of each: what the dashboard shows. Blocking
/// (`squeue`, at most 2 s, when the approved engine is Slurm).
pub fn whereabouts(home: &Path) -> Whereabouts {
    let paths = Layout::new(home);
    let jobs_engine = crate::govern::load(home).map(|g| g.constitution.jobs.engine).unwrap_or_default();
    let slurm_jobs = if jobs_engine == protocol::governance::JobEngine::Slurm { slurm_jobs_blocking() } else { vec![] };
    let agents = read_state(&paths.state_file()).ok().flatten().map(|s| s.agents).unwrap_or_default();
    let members = rows(home, agents, None, jobs_engine, &slurm_jobs);
    Whereabouts { members, slurm_jobs }
}

/// What [`whereabouts`] found.
pub struct Whereabouts {
    pub members: Vec<AgentStatus>,
    /// Every `ratchet-*` Slurm job `squeue` shows, by name.
    pub slurm_jobs: Vec<(String, JobStatus)>,
}

/// [`slurm_jobs`] for a blocking caller.
fn slurm_jobs_blocking() -> Vec<(String, JobStatus)> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(slurm_jobs()),
        Err(_) => vec![],
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
    let jobs_engine = crate::govern::load(paths.home()).map(|g| g.constitution.jobs.engine).unwrap_or_default();
    let slurm_jobs = if jobs_engine == protocol::governance::JobEngine::Slurm { slurm_jobs().await } else { vec![] };
    let agents = rows(paths.home(), state.agents, Some(&card_ok), jobs_engine, &slurm_jobs);
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
