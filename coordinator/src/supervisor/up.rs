//! `ratchet up`: the supervisor's event loop.
//!
//! One task per agent ([`super::runner`]) does the process work and reports [`Notice`]s; this loop
//! owns everything else: the state file, the events, the terminal lines, live config reloads and
//! shutdown. Because only this loop changes state, the state file is rewritten from one place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::config::{AgentEntry, AgentsFile, ConfigError};
use protocol::events::EventKind;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::child::{resolve_program, signal_group};
use super::eventlog::EventLog;
use super::runner::{Notice, RestartPolicy, Runner, Update};
use super::state::{AgentRecord, AgentState, STATE_VERSION, SwarmPhase, SwarmState, read_state, write_state};
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
    /// The coordinator the loop is followed on, as it comes and goes (restarts give it a new
    /// address): the progress stream reconnects through this.
    pub coordinator: watch::Receiver<CoordinatorView>,
}

/// Where the followed coordinator serves now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorView {
    /// Its URL while it is ready; `None` while it is down or restarting.
    pub url: Option<String>,
    /// Bumped every time it becomes ready: a new value is a new process.
    pub incarnation: u64,
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
    if swarm.coordinator.borrow().url.is_none() {
        ui::say("ratchet: no coordinator is ready; the loop does not run (add one to agents.toml)");
        let _ = done.send(Err("no coordinator is ready".into()));
        return;
    }
    let token = kit::auth::read_token(&swarm.paths.swarm_token()).ok();
    let mut shutdown = swarm.shutdown.clone();
    let coordinator = swarm.coordinator.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = super::progress::follow_loop(coordinator, token, &request) => { let _ = done.send(r); }
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

/// How long a live edit's new `url` members get to answer their card before the edit is refused.
const EDIT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
        let recorded = super::state::read_state(&paths.state_file()).ok().flatten().map(|s| s.supervisor_pid);
        // A supervisor that was just killed holds the lock until its last thread has exited:
        // give a dying one (gone, or a zombie) a moment rather than refusing.
        let dying = recorded
            .is_some_and(|pid| i32::try_from(pid).ok().and_then(super::identity::stat).is_none_or(|st| st.is_zombie()));
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut locked = false;
        while dying && !locked && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            locked = lock.try_lock().is_ok();
        }
        if !locked {
            let pid = recorded.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
            return Err(SupervisorError::AlreadyRunning { home: paths.home().to_path_buf(), pid });
        }
    }
    // We hold the lock: whatever state.json says was running has no supervisor any more.
    let previous = match read_state(&paths.state_file()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: {e}; leftovers of an earlier swarm (if any) are not looked for");
            None
        }
    };
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
    // Orphans of the agents' commands are re-parented to us (the subreaper): reap them as they end.
    let mut sigchld = signal(SignalKind::child()).map_err(|source| SupervisorError::Signal { source })?;
    if let Some(previous) = &previous {
        super::leftovers::stop_leftovers(previous, &events, opts.policy.stop_grace).await;
    }

    let (notices_tx, notices_rx) = mpsc::unbounded_channel();
    let (shutdown_tx, _) = watch::channel(false);
    let (loop_tx, mut loop_rx) = mpsc::unbounded_channel();
    let (checked_tx, mut checked_rx) = mpsc::unbounded_channel();
    let mut summary = None;
    let mut sup = Supervisor {
        loop_request: opts.run_loop.clone(),
        loop_tx,
        swarm: Arc::from(run_id.as_str()),
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
        coordinator: watch::channel(CoordinatorView::default()).0,
        followed: None,
        announced: false,
        stopping: false,
        config: AgentsFile { agents: Vec::new() },
        last_text: text,
        edits: 0,
        checked_tx,
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
        sup.start_slot(entry.clone(), None);
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
            Some(()) = sigchld.recv() => {
                super::child::reap_orphans();
            }
            Some(checked) = checked_rx.recv() => sup.edit_checked(checked),
            Some(result) = loop_rx.recv() => {
                let exit = sup.loop_request.as_ref().is_some_and(|r| r.exit_when_done);
                match result {
                    Ok(s) => {
                        if !exit {
                            sup.loop_stopped_hint(&s);
                        }
                        summary = Some(s)
                    }
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

/// One runner of a slot (the process it keeps running, or the remote agent it probes).
struct Member {
    generation: u64,
    stop: watch::Sender<bool>,
    record: AgentRecord,
    /// Its runner task is still going (it ends after `Stopped` or `GaveUp`).
    running: bool,
}

/// One agents.toml entry and its runner(s).
struct Slot {
    entry: AgentEntry,
    current: Member,
    /// The member `current` replaces (a changed entry), serving until `current` is ready: start
    /// before stop, so a role is never left without an agent by a valid edit.
    retiring: Option<(AgentEntry, Member)>,
    /// The entry that was in force before a live edit, while `current` (started for that edit)
    /// has not been ready yet: if it gives up, the slot goes back to this one.
    fallback: Option<AgentEntry>,
    /// Started by a live edit and not ready yet: giving up then does not stop the swarm.
    trial: bool,
    /// A changed entry waiting for the old process to stop (roles that cannot run twice).
    next: Option<AgentEntry>,
    /// Removed from agents.toml: drop the slot once stopped.
    removing: bool,
}

/// The outcome of checking a live edit that needed card probes.
struct EditChecked {
    edit: u64,
    text: String,
    config: AgentsFile,
    result: Result<(), ConfigError>,
}

struct Supervisor {
    loop_request: Option<LoopRequest>,
    loop_tx: mpsc::UnboundedSender<Result<serde_json::Value, String>>,
    /// This swarm instance's id (= `state.run_id`), every member's `RATCHET_SWARM_ID`.
    swarm: Arc<str>,
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
    /// Where the followed coordinator serves (see [`ReadySwarm::coordinator`]).
    coordinator: watch::Sender<CoordinatorView>,
    /// The name of the coordinator the loop is followed on, once chosen.
    followed: Option<String>,
    announced: bool,
    stopping: bool,
    /// The configuration in force (the last valid agents.toml).
    config: AgentsFile,
    /// The last agents.toml text looked at, valid or not.
    last_text: String,
    /// Counts edits; an edit whose card probes finish after a newer edit is dropped.
    edits: u64,
    checked_tx: mpsc::UnboundedSender<EditChecked>,
}

/// Coordinators run the loop and judge leases: never two of one name at once.
fn may_overlap(entry: &AgentEntry) -> bool {
    entry.role != "coordinator"
}

impl Supervisor {
    fn new_member(&mut self, entry: &AgentEntry) -> Member {
        self.generation += 1;
        let (stop_tx, stop_rx) = watch::channel(false);
        let record = AgentRecord {
            name: entry.name.clone(),
            role: entry.role.clone(),
            url: entry.url.clone(),
            pid: None,
            identity: None,
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
            swarm: self.swarm.clone(),
        }
        .spawn();
        Member { generation: self.generation, stop: stop_tx, record, running: true }
    }

    /// Start `entry` in a new slot. `live`: started by a live edit (a trial, see [`Slot::trial`]),
    /// with the entry it replaces, if any.
    fn start_slot(&mut self, entry: AgentEntry, live: Option<Option<AgentEntry>>) {
        let current = self.new_member(&entry);
        let trial = live.is_some();
        let fallback = live.flatten();
        let slot = Slot { entry, current, retiring: None, fallback, trial, next: None, removing: false };
        self.slots.insert(slot.entry.name.clone(), slot);
    }

    /// Ask a member's runner to stop; returns whether a `Stopped` notice will follow.
    fn request_stop(member: &mut Member) -> bool {
        if !member.running {
            return false;
        }
        let _ = member.stop.send(true);
        member.record.state = AgentState::Stopping;
        true
    }

    fn apply(&mut self, notice: Notice) -> Result<(), SupervisorError> {
        let Some(slot) = self.slots.get_mut(&notice.name) else { return Ok(()) };
        if slot.current.generation != notice.generation {
            if slot.retiring.as_ref().is_some_and(|(_, m)| m.generation == notice.generation) {
                self.apply_retiring(notice);
            }
            return Ok(());
        }
        let name = notice.name;
        let rec = &mut slot.current.record;
        let mut failure = None;
        let mut line;
        let mut coordinator_url = None;
        let mut roll_back = None;
        match notice.update {
            Update::Spawned { pid, identity } => {
                rec.pid = Some(pid);
                rec.identity = identity;
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Starting;
                }
                line = format!("{name}: started (pid {pid})");
            }
            Update::Ready { url, skills, identity } => {
                rec.url = Some(url.clone());
                rec.skills = skills;
                if identity.is_some() {
                    rec.identity = identity;
                }
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Ready;
                    coordinator_url = Some(Some(url.clone()));
                }
                line = match rec.pid {
                    Some(pid) => format!("{name}: ready at {url} (pid {pid})"),
                    None => format!("{name}: ready at {url} (remote)"),
                };
                let kind = EventKind::AgentStarted { name: name.clone(), role: rec.role.clone(), url, pid: rec.pid };
                self.events.emit(Some(&name), kind);
                slot.trial = false;
                slot.fallback = None;
                // Start before stop: the replaced member goes now that its successor serves.
                if let Some((_, old)) = &mut slot.retiring {
                    let old_pid = old.record.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                    if Self::request_stop(old) {
                        line.push_str(&format!("; stopping the member it replaces{old_pid}"));
                    }
                }
            }
            Update::Exited { status } => {
                line = format!("{name}: exited ({status})");
                rec.pid = None;
                rec.identity = None;
                rec.url = slot.entry.url.clone();
                coordinator_url = Some(None);
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
                slot.current.running = false;
                rec.state = AgentState::GaveUp;
                rec.pid = None;
                rec.identity = None;
                rec.reason = Some(reason.clone());
                coordinator_url = Some(None);
                line = format!("{name}: gave up: {reason}");
                self.events.emit(Some(&name), EventKind::AgentGaveUp { name: name.clone(), reason: reason.clone() });
                if rec.required && !self.stopping && slot.next.is_none() && !slot.removing && !slot.trial {
                    failure = Some(SupervisorError::RequiredGaveUp {
                        name: name.clone(),
                        role: rec.role.clone(),
                        reason: reason.clone(),
                        log: self.paths.log_file(&name),
                    });
                }
                if slot.trial && !self.stopping {
                    roll_back = Some(reason);
                } else {
                    self.after_runner_ended(&name);
                }
            }
            Update::Stopped => {
                slot.current.running = false;
                rec.state = AgentState::Stopped;
                rec.pid = None;
                rec.identity = None;
                coordinator_url = Some(None);
                line = format!("{name}: stopped");
                self.events.emit(Some(&name), EventKind::AgentStopped { name: name.clone() });
                self.after_runner_ended(&name);
            }
        }
        if let Some(url) = coordinator_url {
            self.publish_coordinator(&name, url);
        }
        // State first, then the line: whoever reads the line and then the state file sees the change.
        self.write_state();
        ui::say(&line);
        if let Some(reason) = roll_back {
            self.roll_back(&name, &reason);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        self.check_ready();
        Ok(())
    }

    /// A notice from a member being replaced: it only ever ends.
    fn apply_retiring(&mut self, notice: Notice) {
        let name = notice.name;
        let Some(slot) = self.slots.get_mut(&name) else { return };
        let Some((_, old)) = &mut slot.retiring else { return };
        let line = match notice.update {
            Update::Stopped | Update::GaveUp { .. } => {
                let pid = old.record.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                slot.retiring = None;
                self.events.emit(Some(&name), EventKind::AgentStopped { name: name.clone() });
                format!("{name}: stopped the replaced member{pid}")
            }
            Update::Exited { status } => {
                old.record.pid = None;
                old.record.identity = None;
                format!("{name}: the replaced member exited ({status})")
            }
            Update::Spawned { pid, identity } => {
                old.record.pid = Some(pid);
                old.record.identity = identity;
                format!("{name}: restarted the replaced member (pid {pid})")
            }
            Update::Ready { .. } | Update::Restarting { .. } => return,
        };
        let ended = slot.retiring.is_none() && !slot.current.running;
        self.write_state();
        ui::say(&line);
        if ended {
            // The slot was waiting for this one too (removed, or changed again meanwhile).
            self.after_runner_ended(&name);
            self.write_state();
        }
        self.check_ready();
    }

    /// A member started by a live edit gave up before it was ever ready: the edit did not work
    /// out for this agent. Go back to the entry it replaced (its member may still be serving),
    /// or, for an added agent, leave it given up; either way the swarm goes on.
    fn roll_back(&mut self, name: &str, reason: &str) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let fallback = slot.fallback.take();
        let error = format!(
            "{}: agent {name:?}: the edited entry did not come up ({reason}); {}; fix: correct it in agents.toml",
            self.paths.agents_toml().display(),
            if fallback.is_some() { "the previous entry is back in force" } else { "the swarm goes on without it" }
        );
        if let Some((entry, member)) = slot.retiring.take() {
            // Still serving: it simply stays.
            slot.entry = entry;
            slot.current = member;
            slot.trial = false;
        } else if let Some(entry) = fallback {
            let current = self.new_member(&entry);
            let slot = self.slots.get_mut(name).expect("looked up above");
            slot.entry = entry;
            slot.current = current;
            slot.trial = false;
        }
        let in_force = self.slots.get(name).map(|s| s.entry.clone());
        if let (Some(entry), Some(pos)) = (in_force, self.config.agents.iter().position(|a| a.name == name)) {
            self.config.agents[pos] = entry;
        }
        self.events.emit(None, EventKind::ConfigRefused { error: error.clone() });
        self.write_state();
        eprintln!("{error}");
        ui::say(&format!("agents.toml: {name}: the edited entry did not come up; see the reason above"));
    }

    /// Tell the loop follower where the coordinator it follows serves now.
    fn publish_coordinator(&mut self, name: &str, url: Option<String>) {
        if self.followed.as_deref() != Some(name) {
            return;
        }
        self.coordinator.send_modify(|v| {
            if url.is_some() {
                v.incarnation += 1;
            }
            v.url = url;
        });
    }

    /// A runner ended: start the changed entry waiting for it, or drop a removed slot.
    fn after_runner_ended(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        if self.stopping {
            return;
        }
        if slot.current.running || slot.retiring.is_some() {
            return;
        }
        if let Some(next) = slot.next.take() {
            let fallback = Some(slot.entry.clone());
            self.start_slot(next, Some(fallback));
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
        let settled = self.slots.values().all(|s| {
            s.next.is_none()
                && s.retiring.is_none()
                && matches!(s.current.record.state, AgentState::Ready | AgentState::GaveUp)
        });
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
        // The loop is followed on the first ready coordinator.
        if let Some(c) = agents.iter().find(|a| a.role == "coordinator" && a.state == AgentState::Ready) {
            self.followed = Some(c.name.clone());
            self.publish_coordinator(&c.name.clone(), c.url.clone());
        }
        on_swarm_ready(
            &ReadySwarm {
                paths: (*self.paths).clone(),
                run_id: self.state.run_id.clone(),
                agents,
                shutdown: self.shutdown_tx.subscribe(),
                coordinator: self.coordinator.subscribe(),
            },
            self.loop_request.clone(),
            self.loop_tx.clone(),
        );
    }

    /// agents.toml may have changed: re-parse and check it; apply the difference, or refuse it.
    /// Nothing running is touched before the edit passed every check ([`Self::check_edit`]).
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
        self.edits += 1;
        let new = match AgentsFile::parse(&text, &path.display().to_string()) {
            Ok(c) => c,
            Err(e) => return self.refuse(e.to_string()),
        };
        let probes = match self.check_edit(&new, &text) {
            Ok(p) => p,
            Err(e) => return self.refuse(e.to_string()),
        };
        if probes.is_empty() {
            return self.apply_config(new);
        }
        // Cards are probed off the event loop; the answer comes back as an `EditChecked`.
        let (edit, client, tx, file) =
            (self.edits, self.client.clone(), self.checked_tx.clone(), path.display().to_string());
        ui::say(&format!(
            "agents.toml: checking the card of {} before applying the edit",
            ui::list(&probes_names(&probes))
        ));
        tokio::spawn(async move {
            let mut result = Ok(());
            for (name, url, line) in probes {
                let deadline = tokio::time::Instant::now() + EDIT_PROBE_TIMEOUT;
                if let Err(e) = super::runner::poll_card(&client, &url, deadline).await {
                    result = Err(ConfigError {
                        file: file.clone(),
                        line,
                        field: "url".into(),
                        problem: format!("agent {name:?}: no Agent Card within {}s: {e}", EDIT_PROBE_TIMEOUT.as_secs()),
                        fix: format!("start the agent at {url} first, or correct its url"),
                    });
                    break;
                }
            }
            let _ = tx.send(EditChecked { edit, text, config: new, result });
        });
    }

    /// The card probes of an edit are done: apply it unless a newer edit came meanwhile.
    fn edit_checked(&mut self, checked: EditChecked) {
        if self.stopping || checked.edit != self.edits || checked.text != self.last_text {
            return;
        }
        match checked.result {
            Ok(()) => self.apply_config(checked.config),
            Err(e) => self.refuse(e.to_string()),
        }
    }

    /// What must hold before an edit may touch a running member: every added or changed
    /// `command` resolves to an executable file, every role a required member covers now keeps
    /// an agent, and (checked after this, off the event loop) every added or changed `url`
    /// answers its card. Returns those card probes: (name, url, line).
    fn check_edit(&self, new: &AgentsFile, text: &str) -> Result<Vec<(String, String, usize)>, ConfigError> {
        let file = self.paths.agents_toml().display().to_string();
        let mut probes = Vec::new();
        for entry in &new.agents {
            if self.config.get(&entry.name) == Some(entry) {
                continue;
            }
            let line = new.line_of(text, &entry.name);
            if let Some(argv) = &entry.command
                && let Err(e) = resolve_program(&entry.name, &argv[0], self.paths.home())
            {
                let fix = if argv[0].contains('/') {
                    "correct the path (it must name an executable file)".to_string()
                } else {
                    "correct the program name, build it (`cargo build --workspace --bins`), or give its absolute path"
                        .to_string()
                };
                let problem = e.to_string();
                let problem = problem.split("; fix:").next().unwrap_or(&problem).trim_start_matches("agents.toml: ");
                return Err(ConfigError { file, line, field: "command".into(), problem: problem.to_string(), fix });
            }
            if let Some(url) = &entry.url {
                probes.push((entry.name.clone(), url.clone(), line));
            }
        }
        for old in self.config.agents.iter().filter(|a| a.is_required()) {
            if !new.agents.iter().any(|a| a.role == old.role) {
                return Err(ConfigError {
                    file,
                    line: 1,
                    field: "role".into(),
                    problem: format!(
                        "the edit leaves role {:?} without an agent ({:?}, a required member, is gone)",
                        old.role, old.name
                    ),
                    fix: format!(
                        "keep an [[agent]] with role = {:?}, or first set required = false on {:?}, then remove it",
                        old.role, old.name
                    ),
                });
            }
        }
        Ok(probes)
    }

    /// Apply a checked configuration: start added members, stop removed ones, replace changed
    /// ones (the new one first, where the role allows two at once).
    fn apply_config(&mut self, new: AgentsFile) {
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
                if let Some((_, old)) = &mut slot.retiring {
                    Self::request_stop(old);
                }
                if !Self::request_stop(&mut slot.current) && slot.retiring.is_none() {
                    self.slots.remove(name);
                }
            }
        }
        for entry in changed.iter().chain(&added) {
            let overlap = may_overlap(entry);
            let Some(slot) = self.slots.get_mut(&entry.name) else {
                let fallback = old.get(&entry.name).cloned();
                self.start_slot(entry.clone(), Some(fallback));
                continue;
            };
            let serving = slot.current.running && slot.current.record.state == AgentState::Ready;
            if overlap && serving && !slot.removing && slot.retiring.is_none() && slot.next.is_none() {
                // Start before stop: the member in force keeps serving until the new one is ready.
                let member = self.new_member(entry);
                let slot = self.slots.get_mut(&entry.name).expect("looked up above");
                let previous = std::mem::replace(&mut slot.current, member);
                let previous_entry = std::mem::replace(&mut slot.entry, entry.clone());
                slot.fallback = Some(previous_entry.clone());
                slot.retiring = Some((previous_entry, previous));
                slot.trial = true;
            } else if slot.current.running || slot.retiring.is_some() {
                // Still stopping, starting, or a role that never runs twice: start when it has stopped.
                slot.removing = false;
                slot.next = Some(entry.clone());
                Self::request_stop(&mut slot.current);
                if let Some((_, old)) = &mut slot.retiring {
                    Self::request_stop(old);
                }
            } else {
                let fallback = Some(slot.entry.clone());
                self.start_slot(entry.clone(), Some(fallback));
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

    /// The loop stopped while the swarm keeps serving (`ratchet up` without `--once`): say why it
    /// stopped, what waits for a person, and how to stop the swarm.
    fn loop_stopped_hint(&self, summary: &serde_json::Value) {
        let why = summary["stop_reason"].as_str().unwrap_or("done");
        let detail = summary["stop_detail"].as_str().unwrap_or("");
        ui::say(&format!("ratchet: the loop stopped: {why} ({detail})"));
        ui::say(&crate::approvals::waiting_line(self.paths.home()));
        ui::say(
            "ratchet: the swarm keeps serving (the web pages, `ratchet approve|reject <branch>`, `ratchet models compare`); \
             Ctrl-C stops it; `ratchet up --once` stops the swarm when the loop stops; `ratchet up --fresh` starts a new run",
        );
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
            Self::request_stop(&mut slot.current);
            if let Some((_, old)) = &mut slot.retiring {
                Self::request_stop(old);
            }
        }
        self.write_state();
        // Runners SIGKILL their group after `stop_grace`; this bound only guards against a stuck runner.
        let deadline = tokio::time::Instant::now() + self.policy.stop_grace + Duration::from_millis(1500);
        let running = |slots: &BTreeMap<String, Slot>| {
            slots.values().any(|s| s.current.running || s.retiring.as_ref().is_some_and(|(_, m)| m.running))
        };
        while running(&self.slots) {
            match tokio::time::timeout_at(deadline, self.notices_rx.recv()).await {
                Ok(Some(notice)) => {
                    let _ = self.apply(notice);
                }
                Ok(None) | Err(_) => break,
            }
        }
        for slot in self.slots.values() {
            let members = std::iter::once(&slot.current).chain(slot.retiring.as_ref().map(|(_, m)| m));
            for m in members.filter(|m| m.running) {
                if let Some(pid) = m.record.pid {
                    eprintln!("warning: {}: did not stop in time, killing its process group {pid}", slot.entry.name);
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        self.slots.clear();
        self.state.state = SwarmPhase::Stopped;
        self.state.stopped_at = Some(protocol::a2a::timestamp(std::time::SystemTime::now()));
        self.write_state();
        ui::say("ratchet: swarm stopped");
    }

    fn write_state(&mut self) {
        self.state.agents = self
            .order
            .iter()
            .filter_map(|n| self.slots.get(n))
            .flat_map(|s| std::iter::once(&s.current).chain(s.retiring.as_ref().map(|(_, m)| m)))
            .map(|m| m.record.clone())
            .collect();
        if let Err(e) = write_state(&self.paths.state_file(), &self.state) {
            eprintln!("warning: {e}");
        }
    }
}

fn probes_names(probes: &[(String, String, usize)]) -> Vec<String> {
    probes.iter().map(|(n, _, _)| n.clone()).collect()
}
