//! `ratchet up`: the supervisor's event loop.
//!
//! One task per agent ([`super::runner`]) does the process work and reports [`Notice`]s; this loop
//! owns everything else: the state file, the events, the terminal lines, live config reloads and
//! shutdown. Because only this loop changes state, the state file is rewritten from one place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::config::{AgentEntry, AgentsFile};
use protocol::events::EventKind;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::child::signal_group;
use super::eventlog::EventLog;
use super::runner::{Notice, RestartPolicy, Runner, Update};
use super::state::{AgentRecord, AgentState, STATE_VERSION, SwarmPhase, SwarmState, write_state};
use super::{SupervisorError, ui};
use kit::layout::Layout;

/// What `ratchet up` needs to know.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The repository root holding agents.toml (made absolute).
    pub repo: PathBuf,
    pub policy: RestartPolicy,
    /// Run the improvement loop once the swarm is ready (`None`: only supervise).
    pub run_loop: Option<LoopRequest>,
}

/// What `up` asks of the coordinator once every card answered.
#[derive(Debug, Clone)]
pub struct LoopRequest {
    /// Extra cycle budget for this run (0: cadence.md's budget only).
    pub max_cycles: u32,
    /// Start a new run even if a previous one finished.
    pub fresh: bool,
    /// Stop the swarm when the loop stops (`ratchet demo`); otherwise keep supervising.
    pub exit_when_done: bool,
}

/// How `up` ended.
#[derive(Debug, Default)]
pub struct UpOutcome {
    /// The loop's summary (JSON), when a loop ran to its end.
    pub loop_summary: Option<serde_json::Value>,
}

/// The swarm as it is when every card has answered, handed to [`on_swarm_ready`].
#[derive(Debug, Clone)]
pub struct ReadySwarm {
    pub paths: Layout,
    pub run_id: String,
    /// Every agent, ready or given up (never a required one: then the swarm does not start).
    pub agents: Vec<AgentRecord>,
    /// Becomes `true` when `ratchet up` begins to stop; anything started from the hook should end then.
    pub shutdown: watch::Receiver<bool>,
}

/// Called once, when every agent of the first configuration answered its card (or gave up
/// without being required), right after the table is printed.
///
/// Hook for the lead: this is where `ratchet up` will kick off the improvement loop (e.g. send
/// the coordinator its first `message/send`). It runs on the supervisor's event loop, so it must
/// not block: spawn a task and have it watch `swarm.shutdown`.
pub fn on_swarm_ready(
    swarm: &ReadySwarm,
    request: Option<LoopRequest>,
    done: mpsc::UnboundedSender<Result<serde_json::Value, String>>,
) {
    let Some(request) = request else { return };
    let coordinator = swarm
        .agents
        .iter()
        .find(|a| a.role == "coordinator" && a.state == AgentState::Ready)
        .and_then(|a| a.url.clone());
    let Some(url) = coordinator else {
        ui::say("ratchet: no coordinator is ready; the loop does not run (add one to agents.toml)");
        let _ = done.send(Err("no coordinator is ready".into()));
        return;
    };
    let token = kit::auth::read_token(&swarm.paths.swarm_token()).ok();
    let mut shutdown = swarm.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = super::progress::follow_loop(&url, token, &request) => { let _ = done.send(r); }
            _ = shutdown.wait_for(|s| *s) => {}
        }
    });
}

/// A fresh bearer token for this swarm, in `worktrees/.swarm/token` (mode 0600); every member
/// `ratchet up` starts gets it as `RATCHET_TOKEN` (see `kit::auth`).
fn make_swarm_token(paths: &Layout) -> Result<(), SupervisorError> {
    let path = paths.swarm_token();
    kit::auth::new_token()
        .and_then(|t| kit::auth::write_token(&path, &t))
        .map_err(|source| SupervisorError::Io { path, source })
}

/// Run the swarm in the foreground until SIGINT/SIGTERM (`Ok`) or until a required agent gives
/// up (`Err`). A broken agents.toml is refused before anything starts.
pub async fn up(opts: UpOptions) -> Result<UpOutcome, SupervisorError> {
    let home = std::fs::canonicalize(&opts.repo)
        .map_err(|source| SupervisorError::Home { path: opts.repo.clone(), source })?;
    let paths = Layout::new(home);
    let config_path = paths.agents_toml();
    let text = std::fs::read_to_string(&config_path)
        .map_err(|source| SupervisorError::NoConfig { path: config_path.clone(), source })?;
    let config = AgentsFile::parse(&text, &config_path.display().to_string())?;

    let io = |path: PathBuf| move |source| SupervisorError::Io { path, source };
    std::fs::create_dir_all(paths.logs_dir()).map_err(io(paths.logs_dir()))?;
    let lock_path = paths.supervisor_lock();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(lock_path.clone()))?;
    if lock.try_lock().is_err() {
        let pid = super::state::read_state(&paths.state_file())
            .ok()
            .flatten()
            .map(|s| s.supervisor_pid.to_string())
            .unwrap_or_else(|| "unknown".into());
        return Err(SupervisorError::AlreadyRunning { home: paths.home().to_path_buf(), pid });
    }
    let run_id = format!(
        "up-{}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
        std::process::id()
    );
    make_swarm_token(&paths)?;
    let events = EventLog::open(&paths.events_file(), &run_id).map_err(io(paths.events_file()))?;
    if let Err(e) = super::child::become_subreaper() {
        eprintln!("warning: cannot become the reaper of orphaned agent processes: {e}");
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| SupervisorError::Signal { source })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| SupervisorError::Signal { source })?;

    let (notices_tx, notices_rx) = mpsc::unbounded_channel();
    let (shutdown_tx, _) = watch::channel(false);
    let (loop_tx, mut loop_rx) = mpsc::unbounded_channel();
    let mut summary = None;
    let mut sup = Supervisor {
        loop_request: opts.run_loop.clone(),
        loop_tx,
        state: SwarmState {
            v: STATE_VERSION,
            supervisor_pid: std::process::id(),
            run_id,
            started_at: protocol::a2a::timestamp(std::time::SystemTime::now()),
            home: paths.home().to_path_buf(),
            state: SwarmPhase::Starting,
            stopped_at: None,
            reason: None,
            agents: Vec::new(),
        },
        paths: Arc::new(paths),
        policy: Arc::new(opts.policy),
        client: super::probe::client(Duration::from_secs(1)),
        events,
        slots: BTreeMap::new(),
        order: Vec::new(),
        generation: 0,
        notices_tx,
        notices_rx,
        shutdown_tx,
        announced: false,
        stopping: false,
        config: AgentsFile { agents: Vec::new() },
        last_text: text,
    };
    sup.write_state();

    // Live reload is a convenience: without a watcher the swarm still runs.
    let (_watcher, mut changes) = match super::watch::watch_config(sup.paths.home()) {
        Ok((w, rx)) => (Some(w), rx),
        Err(e) => {
            eprintln!("warning: cannot watch {}: {e}; edits apply at the next `ratchet up`", config_path.display());
            (None, mpsc::unbounded_channel().1)
        }
    };

    sup.order = config.agents.iter().map(|a| a.name.clone()).collect();
    for entry in &config.agents {
        sup.start_slot(entry.clone());
    }
    sup.config = config;
    sup.check_ready();

    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => {
                ui::say("ratchet: SIGTERM, stopping the swarm");
                break Ok(());
            }
            _ = sigint.recv() => {
                ui::say("ratchet: interrupted, stopping the swarm");
                break Ok(());
            }
            Some(notice) = sup.notices_rx.recv() => {
                if let Err(e) = sup.apply(notice) {
                    break Err(e);
                }
            }
            Some(()) = changes.recv() => sup.reload(),
            Some(result) = loop_rx.recv() => {
                let exit = sup.loop_request.as_ref().is_some_and(|r| r.exit_when_done);
                match result {
                    Ok(s) => summary = Some(s),
                    Err(e) => {
                        ui::say(&format!("ratchet: the loop failed: {e}"));
                        if exit {
                            break Err(SupervisorError::Loop { reason: e });
                        }
                    }
                }
                if exit {
                    break Ok(());
                }
            }
        }
    };
    if let Err(e) = &outcome {
        ui::say(&format!("ratchet: {e}; stopping the swarm"));
        sup.state.reason = Some(e.to_string());
    }
    sup.shutdown().await;
    drop(lock);
    outcome.map(|()| UpOutcome { loop_summary: summary })
}

struct Slot {
    entry: AgentEntry,
    generation: u64,
    stop: watch::Sender<bool>,
    record: AgentRecord,
    /// Its runner task is still going (it ends after `Stopped` or `GaveUp`).
    running: bool,
    /// A changed entry waiting for the old process to stop.
    next: Option<AgentEntry>,
    /// Removed from agents.toml: drop the slot once stopped.
    removing: bool,
}

struct Supervisor {
    loop_request: Option<LoopRequest>,
    loop_tx: mpsc::UnboundedSender<Result<serde_json::Value, String>>,
    paths: Arc<Layout>,
    policy: Arc<RestartPolicy>,
    client: reqwest::Client,
    events: EventLog,
    state: SwarmState,
    slots: BTreeMap<String, Slot>,
    /// Display order: agents.toml order, then agents still stopping after removal.
    order: Vec<String>,
    generation: u64,
    notices_tx: mpsc::UnboundedSender<Notice>,
    notices_rx: mpsc::UnboundedReceiver<Notice>,
    shutdown_tx: watch::Sender<bool>,
    announced: bool,
    stopping: bool,
    /// The configuration in force (the last valid agents.toml).
    config: AgentsFile,
    /// The last agents.toml text looked at, valid or not.
    last_text: String,
}

impl Supervisor {
    fn start_slot(&mut self, entry: AgentEntry) {
        self.generation += 1;
        let (stop_tx, stop_rx) = watch::channel(false);
        let record = AgentRecord {
            name: entry.name.clone(),
            role: entry.role.clone(),
            url: entry.url.clone(),
            pid: None,
            state: AgentState::Starting,
            restarts: 0,
            skills: entry.skills.clone(),
            required: entry.is_required(),
            remote: entry.url.is_some(),
            reason: None,
        };
        Runner {
            entry: entry.clone(),
            generation: self.generation,
            paths: self.paths.clone(),
            policy: self.policy.clone(),
            client: self.client.clone(),
            notices: self.notices_tx.clone(),
            stop: stop_rx,
        }
        .spawn();
        let slot = Slot {
            entry,
            generation: self.generation,
            stop: stop_tx,
            record,
            running: true,
            next: None,
            removing: false,
        };
        self.slots.insert(slot.entry.name.clone(), slot);
    }

    /// Ask a slot's runner to stop; returns whether a `Stopped` notice will follow.
    fn request_stop(slot: &mut Slot) -> bool {
        if !slot.running {
            return false;
        }
        let _ = slot.stop.send(true);
        slot.record.state = AgentState::Stopping;
        true
    }

    fn apply(&mut self, notice: Notice) -> Result<(), SupervisorError> {
        let Some(slot) = self.slots.get_mut(&notice.name) else { return Ok(()) };
        if slot.generation != notice.generation {
            return Ok(());
        }
        let name = notice.name;
        let rec = &mut slot.record;
        let mut failure = None;
        let line;
        match notice.update {
            Update::Spawned { pid } => {
                rec.pid = Some(pid);
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Starting;
                }
                line = format!("{name}: started (pid {pid})");
            }
            Update::Ready { url, skills } => {
                rec.url = Some(url.clone());
                rec.skills = skills;
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Ready;
                }
                line = match rec.pid {
                    Some(pid) => format!("{name}: ready at {url} (pid {pid})"),
                    None => format!("{name}: ready at {url} (remote)"),
                };
                let kind = EventKind::AgentStarted { name: name.clone(), role: rec.role.clone(), url, pid: rec.pid };
                self.events.emit(Some(&name), kind);
            }
            Update::Exited { status } => {
                line = format!("{name}: exited ({status})");
                rec.pid = None;
                rec.url = slot.entry.url.clone();
                self.events.emit(Some(&name), EventKind::AgentExited { name: name.clone(), status });
            }
            Update::Restarting { restarts, backoff } => {
                rec.restarts = restarts;
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Restarting;
                }
                line = format!("{name}: restarting in {} (restart {restarts})", ui::seconds(backoff));
                let backoff_ms = backoff.as_millis().try_into().unwrap_or(u64::MAX);
                self.events.emit(Some(&name), EventKind::AgentRestarted { name: name.clone(), restarts, backoff_ms });
            }
            Update::GaveUp { reason } => {
                slot.running = false;
                rec.state = AgentState::GaveUp;
                rec.pid = None;
                rec.reason = Some(reason.clone());
                line = format!("{name}: gave up: {reason}");
                self.events.emit(Some(&name), EventKind::AgentGaveUp { name: name.clone(), reason: reason.clone() });
                if rec.required && !self.stopping && slot.next.is_none() && !slot.removing {
                    failure = Some(SupervisorError::RequiredGaveUp {
                        name: name.clone(),
                        role: rec.role.clone(),
                        reason,
                        log: self.paths.log_file(&name),
                    });
                }
                self.after_runner_ended(&name);
            }
            Update::Stopped => {
                slot.running = false;
                rec.state = AgentState::Stopped;
                rec.pid = None;
                line = format!("{name}: stopped");
                self.events.emit(Some(&name), EventKind::AgentStopped { name: name.clone() });
                self.after_runner_ended(&name);
            }
        }
        // State first, then the line: whoever reads the line and then the state file sees the change.
        self.write_state();
        ui::say(&line);
        if let Some(e) = failure {
            return Err(e);
        }
        self.check_ready();
        Ok(())
    }

    /// A runner ended: start the changed entry waiting for it, or drop a removed slot.
    fn after_runner_ended(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        if self.stopping {
            return;
        }
        if let Some(next) = slot.next.take() {
            self.start_slot(next);
        } else if slot.removing {
            self.slots.remove(name);
            self.order.retain(|n| n != name);
        }
    }

    /// The first time every agent is settled: print the table and call the hook.
    fn check_ready(&mut self) {
        if self.announced || self.stopping {
            return;
        }
        let settled = self
            .slots
            .values()
            .all(|s| s.next.is_none() && matches!(s.record.state, AgentState::Ready | AgentState::GaveUp));
        if !settled {
            return;
        }
        self.announced = true;
        self.state.state = SwarmPhase::Running;
        self.write_state();
        let agents = self.state.agents.clone();
        let rows: Vec<Vec<String>> = agents
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.role.clone(),
                    a.state.as_str().to_string(),
                    a.url.clone().unwrap_or_default(),
                    a.pid
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| if a.remote { "remote".into() } else { String::new() }),
                    a.skills.join(","),
                ]
            })
            .collect();
        ui::say(ui::table(&["NAME", "ROLE", "STATE", "URL", "PID", "SKILLS"], &rows).trim_end());
        ui::say(&format!(
            "ratchet: swarm up ({} agents); state in {}; Ctrl-C stops it",
            agents.len(),
            self.paths.display(&self.paths.state_file())
        ));
        if let (Some(url), Ok(token)) = (
            agents
                .iter()
                .find(|a| a.role == "coordinator" && a.state == AgentState::Ready)
                .and_then(|a| a.url.as_ref()),
            kit::auth::read_token(&self.paths.swarm_token()),
        ) {
            ui::say(&format!("ratchet: web pages at {url}ui?token={token}"));
        }
        on_swarm_ready(
            &ReadySwarm {
                paths: (*self.paths).clone(),
                run_id: self.state.run_id.clone(),
                agents,
                shutdown: self.shutdown_tx.subscribe(),
            },
            self.loop_request.clone(),
            self.loop_tx.clone(),
        );
    }

    /// agents.toml may have changed: re-parse it and apply the difference, or refuse it.
    fn reload(&mut self) {
        if self.stopping {
            return;
        }
        let path = self.paths.agents_toml();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.last_text.clear();
                let error = format!("{}: cannot read: {e}; fix: restore the file", path.display());
                return self.refuse(error);
            }
        };
        if text == self.last_text {
            return;
        }
        self.last_text = text.clone();
        let new = match AgentsFile::parse(&text, &path.display().to_string()) {
            Ok(c) => c,
            Err(e) => return self.refuse(e.to_string()),
        };
        let old = std::mem::replace(&mut self.config, new.clone());
        let added: Vec<AgentEntry> = new.agents.iter().filter(|a| old.get(&a.name).is_none()).cloned().collect();
        let removed: Vec<String> =
            old.agents.iter().filter(|a| new.get(&a.name).is_none()).map(|a| a.name.clone()).collect();
        let changed: Vec<AgentEntry> =
            new.agents.iter().filter(|a| old.get(&a.name).is_some_and(|o| o != *a)).cloned().collect();

        for name in &removed {
            if let Some(slot) = self.slots.get_mut(name) {
                slot.removing = true;
                slot.next = None;
                if !Self::request_stop(slot) {
                    self.slots.remove(name);
                }
            }
        }
        for entry in changed.iter().chain(&added) {
            match self.slots.get_mut(&entry.name) {
                // Still stopping (removed a moment ago, or changed twice): start when it has stopped.
                Some(slot) if slot.running => {
                    slot.removing = false;
                    slot.next = Some(entry.clone());
                    Self::request_stop(slot);
                }
                _ => self.start_slot(entry.clone()),
            }
        }
        let mut order: Vec<String> = new.agents.iter().map(|a| a.name.clone()).collect();
        order.extend(self.order.iter().filter(|n| new.get(n).is_none() && self.slots.contains_key(*n)).cloned());
        self.order = order;

        let names = |v: &[AgentEntry]| v.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        let (added, changed) = (names(&added), names(&changed));
        let line = format!(
            "agents.toml: reloaded (added: {}; removed: {}; changed: {})",
            ui::list(&added),
            ui::list(&removed),
            ui::list(&changed)
        );
        self.events.emit(None, EventKind::ConfigReloaded { added, removed, changed });
        self.write_state();
        ui::say(&line);
    }

    fn refuse(&mut self, error: String) {
        eprintln!("agents.toml: refused: {error}");
        ui::say("agents.toml: edit refused, the swarm goes on unchanged");
        self.events.emit(None, EventKind::ConfigRefused { error });
    }

    /// Stop every agent (SIGTERM to each process group, SIGKILL after the grace period) and mark
    /// the state file stopped.
    async fn shutdown(&mut self) {
        self.stopping = true;
        let _ = self.shutdown_tx.send(true);
        self.state.state = SwarmPhase::Stopping;
        for slot in self.slots.values_mut() {
            slot.next = None;
            Self::request_stop(slot);
        }
        self.write_state();
        // Runners SIGKILL their group after `stop_grace`; this bound only guards against a stuck runner.
        let deadline = tokio::time::Instant::now() + self.policy.stop_grace + Duration::from_millis(1500);
        while self.slots.values().any(|s| s.running) {
            match tokio::time::timeout_at(deadline, self.notices_rx.recv()).await {
                Ok(Some(notice)) => {
                    let _ = self.apply(notice);
                }
                Ok(None) | Err(_) => break,
            }
        }
        for slot in self.slots.values().filter(|s| s.running) {
            if let Some(pid) = slot.record.pid {
                eprintln!("warning: {}: did not stop in time, killing its process group {pid}", slot.entry.name);
                signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.slots.clear();
        self.state.state = SwarmPhase::Stopped;
        self.state.stopped_at = Some(protocol::a2a::timestamp(std::time::SystemTime::now()));
        self.write_state();
        ui::say("ratchet: swarm stopped");
    }

    fn write_state(&mut self) {
        self.state.agents = self.order.iter().filter_map(|n| self.slots.get(n)).map(|s| s.record.clone()).collect();
        if let Err(e) = write_state(&self.paths.state_file(), &self.state) {
            eprintln!("warning: {e}");
        }
    }
}
