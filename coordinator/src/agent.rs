//! The coordinator as an A2A agent: the `loop` skill (start or attach to the improvement loop,
//! streaming its progress), and the background reaper that expires stale leases.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kit::agent::AgentEnv;
use kit::server::{AgentSpec, Skill, TaskEnd};
use kit::substrate::{self, Home};
use protocol::Part;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::engine::{LoopCtx, Summary, read_state, run_loop};

/// The running loop, if any: progress lines and the final outcome.
#[derive(Clone)]
struct Running {
    /// The run it is (loop.json's `run_id`).
    run_id: String,
    lines: broadcast::Sender<String>,
    done: watch::Receiver<Option<Result<Summary, String>>>,
}

struct Hub {
    home: PathBuf,
    me: String,
    running: Mutex<Option<Running>>,
    /// The loop in `running` was resumed at startup and nobody has attached to it yet: the
    /// first request that is not `fresh` gets that run (even when it already finished), not a
    /// new one.
    resumed_unclaimed: Mutex<bool>,
    /// Every progress line of every run, for the web pages that listen.
    feed: crate::web::Feed,
}

impl Hub {
    /// Start the loop (or return the one already running).
    fn start(self: &Arc<Self>, max_cycles: u32, fresh: bool) -> Running {
        let mut slot = self.running.lock().expect("hub lock");
        let resumed = std::mem::take(&mut *self.resumed_unclaimed.lock().expect("hub lock"));
        if let Some(r) = slot.as_ref()
            && (r.done.borrow().is_none() || (resumed && !fresh))
        {
            return r.clone();
        }
        // The run this will be: the unfinished one in loop.json (resumed), else a new one.
        let run_id = match read_state(&self.home) {
            Ok(Some(st)) if st.stopped.is_none() && !fresh => st.run_id,
            _ => kit::server::new_id(),
        };
        let (lines, _) = broadcast::channel(1024);
        let (done_tx, done) = watch::channel(None);
        let r = Running { run_id: run_id.clone(), lines: lines.clone(), done };
        *slot = Some(r.clone());
        let feed = self.feed.clone();
        let ctx = LoopCtx {
            home: self.home.clone(),
            run_id,
            me: self.me.clone(),
            progress: Box::new(move |l: &str| {
                tracing::info!("{l}");
                let _ = lines.send(l.to_string());
                let _ = feed.send(l.to_string());
            }),
            max_cycles,
            fresh,
        };
        tokio::spawn(async move {
            let out = run_loop(ctx).await.map_err(|e| format!("{e:#}"));
            if let Err(e) = &out {
                tracing::error!("loop failed: {e}");
            }
            let _ = done_tx.send(Some(out));
        });
        r
    }
}

/// What attaching to a run found.
enum Attached {
    /// Running (or just finished) in this process: follow it.
    Running(Running),
    /// It finished before this process could say so (the coordinator restarted): its summary.
    Finished(Box<Summary>),
    /// Not this repository's run (any more).
    Unknown(String),
}

impl Hub {
    /// Attach to run `run_id`, the one a client was following before this coordinator restarted:
    /// the loop running here if it is that run, else that run resumed from loop.json, or its
    /// summary when it already stopped. Never starts another run.
    fn attach(self: &Arc<Self>, run_id: &str, max_cycles: u32) -> Attached {
        let current = self.running.lock().expect("hub lock").clone();
        if let Some(r) = current.filter(|r| r.run_id == run_id) {
            *self.resumed_unclaimed.lock().expect("hub lock") = false;
            return Attached::Running(r);
        }
        match read_state(&self.home) {
            Ok(Some(st)) if st.run_id == run_id && st.stopped.is_some() => match crate::govern::load(&self.home) {
                Ok(gov) => Attached::Finished(Box::new(crate::engine::summarize(&self.home, &st, &gov))),
                Err(e) => Attached::Unknown(format!("run {run_id} stopped, but its summary cannot be made: {e:#}")),
            },
            Ok(Some(st)) if st.run_id == run_id => {
                let r = self.start(max_cycles, false);
                if r.run_id == run_id {
                    Attached::Running(r)
                } else {
                    Attached::Unknown(format!("run {run_id} is not the one running here ({})", r.run_id))
                }
            }
            Ok(Some(st)) => Attached::Unknown(format!(
                "run {run_id} is not this repository's run any more (loop.json holds run {}); start a new one with `ratchet up`",
                st.run_id
            )),
            Ok(None) => Attached::Unknown(format!("run {run_id} is unknown: there is no loop state")),
            Err(e) => Attached::Unknown(format!("run {run_id}: cannot read the loop state: {e:#}")),
        }
    }
}

fn stopped_text(summary: &Summary) -> String {
    let why = summary.stop_reason.as_deref().unwrap_or("done");
    format!("loop stopped: {why}")
}

/// `ratchet models compare`: benchmark a candidate model endpoint against the current one on the
/// same proposal tasks (`crate::engine::compare_run`). Refused while the loop runs (both would
/// use the same agents and the same benchmark lock).
fn compare_skill(hub: Arc<Hub>) -> Skill {
    Skill::new(
        "compare",
        "Compare two model endpoints",
        "Benchmark a candidate model endpoint against the current one on the same proposal tasks, through the rails and the evaluator; never promotes. Input: {\"current\": name, \"candidate\": name, \"tasks\": n} (models declared in approved constitution.md). Streams progress; ends with the report (decision PROMOTE, HOLD or REJECT with every figure).",
        move |ctx| {
            let hub = hub.clone();
            async move {
                let mut input = ctx.input();
                input.remove("skill");
                let req: crate::engine::CompareRequest = match serde_json::from_value(Value::Object(input)) {
                    Ok(r) => r,
                    Err(e) => {
                        return TaskEnd::Rejected(format!(
                            "not a compare request: {e}; send {{\"current\": name, \"candidate\": name, \"tasks\": n}}"
                        ));
                    }
                };
                let busy = hub.running.lock().expect("hub lock").as_ref().is_some_and(|r| r.done.borrow().is_none());
                if busy {
                    return TaskEnd::Rejected(
                        "the improvement loop is running on this swarm; compare when it has stopped (`ratchet up --no-loop` starts a swarm without it)"
                            .into(),
                    );
                }
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let loop_ctx = LoopCtx {
                    home: hub.home.clone(),
                    run_id: kit::server::new_id(),
                    me: hub.me.clone(),
                    progress: Box::new(move |l: &str| {
                        tracing::info!("{l}");
                        let _ = tx.send(l.to_string());
                    }),
                    max_cycles: 0,
                    fresh: true,
                };
                let run = crate::engine::compare_run(loop_ctx, req);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        Some(l) = rx.recv() => ctx.progress(&l),
                        out = &mut run => {
                            while let Ok(l) = rx.try_recv() { ctx.progress(&l); }
                            return match out {
                                Ok(report) => TaskEnd::done(format!("compare: {} for {}", report.decision, report.candidate.model), serde_json::json!(report)),
                                Err(e) => TaskEnd::Failed(format!("{e:#}")),
                            };
                        }
                    }
                }
            }
        },
    )
}

/// What the `loop` skill is asked (`ratchet up` asks it): a cycle budget and a fresh start, or
/// to attach to a run.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoopInput {
    #[serde(default)]
    pub max_cycles: u32,
    #[serde(default)]
    pub fresh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
}

/// The `loop` skill's first artefact (`run`): the run it drives.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RunArtifact {
    pub run_id: String,
}

fn loop_skill(hub: Arc<Hub>) -> Skill {
    Skill::new(
        "loop",
        "Run the improvement loop",
        "Run (or resume, or attach to) the improvement loop until it stops: propose, execute, critique, evaluate, promote. Input: {\"max_cycles\": n, \"fresh\": bool} or {\"attach\": run_id} (the run a client followed before this coordinator restarted). Streams progress (first a `run` artefact {\"run_id\": ...}); ends with the run summary.",
        move |ctx| {
            let hub = hub.clone();
            async move {
                let input: LoopInput = match serde_json::from_value(Value::Object(ctx.input())) {
                    Ok(i) => i,
                    Err(e) => {
                        return TaskEnd::Rejected(format!(
                            "loop input: {e}; fix: send {{\"max_cycles\": n, \"fresh\": bool}} or {{\"attach\": run_id}}"
                        ));
                    }
                };
                let (max_cycles, fresh) = (input.max_cycles, input.fresh);
                let running = match input.attach.as_deref() {
                    Some(run_id) => match hub.attach(run_id, max_cycles) {
                        Attached::Running(r) => r,
                        Attached::Finished(summary) => return TaskEnd::done(stopped_text(&summary), json!(summary)),
                        Attached::Unknown(why) => return TaskEnd::Rejected(why),
                    },
                    None => hub.start(max_cycles, fresh),
                };
                ctx.artifact("run", vec![Part::data(json!(RunArtifact { run_id: running.run_id.clone() }))]);
                let mut lines = running.lines.subscribe();
                let mut done = running.done.clone();
                loop {
                    tokio::select! {
                        l = lines.recv() => match l {
                            Ok(l) => ctx.progress(&l),
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => {}
                        },
                        _ = done.changed() => {
                            // Drain what is left, then finish.
                            while let Ok(l) = lines.try_recv() { ctx.progress(&l); }
                            let out = done.borrow().clone();
                            return match out {
                                Some(Ok(summary)) => TaskEnd::done(stopped_text(&summary), json!(summary)),
                                Some(Err(e)) => TaskEnd::Failed(e),
                                None => continue,
                            };
                        }
                    }
                }
            }
        },
    )
}

/// How long a restarted coordinator waits for the rest of its swarm before it resumes the loop
/// anyway.
const SWARM_START_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Resolves when `ratchet up` no longer reports the swarm as starting (every member answered
/// its card, or gave up), or at once when no supervisor started this swarm; bounded by
/// [`SWARM_START_WAIT`].
async fn swarm_started(home: &std::path::Path) {
    let state_file = kit::layout::Layout::new(home).state_file();
    let deadline = tokio::time::Instant::now() + SWARM_START_WAIT;
    while tokio::time::Instant::now() < deadline {
        let starting = crate::supervisor::state::read_state(&state_file)
            .ok()
            .flatten()
            .is_some_and(|s| s.state == crate::supervisor::state::SwarmPhase::Starting);
        if !starting {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Build the coordinator's spec and start its background work (reaper, loop resume).
pub fn spec(env: &AgentEnv) -> anyhow::Result<AgentSpec> {
    let hub = Arc::new(Hub {
        home: env.home.clone(),
        me: env.name.clone(),
        running: Mutex::new(None),
        resumed_unclaimed: Mutex::new(false),
        feed: tokio::sync::broadcast::channel(256).0,
    });
    // Only the coordinator expires leases: reap every branch every 200 ms.
    let home = env.home.clone();
    tokio::spawn(async move {
        let host = substrate::hostname();
        let warned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut unsettled = std::collections::HashSet::new();
        loop {
            let (h, host2, warned) = (home.clone(), host.clone(), warned.clone());
            let orphans = tokio::task::spawn_blocking(move || {
                let Ok(home) = Home::open(&h) else { return vec![] };
                // A coordinator left over from a replaced swarm must not judge the new one's leases.
                if let Some(other) = home.superseded_by() {
                    if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(
                            "reaper: swarm instance {other} replaced this one ({}); not reaping",
                            home.swarm().unwrap_or_default()
                        );
                    }
                    return vec![];
                }
                if let Err(e) = substrate::reap_all(&home, &host2) {
                    tracing::warn!("reaper: {e}");
                }
                // Jobs of leases that are gone: after the expiries above, so a dead holder's
                // jobs go in the same pass.
                kit::jobs::orphans_of_dead_leases(&home, &host2)
            })
            .await
            .unwrap_or_default();
            for o in orphans {
                let name = o.name().to_string();
                match kit::jobs::settle(o, "reaper").await {
                    Ok(_) => {
                        unsettled.remove(&name);
                    }
                    Err(e) => {
                        if unsettled.insert(name.clone()) {
                            tracing::warn!("reaper: orphaned job {name}: {e}; retried at every pass");
                        }
                    }
                }
            }
            tokio::time::sleep(substrate::DEFAULT_REAP_INTERVAL).await;
        }
    });
    // A loop that was running when the swarm died resumes by itself, once the rest of the
    // swarm answers (a loop resumed before its proposer is up would waste its cycle).
    if let Ok(Some(st)) = read_state(&env.home)
        && st.stopped.is_none()
    {
        let (hub, home) = (hub.clone(), env.home.clone());
        tokio::spawn(async move {
            swarm_started(&home).await;
            if hub.running.lock().expect("hub lock").is_some() {
                return; // a client started or attached to it meanwhile
            }
            tracing::info!("resuming the loop of run {}", st.run_id);
            hub.start(0, false);
            *hub.resumed_unclaimed.lock().expect("hub lock") = true;
        });
    }
    Ok(AgentSpec {
        name: env.name.clone(),
        role: "coordinator".into(),
        description: "Runs the improvement loop: routes tasks by role and skill, expires stale leases, promotes winners onto main by fast-forward".into(),
        skills: vec![
            loop_skill(hub.clone()),
            compare_skill(hub.clone()),
            crate::remote::lease_skill(crate::remote::RemoteLeases::new(env.home.clone())),
        ],
        push_notifications: true,
        routes: Some(
            crate::web::routes(env.home.clone(), hub.feed.clone()).merge(crate::gitserve::routes(env.home.clone())),
        ),
        ..Default::default()
    })
}
