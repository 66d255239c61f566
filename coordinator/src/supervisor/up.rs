//! `ratchet up`: the supervisor's event loop.
//!
//! One task per agent ([`super::runner`]) does the process work and reports [`Notice`]s; this loop
//! owns everything else: the state file, the events, the terminal lines, live config reloads and
//! shutdown. Because only this loop changes state, the state file is rewritten from one place.
//! Starting the swarm and the loop are here; what the members' notices change is in
//! [`members`], live edits of agents.toml in [`reload`].

mod members;
mod reload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::config::{AgentEntry, AgentsFile};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::eventlog::EventLog;
use super::runner::{Notice, RestartPolicy};
use super::state::{AgentRecord, STATE_VERSION, SwarmPhase, SwarmState, read_state};
use super::{SupervisorError, ui};
use kit::layout::Layout;
use reload::EditChecked;

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
    pub loop_summary: Option<crate::engine::Summary>,
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
    done: mpsc::UnboundedSender<Result<crate::engine::Summary, String>>,
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

struct Supervisor {
    loop_request: Option<LoopRequest>,
    loop_tx: mpsc::UnboundedSender<Result<crate::engine::Summary, String>>,
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

impl Supervisor {
    /// The loop stopped while the swarm keeps serving (`ratchet up` without `--once`): say why it
    /// stopped, what waits for a person, and how to stop the swarm.
    fn loop_stopped_hint(&self, summary: &crate::engine::Summary) {
        let why = summary.stop_reason.as_deref().unwrap_or("done");
        let detail = summary.stop_detail.as_deref().unwrap_or("");
        ui::say(&format!("ratchet: the loop stopped: {why} ({detail})"));
        ui::say(&crate::approvals::waiting_line(self.paths.home()));
        ui::say(
            "ratchet: the swarm keeps serving (the web pages, `ratchet approve|reject <branch>`, `ratchet models compare`); \
             Ctrl-C stops it; `ratchet up --once` stops the swarm when the loop stops; `ratchet up --fresh` starts a new run",
        );
    }
}
