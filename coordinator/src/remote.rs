//! The coordinator's side of remote members (`protocol::remote`): the `lease` skill through
//! which an executor, critic or evaluator on another host claims a task, heartbeats and returns
//! its result, with no file system shared with the coordinator.
//!
//! The coordinator holds the lease itself (the same lease file, `flock` and fencing token as a
//! local holder's, taken by `substrate::try_claim` in this process): the reaper sees a live
//! holder while the remote one heartbeats (each heartbeat touches the lease), and expires it as
//! hung once it has been silent for the lease's TTL (a lost host), re-queuing the task under the
//! next token. A coordinator that restarts drops every such lock, and the reaper re-queues those
//! tasks as it would a dead local holder's.
//!
//! Before a result is written, what came over the wire is checked: the result commit must be
//! the one pushed to the incoming repository under `refs/incoming/<branch>/<task>/<token>`,
//! named by the result's data too, and a child of the branch head the holder was given; every
//! artefact's bytes must hash to the SHA-256 sent with them. A result that fails is not written:
//! a `remote_result_refused` event says why, the lease is dropped and the task re-queued.
//!
//! A claim that finds nothing waits for work without polling: a [`substrate::TaskWatcher`] on the
//! branches' `tasks/` and `leases/` (started at the first claim) bumps a counter every waiting
//! claim watches, and each claim rescans only when it moved (or every
//! [`substrate::RESCAN_INTERVAL`], the safety net the local agents use too). How each claim's
//! wait ended (by a change, a rescan, its deadline) is counted and logged.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kit::git::Git;
use kit::layout::Layout;
use kit::server::{Skill, TaskEnd};
use kit::substrate::{self, BranchDir, Home, Lease};
use protocol::events::EventKind;
use protocol::lease::{Outcome, TaskFileState};
use protocol::remote::{
    ArtifactUpload, ClaimAnswer, ClaimGrant, HeartbeatAnswer, LEASE_SKILL, LeaseCall, MAX_CLAIM_WAIT_MS, incoming_ref,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

/// A lease this coordinator holds for a remote member.
struct Held {
    lease: Lease,
    agent: String,
    head: String,
}

type Key = (String, String, u64);

/// How often a waiting claim rescans when the tasks cannot be watched.
const FALLBACK_RESCAN: Duration = Duration::from_millis(200);

/// The leases held for remote members, by (branch, task, token).
pub struct RemoteLeases {
    home: PathBuf,
    held: Mutex<HashMap<Key, Held>>,
    /// Bumped on every change of a branch's tasks or leases, once the watcher runs.
    changes: tokio::sync::watch::Sender<u64>,
    /// The watcher behind `changes`, started by the first claim.
    watcher: Mutex<Option<substrate::TaskWatcher>>,
    /// The safety net: a waiting claim rescans this often without a change.
    rescan: Duration,
}

/// How a claim's wait went: how often it looked, and what woke it each time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ClaimWait {
    scans: u32,
    /// Woken by a change of a branch's tasks or leases (the watcher).
    changes: u32,
    /// Woken by the safety net's rescan, or by the fallback's when nothing can be watched.
    rescans: u32,
}

/// Where a remote member runs, as `ratchet status` shows it (`worktrees/.swarm/remote.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteMember {
    pub role: String,
    pub host: String,
    pub engine: String,
    pub last_seen: String,
    /// The task it holds (`<branch>/<task>`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// Reads `remote.json` (empty when missing or unreadable).
pub fn read_members(home: &Path) -> BTreeMap<String, RemoteMember> {
    std::fs::read(Layout::new(home).remote_members())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

impl RemoteLeases {
    pub fn new(home: PathBuf) -> Arc<RemoteLeases> {
        RemoteLeases::with_rescan(home, substrate::RESCAN_INTERVAL)
    }

    /// With the safety net's rescan every `rescan` (tests set it long, so only the watcher can
    /// wake a claim).
    fn with_rescan(home: PathBuf, rescan: Duration) -> Arc<RemoteLeases> {
        Arc::new(RemoteLeases {
            home,
            held: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::channel(0).0,
            watcher: Mutex::new(None),
            rescan,
        })
    }

    /// A receiver of task and lease changes, the watcher started if it is not yet. `None` when
    /// no watch can be set up (then claims rescan at [`FALLBACK_RESCAN`]).
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let mut w = self.watcher.lock().expect("remote watcher lock");
        if w.is_none() {
            let tx = self.changes.clone();
            let started = substrate::TaskWatcher::new(&Layout::new(&self.home).worktrees(), move || {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            });
            match started {
                Ok(watcher) => *w = Some(watcher),
                Err(e) => {
                    tracing::warn!("remote claims: cannot watch the tasks ({e}); rescanning every {FALLBACK_RESCAN:?}");
                    return None;
                }
            }
        }
        Some(self.changes.subscribe())
    }

    fn home(&self) -> Result<Home, String> {
        Home::open(&self.home).map_err(|e| e.to_string())
    }

    /// Drops held leases the reaper has expired meanwhile (their holder went silent).
    fn sweep(&self) {
        self.held.lock().expect("remote leases lock").retain(|_, h| h.lease.check().is_ok());
    }

    fn note_member(&self, agent: &str, role: &str, host: &str, engine: &str, task: Option<String>) {
        let path = Layout::new(&self.home).remote_members();
        let mut all = read_members(&self.home);
        all.insert(
            agent.to_string(),
            RemoteMember {
                role: role.to_string(),
                host: host.to_string(),
                engine: engine.to_string(),
                last_seen: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                task,
            },
        );
        let bytes = serde_json::to_vec_pretty(&all).expect("members serialize");
        if kit::files::write_atomic(&path, &bytes).is_err() {
            tracing::warn!("could not record remote member {agent} in {}", path.display());
        }
    }

    /// One claim attempt over the queued tasks (blocking).
    #[allow(clippy::too_many_arguments)]
    fn try_claim_once(
        &self,
        agent: &str,
        role: &str,
        skills: &[String],
        host: &str,
        engine: &str,
        only: Option<(&str, &str)>,
    ) -> Result<Option<ClaimGrant>, String> {
        let home = self.home()?;
        if let Some(other) = home.superseded_by() {
            return Err(format!("this coordinator's swarm was replaced by {other}; claim from the running one"));
        }
        let candidates = match only {
            Some((b, t)) => vec![(b.to_string(), t.to_string())],
            None => substrate::find_claimable(&home, role).map_err(|e| e.to_string())?,
        };
        for (branch, task_id) in candidates {
            let Ok(bd) = home.open_branch(&branch) else { continue };
            let Ok(task) = substrate::read_task(&bd, &task_id) else { continue };
            if task.state != TaskFileState::Queued || task.role != role || !skills.contains(&task.skill) {
                continue;
            }
            let Some(lease) = substrate::try_claim(&bd, &task_id, agent).map_err(|e| e.to_string())? else { continue };
            let task = substrate::read_task(&bd, &task_id).map_err(|e| e.to_string())?;
            let base = bd.read_meta().ok().flatten().map(|m| m.base).unwrap_or_default();
            let head = match home.git().resolve_commit(&format!("refs/heads/{branch}")) {
                Ok(Some(h)) => h,
                _ => {
                    // Nothing to work on: give the task back at once (the reaper re-queues it).
                    drop(lease);
                    continue;
                }
            };
            let token = lease.token();
            let kind = EventKind::LeaseHeldRemotely {
                holder: agent.to_string(),
                token,
                host: host.to_string(),
                engine: engine.to_string(),
            };
            if let Err(e) = bd.emit(&bd.event(Some(&task_id), kind)) {
                tracing::warn!("{branch}/{task_id}: recording the remote holder: {e}");
            }
            let grant = ClaimGrant { branch: branch.clone(), ttl_ms: task.ttl_ms, task, base, head: head.clone() };
            self.held
                .lock()
                .expect("remote leases lock")
                .insert((branch.clone(), task_id.clone(), token), Held { lease, agent: agent.to_string(), head });
            self.note_member(agent, role, host, engine, Some(format!("{branch}/{task_id}")));
            return Ok(Some(grant));
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    async fn claim(
        self: &Arc<Self>,
        agent: String,
        role: String,
        skills: Vec<String>,
        host: String,
        engine: String,
        wait_ms: u64,
        only: Option<(String, String)>,
    ) -> Result<(ClaimAnswer, ClaimWait), String> {
        protocol::names::check_component("agent", &agent).map_err(|e| e.to_string())?;
        if let Some((b, t)) = &only {
            protocol::names::check_branch(b).map_err(|e| e.to_string())?;
            protocol::names::check_task_id(t).map_err(|e| e.to_string())?;
        }
        let deadline = Instant::now() + Duration::from_millis(wait_ms.min(MAX_CLAIM_WAIT_MS));
        let mut changes = self.changes();
        let mut wait = ClaimWait::default();
        loop {
            // Changes from here on wake the wait below, even those during the scan.
            if let Some(rx) = &mut changes {
                rx.borrow_and_update();
            }
            let me = self.clone();
            let (a, r, s, h, e, o) =
                (agent.clone(), role.clone(), skills.clone(), host.clone(), engine.clone(), only.clone());
            let got = tokio::task::spawn_blocking(move || {
                me.sweep();
                me.try_claim_once(&a, &r, &s, &h, &e, o.as_ref().map(|(b, t)| (b.as_str(), t.as_str())))
            })
            .await
            .map_err(|e| e.to_string())??;
            wait.scans += 1;
            if wait.scans == 1 && got.is_none() {
                // Seen, holding nothing (a grant records the member with its task).
                self.note_member(&agent, &role, &host, &engine, None);
            }
            if got.is_some() || Instant::now() >= deadline {
                return Ok((ClaimAnswer { grant: got }, wait));
            }
            // Wait for a task or lease to change (a task queued, a lease released), or for the
            // safety net's rescan, within the claim's deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            match &mut changes {
                Some(rx) => match tokio::time::timeout(left.min(self.rescan), rx.changed()).await {
                    Ok(_) => wait.changes += 1,
                    Err(_) if Instant::now() < deadline => wait.rescans += 1,
                    Err(_) => {}
                },
                None => {
                    tokio::time::sleep(left.min(FALLBACK_RESCAN)).await;
                    wait.rescans += 1;
                }
            }
        }
    }

    fn heartbeat(&self, agent: &str, branch: &str, task_id: &str, token: u64) -> HeartbeatAnswer {
        let mut held = self.held.lock().expect("remote leases lock");
        let key = (branch.to_string(), task_id.to_string(), token);
        let Some(h) = held.get(&key).filter(|h| h.agent == agent) else {
            return HeartbeatAnswer {
                held: false,
                reason: format!(
                    "no lease on {branch}/{task_id} at token {token} is held for {agent} (expired, or never claimed)"
                ),
            };
        };
        match h.lease.heartbeat() {
            Ok(()) => HeartbeatAnswer { held: true, reason: String::new() },
            Err(e) => {
                held.remove(&key);
                HeartbeatAnswer { held: false, reason: e.to_string() }
            }
        }
    }

    /// Checks a finished remote result and writes it under the held lease (blocking).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        agent: &str,
        branch: &str,
        task_id: &str,
        token: u64,
        outcome: Outcome,
        summary: &str,
        data: Value,
        commit: Option<String>,
        artifacts: &[ArtifactUpload],
    ) -> Result<String, String> {
        let key = (branch.to_string(), task_id.to_string(), token);
        let held = {
            let mut all = self.held.lock().expect("remote leases lock");
            match all.get(&key) {
                Some(h) if h.agent == agent => all.remove(&key).expect("just found"),
                _ => {
                    return Err(format!(
                        "no lease on {branch}/{task_id} at token {token} is held for {agent} (expired, or never claimed): \
                         the result is refused"
                    ));
                }
            }
        };
        let bd = held.lease.branch_dir().clone();
        if let Err(e) = held.lease.check() {
            return Err(format!("the lease was lost before the result came: {e}"));
        }
        match verify_and_apply(&bd, &held, task_id, token, commit.as_deref(), &data, artifacts) {
            Ok(()) => {
                let path = held.lease.finish(outcome, summary, data).map_err(|e| e.to_string())?;
                Ok(format!("result written to {}", Layout::new(&self.home).display(&path)))
            }
            Err(reason) => {
                let kind = EventKind::RemoteResultRefused { holder: agent.to_string(), token, reason: reason.clone() };
                if let Err(e) = bd.emit(&bd.event(Some(task_id), kind)) {
                    tracing::warn!("{branch}/{task_id}: recording the refusal: {e}");
                }
                // Dropping the lease lets the reaper re-queue the task under the next token.
                drop(held);
                Err(format!("result refused: {reason}"))
            }
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn is_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The checks of a remote result; on success the branch is moved to the result commit and the
/// artefacts are written. Nothing changes when a check fails.
fn verify_and_apply(
    bd: &BranchDir,
    held: &Held,
    task_id: &str,
    token: u64,
    commit: Option<&str>,
    data: &Value,
    artifacts: &[ArtifactUpload],
) -> Result<(), String> {
    // Artefacts first: names, sizes, hashes.
    let mut files = Vec::new();
    for a in artifacts {
        protocol::names::check_artifact(&a.name).map_err(|e| format!("artefact {:?}: {e}", a.name))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&a.base64)
            .map_err(|e| format!("artefact {}: not base64: {e}", a.name))?;
        let got = sha256_hex(&bytes);
        if !got.eq_ignore_ascii_case(&a.sha256) {
            return Err(format!("artefact {}: its bytes hash to {got}, the holder said {}", a.name, a.sha256));
        }
        files.push((a.name.clone(), bytes));
    }
    // The commit the result names in its data must be the one pushed (or the head it was given).
    let named = data.get("commit").and_then(Value::as_str);
    let home = bd.home();
    let moved_to = match commit {
        None => {
            if let Some(n) = named
                && n != held.head
            {
                return Err(format!(
                    "the result names commit {n} but no commit was pushed for it (the branch head is {})",
                    held.head
                ));
            }
            None
        }
        Some(c) => {
            if !is_hex_id(c) {
                return Err(format!("commit {c:?} is not a full object id"));
            }
            if let Some(n) = named
                && n != c
            {
                return Err(format!("the result names commit {n}, but the holder sent commit {c}"));
            }
            let incoming = Layout::new(home.root()).incoming_repo();
            let src = incoming_ref(bd.branch(), task_id, token);
            let local = format!("refs/ratchet/{}", src.trim_start_matches("refs/"));
            home.git()
                .run(["fetch", "-q", "--no-tags", &incoming.to_string_lossy(), &format!("+{src}:{local}")])
                .map_err(|e| format!("no commit was pushed to {src} in the incoming repository: {e}"))?;
            let pushed =
                home.git().run(["rev-parse", "--verify", &format!("{local}^{{commit}}")]).map_err(|e| e.to_string())?;
            if !pushed.eq_ignore_ascii_case(c) {
                return Err(format!("the commit pushed to {src} is {pushed}, but the result names {c}"));
            }
            let parents = home.git().run(["rev-list", "--parents", "-n", "1", c]).map_err(|e| e.to_string())?;
            let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
            if parents != [held.head.as_str()] {
                return Err(format!(
                    "commit {c} has parent(s) {parents:?}; a result commit must be a single child of the branch head {} it was given",
                    held.head
                ));
            }
            Some(c.to_string())
        }
    };
    if let Some(c) = &moved_to {
        let tree = Git::new(bd.tree());
        let now = tree.run(["rev-parse", "HEAD"]).map_err(|e| e.to_string())?;
        if now != held.head {
            return Err(format!("the branch moved to {now} since the lease was given at {}", held.head));
        }
        tree.run(["merge", "-q", "--ff-only", c]).map_err(|e| format!("moving {} to {c}: {e}", bd.branch()))?;
    }
    let dir = bd.artifact_dir(task_id).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (name, bytes) in files {
        let path = dir.join(&name);
        kit::files::write_atomic(&path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The `lease` skill: claim, heartbeat and finish for remote members.
pub fn lease_skill(leases: Arc<RemoteLeases>) -> Skill {
    Skill::new(
        LEASE_SKILL,
        "Leased work for remote members",
        "For an executor, critic or evaluator on another host: claim a queued task of its role, heartbeat while it works, return the result (the commit pushed to /git/incoming, artefacts with their SHA-256). Input: {\"op\": \"claim\"|\"heartbeat\"|\"finish\", ...} (protocol::remote::LeaseCall). What a task runs comes from the task the coordinator wrote under approved governance.",
        move |ctx| {
            let leases = leases.clone();
            async move {
                let mut input = ctx.input();
                input.remove("skill");
                let call: LeaseCall = match serde_json::from_value(Value::Object(input)) {
                    Ok(c) => c,
                    Err(e) => {
                        return TaskEnd::Rejected(format!("not a lease call: {e}; see protocol::remote::LeaseCall"));
                    }
                };
                match call {
                    LeaseCall::Claim { agent, role, skills, host, engine, wait_ms, branch, task_id } => {
                        let only = branch.zip(task_id);
                        let engine = engine.unwrap_or_else(|| "local".into());
                        match leases.claim(agent.clone(), role, skills, host, engine, wait_ms, only).await {
                            Ok((ans, wait)) => {
                                tracing::debug!(
                                    "claim by {agent}: {} scans, woken {} times by a change and {} by the rescan",
                                    wait.scans,
                                    wait.changes,
                                    wait.rescans
                                );
                                let text = match &ans.grant {
                                    Some(g) => format!("granted {}/{} at token {}", g.branch, g.task.id, g.task.token),
                                    None => "nothing queued".to_string(),
                                };
                                TaskEnd::done(text, json!(ans))
                            }
                            Err(e) => TaskEnd::Rejected(e),
                        }
                    }
                    LeaseCall::Heartbeat { agent, branch, task_id, token } => {
                        let l = leases.clone();
                        match tokio::task::spawn_blocking(move || l.heartbeat(&agent, &branch, &task_id, token)).await {
                            Ok(ans) => TaskEnd::done(if ans.held { "held" } else { "lost" }, json!(ans)),
                            Err(e) => TaskEnd::Failed(e.to_string()),
                        }
                    }
                    LeaseCall::Finish { agent, branch, task_id, token, outcome, summary, data, commit, artifacts } => {
                        let l = leases.clone();
                        let done = tokio::task::spawn_blocking(move || {
                            l.finish(&agent, &branch, &task_id, token, outcome, &summary, data, commit, &artifacts)
                        })
                        .await;
                        match done {
                            Ok(Ok(text)) => TaskEnd::done(text, json!({"accepted": true})),
                            Ok(Err(why)) => TaskEnd::Rejected(why),
                            Err(e) => TaskEnd::Failed(e.to_string()),
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::lease::TaskFile;
    use protocol::remote::MAX_CLAIM_WAIT_MS;

    use super::{RemoteLeases, read_members};

    /// A waiting claim is woken by the task watcher, not by the safety net: with the rescan set
    /// past the claim's whole wait, the claim can only see the task queued after it started
    /// waiting through a change notification (or, were the watcher broken, at its deadline,
    /// which the count of wake-ups tells apart).
    #[tokio::test]
    async fn a_waiting_remote_claim_is_woken_by_the_task_watcher() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let git = kit::git::Git::new(tmp.path()).without_user_config().with_identity("t", "t@t");
        git.run(["init", "-q", "-b", "main"]).expect("git init");
        git.run(["commit", "-q", "--allow-empty", "-m", "base"]).expect("git commit");
        let base = git.run(["rev-parse", "HEAD"]).expect("rev-parse");
        let home = kit::substrate::Home::open(tmp.path())
            .expect("a repository")
            .with_git_env("GIT_CONFIG_GLOBAL", "/dev/null")
            .with_git_env("GIT_CONFIG_NOSYSTEM", "1");
        let bd = kit::substrate::add_worktree(&home, "b", &base).expect("a branch");

        let leases = RemoteLeases::with_rescan(tmp.path().to_path_buf(), Duration::from_secs(3600));
        let l2 = leases.clone();
        let claim = tokio::spawn(async move {
            l2.claim(
                "far-executor".into(),
                "executor".into(),
                vec!["execute".into()],
                "far-host".into(),
                "local".into(),
                MAX_CLAIM_WAIT_MS,
                None,
            )
            .await
        });
        // The claim found nothing and waits once it has recorded its member.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !read_members(tmp.path()).contains_key("far-executor") {
            assert!(std::time::Instant::now() < deadline, "the claim never started waiting");
            assert!(!claim.is_finished(), "the claim ended before any task was queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let task = TaskFile {
            token: 0,
            ttl_ms: 60_000,
            ..TaskFile::queued("b", "t1", "executor", "execute", serde_json::json!({}))
        };
        kit::substrate::queue_task(&bd, &task).expect("queued");
        let (answer, wait) = claim.await.expect("the claim ran").expect("the claim answered");
        let grant = answer.grant.unwrap_or_else(|| panic!("nothing granted: {wait:?}"));
        assert_eq!((grant.branch.as_str(), grant.task.id.as_str()), ("b", "t1"));
        assert!(
            wait.changes >= 1 && wait.rescans == 0,
            "the claim was not woken by the watcher (a grant at its deadline): {wait:?}"
        );
        assert_eq!(wait.scans, wait.changes + 1, "one scan at the start, one per wake-up: {wait:?}");
    }
}
