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
//! - is confined by a [`SandboxMode`]:
//!   - `Bwrap` (bubblewrap): the whole file system read-only except the worktree (`cwd`) and a fresh `/tmp`,
//!     private pids, no network unless allowed (loopback still works), dies with its parent.
//!   - `Namespaces` (`unshare --user --map-root-user --net`): confines the network (a private network
//!     namespace whose loopback is brought up when `ip` is available) and nothing else. It does **not**
//!     confine the file system: the command can write wherever the user can. Its processes are killed with
//!     the group, as in `Plain`.
//!   - `Plain`: rlimits, timeout and the group kill only. Weaker: no file-system or network confinement, and a
//!     process that leaves the group with `setsid` survives.
//!   - `Auto` picks the first of these that works on this machine, probed once per process.
//!
//! A [`RunOutcome`] separates candidate failures (the command ran and exited non-zero) from infrastructure
//! failures (timeout, spawn error, signal, out of memory), which callers retry and never count against a
//! candidate.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;
use tokio::time::Instant;

/// The parent's environment variables a command sees; everything else is cleared.
pub const PASSED_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "TMPDIR", "CARGO_HOME", "RUSTUP_HOME"];

/// After the group was killed, how long to wait for the output pipes to close (a process that left the group
/// with `setsid` may hold them open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Markers in stderr that mean an allocation failed (Rust's alloc error, ENOMEM, perl, many C programs).
const ALLOC_FAILURE_MARKERS: [&str; 3] = ["memory allocation of", "cannot allocate memory", "out of memory"];

/// How a command is confined; see the module documentation for what each mode does and does not protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    Auto,
    Bwrap,
    Namespaces,
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox mode `{0}`: use one of auto, bwrap, namespaces, plain")]
pub struct ParseSandboxModeError(pub String);

impl FromStr for SandboxMode {
    type Err = ParseSandboxModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "bwrap" => Ok(Self::Bwrap),
            "namespaces" => Ok(Self::Namespaces),
            "plain" => Ok(Self::Plain),
            other => Err(ParseSandboxModeError(other.to_owned())),
        }
    }
}

impl std::fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Bwrap => "bwrap",
            Self::Namespaces => "namespaces",
            Self::Plain => "plain",
        }
    }

    /// The mode a run uses: `Auto` becomes the strongest mode that works here (probed once per process, a
    /// blocking call of a few milliseconds the first time); the other modes are returned unchanged.
    pub fn resolve(self) -> SandboxMode {
        static DETECTED: OnceLock<SandboxMode> = OnceLock::new();
        match self {
            Self::Auto => *DETECTED.get_or_init(|| {
                let probes: [(SandboxMode, &[&str]); 2] = [
                    (Self::Bwrap, &["bwrap", "--die-with-parent", "--unshare-net", "--ro-bind", "/", "/", "true"]),
                    (Self::Namespaces, &["unshare", "--user", "--map-root-user", "--net", "true"]),
                ];
                probes
                    .into_iter()
                    .find(|(_, argv)| {
                        std::process::Command::new(argv[0])
                            .args(&argv[1..])
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .is_ok_and(|status| status.success())
                    })
                    .map_or(Self::Plain, |(mode, _)| mode)
            }),
            other => other,
        }
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
    /// RLIMIT_AS (virtual address space) of every process of the command.
    pub memory_limit_bytes: Option<u64>,
    pub sandbox: SandboxMode,
    /// The full combined stdout and stderr is appended there, between a header and a footer line.
    pub log_path: Option<PathBuf>,
    /// Bytes of stdout and of stderr kept in memory; older bytes are dropped (the tail is kept) and a marker
    /// line says how many.
    pub max_capture: usize,
}

impl RunSpec {
    /// Defaults: no env, no stdin, 10 minutes, no network, no memory limit, `Auto` sandbox, no log, 1 MiB.
    pub fn new(command: impl Into<String>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            command: command.into(),
            cwd: cwd.into(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(600),
            allow_network: false,
            memory_limit_bytes: None,
            sandbox: SandboxMode::Auto,
            log_path: None,
            max_capture: 1 << 20,
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

    pub fn with_max_capture(mut self, bytes: usize) -> Self {
        self.max_capture = bytes;
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

    /// One line for logs, e.g. `exited with status 1 after 2.31s (sandbox namespaces)`.
    pub fn describe(&self) -> String {
        let after = format!("after {:.2}s (sandbox {})", self.duration.as_secs_f64(), self.sandbox);
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

    /// Everything but the outputs, for events and result files.
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": self.status,
            "description": self.describe(),
            "duration_ms": u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "sandbox": self.sandbox,
            "infra_failure": self.is_infra_failure(),
            "stdout_bytes": self.stdout.len(),
            "stderr_bytes": self.stderr.len(),
        })
    }
}

/// Runs `spec` to its end, its timeout, or until the returned future is dropped; never panics on the
/// command's behalf: every failure is a [`RunStatus`].
pub async fn run(spec: &RunSpec) -> RunOutcome {
    let start = Instant::now();
    let sandbox = spec.sandbox.resolve();
    let fail = |why: String| RunOutcome {
        status: RunStatus::SpawnFailed(why),
        stdout: String::new(),
        stderr: String::new(),
        duration: start.elapsed(),
        sandbox,
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

    let argv = sandbox_argv(sandbox, &spec.command, &cwd, spec.allow_network);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&cwd)
        .env_clear()
        .envs(child_env(std::env::vars_os(), &spec.env))
        .stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    set_rlimits_before_exec(&mut cmd, spec.memory_limit_bytes);
    let mut child = match cmd.spawn() {
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

    let stderr = err.into_string();
    let status = classify(exit, timed_out, spec.memory_limit_bytes.is_some(), &stderr);
    let outcome = RunOutcome { status, stdout: out.into_string(), stderr, duration: start.elapsed(), sandbox };
    append_log(&mut log, format!("\n==> {}\n", outcome.describe()).as_bytes());
    outcome
}

/// The argument vector that runs `sh -c command` under `mode` (which must be resolved: `Auto` runs plain).
fn sandbox_argv(mode: SandboxMode, command: &str, cwd: &Path, allow_network: bool) -> Vec<OsString> {
    let os = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
    let cwd = cwd.as_os_str().to_owned();
    let mut argv = Vec::new();
    match mode {
        SandboxMode::Bwrap => {
            argv.extend(os(&["bwrap", "--die-with-parent", "--unshare-pid"]));
            if !allow_network {
                argv.extend(os(&["--unshare-net"]));
            }
            argv.extend(os(&["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]));
            argv.extend([OsString::from("--bind"), cwd.clone(), cwd.clone(), OsString::from("--chdir"), cwd]);
            argv.extend(os(&["--", "sh", "-c", command]));
        }
        SandboxMode::Namespaces => {
            argv.extend(os(&["unshare", "--user", "--map-root-user"]));
            if allow_network {
                argv.extend(os(&["--", "sh", "-c", command]));
            } else {
                // A new network namespace has its loopback down; bring it up so local servers in tests work,
                // then exec the command so its exit status and signals reach us unchanged.
                let lo_up = "(PATH=\"$PATH:/usr/sbin:/sbin\"; ip link set lo up) >/dev/null 2>&1; exec sh -c \"$1\"";
                argv.extend(os(&["--net", "--", "sh", "-c", lo_up, "ratchet-sandbox", command]));
            }
        }
        SandboxMode::Auto | SandboxMode::Plain => argv.extend(os(&["sh", "-c", command])),
    }
    argv
}

/// The child's environment: the allowed variables of `parent`, then `extra` (which wins).
fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> =
        parent.into_iter().filter(|(key, _)| PASSED_ENV.iter().any(|allowed| key == allowed)).collect();
    env.extend(extra.iter().map(|(key, value)| (key.into(), value.into())));
    env
}

/// Sets RLIMIT_CORE to 0 and, when given, RLIMIT_AS, in the child between fork and exec.
#[allow(unsafe_code)]
fn set_rlimits_before_exec(cmd: &mut Command, memory_limit_bytes: Option<u64>) {
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe calls are allowed.
    // It calls setrlimit(2) only (async-signal-safe), captures a plain Option<u64>, and allocates nothing:
    // converting an errno into io::Error is a plain value.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            if let Some(bytes) = memory_limit_bytes {
                setrlimit(Resource::RLIMIT_AS, bytes, bytes)?;
            }
            Ok(())
        });
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
        RunSpec::new(command, dir).with_sandbox(SandboxMode::Plain).with_timeout(Duration::from_secs(60))
    }

    fn namespaces_available() -> bool {
        let works = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "true"])
            .status()
            .is_ok_and(|status| status.success());
        if !works {
            println!("note: skipped, `unshare --user --map-root-user --net true` does not work on this machine");
        }
        works
    }

    /// Waits (up to 10 s) until `pid` is gone or a zombie; false if it is still running then.
    async fn gone(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) => return true,
                Ok(_) if Instant::now() > deadline => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn first_pid(stdout: &str) -> i32 {
        stdout.trim().lines().next().and_then(|line| line.trim().parse().ok()).expect("the command printed a pid")
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let ok = plain("exit 0", dir.path()).run().await;
        assert_eq!(ok.status, RunStatus::Exited(0));
        assert!(ok.success() && !ok.is_infra_failure() && !ok.is_candidate_failure());
        assert_eq!(ok.sandbox, SandboxMode::Plain);

        let no = plain("echo failing >&2; exit 3", dir.path()).run().await;
        assert_eq!(no.status, RunStatus::Exited(3));
        assert!(no.is_candidate_failure() && !no.is_infra_failure() && !no.success());
        assert_eq!(no.stderr, "failing\n");
        assert!(no.describe().contains("exited with status 3"), "{}", no.describe());

        let crashed = plain("kill -SEGV $$", dir.path()).run().await;
        assert_eq!(crashed.status, RunStatus::Signaled(11));
        assert!(crashed.is_infra_failure() && !crashed.is_candidate_failure());
        assert!(crashed.describe().contains("SIGSEGV"), "{}", crashed.describe());

        let nowhere = plain("true", &dir.path().join("missing")).run().await;
        assert!(matches!(&nowhere.status, RunStatus::SpawnFailed(why) if why.contains("missing")), "{nowhere:?}");
        assert!(nowhere.is_infra_failure());
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
        let shown = plain("ulimit -v", dir.path()).with_memory_limit(limit).run().await;
        assert_eq!(shown.stdout.trim(), (limit / 1024).to_string(), "{shown:?}");

        let hungry = "perl -e '$x = \"a\" x 500_000_000; print length $x'";
        let starved = plain(hungry, dir.path()).with_memory_limit(64 * 1024 * 1024).run().await;
        assert_eq!(starved.status, RunStatus::OutOfMemory, "{starved:?}");
        assert!(starved.is_infra_failure());
        let fed = plain(hungry, dir.path()).run().await;
        assert_eq!(fed.stdout, "500000000", "{fed:?}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let spec = plain("sleep 100 & echo $!; wait", dir.path()).with_timeout(Duration::from_secs(3));
        let outcome = spec.run().await;
        assert_eq!(outcome.status, RunStatus::TimedOut, "{outcome:?}");
        assert!(outcome.is_infra_failure() && outcome.describe().contains("timed out"));
        assert!(gone(first_pid(&outcome.stdout)).await, "the background sleep survived the timeout");
    }

    #[tokio::test]
    async fn the_end_of_a_run_kills_background_processes() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = plain("sleep 100 >/dev/null 2>&1 & echo $!", dir.path()).run().await;
        assert_eq!(outcome.status, RunStatus::Exited(0));
        assert!(gone(first_pid(&outcome.stdout)).await, "the background sleep outlived its run");
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pid.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reader = fifo.clone();
        // A plain thread: if the command never writes, it blocks forever without holding up the test's end.
        std::thread::spawn(move || tx.send(std::fs::read_to_string(reader)));
        let spec = plain(&format!("sleep 100 & echo $! > {}; wait", fifo.display()), dir.path());
        let pid = tokio::select! {
            outcome = spec.run() => panic!("the run ended on its own: {outcome:?}"),
            text = rx => first_pid(&text.unwrap().unwrap()),
        };
        assert!(gone(pid).await, "the background sleep survived dropping the run");
    }

    #[tokio::test]
    async fn stdin_is_delivered_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let echoed = plain("cat", dir.path()).with_stdin("goal: faster\n").run().await;
        assert_eq!(echoed.stdout, "goal: faster\n");
        // More than a pipe buffer, while the command also writes: no deadlock.
        let big = plain("tee /dev/stderr | wc -c", dir.path()).with_stdin(vec![b'x'; 1 << 20]).run().await;
        assert_eq!(big.stdout.trim(), "1048576");
        let nothing = plain("cat", dir.path()).run().await;
        assert_eq!((nothing.status, nothing.stdout.as_str()), (RunStatus::Exited(0), ""));
    }

    #[test]
    fn child_env_keeps_only_the_allowed_variables_and_the_specs() {
        let parent = [("PATH", "/bin"), ("GITHUB_TOKEN", "t"), ("AWS_SECRET_ACCESS_KEY", "k"), ("HOME", "/h")]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = child_env(parent, &[("RATCHET_GOAL".into(), "speed".into()), ("HOME".into(), "/w".into())]);
        let names: Vec<_> = env.iter().map(|(k, v)| format!("{}={}", k.display(), v.display())).collect();
        assert_eq!(names, ["PATH=/bin", "HOME=/h", "RATCHET_GOAL=speed", "HOME=/w"]);
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        // cargo sets CARGO_PKG_NAME for the test process; it stands for any secret the parent holds.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some(), "run this test under cargo");
        let outcome = plain("env", dir.path()).with_env("RATCHET_GOAL", "speed").run().await;
        assert!(!outcome.stdout.contains("CARGO_PKG_NAME="), "{}", outcome.stdout);
        assert!(outcome.stdout.contains("RATCHET_GOAL=speed\n") && outcome.stdout.contains("PATH="));
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
    async fn namespaces_block_the_network_unless_allowed() {
        if !namespaces_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let spec = RunSpec::new("readlink /proc/self/ns/net", dir.path()).with_sandbox(SandboxMode::Namespaces);
        let confined = spec.clone().run().await;
        assert_eq!(confined.sandbox, SandboxMode::Namespaces);
        assert_ne!(confined.stdout.trim(), ours.to_str().unwrap(), "{confined:?}");
        let open = spec.with_network(true).run().await;
        assert_eq!(open.stdout.trim(), ours.to_str().unwrap(), "{open:?}");
    }

    #[tokio::test]
    async fn namespaces_keep_loopback_and_signals() {
        if !namespaces_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = |command: &str| RunSpec::new(command, dir.path()).with_sandbox(SandboxMode::Namespaces);
        let local = "perl -MIO::Socket::INET -e '$l = IO::Socket::INET->new(Listen => 1, LocalAddr => \"127.0.0.1\") \
                     or die $!; IO::Socket::INET->new(PeerAddr => \"127.0.0.1\", PeerPort => $l->sockport) or die $!'";
        let outcome = ns(local).run().await;
        assert_eq!(outcome.status, RunStatus::Exited(0), "{outcome:?}");
        assert_eq!(ns("kill -SEGV $$").run().await.status, RunStatus::Signaled(11));
        assert_eq!(ns("exit 4").run().await.status, RunStatus::Exited(4));
    }

    #[tokio::test]
    async fn auto_chooses_a_working_mode() {
        let dir = tempfile::tempdir().unwrap();
        let chosen = SandboxMode::Auto.resolve();
        assert_ne!(chosen, SandboxMode::Auto);
        if namespaces_available() {
            assert_ne!(chosen, SandboxMode::Plain, "unshare works here, Auto must confine");
        }
        let outcome = RunSpec::new("echo hi", dir.path()).run().await;
        assert_eq!((outcome.status, outcome.stdout.as_str(), outcome.sandbox), (RunStatus::Exited(0), "hi\n", chosen));
    }

    #[test]
    fn bwrap_confines_the_file_system_to_the_worktree() {
        let argv = |net| {
            let argv = sandbox_argv(SandboxMode::Bwrap, "make test", Path::new("/w/t"), net);
            argv.iter().map(|a| a.to_str().unwrap().to_owned()).collect::<Vec<_>>().join(" ")
        };
        let confined = argv(false);
        assert!(confined.starts_with("bwrap --die-with-parent --unshare-pid --unshare-net --ro-bind / / "));
        assert!(confined.contains("--tmpfs /tmp --bind /w/t /w/t --chdir /w/t -- sh -c make test"), "{confined}");
        assert!(!argv(true).contains("--unshare-net"));
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
        };
        let summary = outcome.summary_json();
        assert_eq!(summary["status"]["kind"], "out_of_memory");
        assert_eq!((summary["duration_ms"].as_u64(), summary["sandbox"].as_str()), (Some(1500), Some("plain")));
        assert!(!summary.to_string().contains("secret output"));
    }
}
