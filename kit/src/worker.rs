//! The worker side of the substrate, shared by every agent that takes leased work (executor,
//! critic, evaluator): find tasks of its role, claim them through the lease, heartbeat while
//! working, write the result under the lease's fencing token.
//!
//! Work arrives two ways and both go through the same lease: the agent watches
//! `worktrees/*/tasks/` (notify, with a slow rescan as a safety net), and the coordinator may hand
//! it a task over A2A (`message/send` with `{"skill": ..., "branch": ..., "task_id": ...}`).
//! That A2A face takes nothing else: what the task runs is in the task file the coordinator
//! wrote, and before running it the worker checks ([`verify_task`]) that the file's governance
//! hashes are approved versions and that the commands and sandbox settings in its input are
//! those of the approved texts at those hashes (defense in depth: a forged task file runs
//! nothing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::events::EventKind;
use protocol::governance::Governance;
use protocol::lease::{Outcome, TaskFile, TaskFileState};
use protocol::work::SandboxSettings;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};

use crate::server::{BoxFuture, Skill, TaskEnd};
use crate::substrate::{self, BranchDir, Home, Lease};

/// What a skill gets to do one leased task.
pub struct WorkCtx {
    pub home: Home,
    pub bd: BranchDir,
    pub task: TaskFile,
    pub token: u64,
    pub attempt: u32,
    /// `artifacts/<task>/`, created.
    pub artifacts: PathBuf,
    pub agent: String,
    lost: watch::Receiver<bool>,
}

impl WorkCtx {
    /// A context for work whose lease is held elsewhere (a remote holder: the coordinator holds
    /// it, `lost` turns true when its heartbeat says so).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        home: Home,
        bd: BranchDir,
        task: TaskFile,
        artifacts: PathBuf,
        agent: String,
        lost: watch::Receiver<bool>,
    ) -> WorkCtx {
        WorkCtx { home, bd, token: task.token, attempt: task.attempt, task, artifacts, agent, lost }
    }

    /// Whether the lease was lost (expired by the coordinator): stop, the result would be refused.
    pub fn lease_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Write an artefact file (write-temp-then-rename) and return its path.
    pub fn write_artifact(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        protocol::names::check_artifact(name)?;
        let path = self.artifacts.join(name);
        crate::files::write_atomic(&path, bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// How a leased task ended.
#[derive(Debug, Clone)]
pub struct WorkResult {
    pub outcome: Outcome,
    pub summary: String,
    pub data: Value,
}

impl WorkResult {
    pub fn success(summary: impl Into<String>, data: Value) -> WorkResult {
        WorkResult { outcome: Outcome::Success, summary: summary.into(), data }
    }
    pub fn candidate_failure(summary: impl Into<String>, data: Value) -> WorkResult {
        WorkResult { outcome: Outcome::CandidateFailure, summary: summary.into(), data }
    }
    pub fn infra_failure(summary: impl Into<String>, data: Value) -> WorkResult {
        WorkResult { outcome: Outcome::InfraFailure, summary: summary.into(), data }
    }
}

pub type WorkFn = Arc<dyn Fn(WorkCtx) -> BoxFuture<WorkResult> + Send + Sync>;

/// An agent's leased-work engine.
pub struct Worker {
    pub home_root: PathBuf,
    pub agent_id: String,
    pub role: String,
    skills: HashMap<String, WorkFn>,
    /// One task at a time per agent process: gates and benchmarks want the machine.
    busy: Mutex<()>,
    /// Set for a member on another host: its work is claimed from the coordinator over A2A.
    remote: Option<crate::remote::RemoteConfig>,
}

/// What happened when the worker tried a task.
#[derive(Debug, Clone)]
pub enum Attempt {
    Ran {
        token: u64,
        result: WorkResult,
    },
    /// Someone else holds it, it is finished, or it is not for this agent.
    NotClaimable(String),
}

impl Worker {
    pub fn new(home_root: PathBuf, agent_id: &str, role: &str) -> Worker {
        Worker {
            home_root,
            agent_id: agent_id.to_string(),
            role: role.to_string(),
            skills: HashMap::new(),
            busy: Mutex::new(()),
            remote: None,
        }
    }

    /// Take work from the coordinator at `cfg` (a member on another host) instead of files.
    pub fn with_remote(mut self, cfg: Option<crate::remote::RemoteConfig>) -> Worker {
        self.remote = cfg;
        self
    }

    pub fn skill<F, Fut>(mut self, skill: &str, f: F) -> Worker
    where
        F: Fn(WorkCtx) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = WorkResult> + Send + 'static,
    {
        self.skills.insert(skill.to_string(), Arc::new(move |ctx| Box::pin(f(ctx))));
        self
    }

    /// The skill functions this worker runs, by skill id (for a remote worker, `crate::remote`).
    pub(crate) fn work_fn(&self, skill: &str) -> Option<WorkFn> {
        self.skills.get(skill).cloned()
    }

    pub(crate) fn skill_ids(&self) -> Vec<String> {
        self.skills.keys().cloned().collect()
    }

    /// One task at a time per agent process, remote work included.
    pub(crate) async fn busy(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.busy.lock().await
    }

    fn home(&self) -> anyhow::Result<Home> {
        Ok(Home::open(&self.home_root)?)
    }

    /// Claim `task_id` on `branch` and run it to its end.
    pub async fn run_task(self: &Arc<Self>, branch: &str, task_id: &str) -> anyhow::Result<Attempt> {
        protocol::names::check_branch(branch)?;
        protocol::names::check_task_id(task_id)?;
        if let Some(cfg) = &self.remote {
            let ran = crate::remote::claim_and_run(self, cfg, Some((branch, task_id)), 0).await?;
            return Ok(ran.unwrap_or_else(|| {
                Attempt::NotClaimable(format!(
                    "the coordinator did not grant {branch}/{task_id} (held, finished or not queued)"
                ))
            }));
        }
        let _busy = self.busy.lock().await;
        let me = self.clone();
        let (branch_s, task_s) = (branch.to_string(), task_id.to_string());
        let claimed = tokio::task::spawn_blocking(
            move || -> anyhow::Result<Result<(Home, BranchDir, TaskFile, Lease), String>> {
                let home = me.home()?;
                if let Some(other) = home.superseded_by() {
                    return Ok(Err(format!(
                        "this agent belongs to swarm instance {}, which swarm {other} replaced: it takes no more work",
                        home.swarm().unwrap_or_default()
                    )));
                }
                let bd = home.open_branch(&branch_s)?;
                let task = substrate::read_task(&bd, &task_s)?;
                if task.state != TaskFileState::Queued {
                    return Ok(Err(format!("task {task_s} is {:?}", task.state)));
                }
                if task.role != me.role || !me.skills.contains_key(&task.skill) {
                    return Ok(Err(format!(
                        "task {task_s} needs role {} skill {}; this agent is role {} with skills {:?}",
                        task.role,
                        task.skill,
                        me.role,
                        me.skills.keys().collect::<Vec<_>>()
                    )));
                }
                match substrate::try_claim(&bd, &task_s, &me.agent_id)? {
                    None => Ok(Err(format!("task {task_s} is held by another agent or not queued"))),
                    Some(lease) => {
                        let task = substrate::read_task(&bd, &task_s)?;
                        Ok(Ok((home, bd, task, lease)))
                    }
                }
            },
        )
        .await??;
        let (home, bd, task, lease) = match claimed {
            Ok(c) => c,
            Err(why) => return Ok(Attempt::NotClaimable(why)),
        };
        let token = lease.token();
        let attempt = lease.attempt();
        // Nothing runs unless the task's settings are those of approved governance.
        let (root, t2) = (self.home_root.clone(), task.clone());
        let verdict = tokio::task::spawn_blocking(move || verify_task(&root, &t2)).await?;
        if let Err(reason) = verdict {
            tracing::warn!("{branch}/{task_id}: refused: {reason}");
            let kind = EventKind::TaskRefused { holder: self.agent_id.clone(), token, reason: reason.clone() };
            if let Err(e) = bd.emit(&bd.event(Some(task_id), kind)) {
                tracing::warn!("{branch}/{task_id}: recording the refusal: {e}");
            }
            let result = WorkResult::infra_failure(
                format!("refused to run: {reason}"),
                json!({"refused": true, "reason": reason}),
            );
            let r2 = result.clone();
            tokio::task::spawn_blocking(move || lease.finish(r2.outcome, &r2.summary, r2.data)).await??;
            return Ok(Attempt::Ran { token, result });
        }
        let artifacts = lease.artifact_dir()?;
        let lease = Arc::new(lease);
        let (lost_tx, lost_rx) = watch::channel(false);
        let lost_watch = lost_rx.clone();
        // Heartbeat at a third of the TTL; notice a lost lease.
        let hb_lease = lease.clone();
        let period = (lease.ttl() / 3).max(Duration::from_millis(50));
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let l = hb_lease.clone();
                let ok = tokio::task::spawn_blocking(move || l.heartbeat().and_then(|_| l.check())).await;
                if !matches!(ok, Ok(Ok(()))) {
                    let _ = lost_tx.send(true);
                    return;
                }
            }
        });
        let f = self.skills.get(&task.skill).expect("checked before claiming").clone();
        let owner = crate::jobs::JobOwner {
            dir: bd.jobs_dir(),
            agent: self.agent_id.clone(),
            task: task.id.clone(),
            token,
            swarm: home.swarm().map(String::from),
        };
        let ctx = WorkCtx {
            home,
            bd,
            task: task.clone(),
            token,
            attempt,
            artifacts,
            agent: self.agent_id.clone(),
            lost: lost_rx,
        };
        // A panicking skill is an infrastructure failure, never a silent success.
        // Spawned so a panicking skill is an infrastructure failure, never a silent success; the
        // guard aborts it if this future is dropped (a canceled A2A task), which drops the
        // skill's commands and so kills their process groups.
        struct AbortOnDrop(tokio::task::AbortHandle);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let handle = tokio::spawn(crate::jobs::owned_by(owner, f(ctx)));
        let _abort = AbortOnDrop(handle.abort_handle());
        let _stop = crate::remote::stop_when_lost(lost_watch, handle.abort_handle());
        let result = match handle.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => {
                WorkResult::infra_failure("the lease was lost: the work was stopped", Value::Null)
            }
            Err(e) => WorkResult::infra_failure(format!("skill {} crashed: {e}", task.skill), Value::Null),
        };
        heartbeat.abort();
        let _ = heartbeat.await;
        let lease =
            Arc::try_unwrap(lease).map_err(|_| anyhow::anyhow!("lease still shared after the heartbeat stopped"))?;
        let r2 = result.clone();
        tokio::task::spawn_blocking(move || lease.finish(r2.outcome, &r2.summary, r2.data)).await??;
        Ok(Attempt::Ran { token, result })
    }

    /// Watch `worktrees/` for tasks of this agent's role and run them, forever.
    pub async fn watch_loop(self: Arc<Self>) {
        let worktrees = crate::layout::Layout::new(&self.home_root).worktrees();
        let _ = std::fs::create_dir_all(&worktrees);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        // Keep a sender here too: if the watcher cannot start (inotify limits), the channel stays
        // open and the loop falls back to the slow rescan instead of spinning on a closed channel.
        let _keep_open = tx.clone();
        let watcher = substrate::TaskWatcher::new(&worktrees, move || {
            let _ = tx.try_send(());
        });
        if let Err(e) = &watcher {
            tracing::warn!("watching {} failed ({e}); falling back to the slow rescan", worktrees.display());
        }
        loop {
            let me = self.clone();
            let found = tokio::task::spawn_blocking(move || {
                me.home().ok().map(|h| substrate::find_claimable(&h, &me.role).unwrap_or_default()).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            for (branch, task) in found {
                match self.run_task(&branch, &task).await {
                    Ok(Attempt::Ran { result, .. }) => {
                        tracing::info!("{branch}/{task}: {:?} {}", result.outcome, result.summary)
                    }
                    Ok(Attempt::NotClaimable(_)) => {}
                    Err(e) => tracing::warn!("{branch}/{task}: {e:#}"),
                }
            }
            // Wake on a change under worktrees/, or rescan every 2 s as a safety net.
            let _ = tokio::time::timeout(substrate::RESCAN_INTERVAL, rx.recv()).await;
        }
    }

    /// The A2A face of a leased skill: `{"skill": id, "branch": b, "task_id": t}` claims and runs
    /// that task (through the same lease as the watcher) and answers with the result.
    pub fn a2a_skill(self: &Arc<Self>, id: &str, name: &str, description: &str) -> Skill {
        let me = self.clone();
        Skill::new(id, name, description, move |mut ctx| {
            let me = me.clone();
            async move {
                // Which task: asked for (input-required) while the message does not say, up to
                // a few times; what the task runs is in the task file the coordinator wrote.
                let mut asked = 0;
                let (branch, task) = loop {
                    let input = ctx.input();
                    if let Some(k) = input.keys().find(|k| !["skill", "branch", "task_id"].contains(&k.as_str())) {
                        return TaskEnd::Rejected(format!(
                            "this skill takes only {{\"branch\", \"task_id\"}}, not `{k}`: what a leased task runs comes from \
                             the task file the coordinator wrote under approved governance; fix: send only branch and task_id"
                        ));
                    }
                    let field = |k: &str| input.get(k).and_then(Value::as_str).map(String::from);
                    if let (Some(b), Some(t)) = (field("branch"), field("task_id")) {
                        break (b, t);
                    }
                    const ASK: &str = "this skill runs a leased task: which one? Reply on this task with a data part \
                                       {\"branch\": \"<candidate branch>\", \"task_id\": \"<task id>\"}";
                    asked += 1;
                    if asked > MAX_ASKS || ctx.ask(ASK).await.is_none() {
                        return TaskEnd::Rejected(format!(
                            "no leased task named after {MAX_ASKS} questions; send a data part {{\"branch\": ..., \"task_id\": ...}}"
                        ));
                    }
                };
                let (branch, task) = (branch.as_str(), task.as_str());
                // A client's tasks/cancel drops the work: its commands' process groups are killed
                // and, the lease abandoned, the coordinator re-queues the task under a new token.
                let attempt = tokio::select! {
                    a = me.run_task(branch, task) => a,
                    _ = ctx.canceled() => return TaskEnd::Failed("canceled".into()),
                };
                match attempt {
                    Ok(Attempt::Ran { token, result }) => TaskEnd::done(
                        result.summary.clone(),
                        json!({"branch": branch, "task_id": task, "token": token, "outcome": result.outcome, "data": result.data}),
                    ),
                    Ok(Attempt::NotClaimable(why)) => TaskEnd::Rejected(why),
                    Err(e) => TaskEnd::Failed(format!("{e:#}")),
                }
            }
        })
    }
}

/// Check a leased task before running it: its `governance` hashes must be approved versions
/// (present in the history of `refs/ratchet/governance`), and the commands and sandbox settings
/// in its input (`gates`, `gate_timeout_s`, `test_command`, `benchmark`, `ethos`,
/// `constitution`, `sandbox`, wherever present) must equal those of the approved texts at
/// those hashes. The error says what differs and what to do.
/// Replace the progress file of the task whose artefacts are `artifacts` (temp + rename: a
/// reader sees the old one or the new one). Progress is advisory: a failure to write it is
/// logged, never the task's failure.
pub fn write_progress(artifacts: &Path, p: &protocol::work::StageProgress) {
    let path = artifacts.join(protocol::work::PROGRESS_FILE);
    let bytes = serde_json::to_vec(p).expect("progress serializes");
    if let Err(e) = crate::files::write_atomic(&path, &bytes) {
        tracing::warn!("writing {}: {e}", path.display());
    }
}

/// The progress file of the task whose artefacts are `artifacts`, if there is one of a version
/// this build reads.
pub fn read_progress(artifacts: &Path) -> Option<protocol::work::StageProgress> {
    let text = std::fs::read(artifacts.join(protocol::work::PROGRESS_FILE)).ok()?;
    // A newer version is refused like a torn file: progress is shown, nothing decides on it.
    protocol::format::parse_versioned(&text, "progress file", protocol::work::PROGRESS_VERSION).ok()
}

pub fn verify_task(home_root: &Path, task: &TaskFile) -> Result<(), String> {
    if task.governance.is_empty() {
        return Err(format!(
            "task {} on {} carries no governance hashes, so nothing shows its settings were approved; \
             fix: tasks are written by the coordinator under approved governance, do not write task files by hand",
            task.id, task.branch
        ));
    }
    let gov = crate::governance::Approved::at(home_root).load_at(&task.governance).map_err(|e| e.to_string())?;
    verify_input(&task.input, &gov).map_err(|e| format!("task {} on {}: {e}", task.id, task.branch))
}

/// The settings of a task input that must equal approved governance's.
pub fn verify_input(input: &Value, gov: &Governance) -> Result<(), String> {
    let Some(obj) = input.as_object() else { return Ok(()) };
    let approved = [
        ("gates", "ethos.md", json!(gov.ethos.gates)),
        ("gate_timeout_s", "ethos.md", json!(gov.ethos.gate_timeout_s)),
        ("test_command", "ethos.md", json!(gov.ethos.test_command)),
        ("trusted_tests", "ethos.md", json!(gov.ethos.trusted_tests)),
        ("benchmark", "ethos.md", json!(gov.ethos.benchmark)),
        ("ethos", "ethos.md", json!(gov.ethos)),
        ("constitution", "constitution.md", json!(gov.constitution)),
        ("sandbox", "constitution.md", json!(SandboxSettings::from(&gov.constitution))),
    ];
    for (key, doc, want) in approved {
        if let Some(got) = obj.get(key)
            && !same(got, &want)
        {
            let hash = gov.hashes.get(doc).map(|h| &h[..12.min(h.len())]).unwrap_or("?");
            return Err(format!(
                "`{key}` is not what approved {doc} ({hash}) says: the task has {}, approved is {}; \
                 what runs comes only from approved governance; fix: change it in {doc} and run `ratchet approve {doc}` \
                 (task files are written by the coordinator; never edit them by hand)",
                clip(got),
                clip(&want)
            ));
        }
    }
    Ok(())
}

/// JSON equality, numbers compared as numbers (a float that went through a file may differ in
/// its last bit).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn clip(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 { format!("{}...", s.chars().take(200).collect::<String>()) } else { s }
}

/// How many times the A2A face of a leased skill asks which task before it gives up.
const MAX_ASKS: u32 = 3;

/// What a leased agent (executor, critic, evaluator) is: one role, one leased skill.
pub struct LeasedAgent<'a> {
    pub role: &'a str,
    pub skill: &'a str,
    pub skill_name: &'a str,
    pub skill_description: &'a str,
    pub description: &'a str,
}

impl LeasedAgent<'_> {
    /// The agent's spec, with its worker watching for tasks (unless `RATCHET_WATCH=0`) and the
    /// same skill reachable over A2A. Call inside the runtime (as `kit::agent::main_with` does).
    pub fn spec<F, Fut>(&self, env: &crate::agent::AgentEnv, work: F) -> crate::server::AgentSpec
    where
        F: Fn(WorkCtx) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = WorkResult> + Send + 'static,
    {
        let remote = crate::remote::RemoteConfig::from_env(env.token.clone());
        let worker = Arc::new(
            Worker::new(env.home.clone(), &env.name, self.role).skill(self.skill, work).with_remote(remote.clone()),
        );
        let skill = worker.a2a_skill(self.skill, self.skill_name, self.skill_description);
        // Jobs an earlier process of this agent left running (it was killed) are cancelled.
        tokio::spawn(crate::jobs::clean_own_orphans(env.home.clone(), env.name.clone()));
        match remote {
            // On another host: work comes from the coordinator, there are no task files here.
            Some(cfg) => {
                tokio::spawn(crate::remote::remote_loop(worker.clone(), cfg));
            }
            None if env.watch => {
                tokio::spawn(worker.watch_loop());
            }
            None => {}
        }
        crate::server::AgentSpec {
            name: env.name.clone(),
            role: self.role.into(),
            description: self.description.into(),
            skills: vec![skill],
            push_notifications: true,
            routes: None,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_as_numbers_and_everything_else_exactly() {
        assert!(same(&json!({"a": [0.95, 1]}), &json!({"a": [0.95, 1.0]})));
        assert!(same(&json!(0.1 + 0.2), &json!(0.30000000000000004)));
        assert!(!same(&json!(["sh check.sh"]), &json!(["sh check.sh", "id"])));
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same(&json!(0.95), &json!(0.96)));
    }
}
