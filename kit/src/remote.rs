//! A leased agent on another host (`RATCHET_COORDINATOR_URL` set): it shares no file system with
//! the coordinator. It claims tasks through the coordinator's `lease` skill (A2A), fetches the
//! commits it needs and the approved governance from the coordinator's git endpoint
//! (`/git/repo`) into its own repository (its `RATCHET_HOME`), works in its own worktree of the
//! branch, heartbeats through the skill, pushes a result commit to `/git/incoming` and returns
//! the result with its artefacts (each with its SHA-256). The coordinator checks all of it
//! before it writes the result (`coordinator::remote`).
//!
//! Before running a task, the worker checks it against approved governance as a local one does
//! ([`crate::worker::verify_task`], against `refs/ratchet/governance` fetched from the
//! coordinator), and its commands run in the sandbox on this host like everywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use protocol::TaskState;
use protocol::remote::{
    ArtifactUpload, ClaimAnswer, ClaimGrant, GIT_INCOMING_PATH, GIT_REPO_PATH, HeartbeatAnswer, LEASE_SKILL, LeaseCall,
    MAX_ARTIFACT_BYTES, incoming_ref,
};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::watch;

use crate::client::{A2aClient, skill_message};
use crate::git::Git;
use crate::substrate::{self, Home};
use crate::worker::{Attempt, WorkCtx, WorkResult, Worker};

/// The variable that makes a leased agent a remote member: the coordinator's base URL.
pub const COORDINATOR_URL_ENV: &str = "RATCHET_COORDINATOR_URL";

/// How long one claim waits on the coordinator for work: the longest it allows (the coordinator
/// answers as soon as a task is queued; an idle member costs one request per wait).
const CLAIM_WAIT_MS: u64 = protocol::remote::MAX_CLAIM_WAIT_MS;

/// A remote member's settings.
#[derive(Clone)]
pub struct RemoteConfig {
    /// The coordinator's base URL, with a trailing slash.
    pub coordinator: String,
    /// The swarm token (RATCHET_TOKEN), for the lease skill and the git endpoint.
    pub token: Option<String>,
    /// This host's name as the coordinator records it (`RATCHET_HOST`, else the host name).
    pub host: String,
}

impl RemoteConfig {
    /// From `RATCHET_COORDINATOR_URL` (none when unset), `RATCHET_HOST`, and the agent's token.
    pub fn from_env(token: Option<String>) -> Option<RemoteConfig> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let url = var(COORDINATOR_URL_ENV)?;
        let coordinator = if url.ends_with('/') { url } else { format!("{url}/") };
        Some(RemoteConfig { coordinator, token, host: var("RATCHET_HOST").unwrap_or_else(substrate::hostname) })
    }

    fn client(&self) -> A2aClient {
        A2aClient::new(&self.coordinator).with_token(self.token.clone())
    }

    /// git with the token in its environment (`http.extraHeader` through `GIT_CONFIG_*`: never
    /// on a command line), never prompting.
    fn git(&self, dir: &Path) -> Git {
        let mut g = Git::new(dir).env("GIT_TERMINAL_PROMPT", "0");
        if let Some(t) = &self.token {
            g = g
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", format!("Authorization: Bearer {t}"));
        }
        g
    }

    fn repo_url(&self) -> String {
        format!("{}{GIT_REPO_PATH}", self.coordinator)
    }

    fn incoming_url(&self) -> String {
        format!("{}{GIT_INCOMING_PATH}", self.coordinator)
    }
}

/// Calls the coordinator's `lease` skill; the data of its answer, or why it refused.
async fn call(client: &A2aClient, call: &LeaseCall, wait: Duration) -> anyhow::Result<Value> {
    let msg = skill_message(LEASE_SKILL, json!(call));
    let task = tokio::time::timeout(wait + Duration::from_secs(30), client.send(msg, true))
        .await
        .context("the coordinator did not answer the lease call in time")??;
    let m = task.status.message.clone();
    match task.status.state {
        TaskState::Completed => Ok(Value::Object(m.as_ref().and_then(|m| m.data()).cloned().unwrap_or_default())),
        other => bail!("the coordinator answered {other:?}: {}", m.map(|m| m.text()).unwrap_or_default()),
    }
}

/// Work forever: claim a task of this worker's role from the coordinator, run it, return it.
pub async fn remote_loop(worker: Arc<Worker>, cfg: RemoteConfig) {
    tracing::info!(
        "remote member of {}: claiming {} work as {} on {}",
        cfg.coordinator,
        worker.role,
        worker.agent_id,
        cfg.host
    );
    loop {
        match claim_and_run(&worker, &cfg, None, CLAIM_WAIT_MS).await {
            Ok(Some(Attempt::Ran { result, .. })) => tracing::info!("{:?} {}", result.outcome, result.summary),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("remote work: {e:#}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Claim one task (the given one, or any of this worker's role), run it, return its result.
/// `None` when nothing was granted within the wait.
pub async fn claim_and_run(
    worker: &Arc<Worker>,
    cfg: &RemoteConfig,
    only: Option<(&str, &str)>,
    wait_ms: u64,
) -> anyhow::Result<Option<Attempt>> {
    let _busy = worker.busy().await;
    let client = cfg.client();
    let claim = LeaseCall::Claim {
        agent: worker.agent_id.clone(),
        role: worker.role.clone(),
        skills: worker.skill_ids(),
        host: cfg.host.clone(),
        engine: None,
        wait_ms,
        branch: only.map(|o| o.0.to_string()),
        task_id: only.map(|o| o.1.to_string()),
    };
    let answer: ClaimAnswer = serde_json::from_value(call(&client, &claim, Duration::from_millis(wait_ms)).await?)
        .context("the coordinator's claim answer is not a ClaimAnswer")?;
    let Some(grant) = answer.grant else { return Ok(None) };
    let (branch, task_id, token) = (grant.branch.clone(), grant.task.id.clone(), grant.task.token);
    tracing::info!("{branch}/{task_id}: granted at token {token}");
    let result = run_granted(worker, cfg, &client, &grant).await;
    let (result, commit) = match result {
        Ok(rc) => rc,
        Err(e) => (WorkResult::infra_failure(format!("remote work failed: {e:#}"), json!({})), None),
    };
    let artifacts = {
        let dir = Home::open(&worker.home_root)
            .and_then(|h| h.branch_dir(&branch))
            .and_then(|bd| bd.artifact_dir(&task_id))
            .ok();
        match dir {
            Some(d) => tokio::task::spawn_blocking(move || collect_artifacts(&d)).await.unwrap_or_default(),
            None => vec![],
        }
    };
    let finish = LeaseCall::Finish {
        agent: worker.agent_id.clone(),
        branch: branch.clone(),
        task_id: task_id.clone(),
        token,
        outcome: result.outcome,
        summary: result.summary.clone(),
        data: result.data.clone(),
        commit,
        artifacts,
    };
    match call(&client, &finish, Duration::ZERO).await {
        Ok(_) => Ok(Some(Attempt::Ran { token, result })),
        Err(e) => bail!("{branch}/{task_id}: the coordinator did not take the result: {e:#}"),
    }
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stops the work once its lease is lost (the result would be refused): dropping the skill's
/// future kills its commands' process groups and cancels their jobs (`crate::jobs`). The guard
/// ends the watch.
pub(crate) fn stop_when_lost(mut lost: watch::Receiver<bool>, work: tokio::task::AbortHandle) -> AbortOnDrop {
    let watcher = tokio::spawn(async move {
        loop {
            if *lost.borrow_and_update() {
                work.abort();
                return;
            }
            if lost.changed().await.is_err() {
                return;
            }
        }
    });
    AbortOnDrop(watcher.abort_handle())
}

/// Prepare the branch in this host's repository, run the skill with a heartbeat through the
/// coordinator, push the result commit. Returns the result and the commit pushed, if any.
async fn run_granted(
    worker: &Arc<Worker>,
    cfg: &RemoteConfig,
    client: &A2aClient,
    grant: &ClaimGrant,
) -> anyhow::Result<(WorkResult, Option<String>)> {
    let f = worker.work_fn(&grant.task.skill).with_context(|| format!("no skill {}", grant.task.skill))?;
    let (root, c2, g2) = (worker.home_root.clone(), cfg.clone(), grant.clone());
    let (home, bd) = tokio::task::spawn_blocking(move || prepare(&root, &c2, &g2)).await??;
    // Nothing runs unless the task's settings are those of approved governance (fetched above).
    let (root, t2) = (worker.home_root.clone(), grant.task.clone());
    if let Err(reason) = tokio::task::spawn_blocking(move || crate::worker::verify_task(&root, &t2)).await? {
        return Ok((
            WorkResult::infra_failure(format!("refused to run: {reason}"), json!({"refused": true, "reason": reason})),
            None,
        ));
    }
    let artifacts = bd.artifact_dir(&grant.task.id)?;
    std::fs::create_dir_all(&artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
    let (lost_tx, lost_rx) = watch::channel(false);
    let heartbeat = {
        let (client, agent, g) = (client.clone(), worker.agent_id.clone(), grant.clone());
        let period = (Duration::from_millis(g.ttl_ms) / 3).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let hb = LeaseCall::Heartbeat {
                agent,
                branch: g.branch.clone(),
                task_id: g.task.id.clone(),
                token: g.task.token,
            };
            let mut silent_since = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(period).await;
                match call(&client, &hb, Duration::ZERO).await.map(serde_json::from_value::<HeartbeatAnswer>) {
                    Ok(Ok(a)) if a.held => silent_since = tokio::time::Instant::now(),
                    Ok(Ok(a)) => {
                        tracing::warn!("{}/{}: lease lost: {}", g.branch, g.task.id, a.reason);
                        let _ = lost_tx.send(true);
                        return;
                    }
                    other => {
                        tracing::warn!("{}/{}: heartbeat failed: {other:?}", g.branch, g.task.id);
                        if silent_since.elapsed() > Duration::from_millis(g.ttl_ms) {
                            let _ = lost_tx.send(true);
                            return;
                        }
                    }
                }
            }
        })
    };
    let owner = crate::jobs::JobOwner {
        dir: bd.jobs_dir(),
        agent: worker.agent_id.clone(),
        task: grant.task.id.clone(),
        token: grant.task.token,
        swarm: None,
    };
    let ctx = WorkCtx::new(home, bd.clone(), grant.task.clone(), artifacts, worker.agent_id.clone(), lost_rx.clone());
    let handle = tokio::spawn(crate::jobs::owned_by(owner, f(ctx)));
    let _abort = AbortOnDrop(handle.abort_handle());
    let hb_abort = AbortOnDrop(heartbeat.abort_handle());
    let _stop = stop_when_lost(lost_rx, handle.abort_handle());
    let result = match handle.await {
        Ok(r) => r,
        Err(e) if e.is_cancelled() => {
            WorkResult::infra_failure("the lease was lost: the work was stopped", Value::Null)
        }
        Err(e) => WorkResult::infra_failure(format!("skill {} crashed: {e}", grant.task.skill), Value::Null),
    };
    drop(hb_abort);
    // A commit the skill made goes back by git.
    let (c2, g2, tree) = (cfg.clone(), grant.clone(), bd.tree());
    let pushed = tokio::task::spawn_blocking(move || push_result(&c2, &g2, &tree)).await?;
    match pushed {
        Ok(commit) => Ok((result, commit)),
        Err(e) => Ok((WorkResult::infra_failure(format!("pushing the result commit: {e:#}"), json!({})), None)),
    }
}

/// Fetch what the task needs into this host's repository and lay out its branch, checked out
/// at the head the lease was given at (blocking).
fn prepare(root: &Path, cfg: &RemoteConfig, grant: &ClaimGrant) -> anyhow::Result<(Home, substrate::BranchDir)> {
    protocol::names::check_branch(&grant.branch)?;
    protocol::names::check_task_id(&grant.task.id)?;
    for c in [&grant.base, &grant.head] {
        if !(c.len() == 40 || c.len() == 64) || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("the coordinator granted a commit {c:?} that is not a full object id");
        }
    }
    ensure_repository(root)?;
    cfg.git(root)
        .run([
            "fetch",
            "-q",
            "--no-tags",
            &cfg.repo_url(),
            "+refs/ratchet/governance:refs/ratchet/governance",
            &grant.base,
            &grant.head,
        ])
        .context("fetching the task's commits and governance from the coordinator")?;
    let home = Home::open(root)?;
    let bd = checkout_at(&home, &grant.branch, &grant.base, &grant.head)?;
    Ok((home, bd))
}

/// This member's worktree of `branch` (made from `base` when missing) with `head` checked out
/// and nothing else in it.
fn checkout_at(home: &Home, branch: &str, base: &str, head: &str) -> anyhow::Result<substrate::BranchDir> {
    let bd = home.branch_dir(branch)?;
    let at_head = |bd: &substrate::BranchDir| -> anyhow::Result<()> {
        let tree = Git::new(bd.tree());
        tree.run(["reset", "-q", "--hard", head])?;
        tree.run(["clean", "-q", "-fdx"])?;
        Ok(())
    };
    let usable = bd.exists() && {
        match at_head(&bd) {
            Ok(()) => true,
            Err(e) => {
                // A member killed in the middle of a git command (its `index.lock` left behind,
                // a half-made checkout): its copy holds nothing the coordinator needs.
                tracing::warn!("{}: the worktree is unusable ({e:#}): making it anew", bd.dir().display());
                false
            }
        }
    };
    if !usable {
        remake_worktree(home, &bd, branch, base)?;
        at_head(&bd)?;
    }
    Ok(bd)
}

/// This member's own worktree of `branch` made anew at `base`: whatever is left of the old one
/// (directory, worktree registration, local branch) is removed first.
fn remake_worktree(home: &Home, bd: &substrate::BranchDir, branch: &str, base: &str) -> anyhow::Result<()> {
    let git = home.git();
    let tree = bd.tree();
    let _ = git.run(["worktree", "remove", "--force", "--force", &tree.to_string_lossy()]);
    match std::fs::remove_dir_all(bd.dir()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", bd.dir().display())),
    }
    git.run(["worktree", "prune"])?;
    if git.resolve_commit(&format!("refs/heads/{branch}")).ok().flatten().is_some() {
        git.run(["branch", "-q", "-D", branch])?;
    }
    substrate::add_worktree(home, branch, base)?;
    Ok(())
}

/// `root` as a git repository of its own: made when missing, and made anew when its `.git` is
/// no repository (a member killed during its first `git init`), never trusted because it exists.
fn ensure_repository(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let dot_git = root.join(".git");
    if dot_git.exists() && Git::new(root).env("GIT_DIR", &dot_git).run(["rev-parse", "--git-dir"]).is_err() {
        tracing::warn!("{} is not a usable repository (an interrupted git init?): making it anew", dot_git.display());
        std::fs::remove_dir_all(&dot_git)
            .or_else(|_| std::fs::remove_file(&dot_git))
            .with_context(|| format!("removing the unusable {}", dot_git.display()))?;
    }
    if !dot_git.exists() {
        Git::new(root).run(["init", "-q"])?;
    }
    Ok(())
}

/// Push the worktree's head when the skill committed (blocking); the commit pushed.
fn push_result(cfg: &RemoteConfig, grant: &ClaimGrant, tree: &Path) -> anyhow::Result<Option<String>> {
    let head = Git::new(tree).run(["rev-parse", "HEAD"])?;
    if head == grant.head {
        return Ok(None);
    }
    let dst = incoming_ref(&grant.branch, &grant.task.id, grant.task.token);
    cfg.git(tree).run(["push", "-q", "--no-verify", &cfg.incoming_url(), &format!("{head}:{dst}")])?;
    Ok(Some(head))
}

/// The artefacts of a task, each with its SHA-256 (a file over [`MAX_ARTIFACT_BYTES`] travels
/// as its tail, marked so).
fn collect_artifacts(dir: &PathBuf) -> Vec<ArtifactUpload> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| protocol::names::check_artifact(n).is_ok() && !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let Ok(mut bytes) = std::fs::read(dir.join(&name)) else { continue };
        if bytes.len() > MAX_ARTIFACT_BYTES {
            let cut = bytes.len() - MAX_ARTIFACT_BYTES;
            let mut tail = format!("[the first {cut} bytes were left on the remote host]\n").into_bytes();
            tail.extend_from_slice(&bytes[cut..]);
            bytes = tail;
        }
        let sha256 = format!("{:x}", sha2::Sha256::digest(&bytes));
        out.push(ArtifactUpload { name, sha256, base64: base64::engine::general_purpose::STANDARD.encode(&bytes) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_made_repository_is_made_anew_and_a_good_one_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("repo");
        // Killed during `git init`: the directory is there, HEAD and objects are not.
        std::fs::create_dir_all(root.join(".git/refs")).expect("mkdir");
        ensure_repository(&root).expect("repaired");
        let git = Git::new(&root).env("GIT_DIR", root.join(".git"));
        assert_eq!(git.run(["rev-parse", "--git-dir"]).expect("a repository now"), root.join(".git").to_string_lossy());
        // A usable repository is kept as it is.
        Git::new(&root).run(["update-ref", "refs/keep", &empty_commit(&root)]).expect("update-ref");
        ensure_repository(&root).expect("kept");
        assert!(Git::new(&root).run(["rev-parse", "--verify", "refs/keep"]).is_ok(), "the repository was not remade");
    }

    #[test]
    fn a_worktree_left_locked_by_a_killed_member_is_made_anew() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("repo");
        ensure_repository(&root).expect("repository");
        let base = empty_commit(&root);
        let home = Home::open(&root).expect("home");
        let bd = checkout_at(&home, "b1", &base, &base).expect("first checkout");
        std::fs::write(bd.tree().join("left-over"), "x").expect("write");
        // Killed in the middle of `git reset`: the worktree's index.lock stays.
        let gitdir = Git::new(bd.tree()).run(["rev-parse", "--absolute-git-dir"]).expect("git dir");
        std::fs::write(Path::new(&gitdir).join("index.lock"), "").expect("lock");
        assert!(Git::new(bd.tree()).run(["reset", "-q", "--hard", &base]).is_err(), "the lock blocks git");
        let bd = checkout_at(&home, "b1", &base, &base).expect("made anew");
        assert_eq!(Git::new(bd.tree()).run(["rev-parse", "HEAD"]).expect("head"), base);
        assert!(!bd.tree().join("left-over").exists());
        // Killed while adding the worktree: the branch directory without its checkout.
        std::fs::remove_dir_all(bd.tree()).expect("rm tree");
        let bd = checkout_at(&home, "b1", &base, &base).expect("made anew again");
        assert_eq!(Git::new(bd.tree()).run(["rev-parse", "HEAD"]).expect("head"), base);
    }

    fn empty_commit(root: &Path) -> String {
        let tree = Git::new(root).run(["hash-object", "-t", "tree", "-w", "/dev/null"]).expect("tree");
        Git::new(root)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .run(["commit-tree", &tree, "-m", "keep"])
            .expect("commit-tree")
    }
}
