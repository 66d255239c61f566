//! The agent side of a lease: claim a task, heartbeat, finish with a result.
//!
//! Claim protocol (each step matters; see the module docs of `substrate` for the reaper side):
//! 1. create `leases/<task>.lock` with `O_EXCL` (someone else has it: not claimable now);
//! 2. take an exclusive `flock` on it, which the kernel drops if this process dies;
//! 3. read the task: it must be queued; its token is the lease's token;
//! 4. refuse a token that the reaper has killed (`leases/expired/<task>.<token>.lock` exists);
//! 5. write the lease record into the file;
//! 6. check that the path still names this file (the reaper may have moved it meanwhile).
//!
//! A holder never unlinks its lease file; the reaper removes it once the result is accepted.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use protocol::events::EventKind;
use protocol::lease::{LEASE_FILE_VERSION, LeaseFile, Outcome, RESULT_FILE_VERSION, ResultFile, TaskFileState};
use protocol::names;
use serde_json::Value;

use super::fsutil::{hostname, now, write_json_atomic};
use super::home::BranchDir;
use super::tasks::read_task;
use super::{Result, SubstrateError};

fn this_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(hostname)
}

/// A claimed task. Dropping it without [`Lease::finish`] abandons the attempt: the lock goes
/// away and the reaper re-queues the task.
#[derive(Debug)]
pub struct Lease {
    bd: BranchDir,
    task: String,
    token: u64,
    attempt: u32,
    agent_id: String,
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    ttl: Duration,
}

/// Tries to claim `task_id` on this branch for `agent_id`. `Ok(None)` when the task is held by
/// someone else, not queued, or its token is being expired; at most one live holder per task,
/// ever, and at most one holder per token.
pub fn try_claim(bd: &BranchDir, task_id: &str, agent_id: &str) -> Result<Option<Lease>> {
    names::check_component("agent id", agent_id)?;
    let path = bd.lease_path(task_id)?;
    let file = match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SubstrateError::NoSuchBranch { path: bd.leases_dir() });
        }
        Err(e) => return Err(SubstrateError::Io { op: "creating lease", path, source: e }),
    };
    // Blocking: only the reaper can hold it now, and only for a moment.
    file.lock().map_err(SubstrateError::io("locking lease", &path))?;
    let fmeta = file.metadata().map_err(SubstrateError::io("reading metadata of", &path))?;
    let (dev, ino) = (fmeta.dev(), fmeta.ino());

    let task = match read_task(bd, task_id) {
        Ok(t) => t,
        Err(e) => {
            release_own(&path, dev, ino);
            return Err(e);
        }
    };
    if task.state != TaskFileState::Queued {
        release_own(&path, dev, ino);
        return Ok(None);
    }
    let token = task.token;
    let killed = bd.expired_path(task_id, token)?.exists();

    let claimed_at = now();
    let record = LeaseFile {
        version: LEASE_FILE_VERSION,
        task_id: task_id.to_string(),
        agent_id: agent_id.to_string(),
        pid: std::process::id(),
        host: this_host().to_string(),
        claimed_at: claimed_at.clone(),
        heartbeat_at: claimed_at,
        ttl_ms: task.ttl_ms,
        token,
        swarm: bd.home.swarm().map(String::from),
    };
    let bytes = serde_json::to_vec(&record).expect("lease records always serialize");
    (&file).write_all(&bytes).map_err(SubstrateError::io("writing lease", &path))?;
    if killed || !same_file(&path, dev, ino) {
        // Leave the file: the reaper moves it once it has bumped the token.
        return Ok(None);
    }
    let lease = Lease {
        bd: bd.clone(),
        task: task_id.to_string(),
        token,
        attempt: task.attempt,
        agent_id: agent_id.to_string(),
        path,
        file,
        dev,
        ino,
        ttl: Duration::from_millis(task.ttl_ms),
    };
    bd.emit(&bd.event(Some(task_id), EventKind::LeaseClaimed { holder: agent_id.to_string(), token }))?;
    Ok(Some(lease))
}

/// Whether `path` names the file (`dev`, `ino`).
pub(crate) fn same_file(path: &Path, dev: u64, ino: u64) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// Removes a lease this claimer just created for a task nobody can hold (not queued, or gone).
fn release_own(path: &Path, dev: u64, ino: u64) {
    if same_file(path, dev, ino) {
        let _ = fs::remove_file(path);
    }
}

impl Lease {
    pub fn task_id(&self) -> &str {
        &self.task
    }
    /// The fencing token the result will carry.
    pub fn token(&self) -> u64 {
        self.token
    }
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }
    pub fn branch_dir(&self) -> &BranchDir {
        &self.bd
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// How long the holder may go without a heartbeat before the reaper expires the lease.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// `artifacts/<task>/`, created if needed.
    pub fn artifact_dir(&self) -> Result<PathBuf> {
        let dir = self.bd.artifact_dir(&self.task)?;
        fs::create_dir_all(&dir).map_err(SubstrateError::io("creating directory", &dir))?;
        Ok(dir)
    }

    /// Touches the lease (its mtime is the live heartbeat) and checks it is still this
    /// holder's: `LeaseLost` once the reaper has expired it.
    pub fn heartbeat(&self) -> Result<()> {
        self.file.set_modified(SystemTime::now()).map_err(SubstrateError::io("touching lease", &self.path))?;
        self.check()
    }

    /// `LeaseLost` when the lease file is no longer at its path (expired by the reaper) or the
    /// token was killed.
    pub fn check(&self) -> Result<()> {
        if !same_file(&self.path, self.dev, self.ino) {
            return Err(self.lost("the lease file was moved by the reaper (expired)"));
        }
        if self.bd.expired_path(&self.task, self.token)?.exists() {
            return Err(self.lost("the reaper expired this token"));
        }
        Ok(())
    }

    fn lost(&self, reason: &str) -> SubstrateError {
        SubstrateError::LeaseLost { task: self.task.clone(), token: self.token, reason: reason.to_string() }
    }

    /// Writes `results/<task>.<token>.json` and releases the lease. A holder whose token is
    /// stale still writes its result; the reaper refuses it. Returns the result's path.
    pub fn finish(self, outcome: Outcome, summary: &str, data: Value) -> Result<PathBuf> {
        let result = ResultFile {
            version: RESULT_FILE_VERSION,
            task_id: self.task.clone(),
            token: self.token,
            agent_id: self.agent_id.clone(),
            outcome,
            summary: summary.to_string(),
            data,
            finished_at: now(),
            swarm: self.bd.home.swarm().map(String::from),
        };
        let path = self.bd.result_path(&self.task, self.token)?;
        write_json_atomic(&path, &result)?;
        // Dropping `self.file` releases the flock; the reaper removes the file.
        Ok(path)
    }
}
