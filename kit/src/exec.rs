//! Running the commands a model or a config produced: gates, benchmarks, bite-check tests, the proposer's
//! `command` strategy. This module is the one place the swarm spawns such commands.
//!
//! Every run of a [`RunSpec`]:
//! - runs `sh -c COMMAND` in `cwd`, in a fresh process group (`process_group(0)`), with a cleared environment:
//!   only PATH, HOME, LANG, TMPDIR, CARGO_HOME and RUSTUP_HOME come from the parent (never tokens or keys),
//!   plus the spec's own `env`;
//! - has its whole process group killed with SIGKILL (`killpg`) at its timeout, at its end (background
//!   grandchildren die too) and when the future is dropped;
//! - runs with RLIMIT_CORE = 0 and, when `memory_limit_bytes` is set, RLIMIT_AS, both set with `setrlimit`
//!   in the child between fork and exec (`pre_exec`, see [`set_rlimits_before_exec`]);
//! - is confined by a [`SandboxMode`] (what the confining modes apply is [`crate::sandbox::Plan`]):
//!   - `Bwrap` (bubblewrap) and `Namespaces` (Ratchet's own launcher, `ratchet-sandbox`, built on
//!     user, mount, pid, ipc, uts and network namespaces) confine alike: the file system read-only
//!     except the checkout (its `.git` read-only too unless [`RunSpec::with_writable_git`]) and a
//!     private empty `/tmp` (`TMPDIR`); the host's `/tmp`, `/var/tmp` and `/run` hidden; the swarm's
//!     `worktrees/` and the repository's git directory hidden except what the checkout needs, read-only
//!     ([`RunSpec::with_repository`]); own pid namespace (nothing outlives the run, nothing outside can
//!     be seen or signalled), mount, ipc and uts namespaces; no network unless allowed (loopback
//!     works); no capabilities, `no_new_privs`, a new session;
//!   - `Plain`: rlimits, timeout and the group kill only. **Weak**: no file-system, process or network
//!     confinement, and a process that leaves the group with `setsid` survives. A run in a weak mode
//!     is refused unless the spec allows it ([`RunSpec::with_weak_sandbox_allowed`], from the
//!     constitution's `weak_sandbox = "allow"`);
//!   - `Auto` picks the first of `Bwrap` and `Namespaces` that the probe
//!     ([`crate::sandbox::probe::probe_sandbox`]) finds confining on this machine, else `Plain`
//!     (weak, so refused unless allowed). Never silently "network only".
//!
//! A [`RunOutcome`] separates candidate failures (the command ran and exited non-zero) from infrastructure
//! failures (timeout, spawn error, signal, out of memory), which callers retry and never count against a
//! candidate.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;
use tokio::time::Instant;

use crate::sandbox::{Confinement, Plan, Report};

/// Which sandbox modes work on this machine and what each confines (for `ratchet sandbox` and a
/// future `ratchet check`); see [`crate::sandbox::probe`].
pub use crate::sandbox::probe::probe_sandbox;

/// The parent's environment variables a command sees; everything else is cleared.
pub const PASSED_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "TMPDIR", "CARGO_HOME", "RUSTUP_HOME"];

/// After the group was killed, how long to wait for the output pipes to close (a process that left the group
/// with `setsid` may hold them open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Markers in stderr that mean an allocation failed (Rust's alloc error, ENOMEM, perl, many C programs).
const ALLOC_FAILURE_MARKERS: [&str; 3] = ["memory allocation of", "cannot allocate memory", "out of memory"];

/// How a command is confined (a constitution setting, so defined in `protocol`); see the module
/// documentation for what each mode does and does not protect.
pub use protocol::governance::{ParseSandboxModeError, SandboxMode};

/// The mode a run uses: `Auto` becomes the strongest mode that confines on this machine (probed
/// once per process, a blocking call of a few tens of milliseconds the first time); the other
/// modes are returned unchanged.
pub fn resolve(mode: SandboxMode) -> SandboxMode {
    match mode {
        SandboxMode::Auto => crate::sandbox::probe::cached().auto,
        other => other,
    }
}

/// What to run and how. Build with [`RunSpec::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Run with `sh -c`.
    pub command: String,
    /// The worktree: the working directory, and the only writable place under `Bwrap`.
    pub cwd: PathBuf,
    /// Added to the cleared environment (after [`PASSED_ENV`], so these win).
    pub env: Vec<(String, String)>,
    /// Written to the command's stdin, which is then closed; `None` gives it /dev/null.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    pub allow_network: bool,
    /// The swarm's repository (its home): its `worktrees/` and git directory are hidden from the
    /// command, except what the checkout needs (read-only).
    pub repository: Option<PathBuf>,
    /// More directories the command may write (each must exist), e.g. the proposer program's home.
    pub writable: Vec<PathBuf>,
    /// The checkout's `.git` stays writable (the proposer's program may commit in its scratch
    /// checkout, whose `.git` the proposer never trusts afterwards); read-only otherwise.
    pub git_writable: bool,
    /// A weak sandbox (one that does not confine, see [`SandboxMode::is_weak`]) may be used; when
    /// false such a run is refused before it starts.
    pub allow_weak: bool,
    /// RLIMIT_AS (virtual address space) of every process of the command.
    pub memory_limit_bytes: Option<u64>,
    pub sandbox: SandboxMode,
    /// The full combined stdout and stderr is appended there, between a header and a footer line.
    pub log_path: Option<PathBuf>,
    /// Bytes of stdout and of stderr kept in memory; older bytes are dropped (the tail is kept) and a marker
    /// line says how many.
    pub max_capture: usize,
    /// Pin the command (and everything it starts) to these CPUs. Set in the child before exec, outside the
    /// sandbox wrapper, so the sandboxed command inherits it rather than chooses it.
    pub cpus: Option<Vec<usize>>,
    /// Run as a job of an engine (`slurm`) instead of on this host ([`crate::jobs`]).
    pub job: Option<crate::jobs::JobSpec>,
}

impl RunSpec {
    /// Defaults: no env, no stdin, 10 minutes, no network, no memory limit, `Auto` sandbox (never weak),
    /// no repository to hide, no log, 1 MiB.
    pub fn new(command: impl Into<String>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            command: command.into(),
            cwd: cwd.into(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(600),
            allow_network: false,
            repository: None,
            writable: Vec::new(),
            git_writable: false,
            allow_weak: false,
            memory_limit_bytes: None,
            sandbox: SandboxMode::Auto,
            log_path: None,
            max_capture: 1 << 20,
            cpus: None,
            job: None,
        }
    }

    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn with_stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_network(mut self, allow: bool) -> Self {
        self.allow_network = allow;
        self
    }

    pub fn with_repository(mut self, home: impl Into<PathBuf>) -> Self {
        self.repository = Some(home.into());
        self
    }

    pub fn with_writable(mut self, dir: impl Into<PathBuf>) -> Self {
        self.writable.push(dir.into());
        self
    }

    pub fn with_writable_git(mut self) -> Self {
        self.git_writable = true;
        self
    }

    pub fn with_weak_sandbox_allowed(mut self, allow: bool) -> Self {
        self.allow_weak = allow;
        self
    }

    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    pub fn with_sandbox(mut self, mode: SandboxMode) -> Self {
        self.sandbox = mode;
        self
    }

    pub fn with_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    pub fn with_cpus(mut self, cpus: Vec<usize>) -> Self {
        self.cpus = Some(cpus);
        self
    }

    pub fn with_max_capture(mut self, bytes: usize) -> Self {
        self.max_capture = bytes;
        self
    }

    /// Run on the engine `settings` name (approved governance's `[constitution.jobs]`); `bench`
    /// for a benchmark run (exclusive node, pinned CPU when asked for). Local: unchanged.
    pub fn with_jobs(mut self, settings: &protocol::governance::JobSettings, bench: bool) -> Self {
        self.job = crate::jobs::JobSpec::for_settings(settings, bench);
        self
    }

    /// Same as [`run`].
    pub async fn run(&self) -> RunOutcome {
        run(self).await
    }
}

/// How a run ended. Serialized as `{"kind": "exited", "value": 1}`, `{"kind": "timed_out"}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RunStatus {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal (and it was not our timeout or a memory limit).
    Signaled(i32),
    /// The timeout fired; the group was killed.
    TimedOut,
    /// The command could not be started (missing sandbox tool, bad working directory, unwritable log).
    SpawnFailed(String),
    /// Killed by SIGKILL under a memory limit, or failed with an allocation error on stderr.
    OutOfMemory,
}

impl RunStatus {
    pub fn success(&self) -> bool {
        *self == Self::Exited(0)
    }

    /// Not the candidate's fault (or not provably so): retry, never count it against the candidate.
    pub fn is_infra_failure(&self) -> bool {
        matches!(self, Self::TimedOut | Self::SpawnFailed(_) | Self::Signaled(_) | Self::OutOfMemory)
    }

    /// The command ran to its end and said no.
    pub fn is_candidate_failure(&self) -> bool {
        matches!(self, Self::Exited(code) if *code != 0)
    }
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    /// The tail of stdout (see [`RunSpec::max_capture`]), decoded lossily as UTF-8.
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
    /// The mode actually used (never `Auto`).
    pub sandbox: SandboxMode,
    /// The engine's job it ran as, when not local.
    pub job: Option<protocol::work::JobRecord>,
    /// When its process was started (`None`: it never was): which of two runs started at once
    /// (a duet slot) really started first.
    pub spawned: Option<Instant>,
}

impl RunOutcome {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn is_infra_failure(&self) -> bool {
        self.status.is_infra_failure()
    }

    pub fn is_candidate_failure(&self) -> bool {
        self.status.is_candidate_failure()
    }

    /// One line for logs, e.g. `exited with status 1 after 2.31s (sandbox namespaces)`; a weak
    /// sandbox says so: `(sandbox plain, weak)`.
    pub fn describe(&self) -> String {
        let weak = if self.sandbox.is_weak() { ", weak" } else { "" };
        let job = match &self.job {
            Some(j) => format!(", slurm job {} on {}", j.id, if j.node.is_empty() { "?" } else { &j.node }),
            None => String::new(),
        };
        let after = format!("after {:.2}s (sandbox {}{weak}{job})", self.duration.as_secs_f64(), self.sandbox);
        match &self.status {
            RunStatus::Exited(0) => format!("succeeded {after}"),
            RunStatus::Exited(code) => format!("exited with status {code} {after}"),
            RunStatus::Signaled(signal) => {
                let name = Signal::try_from(*signal).map_or("unknown signal", |s| s.as_str());
                format!("killed by signal {signal} ({name}) {after}")
            }
            RunStatus::TimedOut => format!("timed out and killed {after}"),
            RunStatus::SpawnFailed(why) => format!("could not start (sandbox {}): {why}", self.sandbox),
            RunStatus::OutOfMemory => format!("ran out of memory {after}"),
        }
    }

    /// The sandbox this run used, as evidence.
    pub fn sandbox_used(&self) -> protocol::work::SandboxUsed {
        protocol::work::SandboxUsed { mode: self.sandbox, weak: self.sandbox.is_weak() }
    }

    /// The result class of this run, as evidence.
    pub fn result(&self) -> protocol::work::CommandResult {
        if self.success() {
            protocol::work::CommandResult::Ok
        } else if self.is_infra_failure() {
            protocol::work::CommandResult::Infra
        } else {
            protocol::work::CommandResult::Failed
        }
    }
}

/// Runs `spec` to its end, its timeout, or until the returned future is dropped; never panics on the
/// command's behalf: every failure is a [`RunStatus`].
pub async fn run(spec: &RunSpec) -> RunOutcome {
    let start = Instant::now();
    let sandbox = resolve(spec.sandbox);
    let fail = |why: String| RunOutcome {
        status: RunStatus::SpawnFailed(why),
        stdout: String::new(),
        stderr: String::new(),
        duration: start.elapsed(),
        sandbox,
        job: None,
        spawned: None,
    };
    let cwd = match spec.cwd.canonicalize() {
        Ok(cwd) if cwd.is_dir() => cwd,
        Ok(_) => return fail(format!("working directory {} is not a directory", spec.cwd.display())),
        Err(e) => return fail(format!("working directory {} is not usable: {e}", spec.cwd.display())),
    };
    let mut log = match &spec.log_path {
        None => None,
        Some(path) => match open_log(path, spec, sandbox) {
            Ok(file) => Some(file),
            Err(e) => return fail(format!("cannot append to log file {}: {e}", path.display())),
        },
    };

    if sandbox.is_weak() && !spec.allow_weak {
        return fail(weak_refusal(spec.sandbox));
    }
    let confinement = Confinement {
        cwd: &cwd,
        repository: spec.repository.as_deref(),
        writable: &spec.writable,
        git_writable: spec.git_writable,
        allow_network: spec.allow_network,
    };
    // A confining sandbox reports how the command ended on a pipe the command never holds (not
    // across a job engine: there the step's exit status comes back through `srun`).
    let report_pipe = if sandbox.is_weak() || spec.job.is_some() {
        None
    } else {
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => Some(pipe),
            Err(e) => return fail(format!("cannot create the sandbox's report pipe: {e}")),
        }
    };
    let report_fd = report_pipe.as_ref().map(|(_, write)| write.as_raw_fd());
    let argv = match Plan::build(&confinement)
        .map_err(|e| e.to_string())
        .and_then(|plan| sandbox_argv(sandbox, &plan, report_fd, &spec.command))
    {
        Ok(argv) => argv,
        Err(why) => return fail(why),
    };
    // On a job engine the same sandboxed command line runs as a job step.
    let mut extra_env = spec.env.clone();
    let mut job_guard = None;
    let argv = match &spec.job {
        None => argv,
        Some(job) => {
            let name = crate::jobs::job_name();
            // Recorded before it exists, so no job of a leased task is ever unaccounted for.
            let record = match crate::jobs::record_submission(&name, job.settings.engine) {
                Ok(record) => record,
                Err(why) => return fail(why),
            };
            let memory_mb = spec.memory_limit_bytes.map(|b| b.div_ceil(1024 * 1024));
            extra_env.extend(crate::jobs::srun_env());
            let words = crate::jobs::srun_argv(job, &name, &cwd, memory_mb, argv);
            job_guard = Some(crate::jobs::CancelOnDrop { name, armed: true, record });
            words
        }
    };
    // Confined commands get the sandbox's private, empty /tmp as TMPDIR.
    let env = child_env(std::env::vars_os(), !sandbox.is_weak(), &extra_env);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&cwd)
        .env_clear()
        .envs(env)
        .stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let affinity = match &spec.cpus {
        None => None,
        Some(cpus) => match cpu_set(cpus) {
            Ok(set) => Some(set),
            Err(e) => return fail(format!("cannot pin to CPUs {cpus:?}: {e}")),
        },
    };
    // `srun` dies with this process (SIGTERM: it kills the step and ends its job), so an agent
    // killed outright leaves no job running on the cluster.
    let die_with = spec.job.is_some().then(nix::unistd::getpid);
    prepare_child(&mut cmd, spec.memory_limit_bytes, report_fd, affinity, die_with);
    let spawned = cmd.spawn();
    let spawned_at = Instant::now();
    // Our copy of the report pipe's write end: only the sandbox holds it from here on.
    let report = report_pipe.map(|(read, _write)| read);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let program = argv[0].to_string_lossy();
            return fail(format!("cannot start `{program}`: {e} (install it or choose another sandbox mode)"));
        }
    };
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).expect("a just-spawned child has a pid");
    let mut group = GroupKill { pgid: Pid::from_raw(pid), armed: true };

    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), spec.stdin.clone()) {
        // A command that exits without reading makes this fail with EPIPE, which is its business.
        tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
        });
    }
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (mut out, mut err) = (Tail::new(spec.max_capture), Tail::new(spec.max_capture));
    let (mut out_buf, mut err_buf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut out_open, mut err_open) = (true, true);
    let mut exit: Option<std::io::Result<ExitStatus>> = None;
    let mut timed_out = false;
    // Until the command ends: its timeout. After: how long we still wait for the pipes to close.
    let mut deadline = start + spec.timeout;
    let mut draining = false;
    while exit.is_none() || out_open || err_open {
        tokio::select! {
            status = child.wait(), if exit.is_none() => {
                exit = Some(status);
                group.kill();
                if !draining {
                    draining = true;
                    deadline = Instant::now() + DRAIN_GRACE;
                }
            }
            read = stdout.read(&mut out_buf), if out_open => match read {
                Ok(n) if n > 0 => {
                    out.push(&out_buf[..n]);
                    append_log(&mut log, &out_buf[..n]);
                }
                _ => out_open = false,
            },
            read = stderr.read(&mut err_buf), if err_open => match read {
                Ok(n) if n > 0 => {
                    err.push(&err_buf[..n]);
                    append_log(&mut log, &err_buf[..n]);
                }
                _ => err_open = false,
            },
            () = tokio::time::sleep_until(deadline) => {
                if draining {
                    break;
                }
                timed_out = true;
                group.kill();
                draining = true;
                deadline = Instant::now() + DRAIN_GRACE;
            }
        }
    }
    group.kill();
    group.armed = false;
    let job = match &mut job_guard {
        None => None,
        Some(g) => {
            // A step that ended by itself needs no cancel; one we killed (timeout) does, and so
            // does one whose `srun` was killed by someone else (its job may run on).
            if exit.as_ref().is_some_and(|e| e.as_ref().is_ok_and(|st| st.code().is_some())) && !timed_out {
                g.armed = false;
            }
            crate::jobs::record(&g.name).await
        }
    };
    drop(job_guard);

    let stderr = err.into_string();
    let report = report.map(|read| Report::parse(&read_available(read)));
    let exit = match (&report, exit) {
        // The command's own end, as the sandbox saw it (bubblewrap alone reports a signal as 128 + n).
        (Some(Some(Report::Exited(code))), Some(Ok(_))) => Some(Ok(ExitStatus::from_raw(code << 8))),
        (Some(Some(Report::Signaled(signal))), Some(Ok(_))) => Some(Ok(ExitStatus::from_raw(*signal))),
        (_, exit) => exit,
    };
    let mut status = classify(exit, timed_out, spec.memory_limit_bytes.is_some(), &stderr);
    match (&report, &status) {
        (_, RunStatus::TimedOut) => {}
        (Some(Some(Report::SetupFailed(why))), _) => {
            status = RunStatus::SpawnFailed(format!("the sandbox could not start the command: {why}"));
        }
        // The sandbox ended without running the command (bubblewrap's own errors).
        (Some(None), RunStatus::Exited(code)) => {
            let why = stderr.lines().next().unwrap_or("no message");
            status = RunStatus::SpawnFailed(format!("the sandbox could not start the command (exit {code}): {why}"));
        }
        _ => {}
    }
    let outcome = RunOutcome {
        status,
        stdout: out.into_string(),
        stderr,
        duration: start.elapsed(),
        sandbox,
        job,
        spawned: Some(spawned_at),
    };
    append_log(&mut log, format!("\n==> {}\n", outcome.describe()).as_bytes());
    outcome
}

/// The argument vector that runs `sh -c command` under `mode` (resolved: `Auto` is an error) applying
/// `plan` and reporting on `report_fd` (both ignored by `Plain`).
pub(crate) fn sandbox_argv(
    mode: SandboxMode,
    plan: &Plan,
    report_fd: Option<RawFd>,
    command: &str,
) -> Result<Vec<OsString>, String> {
    match mode {
        SandboxMode::Bwrap => Ok(plan.bwrap_argv(&crate::sandbox::launcher_path()?, report_fd, command)),
        SandboxMode::Namespaces => Ok(plan.launcher_argv(&crate::sandbox::launcher_path()?, report_fd, command)),
        SandboxMode::Plain => Ok(["sh", "-c", command].iter().map(OsString::from).collect()),
        SandboxMode::Auto => Err("the sandbox mode `auto` must be resolved before a run".into()),
    }
}

/// Why a run in a weak sandbox was refused, with the fixes.
fn weak_refusal(asked: SandboxMode) -> String {
    let why = if asked == SandboxMode::Auto {
        format!("no confining sandbox works on this machine ({})", crate::sandbox::probe::cached().why_not_confined())
    } else {
        format!("sandbox `{asked}` does not confine commands")
    };
    format!(
        "refused to run unconfined: {why}, and constitution.md has weak_sandbox = \"refuse\"; fix: install bubblewrap \
         (apt-get install bubblewrap) or enable unprivileged user namespaces, or set weak_sandbox = \"allow\" in \
         constitution.md to accept commands that can write outside their checkout, see the swarm's files and outlive their run"
    )
}

/// The child's environment: the allowed variables of `parent` (with `TMPDIR=/tmp` instead of the
/// parent's when the sandbox gives a private /tmp), then `extra` (which wins).
fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    private_tmp: bool,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(key, _)| PASSED_ENV.iter().any(|allowed| key == allowed))
        .filter(|(key, _)| !(private_tmp && key == "TMPDIR"))
        .collect();
    if private_tmp {
        env.push(("TMPDIR".into(), "/tmp".into()));
    }
    env.extend(extra.iter().map(|(key, value)| (key.into(), value.into())));
    env
}

/// The CPU set of `cpus` (built before the fork: no allocation happens in the child).
fn cpu_set(cpus: &[usize]) -> nix::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    Ok(set)
}

/// In the child between fork and exec: RLIMIT_CORE to 0, RLIMIT_AS when given, the CPU affinity
/// when given (outside the sandbox, so the sandboxed command inherits it rather than chooses it),
/// and the sandbox's report pipe kept open across exec (it is close-on-exec everywhere else).
#[allow(unsafe_code)]
fn prepare_child(
    cmd: &mut Command,
    memory_limit_bytes: Option<u64>,
    report_fd: Option<RawFd>,
    affinity: Option<CpuSet>,
    die_with: Option<Pid>,
) {
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe calls are allowed.
    // It calls setrlimit(2), sched_setaffinity(2), fcntl(2), prctl(2) and getppid(2) only (plain system
    // calls), captures plain values (integers and a copied cpu_set_t), and allocates nothing: converting an
    // errno into io::Error is a plain value. The fd is the write end of a pipe this process created just before
    // spawning and keeps open until the spawn returned.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(parent) = die_with {
                // The signal comes when the thread that forked ends: agents run commands from
                // their runtime's one thread, which lives as long as the process.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                if nix::unistd::getppid() != parent {
                    // The parent died before the signal was armed.
                    return Err(std::io::Error::other("the agent is gone"));
                }
            }
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            if let Some(bytes) = memory_limit_bytes {
                setrlimit(Resource::RLIMIT_AS, bytes, bytes)?;
            }
            if let Some(set) = &affinity {
                sched_setaffinity(Pid::from_raw(0), set)?;
            }
            if let Some(fd) = report_fd {
                let fd = BorrowedFd::borrow_raw(fd);
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
            }
            Ok(())
        });
    }
}

/// What the sandbox wrote on its report pipe, without waiting: every writer has ended once the
/// sandbox's first process has (its init dies with it), so what is there is all there is.
fn read_available(read: OwnedFd) -> String {
    use std::io::Read as _;
    let flags = nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    let nonblocking = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    let _ = nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETFL(nonblocking));
    let mut text = Vec::new();
    let _ = std::fs::File::from(read).take(4096).read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

/// The CPUs this process may run on (its affinity), in ascending order.
pub fn available_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn classify(
    exit: Option<std::io::Result<ExitStatus>>,
    timed_out: bool,
    memory_limited: bool,
    stderr: &str,
) -> RunStatus {
    let alloc_failed = || {
        let stderr = stderr.to_lowercase();
        ALLOC_FAILURE_MARKERS.iter().any(|marker| stderr.contains(marker))
    };
    match exit {
        _ if timed_out => RunStatus::TimedOut,
        None => RunStatus::TimedOut,
        Some(Err(e)) => RunStatus::SpawnFailed(format!("waiting for the command failed: {e}")),
        Some(Ok(status)) => match (status.code(), status.signal()) {
            (Some(0), _) => RunStatus::Exited(0),
            (Some(_), _) | (_, Some(_)) if alloc_failed() => RunStatus::OutOfMemory,
            (Some(code), _) => RunStatus::Exited(code),
            (None, Some(9)) if memory_limited => RunStatus::OutOfMemory,
            (None, Some(signal)) => RunStatus::Signaled(signal),
            (None, None) => RunStatus::SpawnFailed(format!("the command ended with an unknown status: {status}")),
        },
    }
}

/// Kills the whole process group: explicitly at timeout and at the end, and on drop while armed (the run
/// future was dropped).
struct GroupKill {
    pgid: Pid,
    armed: bool,
}

impl GroupKill {
    fn kill(&self) {
        // ESRCH (the group is already gone) is the normal case at the end.
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// The last `max` bytes of a stream, and how many came before them.
struct Tail {
    buf: Vec<u8>,
    max: usize,
    dropped: u64,
}

impl Tail {
    fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max, dropped: 0 }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Trim in batches so that a chatty command does not cost a memmove per read.
        if self.buf.len() > self.max.saturating_mul(2).max(64 * 1024) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if let Some(excess) = self.buf.len().checked_sub(self.max).filter(|excess| *excess > 0) {
            self.buf.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn into_string(mut self) -> String {
        self.trim();
        let text = String::from_utf8_lossy(&self.buf);
        if self.dropped == 0 { text.into_owned() } else { format!("[... {} bytes dropped ...]\n{text}", self.dropped) }
    }
}

fn open_log(path: &Path, spec: &RunSpec, sandbox: SandboxMode) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "==> $ {}  (in {}, sandbox {sandbox})", spec.command, spec.cwd.display())?;
    Ok(file)
}

fn append_log(log: &mut Option<std::fs::File>, bytes: &[u8]) {
    if let Some(file) = log
        && let Err(e) = file.write_all(bytes)
    {
        tracing::warn!("log file stopped accepting output, the rest is only in memory: {e}");
        *log = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(command: &str, dir: &Path) -> RunSpec {
        RunSpec::new(command, dir)
            .with_sandbox(SandboxMode::Plain)
            .with_weak_sandbox_allowed(true)
            .with_timeout(Duration::from_secs(60))
    }

    /// Every mode a behaviour must hold in: plain (weak, allowed here), bubblewrap and the
    /// namespaces launcher. Bubblewrap is required (`tests/run` installs it) unless
    /// `RATCHET_TEST_SKIP_BWRAP=1` says this machine cannot have it.
    fn modes() -> Vec<SandboxMode> {
        let mut modes = vec![SandboxMode::Plain, SandboxMode::Namespaces];
        if crate::sandbox::probe::cached().mode(SandboxMode::Bwrap).is_some_and(|m| m.works) {
            modes.push(SandboxMode::Bwrap);
        } else if std::env::var("RATCHET_TEST_SKIP_BWRAP").as_deref() == Ok("1") {
            println!("note: bubblewrap is not installed; its leg is skipped (RATCHET_TEST_SKIP_BWRAP=1)");
        } else {
            panic!(
                "bubblewrap is not installed: tests/run installs it (apt-get install bubblewrap), or set RATCHET_TEST_SKIP_BWRAP=1"
            );
        }
        modes
    }

    fn spec(mode: SandboxMode, command: &str, dir: &Path) -> RunSpec {
        plain(command, dir).with_sandbox(mode)
    }

    /// A marker unique to this test run, for finding the test's processes on the host by their
    /// arguments (pids printed inside a pid namespace mean nothing outside it).
    fn marker() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!("{}{:04}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
    }

    /// Host pids of live processes whose command line contains `needle`.
    fn running_with(needle: &str) -> Vec<i32> {
        let mut found = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
            if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) && pid != std::process::id() as i32 {
                found.push(pid);
            }
        }
        found
    }

    /// Waits (up to 10 s) until no process has `needle` in its arguments.
    async fn all_gone(needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = running_with(needle);
            if left.is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                for pid in left {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_classified_in_every_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in modes() {
            let ok = spec(mode, "exit 0", dir.path()).run().await;
            assert_eq!(ok.status, RunStatus::Exited(0), "{ok:?}");
            assert!(ok.success() && !ok.is_infra_failure() && !ok.is_candidate_failure());
            assert_eq!(ok.sandbox, mode);

            let no = spec(mode, "echo failing >&2; exit 3", dir.path()).run().await;
            assert_eq!(no.status, RunStatus::Exited(3), "{no:?}");
            assert!(no.is_candidate_failure() && !no.is_infra_failure() && !no.success());
            assert_eq!(no.stderr, "failing\n");
            assert!(no.describe().contains("exited with status 3"), "{}", no.describe());
            assert_eq!(spec(mode, "exit 125", dir.path()).run().await.status, RunStatus::Exited(125), "{mode}");

            let crashed = spec(mode, "kill -SEGV $$", dir.path()).run().await;
            assert_eq!(crashed.status, RunStatus::Signaled(11), "{mode}: {crashed:?}");
            assert!(crashed.is_infra_failure() && !crashed.is_candidate_failure());
            assert!(crashed.describe().contains("SIGSEGV"), "{}", crashed.describe());

            let nowhere = spec(mode, "true", &dir.path().join("missing")).run().await;
            assert!(matches!(&nowhere.status, RunStatus::SpawnFailed(why) if why.contains("missing")), "{nowhere:?}");
            assert!(nowhere.is_infra_failure());
        }
    }

    #[tokio::test]
    async fn a_sandbox_that_cannot_start_is_an_infrastructure_failure() {
        let dir = tempfile::tempdir().unwrap();
        // A writable directory that does not exist: the plan cannot be built.
        let spec = spec(SandboxMode::Namespaces, "true", dir.path()).with_writable(dir.path().join("gone"));
        let outcome = spec.run().await;
        assert!(matches!(&outcome.status, RunStatus::SpawnFailed(why) if why.contains("gone")), "{outcome:?}");
    }

    /// The pin is applied outside the sandbox wrapper and inherited by the command and its children.
    #[tokio::test]
    async fn cpus_pin_the_command_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let cpus = available_cpus();
        assert!(!cpus.is_empty());
        let last = *cpus.last().expect("a CPU");
        let show = "grep Cpus_allowed_list /proc/self/status; sh -c 'grep Cpus_allowed_list /proc/self/status'";
        for mode in [SandboxMode::Plain, SandboxMode::Auto] {
            let out = plain(show, dir.path()).with_sandbox(mode).with_cpus(vec![last]).run().await;
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert_eq!(lines.len(), 2, "{out:?}");
            for l in lines {
                assert_eq!(l.split_whitespace().nth(1), Some(last.to_string().as_str()), "{mode:?}: {l}");
            }
        }
        let bad = plain("true", dir.path()).with_cpus(vec![CpuSet::count() + 1]).run().await;
        assert!(matches!(&bad.status, RunStatus::SpawnFailed(why) if why.contains("cannot pin")), "{bad:?}");
    }

    #[test]
    fn classify_tells_memory_failures_from_others() {
        let exited = |code: i32| Some(Ok(ExitStatus::from_raw(code << 8)));
        let signaled = |signal: i32| Some(Ok(ExitStatus::from_raw(signal)));
        assert_eq!(classify(signaled(9), false, true, ""), RunStatus::OutOfMemory);
        assert_eq!(classify(signaled(9), false, false, ""), RunStatus::Signaled(9));
        assert_eq!(classify(signaled(9), true, true, ""), RunStatus::TimedOut);
        assert_eq!(classify(signaled(6), false, false, "memory allocation of 8 bytes failed"), RunStatus::OutOfMemory);
        assert_eq!(classify(exited(1), false, false, "x: Cannot allocate memory"), RunStatus::OutOfMemory);
        assert_eq!(classify(exited(1), false, true, "assertion failed"), RunStatus::Exited(1));
        assert_eq!(classify(exited(0), false, true, "Out of memory in an old test name"), RunStatus::Exited(0));
        assert_eq!(classify(None, true, false, ""), RunStatus::TimedOut);
    }

    #[tokio::test]
    async fn memory_limit_is_applied_and_exhaustion_is_out_of_memory() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 256 * 1024 * 1024;
        let hungry = "perl -e '$x = \"a\" x 500_000_000; print length $x'";
        for mode in modes() {
            let shown = spec(mode, "ulimit -v", dir.path()).with_memory_limit(limit).run().await;
            assert_eq!(shown.stdout.trim(), (limit / 1024).to_string(), "{mode}: {shown:?}");
            let starved = spec(mode, hungry, dir.path()).with_memory_limit(64 * 1024 * 1024).run().await;
            assert_eq!(starved.status, RunStatus::OutOfMemory, "{mode}: {starved:?}");
            assert!(starved.is_infra_failure());
        }
        let fed = plain(hungry, dir.path()).run().await;
        assert_eq!(fed.stdout, "500000000", "{fed:?}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        for mode in modes() {
            let m = marker();
            let command = format!("sleep 100.{m} & echo started; wait");
            let outcome = spec(mode, &command, dir.path()).with_timeout(Duration::from_secs(3)).run().await;
            assert_eq!(outcome.status, RunStatus::TimedOut, "{mode}: {outcome:?}");
            assert_eq!(outcome.stdout, "started\n");
            assert!(outcome.is_infra_failure() && outcome.describe().contains("timed out"));
            assert!(all_gone(&format!("100.{m}")).await, "{mode}: the background sleep survived the timeout");
        }
    }

    #[tokio::test]
    async fn the_end_of_a_run_kills_background_processes_and_confined_ones_even_after_setsid() {
        let dir = tempfile::tempdir().unwrap();
        for mode in modes() {
            let m = marker();
            // Waits until the setsid sleeper has its own session (it says so once setsid is done).
            let command = format!(
                "sleep 100.{m}1 >/dev/null 2>&1 & (setsid sh -c 'touch .ready-{m}; exec sleep 100.{m}2' >/dev/null 2>&1 &); \
                 until [ -e .ready-{m} ]; do sleep 0.01; done; echo ok"
            );
            let outcome = spec(mode, &command, dir.path()).run().await;
            assert_eq!(outcome.status, RunStatus::Exited(0), "{outcome:?}");
            assert!(all_gone(&format!("100.{m}1")).await, "{mode}: the background sleep outlived its run");
            let needle = format!("100.{m}2");
            if mode == SandboxMode::Plain {
                // Plain is weak: a process that leaves the group survives (the control).
                let left = running_with(&needle);
                assert!(!left.is_empty(), "plain: the setsid sleeper did not survive, so this test tests nothing");
                for pid in left {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            } else {
                assert!(all_gone(&needle).await, "{mode}: the setsid sleeper outlived its run");
            }
        }
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        for mode in modes() {
            let m = marker();
            let spec = spec(mode, &format!("sleep 100.{m} & touch .started-{m}; wait"), dir.path());
            let mut run = Box::pin(spec.run());
            let needle = format!("100.{m}");
            let deadline = Instant::now() + Duration::from_secs(10);
            // Poll the run until its sleeper runs, then drop it.
            while !dir.path().join(format!(".started-{m}")).exists() {
                assert!(Instant::now() < deadline, "{mode}: the sleeper never started");
                tokio::select! {
                    outcome = &mut run => panic!("the run ended on its own: {outcome:?}"),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            drop(run);
            assert!(all_gone(&needle).await, "{mode}: the background sleep survived dropping the run");
        }
    }

    #[tokio::test]
    async fn stdin_is_delivered_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        for mode in modes() {
            let echoed = spec(mode, "cat", dir.path()).with_stdin("goal: faster\n").run().await;
            assert_eq!(echoed.stdout, "goal: faster\n", "{mode}");
            // More than a pipe buffer, while the command also writes: no deadlock.
            let big = spec(mode, "tee /dev/stderr | wc -c", dir.path()).with_stdin(vec![b'x'; 1 << 20]).run().await;
            assert_eq!(big.stdout.trim(), "1048576", "{mode}: {big:?}");
            let nothing = spec(mode, "cat", dir.path()).run().await;
            assert_eq!((nothing.status, nothing.stdout.as_str()), (RunStatus::Exited(0), ""));
        }
    }

    #[test]
    fn child_env_keeps_only_the_allowed_variables_and_the_specs() {
        let parent =
            [("PATH", "/bin"), ("GITHUB_TOKEN", "t"), ("AWS_SECRET_ACCESS_KEY", "k"), ("HOME", "/h"), ("TMPDIR", "/t")]
                .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let extra = [("RATCHET_GOAL".into(), "speed".into()), ("HOME".into(), "/w".into())];
        let shown = |env: Vec<(OsString, OsString)>| {
            env.iter().map(|(k, v)| format!("{}={}", k.display(), v.display())).collect::<Vec<_>>()
        };
        let env = child_env(parent.clone(), false, &extra);
        assert_eq!(shown(env), ["PATH=/bin", "HOME=/h", "TMPDIR=/t", "RATCHET_GOAL=speed", "HOME=/w"]);
        let confined = child_env(parent, true, &extra);
        assert_eq!(shown(confined), ["PATH=/bin", "HOME=/h", "TMPDIR=/tmp", "RATCHET_GOAL=speed", "HOME=/w"]);
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        // cargo sets CARGO_PKG_NAME for the test process; it stands for any secret the parent holds.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some(), "run this test under cargo");
        for mode in modes() {
            let outcome = spec(mode, "env", dir.path()).with_env("RATCHET_GOAL", "speed").run().await;
            assert!(!outcome.stdout.contains("CARGO_PKG_NAME="), "{}", outcome.stdout);
            assert!(outcome.stdout.contains("RATCHET_GOAL=speed\n") && outcome.stdout.contains("PATH="));
            if mode != SandboxMode::Plain {
                assert!(outcome.stdout.contains("TMPDIR=/tmp\n"), "{mode}: {}", outcome.stdout);
            }
        }
    }

    #[tokio::test]
    async fn output_is_tail_truncated_and_fully_logged() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gate.log");
        let spec = plain("seq 1 100000; echo done >&2", dir.path()).with_max_capture(1000).with_log(&log);
        let outcome = spec.run().await;
        assert!(outcome.stdout.starts_with("[... ") && outcome.stdout.ends_with("\n99999\n100000\n"));
        assert!(outcome.stdout.len() < 1100, "kept {} bytes", outcome.stdout.len());
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.starts_with("==> $ seq 1 100000"), "{}", &logged[..100]);
        assert!(logged.contains("\n1\n2\n3\n") && logged.contains("\n100000\n") && logged.contains("done\n"));
        assert!(logged.ends_with(&format!("==> {}\n", outcome.describe())));
        // Appended, not overwritten.
        spec.run().await;
        assert_eq!(std::fs::read_to_string(&log).unwrap().matches("==> $ seq").count(), 2);
    }

    #[tokio::test]
    async fn confined_modes_block_the_network_unless_allowed_and_keep_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let local = "perl -MIO::Socket::INET -e '$l = IO::Socket::INET->new(Listen => 1, LocalAddr => \"127.0.0.1\") \
                     or die $!; IO::Socket::INET->new(PeerAddr => \"127.0.0.1\", PeerPort => $l->sockport) or die $!'";
        for mode in modes().into_iter().filter(|m| *m != SandboxMode::Plain) {
            let ns = spec(mode, "readlink /proc/self/ns/net", dir.path());
            let confined = ns.clone().run().await;
            assert_eq!(confined.sandbox, mode);
            assert_ne!(confined.stdout.trim(), ours.to_str().unwrap(), "{confined:?}");
            let open = ns.with_network(true).run().await;
            assert_eq!(open.stdout.trim(), ours.to_str().unwrap(), "{open:?}");
            let outcome = spec(mode, local, dir.path()).run().await;
            assert_eq!(outcome.status, RunStatus::Exited(0), "{mode}: {outcome:?}");
        }
    }

    #[tokio::test]
    async fn auto_chooses_a_confining_mode_and_a_weak_one_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let report = crate::sandbox::probe::cached();
        let chosen = resolve(SandboxMode::Auto);
        assert_eq!(chosen, report.auto);
        assert!(report.mode(SandboxMode::Namespaces).is_some_and(|m| m.confines()), "{report:#?}");
        assert_ne!(chosen, SandboxMode::Plain, "a confining mode works here, so auto must confine: {report:#?}");
        let outcome = RunSpec::new("echo hi", dir.path()).run().await;
        assert_eq!((outcome.status, outcome.stdout.as_str(), outcome.sandbox), (RunStatus::Exited(0), "hi\n", chosen));

        let refused = RunSpec::new("echo hi", dir.path()).with_sandbox(SandboxMode::Plain).run().await;
        let RunStatus::SpawnFailed(why) = &refused.status else { panic!("{refused:?}") };
        assert!(why.contains("weak_sandbox") && why.contains("constitution.md") && why.contains("bubblewrap"), "{why}");
        assert!(refused.is_infra_failure() && refused.stdout.is_empty());
        let allowed =
            RunSpec::new("echo hi", dir.path()).with_sandbox(SandboxMode::Plain).with_weak_sandbox_allowed(true);
        assert_eq!(allowed.run().await.stdout, "hi\n");
    }

    #[test]
    fn the_probe_tells_what_each_mode_confines() {
        let report = crate::sandbox::probe::cached();
        let plain = report.mode(SandboxMode::Plain).unwrap();
        assert!(plain.works && plain.properties.iter().all(|p| !p.holds), "{plain:#?}");
        assert!(SandboxMode::Plain.is_weak() && !SandboxMode::Namespaces.is_weak() && !SandboxMode::Bwrap.is_weak());
        for mode in [SandboxMode::Bwrap, SandboxMode::Namespaces] {
            let m = report.mode(mode).unwrap();
            assert!(!m.works || m.properties.len() == crate::sandbox::probe::PROPERTIES.len(), "{m:#?}");
        }
    }

    #[test]
    fn modes_parse_and_statuses_serialize() {
        assert_eq!("namespaces".parse::<SandboxMode>(), Ok(SandboxMode::Namespaces));
        let err = "docker".parse::<SandboxMode>().unwrap_err().to_string();
        assert_eq!(err, "unknown sandbox mode `docker`: use one of auto, bwrap, namespaces, plain");
        assert_eq!(serde_json::to_string(&RunStatus::Exited(1)).unwrap(), r#"{"kind":"exited","value":1}"#);
        assert_eq!(serde_json::to_string(&RunStatus::TimedOut).unwrap(), r#"{"kind":"timed_out"}"#);
        let outcome = RunOutcome {
            status: RunStatus::OutOfMemory,
            stdout: "secret output".into(),
            stderr: String::new(),
            duration: Duration::from_millis(1500),
            sandbox: SandboxMode::Plain,
            job: None,
            spawned: None,
        };
        assert_eq!(outcome.result(), protocol::work::CommandResult::Infra);
        assert_eq!(outcome.sandbox_used(), protocol::work::SandboxUsed { mode: SandboxMode::Plain, weak: true });
    }
}
