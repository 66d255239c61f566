//! The job backend of [`crate::exec`]: where a command executes. `local` is a child process of
//! the agent (everything `kit::exec` describes); `slurm` runs the very same sandboxed command line
//! (`bwrap ...`/`ratchet-sandbox ...`/`sh -c`) as a Slurm job step through `srun`, which blocks
//! while the step runs and carries its stdout, stderr and exit code back, so timeouts, logs and
//! the candidate-vs-infrastructure classification stay those of a local run.
//!
//! Each job is named `ratchet-<pid>-<instance>-<n>` (the instance is random per process, so no
//! other process ever reuses a name): after the run its id and node are read back
//! (`squeue --states=all`, which shows a finished job for the cluster's `MinJobAge`) into the
//! evidence; a run that times out or whose future is dropped (a canceled task, a lost lease) is
//! cancelled by name (`scancel --name`), since killing `srun` alone leaves the job running.
//!
//! A holder can also die without running any of that (SIGKILL, the OOM killer, a lost host).
//! Two layers end its jobs then:
//! - **Slurm's own**: `srun` runs with the parent-death signal set to SIGTERM, so when the agent
//!   dies the kernel signals `srun`, which kills the step's tasks and ends its job (a killed
//!   `srun` closes its connections, and Slurm ends its job too). Where `srun` stops answering
//!   with its connections open (its host frozen or cut off), the cluster's `InactiveLimit` ends
//!   the job once the controller's pings go unanswered (docs/multihost.md sets it).
//! - **The swarm's**: a job run for a leased task is recorded before it is submitted, under
//!   its name, in `<branch>/jobs/<name>.json` (`protocol::lease::JobFile`, temp + rename) and the
//!   record removed once the job ended. A record whose lease is no longer live (the token moved
//!   on, the task ended) or whose holder is gone is an orphan: the coordinator's reaper
//!   ([`orphans_of_dead_leases`]) and the holder's own successor at its start
//!   ([`clean_own_orphans`], the only way for a member on another host, whose records live in its
//!   own home) cancel its job if the engine still runs it, remove the record and record a
//!   `job_orphaned` event with the job's id, node and state ([`settle`]).
//!
//! What a job may ask for comes from approved governance only (`[constitution.jobs]`): the
//! partition, a time limit, and for benchmark runs a whole node (`--exclusive`) with the run
//! pinned to one CPU (`--cpu-bind=map_cpu:N`). The agent's `SLURM_CONF` (when set) names the
//! cluster; it is passed to `srun` and to nothing else.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::events::{Event, EventKind};
use protocol::governance::{JobEngine, JobSettings};
use protocol::lease::{JOB_FILE_VERSION, JobFile, parse_job};
use protocol::work::JobRecord;

use crate::substrate::{self, BranchDir, Home};

/// How long a query or cancel may take before the controller counts as unreachable.
const SLURM_TIMEOUT: Duration = Duration::from_secs(10);

/// One run's job on an engine other than `local`.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub settings: JobSettings,
    /// A benchmark run: `exclusive_bench` and `bench_cpu` apply.
    pub bench: bool,
}

impl JobSpec {
    /// The job for `settings`, `None` for the local engine.
    pub fn for_settings(settings: &JobSettings, bench: bool) -> Option<JobSpec> {
        (settings.engine != JobEngine::Local).then(|| JobSpec { settings: settings.clone(), bench })
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// This process's instance: random, in every job name and record, so a later process that
/// gets the same pid (or one on another host) never takes a name or a record for its own.
fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        use std::io::Read as _;
        let mut bytes = [0u8; 4];
        let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if random.is_err() {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes = nanos.subsec_nanos().to_le_bytes();
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// A unique job name for this process.
pub(crate) fn job_name() -> String {
    format!("ratchet-{}-{}-{}", std::process::id(), instance(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The leased task a job is run for: where its record goes.
#[derive(Debug, Clone)]
pub struct JobOwner {
    /// The branch's `jobs/` directory in this member's home.
    pub dir: PathBuf,
    pub agent: String,
    pub task: String,
    pub token: u64,
    pub swarm: Option<String>,
}

tokio::task_local! {
    static OWNER: JobOwner;
}

/// Runs a leased task's work with its jobs recorded for `owner` (every job it submits, in
/// `owner.dir`, while it runs).
pub async fn owned_by<F: std::future::Future>(owner: JobOwner, work: F) -> F::Output {
    OWNER.scope(owner, work).await
}

/// Records a job about to be submitted by a leased task's work (nothing outside one): its
/// record's path. Fails when the record cannot be written: a job that could not be found again
/// is not submitted.
pub(crate) fn record_submission(name: &str, engine: JobEngine) -> Result<Option<PathBuf>, String> {
    let Ok(owner) = OWNER.try_with(JobOwner::clone) else { return Ok(None) };
    let job = JobFile {
        version: JOB_FILE_VERSION,
        name: name.to_string(),
        engine,
        agent: owner.agent,
        pid: std::process::id(),
        instance: instance().to_string(),
        host: substrate::hostname(),
        task: owner.task,
        token: owner.token,
        swarm: owner.swarm,
        cluster_conf: std::env::var("SLURM_CONF").ok(),
        submitted_at: protocol::timestamp(std::time::SystemTime::now()),
    };
    let path = owner.dir.join(format!("{name}.json"));
    let bytes = serde_json::to_vec_pretty(&job).expect("a job record serializes");
    std::fs::create_dir_all(&owner.dir)
        .and_then(|()| crate::files::write_atomic(&path, &bytes))
        .map_err(|e| format!("cannot record job {name} at {}: {e}", path.display()))?;
    Ok(Some(path))
}

/// The `srun` words that run `argv` as a job step named `name` in `cwd`, with a memory limit.
pub(crate) fn srun_argv(
    job: &JobSpec,
    name: &str,
    cwd: &Path,
    memory_mb: Option<u64>,
    argv: Vec<OsString>,
) -> Vec<OsString> {
    let s = &job.settings;
    // One task on one node (srun's default task count: an explicit `--ntasks=1` would limit an
    // exclusive step to one CPU, and a pinned CPU outside it fails).
    let mut out: Vec<OsString> = vec!["srun".into(), "--quiet".into(), "--nodes=1".into()];
    out.push(format!("--job-name={name}").into());
    let mut chdir = OsString::from("--chdir=");
    chdir.push(cwd.as_os_str());
    out.push(chdir);
    if let Some(p) = &s.partition {
        out.push(format!("--partition={p}").into());
    }
    if let Some(t) = s.time_limit_min {
        out.push(format!("--time={t}").into());
    }
    if let Some(mb) = memory_mb {
        out.push(format!("--mem={mb}M").into());
    }
    // A pinned CPU needs the node's CPUs in the step: pinning implies a whole node.
    if job.bench && (s.exclusive_bench || s.bench_cpu.is_some()) {
        out.push("--exclusive".into());
    }
    if job.bench
        && let Some(cpu) = s.bench_cpu
    {
        out.push(format!("--cpu-bind=map_cpu:{cpu}").into());
    }
    out.push("--".into());
    out.extend(argv);
    out
}

/// The variables `srun` needs from the agent's environment to find its cluster.
pub(crate) fn srun_env() -> Vec<(String, String)> {
    ["SLURM_CONF"].iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect()
}

fn slurm_command(program: &str) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    c
}

/// The job's id and node, read back by its name.
pub(crate) async fn record(name: &str) -> Option<JobRecord> {
    let mut c = tokio::process::Command::from(slurm_command("squeue"));
    c.args(["-h", "--states=all", &format!("--name={name}"), "-o", "%i %N"]).kill_on_drop(true);
    let out = tokio::time::timeout(SLURM_TIMEOUT, c.output()).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    let id = words.next()?.to_string();
    Some(JobRecord { engine: JobEngine::Slurm, id, node: words.next().unwrap_or_default().to_string() })
}

/// Cancels the job by name (blocking; quick: one request to the controller). Whether the
/// controller took the request.
pub(crate) fn cancel(name: &str) -> bool {
    let mut c = slurm_command("scancel");
    c.arg(format!("--name={name}"));
    match c.status() {
        Ok(st) if st.success() => {
            tracing::info!("cancelled Slurm job {name}");
            true
        }
        Ok(st) => {
            tracing::warn!("scancel --name={name}: {st}");
            false
        }
        Err(e) => {
            tracing::warn!("scancel --name={name}: {e}");
            false
        }
    }
}

/// Cancels the job when dropped while armed (a timeout, a dropped run future), then removes
/// its record (kept when the cancel failed: the reaper or a successor retries it).
pub(crate) struct CancelOnDrop {
    pub name: String,
    pub armed: bool,
    pub record: Option<PathBuf>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let ended = !self.armed || cancel(&self.name);
        if ended && let Some(path) = &self.record {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A job record whose holder is gone or lost its lease.
#[derive(Debug)]
pub struct Orphan {
    bd: BranchDir,
    path: PathBuf,
    job: JobFile,
    reason: String,
}

impl Orphan {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.job.name
    }
}

/// The job records of every branch under `home` (blocking). An unreadable one is logged and
/// left for a person (it names no job that could be cancelled safely).
fn records(home: &Home) -> Vec<(BranchDir, PathBuf, JobFile)> {
    let mut out = vec![];
    for branch in home.branches().unwrap_or_default() {
        let Ok(bd) = home.branch_dir(&branch) else { continue };
        let Ok(entries) = std::fs::read_dir(bd.jobs_dir()) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| parse_job(&b).map_err(|e| e.to_string()))
            {
                Ok(job) => out.push((bd.clone(), path, job)),
                Err(e) => tracing::warn!("job record {} is unreadable, left for a person: {e}", path.display()),
            }
        }
    }
    out
}

/// The coordinator reaper's: records whose lease is no longer live (the task ended or moved to
/// another token) or whose holder's process is gone from `host` (blocking).
pub fn orphans_of_dead_leases(home: &Home, host: &str) -> Vec<Orphan> {
    let mut out = vec![];
    for (bd, path, job) in records(home) {
        let reason = match substrate::read_task(&bd, &job.task) {
            Err(_) => Some(format!("task {} no longer exists", job.task)),
            Ok(t) if t.state.is_final() => Some(format!("task {} is {:?}", job.task, t.state)),
            Ok(t) if t.token != job.token => {
                Some(format!("the lease it ran under (token {}) is gone: the task is at token {}", job.token, t.token))
            }
            Ok(_) if job.host == host && !substrate::pid_alive(job.pid) => {
                Some(format!("its holder {} (pid {} on {}) is gone", job.agent, job.pid, job.host))
            }
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            out.push(Orphan { bd, path, job, reason });
        }
    }
    out
}

/// A restarted agent's: the records `agent` left on this host in an earlier process (gone, or
/// this very pid reused), never those of a live sibling (blocking).
pub fn own_orphans(home: &Home, agent: &str) -> Vec<Orphan> {
    let host = substrate::hostname();
    let me = std::process::id();
    records(home)
        .into_iter()
        .filter(|(_, _, j)| {
            j.agent == agent
                && j.host == host
                && j.instance != instance()
                && (j.pid == me || !substrate::pid_alive(j.pid))
        })
        .map(|(bd, path, job)| {
            let reason = format!("its holder {} (pid {}) is gone: found by its successor", job.agent, job.pid);
            Orphan { bd, path, job, reason }
        })
        .collect()
}

/// Cancels what `agent`'s earlier processes left running, at its start (`RATCHET_HOME` or the
/// swarm's home: wherever this member keeps its branches).
pub async fn clean_own_orphans(home_root: PathBuf, agent: String) {
    let a2 = agent.clone();
    let found = tokio::task::spawn_blocking(move || Home::open(&home_root).map(|h| own_orphans(&h, &a2)))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    for o in found {
        let name = o.job.name.clone();
        if let Err(e) = settle(o, &agent).await {
            tracing::warn!("orphaned job {name}: {e}; left for the coordinator's reaper");
        }
    }
}

/// What the engine says of a job, by name: `(id, state, node)` of each job of that name
/// (none once it aged out of the controller's memory, or was never submitted).
async fn query(job: &JobFile) -> Result<Vec<(String, String, String)>, String> {
    let mut c = tokio::process::Command::from(slurm_command("squeue"));
    c.args(["-h", "--states=all", &format!("--name={}", job.name), "-o", "%i %T %N"]).kill_on_drop(true);
    if let Some(conf) = &job.cluster_conf {
        c.env("SLURM_CONF", conf);
    }
    let out = match tokio::time::timeout(SLURM_TIMEOUT, c.output()).await {
        Ok(Ok(out)) if out.status.success() => out,
        Ok(Ok(out)) => return Err(format!("squeue: {}", out.status)),
        Ok(Err(e)) => return Err(format!("squeue: {e}")),
        Err(_) => return Err(format!("squeue did not answer within {SLURM_TIMEOUT:?}")),
    };
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (id, state) = (w.next()?, w.next()?);
            Some((id.to_string(), state.to_string(), w.next().unwrap_or_default().to_string()))
        })
        .collect())
}

/// Whether a job in Slurm's `state` may still hold resources.
fn live(state: &str) -> bool {
    !matches!(
        state,
        "COMPLETED"
            | "CANCELLED"
            | "FAILED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "OUT_OF_MEMORY"
            | "SPECIAL_EXIT"
            | "REVOKED"
    )
}

/// Ends an orphan: cancels its job when the engine still runs it, removes its record, and
/// records a `job_orphaned` event on its branch (`by`: who found it). `Ok(None)` when another
/// process settled it first; an error (the engine could not be asked) leaves the record for the
/// next pass.
pub async fn settle(o: Orphan, by: &str) -> Result<Option<Event>, String> {
    let found = query(&o.job).await?;
    let mut cancelled = false;
    for (id, state, _) in found.iter().filter(|(_, state, _)| live(state)) {
        let mut c = tokio::process::Command::from(slurm_command("scancel"));
        c.arg(id).kill_on_drop(true);
        if let Some(conf) = &o.job.cluster_conf {
            c.env("SLURM_CONF", conf);
        }
        match tokio::time::timeout(SLURM_TIMEOUT, c.status()).await {
            Ok(Ok(st)) if st.success() => cancelled = true,
            other => return Err(format!("scancel {id} (found {state}): {other:?}")),
        }
    }
    let (id, state, node) = found.into_iter().next().map(|(i, s, n)| (Some(i), s, n)).unwrap_or_default();
    let kind = EventKind::JobOrphaned {
        holder: o.job.agent.clone(),
        token: o.job.token,
        engine: o.job.engine,
        name: o.job.name.clone(),
        job_id: id,
        node,
        state,
        cancelled,
        reason: o.reason.clone(),
        by: by.to_string(),
    };
    tokio::task::spawn_blocking(move || {
        match std::fs::remove_file(&o.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("removing {}: {e}", o.path.display())),
        }
        let event = o.bd.event(Some(&o.job.task), kind);
        o.bd.emit(&event).map_err(|e| e.to_string())?;
        tracing::info!(
            "orphaned job {} ({}): {}",
            o.job.name,
            o.reason,
            if cancelled { "cancelled" } else { "had ended" }
        );
        Ok(Some(event))
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which job records are orphans: for the reaper, those whose lease is gone or whose holder
    /// died on this host; for an agent at its start, those an earlier process of it left, never
    /// a live sibling's, another agent's or its own.
    #[test]
    fn a_record_is_an_orphan_once_its_lease_or_its_holder_is_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join(".git")).expect(".git");
        let home = Home::open(dir.path()).expect("home");
        let bd = home.branch_dir("b").expect("branch dir");
        std::fs::create_dir_all(bd.dir()).expect("branch dir");
        bd.create_control_dirs().expect("control dirs");
        let task = |id: &str, token: u64, state: &str| {
            let t: protocol::lease::TaskFile = serde_json::from_value(serde_json::json!({
                "version": 1, "id": id, "branch": "b", "role": "executor", "skill": "execute",
                "attempt": 1, "max_attempts": 3, "token": token, "state": state,
                "created_at": "2026-01-01T00:00:00.000Z", "ttl_ms": 60000,
            }))
            .expect("a task file");
            substrate::write_task(&bd, &t).expect("task written");
        };
        task("live", 2, "queued");
        task("moved", 3, "queued");
        task("done", 1, "done");
        // A pid that is surely gone: a child that was reaped.
        let mut child = std::process::Command::new("true").spawn().expect("true");
        child.wait().expect("wait");
        let gone = child.id();
        let me = std::process::id();
        let host = substrate::hostname();
        let write = |name: &str, agent: &str, pid: u32, instance: &str, task: &str, token: u64| {
            let job = JobFile {
                version: JOB_FILE_VERSION,
                name: name.into(),
                engine: JobEngine::Slurm,
                agent: agent.into(),
                pid,
                instance: instance.into(),
                host: host.clone(),
                task: task.into(),
                token,
                swarm: None,
                cluster_conf: None,
                submitted_at: "2026-01-01T00:00:00.000Z".into(),
            };
            std::fs::create_dir_all(bd.jobs_dir()).expect("jobs dir");
            let bytes = serde_json::to_vec(&job).expect("json");
            crate::files::write_atomic(&bd.jobs_dir().join(format!("{name}.json")), &bytes).expect("record");
        };
        write("mine-now", "exec", me, instance(), "live", 2);
        write("sibling", "exec", me, "other", "live", 2);
        write("dead-holder", "exec", gone, "old", "live", 2);
        write("token-moved", "crit", 1, "other", "moved", 2);
        write("task-done", "crit", 1, "other", "done", 1);
        write("no-task", "crit", 1, "other", "nowhere", 0);
        write("live-sibling", "exec", 1, "other", "live", 2);
        std::fs::write(bd.jobs_dir().join("torn.json"), b"{\"version\": 1, \"na").expect("torn record");

        let names = |v: Vec<Orphan>| {
            let mut n: Vec<String> = v.iter().map(|o| o.name().to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(
            names(orphans_of_dead_leases(&home, &host)),
            ["dead-holder", "no-task", "task-done", "token-moved"],
            "the reaper's orphans"
        );
        // `sibling` names this pid with another instance: a process of `exec` that had this pid
        // before (the pid reused), so gone too. A live process of another pid (pid 1) is kept.
        assert_eq!(names(own_orphans(&home, "exec")), ["dead-holder", "sibling"], "exec's own at its start");
        assert!(own_orphans(&home, "crit").is_empty(), "crit's records name live processes");
    }

    #[test]
    fn benchmark_runs_ask_for_an_exclusive_node_and_a_pinned_cpu_only_when_governance_says_so() {
        let settings = JobSettings {
            engine: JobEngine::Slurm,
            partition: Some("quiet".into()),
            time_limit_min: Some(5),
            exclusive_bench: true,
            bench_cpu: Some(1),
        };
        let words = |bench| {
            let job = JobSpec::for_settings(&settings, bench).expect("slurm");
            srun_argv(&job, "ratchet-1-0", Path::new("/w"), Some(64), vec!["sh".into(), "-c".into(), "true".into()])
                .into_iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            words(true),
            "srun --quiet --nodes=1 --job-name=ratchet-1-0 --chdir=/w --partition=quiet --time=5 --mem=64M \
             --exclusive --cpu-bind=map_cpu:1 -- sh -c true"
        );
        assert_eq!(
            words(false),
            "srun --quiet --nodes=1 --job-name=ratchet-1-0 --chdir=/w --partition=quiet --time=5 --mem=64M -- sh -c true"
        );
        assert!(JobSpec::for_settings(&JobSettings::default(), true).is_none(), "local runs are no job");
    }
}
