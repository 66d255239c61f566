//! Spawning one agent process, forwarding its output, and stopping its whole process group.
//!
//! The contract with a child (see the module docs of `supervisor`): it runs in a new process group
//! whose id is its pid, binds `RATCHET_LISTEN`, prints one `RATCHET_LISTENING <url>` line on stdout,
//! and stops on SIGTERM to its group.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use protocol::config::AgentEntry;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use kit::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(
        "agents.toml: agent {agent:?}: command: {program:?} not found beside {beside} nor on PATH; fix: build it (`cargo build --workspace --bins`) or give its absolute path"
    )]
    NotFound { agent: String, program: String, beside: String },
    #[error("agents.toml: agent {agent:?}: command: {program} is not an executable file; fix: correct the path")]
    NotExecutable { agent: String, program: PathBuf },
    #[error("agents.toml: agent {agent:?}: command: cannot start {program}: {source}; fix: check the command")]
    Spawn { agent: String, program: PathBuf, source: std::io::Error },
    #[error("{path}: cannot prepare the agent's files: {source}; fix: check that worktrees/ is writable")]
    Prepare { path: PathBuf, source: std::io::Error },
}

/// Resolve argv[0]: a path (with a `/`) relative to the home; a bare name beside the running
/// executable (`ratchet` and the agents are built into the same directory), then on PATH.
pub fn resolve_program(agent: &str, program: &str, home: &Path) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let p = Path::new(program);
        let p = if p.is_absolute() { p.to_path_buf() } else { home.join(p) };
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(SpawnError::NotExecutable { agent: agent.to_string(), program: p })
        };
    }
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(program)).find(|c| is_executable(c)));
    on_path.ok_or_else(|| SpawnError::NotFound {
        agent: agent.to_string(),
        program: program.to_string(),
        beside: exe_dir.map(|d| d.display().to_string()).unwrap_or_else(|| "the ratchet binary".into()),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A started child: its pid is also its process group id.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// Receives the URL of the `RATCHET_LISTENING` line; dropped (an error) if stdout closes first.
    pub listening: oneshot::Receiver<String>,
    /// The write end of the child's lifeline (its stdin): keep it while the child runs. Only this
    /// process holds it (close-on-exec), so when this process dies, however, the child reads
    /// end-of-file and shuts down (`kit::agent::lifeline`).
    pub lifeline: Option<ChildStdin>,
}

/// Start `entry`'s command in a new process group with the contract's environment; `swarm` is
/// this swarm instance's id (`RATCHET_SWARM_ID`).
pub fn spawn_agent(entry: &AgentEntry, paths: &Layout, swarm: &str) -> Result<Spawned, SpawnError> {
    let argv = entry.command.as_deref().expect("spawn_agent is only called for command entries");
    let program = resolve_program(&entry.name, &argv[0], paths.home())?;
    let prepare = |path: PathBuf| move |source| SpawnError::Prepare { path, source };
    let state_dir = paths.agent_state_dir(&entry.name);
    std::fs::create_dir_all(&state_dir).map_err(prepare(state_dir.clone()))?;
    std::fs::create_dir_all(paths.logs_dir()).map_err(prepare(paths.logs_dir()))?;
    let log_path = paths.log_file(&entry.name);
    let mut log =
        std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(prepare(log_path.clone()))?;
    let header = format!(
        "--- ratchet: starting {} at {}\n",
        argv.join(" "),
        protocol::a2a::timestamp(std::time::SystemTime::now())
    );
    let _ = log.write_all(header.as_bytes());

    let mut cmd = Command::new(&program);
    cmd.args(&argv[1..])
        .current_dir(paths.home())
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Last resort if the supervisor itself unwinds; the normal path stops the whole group.
        .kill_on_drop(true)
        .env("RATCHET_AGENT_NAME", &entry.name)
        .env("RATCHET_ROLE", &entry.role)
        .env("RATCHET_SKILLS", entry.skills.join(","))
        .env("RATCHET_HOME", paths.home())
        .env("RATCHET_LISTEN", "127.0.0.1:0")
        .env("RATCHET_STATE_DIR", &state_dir)
        .env("RATCHET_SWARM_STATE", paths.state_file())
        .envs(&entry.env)
        // After the entry's env: these two are the swarm's, not the member's to change.
        .env(kit::substrate::SWARM_ID_ENV, swarm)
        .env(kit::agent::LIFELINE_ENV, "stdin");
    swarm_token_env(&mut cmd, paths)?;
    let mut child = cmd.spawn().map_err(|source| SpawnError::Spawn {
        agent: entry.name.clone(),
        program: program.clone(),
        source,
    })?;
    let pid = child.id().expect("a child that was just spawned has a pid");
    let (tx, listening) = oneshot::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let lifeline = child.stdin.take();
    let log2 = log.try_clone().map_err(prepare(log_path))?;
    tokio::spawn(forward(stdout, log, Some(tx)));
    tokio::spawn(forward(stderr, log2, None));
    Ok(Spawned { child, pid, listening, lifeline })
}

/// Hand the child the swarm's token (through its environment: never on a command line, never in
/// a log), and never the open mode.
fn swarm_token_env(cmd: &mut Command, paths: &Layout) -> Result<(), SpawnError> {
    let path = paths.swarm_token();
    let token = kit::auth::read_token(&path).map_err(|source| SpawnError::Prepare { path, source })?;
    cmd.env(kit::auth::TOKEN_ENV, token).env_remove(kit::auth::OPEN_ENV);
    Ok(())
}

/// Copy lines from a child's pipe to its log; the first `RATCHET_LISTENING` line (stdout only)
/// is also handed to `listening`.
async fn forward(pipe: impl AsyncRead + Unpin, mut log: std::fs::File, mut listening: Option<oneshot::Sender<String>>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if listening.is_some()
            && let Some(url) = std::str::from_utf8(&line).ok().and_then(kit::agent::parse_listening)
        {
            let _ = listening.take().expect("checked above").send(url.to_string());
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        // One write per line on an O_APPEND file: stdout and stderr lines never interleave.
        let _ = log.write_all(&line);
    }
}

/// Send `signal` to the process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
}

/// Whether any process of group `pgid` is still alive.
pub fn group_alive(pgid: u32) -> bool {
    // EPERM means it exists (owned by someone else): still alive.
    !matches!(killpg(Pid::from_raw(pgid as i32), None), Err(nix::errno::Errno::ESRCH))
}

/// Ask the child to stop (SIGTERM to its group), SIGKILL the group after `grace`, and make sure
/// no member of the group outlives the call. Returns how the child ended.
pub async fn stop_child(child: &mut Child, pgid: u32, grace: Duration) -> String {
    let deadline = tokio::time::Instant::now() + grace;
    signal_group(pgid, Signal::SIGTERM);
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(pgid, Signal::SIGKILL);
            child.wait().await
        }
    };
    clear_group(pgid, deadline).await;
    describe_exit(&status)
}

/// After the group leader ended (and was reaped): give the rest of its group until `deadline` to
/// finish (they got SIGTERM too), then SIGKILL whatever is left, and wait until the group is gone.
pub async fn clear_group(pgid: u32, deadline: tokio::time::Instant) {
    let gone = || {
        reap_group(pgid);
        !group_alive(pgid)
    };
    while !gone() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !gone() {
        signal_group(pgid, Signal::SIGKILL);
        let reaped = tokio::time::Instant::now() + Duration::from_millis(500);
        while !gone() && tokio::time::Instant::now() < reaped {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Make this process the reaper of its descendants' orphans. When an agent dies before its own
/// children, they are re-parented to us rather than to init, so [`clear_group`] can reap them and
/// the group really disappears (a zombie still counts as a member of its group, and init may reap
/// late).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reap the exited members of group `pgid` that are our children (orphans, thanks to
/// [`become_subreaper`]). Only called once the group leader, which tokio owns, was reaped.
fn reap_group(pgid: u32) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(status) = waitpid(Pid::from_raw(-(pgid as i32)), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Reap the zombies among our children that are not agents: processes started by an agent's
/// commands (a sandbox's inner process, a detached git) that outlived their parent and were
/// re-parented to us, the subreaper. Without this they stay `<defunct>` until `ratchet up` ends.
/// An agent is a process-group leader and never a session leader, so only processes that are a
/// session leader, or not a group leader, are reaped here: tokio keeps waiting for the agents.
/// Returns how many were reaped.
pub fn reap_orphans() -> usize {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let mut n = 0;
    for pid in own_children() {
        let Some(st) = super::identity::stat(pid) else { continue };
        if st.is_zombie()
            && (st.session == pid || st.pgrp != pid)
            && waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// The pids of this process's children (`/proc/self/task/*/children`).
fn own_children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return vec![] };
    let mut out = vec![];
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// "exit code 1", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Err(e) => format!("unknown exit status ({e})"),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("killed by signal {sig} ({name})"),
                Err(_) => format!("killed by signal {sig}"),
            },
            (None, None) => "ended".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_bare_names_on_path_and_refuses_missing_ones() {
        let home = std::env::temp_dir();
        assert!(resolve_program("a", "sh", &home).unwrap().is_absolute());
        let e = resolve_program("a", "no-such-ratchet-agent", &home).unwrap_err().to_string();
        assert!(e.starts_with("agents.toml: agent \"a\": command: \"no-such-ratchet-agent\" not found"), "{e}");
        assert!(e.contains("fix: build it"), "{e}");
        let e = resolve_program("a", "./no/such", &home).unwrap_err().to_string();
        assert!(e.contains("is not an executable file"), "{e}");
    }
}
