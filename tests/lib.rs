//! Shared helpers for the integration tests: locating the workspace binaries, hermetic homes,
//! process guards that kill whole process groups, and spawning agents that report their address.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Path of a workspace binary (`target/<profile>/<name>`), built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/integration-xxxx -> target/<profile>/<name>; a bench binary
    // (target/<profile>/multihost-bench) finds its siblings.
    let dir = exe.parent().expect("an executable lives in a directory");
    let dir = if dir.ends_with("deps") { dir.parent().expect("deps lives in target/<profile>") } else { dir };
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// A per-test home: a temporary directory holding a fresh git repository with one commit.
pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> TestHome {
        let dir = tempfile::Builder::new().prefix("ratchet-test-").tempdir().expect("temp dir");
        let h = TestHome { dir };
        h.git(&["init", "-q", "-b", "main"]);
        std::fs::write(h.path().join("README.md"), "test home\n").expect("write README");
        std::fs::write(h.path().join(".gitignore"), "worktrees/\n").expect("write .gitignore");
        h.git(&["add", "-A"]);
        h.git(&["commit", "-q", "-m", "initial"]);
        h
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run git in the home with a hermetic configuration; panics with stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(self.path(), args)
    }
}

impl Default for TestHome {
    fn default() -> Self {
        TestHome::new()
    }
}

/// Environment every child of a test gets: no user or system git config, a private HOME.
pub fn hermetic(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ratchet Test")
        .env("GIT_AUTHOR_EMAIL", "test@ratchet.invalid")
        .env("GIT_COMMITTER_NAME", "Ratchet Test")
        .env("GIT_COMMITTER_EMAIL", "test@ratchet.invalid");
    for k in ["CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
}

pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    hermetic(&mut cmd, dir);
    let out = cmd.arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A child in its own process group; dropping the guard kills the whole group and reaps it
/// (rust-analyzer's JodGroupChild).
pub struct ProcGuard {
    pub child: Child,
}

impl ProcGuard {
    /// Spawn `cmd` in a fresh process group.
    pub fn spawn(mut cmd: Command) -> ProcGuard {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().expect("spawning child process");
        ProcGuard { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid()), sig);
    }

    /// Whether any process of the group is still alive.
    pub fn group_alive(&self) -> bool {
        group_alive(self.pid())
    }

    /// Wait for exit up to `timeout`; returns the exit status if it exited.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The bearer token [`spawn_agent`] gives an agent unless the test sets `RATCHET_TOKEN` or
/// `RATCHET_OPEN` itself (every endpoint but the card requires one).
pub const TEST_TOKEN: &str = "ratchet-integration-test-token";

/// A running agent binary and the address it reported.
pub struct Agent {
    pub proc: ProcGuard,
    pub url: String,
    pub state_dir: PathBuf,
    /// The token it requires (None in the open mode).
    pub token: Option<String>,
    /// stdout lines after the listening line, forwarded by a thread.
    pub stdout: std::sync::mpsc::Receiver<String>,
}

impl Agent {
    /// An A2A client of this agent that sends its token.
    pub fn client(&self) -> kit::client::A2aClient {
        kit::client::A2aClient::new(&self.url).with_token(self.token.clone())
    }
}

/// Start agent binary `name` with its home at `home` and extra environment (with
/// `RATCHET_TOKEN=`[`TEST_TOKEN`] unless `env` sets `RATCHET_TOKEN` or `RATCHET_OPEN`); waits
/// (with a deadline, reading its stdout, no sleeping) for the `RATCHET_LISTENING <url>` line.
pub fn spawn_agent(name: &str, home: &Path, env: &[(&str, &str)]) -> Agent {
    let state_dir = kit::layout::Layout::new(home).agent_state_dir(name);
    let mut cmd = Command::new(bin(name));
    hermetic(&mut cmd, home);
    cmd.current_dir(home)
        .env("RATCHET_HOME", home)
        .env("RATCHET_LISTEN", "127.0.0.1:0")
        .env("RATCHET_STATE_DIR", &state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut token = Some(TEST_TOKEN.to_string());
    if env.iter().any(|(k, _)| *k == "RATCHET_TOKEN" || *k == "RATCHET_OPEN") {
        token = env.iter().find(|(k, _)| *k == "RATCHET_TOKEN").map(|(_, v)| v.to_string());
    } else {
        cmd.env("RATCHET_TOKEN", TEST_TOKEN);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = ProcGuard::spawn(cmd);
    let lines = kit::agent::StdoutLines::spawn(proc.child.stdout.take().expect("piped stdout"));
    let url = lines.listening(Duration::from_secs(20)).unwrap_or_else(|e| panic!("agent {name}: {e}"));
    Agent { proc, url, state_dir, token, stdout: lines.into_receiver() }
}

/// A current-thread tokio runtime for tests that talk HTTP.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Poll `f` until it returns Some, or panic after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// `ratchet up` / `ratchet status` (used by tests/integration/supervisor.rs)

/// A command running the workspace's `ratchet` binary in `home`, hermetic environment.
pub fn ratchet_cmd(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("ratchet"));
    hermetic(&mut cmd, home);
    cmd.current_dir(home).args(args);
    cmd
}

/// The stdout and stderr lines of a child, read by threads, so a test can wait for a line with a
/// deadline instead of sleeping. Waits advance a cursor: each wait looks only at lines after the
/// one the previous wait matched.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    cursor: usize,
}

impl Lines {
    /// Take `child`'s piped stdout and stderr; stderr lines are prefixed with `stderr: `.
    /// `on_stdout` sees every stdout line as it arrives (in the reader thread).
    pub fn capture(child: &mut Child, on_stdout: impl Fn(&str) + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                on_stdout(&line);
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx2.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen: Vec::new(), cursor: 0 }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
    }

    /// The next line (after the cursor) containing `needle`; panics after `timeout` with all the
    /// output seen so far.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(i) = self.seen[self.cursor..].iter().position(|l| l.contains(needle)) {
                self.cursor += i + 1;
                return self.seen[self.cursor - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no line containing {needle:?} within {timeout:?}; output so far:\n{}", self.all())
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("output ended without a line containing {needle:?}; output:\n{}", self.all())
                }
            }
        }
    }

    /// Everything seen so far (reads what has arrived without waiting).
    pub fn all(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }

    /// Read until both pipes close (the child and everything holding its pipes exited).
    pub fn read_to_end(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return self.seen.join("\n"),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("output did not end within {timeout:?}; output so far:\n{}", self.seen.join("\n"))
                }
            }
        }
    }
}

/// A running `ratchet up`. Dropping it SIGKILLs the supervisor's group, then every agent process
/// group it reported starting (`<name>: started (pid N)`), so a failing test leaves nothing behind.
pub struct Swarm {
    pub proc: ProcGuard,
    pub lines: Lines,
    pgids: std::sync::Arc<std::sync::Mutex<Vec<i32>>>,
}

impl Swarm {
    /// Start `ratchet up` in `home` (which must hold an agents.toml), without the pre-loop
    /// `ratchet check`: these swarms are about the processes, and most have no approved governance.
    pub fn up(home: &Path) -> Swarm {
        Swarm::start(ratchet_cmd(home, &["up", "--no-check"]))
    }

    /// Start a `ratchet up` command the test built (extra arguments or environment).
    pub fn start(mut cmd: Command) -> Swarm {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut proc = ProcGuard::spawn(cmd);
        let pgids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = pgids.clone();
        let lines = Lines::capture(&mut proc.child, move |line| {
            if let Some(pid) = started_pid(line) {
                seen.lock().expect("pgid list").push(pid);
            }
        });
        Swarm { proc, lines, pgids }
    }

    /// Wait for the next line containing `needle` (see [`Lines::wait_for`]).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.lines.wait_for(needle, timeout)
    }

    /// Every agent process group the supervisor reported starting so far.
    pub fn agent_pgids(&self) -> Vec<i32> {
        self.pgids.lock().expect("pgid list").clone()
    }
}

/// `critic: started (pid 123)` -> 123.
fn started_pid(line: &str) -> Option<i32> {
    line.split_once(": started (pid ")?.1.strip_suffix(')')?.parse().ok()
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.proc.pid()), Signal::SIGKILL);
        let _ = self.proc.child.wait();
        for pgid in self.agent_pgids() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// This machine's host name as Ratchet reports it.
pub fn hostname() -> String {
    kit::substrate::hostname()
}

/// `ratchet status --json` in `home`: (exit code, parsed array, stderr).
pub fn ratchet_status_json(home: &Path) -> (i32, Vec<serde_json::Value>, String) {
    let out = ratchet_cmd(home, &["status", "--json"]).output().expect("ratchet status runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let agents = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status --json printed {stdout:?}: {e}"));
    (out.status.code().unwrap_or(-1), agents, String::from_utf8_lossy(&out.stderr).into_owned())
}
pub mod fixture;
pub mod model;
pub mod netns;
pub mod slurm;
