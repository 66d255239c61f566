//! The coordinator side of leases: judge results, expire dead or hung holders, quarantine
//! corrupt files. Only the reaper moves or removes lease files, and it does so under the
//! branch's coordinator lock, so for it a lease path cannot change between two looks.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use protocol::events::{Event, EventKind};
use protocol::lease::{
    AttemptOutcome, AttemptRecord, FormatError, LeaseFile, Outcome, ResultFile, TaskFile, TaskFileState, parse_lease,
    parse_result,
};
use protocol::names;

use super::fsutil::{
    age, create_dir_all, list_files, now, pid_alive, quarantine, read_all, read_versioned, unique_suffix,
};
use super::home::{BranchDir, Home};
use super::lease::same_file;
use super::tasks::{scan_tasks, write_task_locked};
use super::{Result, SubstrateError};

/// How often the coordinator should reap: a holder killed on this host is noticed within about
/// this long (its lock is gone at once; nothing announces it).
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_millis(200);

/// An empty lease file nobody has locked is left alone this long: its claimer may be between
/// creating it and locking it.
pub const EMPTY_LEASE_GRACE: Duration = Duration::from_secs(2);

/// Reaps every branch under `worktrees/`. A branch that fails is logged and skipped.
pub fn reap_all(home: &Home, host: &str) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for branch in home.branches()? {
        let bd = home.branch_dir(&branch)?;
        if !bd.tasks_dir().is_dir() {
            continue;
        }
        match reap(&bd, host) {
            Ok(mut e) => events.append(&mut e),
            Err(e) => tracing::warn!(branch = %branch, error = %e, "reaping branch failed"),
        }
    }
    Ok(events)
}

/// One pass over one branch: quarantine corrupt task files, judge results, expire leases whose
/// holder is dead (lock released, or pid gone on `host`) or hung (heartbeat older than the ttl).
/// Returns the events it recorded (they are also appended to the branch's event log).
pub fn reap(bd: &BranchDir, host: &str) -> Result<Vec<Event>> {
    let _guard = bd.lock_coord()?;
    let mut r = Reaper { bd, host, swarm: bd.home.swarm(), events: Vec::new(), tasks: BTreeMap::new() };
    r.load_tasks()?;
    r.finish_interrupted_expiries()?;
    r.judge_results()?;
    r.check_leases()?;
    Ok(r.events)
}

struct Reaper<'a> {
    bd: &'a BranchDir,
    host: &'a str,
    /// This coordinator's swarm instance: leases and results of another one are refused.
    swarm: Option<&'a str>,
    events: Vec<Event>,
    tasks: BTreeMap<String, TaskFile>,
}

/// Whether a history record is an accepted result (rather than an expiry).
fn is_accepted_record(h: &AttemptRecord) -> bool {
    h.outcome.result().is_some()
}

/// A lease file as the reaper found it.
struct Seen {
    /// Keeps the probe's lock (when taken) until the lease has been dealt with.
    _file: File,
    dev: u64,
    ino: u64,
    mtime: SystemTime,
    content: Vec<u8>,
    /// The reaper itself holds the flock: nobody else does.
    we_hold: bool,
}

impl<'a> Reaper<'a> {
    /// The other swarm instance a lease or result comes from, when both it and this reaper
    /// belong to one and they differ. A writer without a swarm id (started by hand) is judged
    /// by the other rules only, and so is everything when this reaper has no swarm id.
    fn foreign<'b>(&self, writer: Option<&'b str>) -> Option<&'b str> {
        match (self.swarm, writer) {
            (Some(me), Some(it)) if me != it => Some(it),
            _ => None,
        }
    }

    fn emit(&mut self, task: Option<&str>, kind: EventKind) -> Result<()> {
        let e = self.bd.event(task, kind);
        self.bd.emit(&e)?;
        self.events.push(e);
        Ok(())
    }

    fn quarantine(&mut self, path: &Path, task: Option<&str>, problem: String) -> Result<()> {
        let to = quarantine(path)?;
        tracing::warn!(path = %path.display(), moved_to = %to.display(), %problem, "quarantined a corrupt file");
        self.emit(task, EventKind::FileQuarantined { path: to.display().to_string(), problem })
    }

    fn load_tasks(&mut self) -> Result<()> {
        let (ok, bad) = scan_tasks(self.bd)?;
        for (path, err) in bad {
            let id = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            self.quarantine(&path, id.as_deref(), err.to_string())?;
        }
        self.tasks = ok.into_iter().map(|t| (t.id.clone(), t)).collect();
        Ok(())
    }

    fn save(&self, task: &TaskFile) -> Result<()> {
        write_task_locked(self.bd, task)
    }

    /// Ends an attempt: the token is dead, the task goes back to the queue with the next token
    /// and attempt, or fails as an infrastructure failure when attempts are exhausted.
    /// `counts` is false for a claim that died before it recorded anything (token only).
    /// Returns the event to record after the caller's own (`TaskQueued` or `TaskFailed`).
    fn retire_attempt(
        &mut self,
        id: &str,
        holder: Option<String>,
        outcome: AttemptOutcome,
        counts: bool,
    ) -> Result<EventKind> {
        let task = self.tasks.get_mut(id).expect("retire_attempt is called for loaded tasks");
        task.history.push(AttemptRecord {
            attempt: task.attempt,
            token: task.token,
            holder,
            outcome: outcome.clone(),
            at: now(),
        });
        task.token += 1;
        let exhausted = counts && task.attempt >= task.max_attempts;
        if exhausted {
            task.state = TaskFileState::InfraFailed;
        } else if counts {
            task.attempt += 1;
        }
        let task = task.clone();
        self.save(&task)?;
        Ok(if exhausted {
            let reason = format!("{} of {} attempts failed; last: {outcome}", task.attempt, task.max_attempts);
            EventKind::TaskFailed { reason, infra: true }
        } else {
            EventKind::TaskQueued {
                role: task.role.clone(),
                skill: task.skill.clone(),
                attempt: task.attempt,
                token: task.token,
            }
        })
    }

    /// A crash between killing a token (renaming the lease to `expired/`) and bumping it leaves
    /// a queued task whose current token has an expiry record: finish the bump.
    fn finish_interrupted_expiries(&mut self) -> Result<()> {
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let task = &self.tasks[&id];
            if task.state != TaskFileState::Queued {
                continue;
            }
            let marker = self.bd.expired_path(&id, task.token)?;
            if !marker.exists() {
                continue;
            }
            let token = task.token;
            let lease: Option<LeaseFile> =
                fs::read(&marker).ok().and_then(|b| parse_lease(&b).ok()).filter(|l: &LeaseFile| l.token == token);
            let holder = lease.as_ref().map(|l| l.agent_id.clone());
            let counts = lease.is_some();
            let follow = self.retire_attempt(
                &id,
                holder,
                AttemptOutcome::Expired("expiry finished after an interruption".into()),
                counts,
            )?;
            self.emit(Some(&id), follow)?;
        }
        Ok(())
    }

    fn judge_results(&mut self) -> Result<()> {
        let dir = self.bd.results_dir();
        for name in list_files(&dir)? {
            self.judge_result(&dir.join(&name), &name)?;
        }
        Ok(())
    }

    fn judge_result(&mut self, path: &Path, name: &str) -> Result<()> {
        let parsed_name = name
            .strip_suffix(".json")
            .and_then(|s| s.rsplit_once('.'))
            .and_then(|(id, tok)| Some((id.to_string(), tok.parse::<u64>().ok()?)))
            .filter(|(id, _)| names::check_task_id(id).is_ok());
        let Some((id, token)) = parsed_name else {
            return self.quarantine(path, None, "unexpected file name: results are <task>.<token>.json".into());
        };
        let result = match read_versioned(path, parse_result) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(SubstrateError::Format { source, .. }) => {
                // Not corrupt, just not ours to read: refused (kept under results/refused/), never applied.
                let current = self.tasks.get(&id).map(|t| t.token).unwrap_or(0);
                self.move_into(path, "refused", name)?;
                let kind = EventKind::ResultRefused { token, current_token: current, reason: source.to_string() };
                return self.emit(Some(&id), kind);
            }
            Err(e @ SubstrateError::Corrupt { .. }) => return self.quarantine(path, Some(&id), e.to_string()),
            Err(e) => return Err(e),
        };
        if result.task_id != id || result.token != token {
            let problem = format!(
                "file name says task {id:?} token {token}, content says task {:?} token {}",
                result.task_id, result.token
            );
            return self.quarantine(path, Some(&id), problem);
        }
        let Some(task) = self.tasks.get(&id) else {
            return self.refuse(path, name, &result, 0, "there is no task file for this task".into());
        };
        if task.history.iter().any(|h| h.token == token && is_accepted_record(h)) {
            // Accepted by a pass that stopped before moving the file.
            return self.move_into(path, "accepted", name).map(|_| ());
        }
        let current = task.token;
        if let Some(other) = self.foreign(result.swarm.as_deref()) {
            let reason = format!(
                "written by {} of swarm instance {other}, not of this swarm ({}): a leftover of a replaced swarm",
                result.agent_id,
                self.swarm.unwrap_or_default()
            );
            return self.refuse(path, name, &result, current, reason);
        }
        if token == current && task.state == TaskFileState::Queued {
            return self.accept(path, name, result);
        }
        let reason = if token < current {
            format!("token {token} is stale: the lease was expired and the task is at token {current}")
        } else if token > current {
            format!("token {token} was never issued (the task is at token {current})")
        } else {
            format!("the task is already {:?}", task.state)
        };
        self.refuse(path, name, &result, current, reason)
    }

    fn move_into(&self, path: &Path, sub: &str, name: &str) -> Result<PathBuf> {
        let dir = self.bd.results_dir().join(sub);
        create_dir_all(&dir)?;
        let mut to = dir.join(name);
        if to.exists() {
            to = dir.join(format!("{name}.{}", unique_suffix()));
        }
        fs::rename(path, &to).map_err(SubstrateError::io("moving result", path))?;
        Ok(to)
    }

    fn refuse(&mut self, path: &Path, name: &str, r: &ResultFile, current: u64, reason: String) -> Result<()> {
        self.move_into(path, "refused", name)?;
        let kind = EventKind::ResultRefused { token: r.token, current_token: current, reason };
        self.emit(Some(&r.task_id), kind)
    }

    /// Applies a result under the task's current token.
    fn accept(&mut self, path: &Path, name: &str, r: ResultFile) -> Result<()> {
        let id = r.task_id.clone();
        // The finished holder's lease, if it is still there (same token), to remove afterwards.
        let lease_path = self.bd.lease_path(&id)?;
        let finished_lease = fs::read(&lease_path)
            .ok()
            .and_then(|b| parse_lease(&b).ok())
            .filter(|l| l.token == r.token)
            .and_then(|_| fs::symlink_metadata(&lease_path).ok())
            .map(|m| (m.dev(), m.ino()));

        let outcome = AttemptOutcome::Result(r.outcome);
        let kind = EventKind::ResultAccepted { token: r.token, outcome: r.outcome, summary: r.summary.clone() };
        let mut follow = None;
        match r.outcome {
            Outcome::InfraFailure => {
                // Recorded and retried like an expiry (the token moves on).
                follow = Some(self.retire_attempt(&id, Some(r.agent_id.clone()), outcome, true)?);
            }
            Outcome::Success | Outcome::CandidateFailure => {
                let task = self.tasks.get_mut(&id).expect("accept is called for loaded tasks");
                task.history.push(AttemptRecord {
                    attempt: task.attempt,
                    token: task.token,
                    holder: Some(r.agent_id.clone()),
                    outcome,
                    at: now(),
                });
                task.state = if r.outcome == Outcome::Success { TaskFileState::Done } else { TaskFileState::Failed };
                let task = task.clone();
                self.save(&task)?;
            }
        }
        self.move_into(path, "accepted", name)?;
        if let Some((dev, ino)) = finished_lease
            && same_file(&lease_path, dev, ino)
        {
            let _ = fs::remove_file(&lease_path);
        }
        self.emit(Some(&id), kind)?;
        if r.outcome == Outcome::CandidateFailure {
            follow = Some(EventKind::TaskFailed { reason: r.summary.clone(), infra: false });
        }
        match follow {
            Some(f) => self.emit(Some(&id), f),
            None => Ok(()),
        }
    }

    fn check_leases(&mut self) -> Result<()> {
        let dir = self.bd.leases_dir();
        for name in list_files(&dir)? {
            let path = dir.join(&name);
            let id = name.strip_suffix(".lock").filter(|id| names::check_task_id(id).is_ok());
            let Some(id) = id.map(String::from) else {
                self.quarantine(&path, None, "unexpected file name: leases are <task>.lock".into())?;
                continue;
            };
            let Some(seen) = self.look(&path)? else { continue };
            if !self.tasks.contains_key(&id) {
                if seen.we_hold {
                    self.quarantine(&path, Some(&id), "lease for a task that has no task file".into())?;
                }
                continue;
            }
            self.check_lease(&id, &path, seen)?;
        }
        Ok(())
    }

    /// Opens a lease and probes its lock. `None` when it vanished (a claimer removed its own
    /// lease for a finished task).
    fn look(&self, path: &Path) -> Result<Option<Seen>> {
        let mut file = match OpenOptions::new().read(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SubstrateError::Io { op: "opening lease", path: path.to_path_buf(), source: e }),
        };
        let we_hold = match file.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(e)) => {
                return Err(SubstrateError::Io { op: "probing lock of", path: path.to_path_buf(), source: e });
            }
        };
        let meta = file.metadata().map_err(SubstrateError::io("reading metadata of", path))?;
        // The file may have been unlinked between our open and our lock (jj's check).
        if meta.nlink() == 0 || !same_file(path, meta.dev(), meta.ino()) {
            return Ok(None);
        }
        let content = read_all(&mut file).map_err(SubstrateError::io("reading lease", path))?;
        let mtime = meta.modified().map_err(SubstrateError::io("reading mtime of", path))?;
        Ok(Some(Seen { dev: meta.dev(), ino: meta.ino(), mtime, content, we_hold, _file: file }))
    }

    fn check_lease(&mut self, id: &str, path: &Path, seen: Seen) -> Result<()> {
        let task = self.tasks[id].clone();
        let lease = match parse_lease(&seen.content) {
            Ok(l) => Some(l).filter(|l: &LeaseFile| l.task_id == id),
            Err(e @ FormatError::Newer { .. }) if !task.state.is_final() => {
                // A holder this coordinator cannot judge: its token dies now (the task re-runs
                // under a holder that writes a format this build reads).
                return self.expire(id, path, &seen, None, e.to_string(), false);
            }
            Err(_) => None,
        };
        let idle = age(seen.mtime);
        let ttl = Duration::from_millis(lease.as_ref().map(|l| l.ttl_ms).unwrap_or(task.ttl_ms));
        let hung = idle > ttl;

        if task.state.is_final() {
            if seen.we_hold {
                // Leftover of a finished holder or of a claimer that lost: nobody can hold it.
                let _ = fs::remove_file(path);
            } else if hung {
                let token = lease.as_ref().map(|l| l.token).unwrap_or(task.token);
                let holder = lease.as_ref().map(|l| l.agent_id.clone()).unwrap_or_default();
                self.move_aside(path, id, token)?;
                let reason = format!("the task is already {:?} and the holder stopped heartbeating", task.state);
                self.emit(Some(id), EventKind::LeaseExpired { holder, token, reason })?;
            }
            return Ok(());
        }

        let Some(lease) = lease else {
            return self.check_unreadable_lease(id, path, &seen, &task, hung);
        };
        if lease.token < task.token {
            // A claimer that lost a race with an expiry, or a leftover: its token is dead already.
            if seen.we_hold || hung {
                self.move_aside(path, id, lease.token)?;
                let reason = format!("token {} is stale (the task is at token {})", lease.token, task.token);
                self.emit(Some(id), EventKind::LeaseExpired { holder: lease.agent_id, token: lease.token, reason })?;
            }
            return Ok(());
        }
        if lease.token > task.token {
            if seen.we_hold {
                let problem = format!("lease token {} was never issued (task is at {})", lease.token, task.token);
                self.quarantine(path, Some(id), problem)?;
            }
            return Ok(());
        }

        let dead = seen.we_hold || (lease.host == self.host && !pid_alive(lease.pid));
        if let Some(other) = self.foreign(lease.swarm.as_deref()) {
            // Like an old fencing token: whatever that holder does from now on is refused. A live
            // holder (an orphan of the replaced swarm) does not use up an attempt, the task did
            // nothing wrong; a dead one counts like any holder that died on its task.
            let reason = format!(
                "held by {} (pid {} on {}) of swarm instance {other}, not of this swarm ({}): a leftover of a replaced swarm{}",
                lease.agent_id,
                lease.pid,
                lease.host,
                self.swarm.unwrap_or_default(),
                if dead { ", and gone" } else { "" }
            );
            return self.expire(id, path, &seen, Some(lease), reason, dead);
        }
        let reason = if seen.we_hold {
            "the holder process is gone (its lock was released)".to_string()
        } else if lease.host == self.host && !pid_alive(lease.pid) {
            format!("holder pid {} is not alive on {}", lease.pid, lease.host)
        } else if hung {
            format!("no heartbeat for {} ms (ttl {} ms)", idle.as_millis(), ttl.as_millis())
        } else {
            return Ok(());
        };
        // A holder that wrote its result and then went away finished: judge the result instead.
        let result = self.bd.result_path(id, lease.token)?;
        if result.exists() {
            let name = result.file_name().expect("result paths have a file name").to_string_lossy().into_owned();
            return self.judge_result(&result, &name);
        }
        self.expire(id, path, &seen, Some(lease), reason, true)
    }

    /// A lease with no parseable record: a claimer mid-claim (alive while locked and fresh),
    /// or one that died mid-claim, or a corrupt file.
    fn check_unreadable_lease(
        &mut self,
        id: &str,
        path: &Path,
        seen: &Seen,
        task: &TaskFile,
        hung: bool,
    ) -> Result<()> {
        if !seen.we_hold && !hung {
            return Ok(());
        }
        if seen.we_hold && age(seen.mtime) <= EMPTY_LEASE_GRACE {
            return Ok(());
        }
        if seen.content.is_empty() {
            let reason = if seen.we_hold {
                "empty lease file: the claimer died before recording its claim"
            } else {
                "empty lease file: the claimer hung before recording its claim"
            };
            return self.expire(id, path, seen, None, reason.to_string(), false);
        }
        // Corrupt: kill the token first (a marker), then quarantine the file, then bump.
        let marker = self.bd.expired_path(id, task.token)?;
        create_dir_all(&self.bd.expired_dir())?;
        if let Ok(mut f) = OpenOptions::new().write(true).create_new(true).open(&marker) {
            let _ = f.write_all(b"{\"note\":\"corrupt lease file, moved to leases/quarantine/\"}\n");
        }
        let problem = "truncated or invalid JSON in a lease file".to_string();
        self.quarantine(path, Some(id), problem.clone())?;
        let follow = self.retire_attempt(id, None, AttemptOutcome::Expired("corrupt lease file".into()), false)?;
        self.emit(Some(id), EventKind::LeaseExpired { holder: String::new(), token: task.token, reason: problem })?;
        self.emit(Some(id), follow)
    }

    /// Kills the task's current token by renaming its lease to `expired/<task>.<token>.lock`,
    /// then moves the task on (`counts`: whether the attempt is used up).
    fn expire(
        &mut self,
        id: &str,
        path: &Path,
        seen: &Seen,
        lease: Option<LeaseFile>,
        reason: String,
        counts: bool,
    ) -> Result<()> {
        let token = self.tasks[id].token;
        let marker = self.bd.expired_path(id, token)?;
        create_dir_all(&self.bd.expired_dir())?;
        let dest = if marker.exists() {
            self.bd.expired_dir().join(format!("{id}.{token}.{}.stale", unique_suffix()))
        } else {
            marker
        };
        debug_assert!(same_file(path, seen.dev, seen.ino));
        fs::rename(path, &dest).map_err(SubstrateError::io("expiring lease", path))?;
        let holder = lease.as_ref().map(|l| l.agent_id.clone());
        let kind =
            EventKind::LeaseExpired { holder: holder.clone().unwrap_or_default(), token, reason: reason.clone() };
        let follow = self.retire_attempt(id, holder, AttemptOutcome::Expired(reason.to_string()), counts)?;
        // Events after the state they describe: a reader that sees them sees the new task file.
        self.emit(Some(id), kind)?;
        self.emit(Some(id), follow)
    }

    /// Moves a lease that holds no live token out of the way, kept for inspection.
    fn move_aside(&self, path: &Path, id: &str, token: u64) -> Result<()> {
        create_dir_all(&self.bd.expired_dir())?;
        let to = self.bd.expired_dir().join(format!("{id}.{token}.{}.stale", unique_suffix()));
        fs::rename(path, &to).map_err(SubstrateError::io("moving stale lease", path))
    }
}
