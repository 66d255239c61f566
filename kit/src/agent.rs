//! The common `main` of every agent binary: read the supervisor's environment, bind, announce
//! the address, serve until SIGINT/SIGTERM.
//!
//! Environment (set by `ratchet up`; all optional when run by hand):
//! `RATCHET_LISTEN` (default 127.0.0.1:0), `RATCHET_AGENT_NAME`, `RATCHET_STATE_DIR`
//! (default `<home>/worktrees/.swarm/agents/<name>`), `RATCHET_HOME` (default: cwd),
//! `RATCHET_TOKEN` (the swarm token every call must carry; required unless `RATCHET_OPEN=1`
//! asks for the open mode, loopback only), `RATCHET_MAX_BODY`,
//! `RATCHET_PUSH=0` (turn push notifications off), `RATCHET_WATCH=0` (take leased work only over
//! A2A, not by watching the tasks directories), `RATCHET_SWARM_ID` (the swarm instance, see
//! `substrate::Home::swarm`), `RATCHET_LIFELINE=stdin` (see [`lifeline`]), and the connection
//! limits of [`HttpLimits`]: `RATCHET_HEADER_TIMEOUT_MS` (30000: headers, request body chunks,
//! idle keep-alive), `RATCHET_WRITE_STALL_MS` (60000), `RATCHET_MAX_CONNECTIONS` (256).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::http::HttpLimits;
use crate::server::{AgentSpec, DEFAULT_MAX_BODY, Server, app};

/// The line a child prints on stdout once it is bound; the supervisor reads it.
pub const LISTENING_PREFIX: &str = "RATCHET_LISTENING ";

/// The url of a `RATCHET_LISTENING <url>` line, if `line` is one (with a url).
pub fn parse_listening(line: &str) -> Option<&str> {
    Some(line.trim().strip_prefix(LISTENING_PREFIX)?.trim()).filter(|u| !u.is_empty())
}

/// A child that did not say where it listens.
#[derive(Debug, thiserror::Error)]
pub enum ListeningError {
    #[error("stdout closed without a `RATCHET_LISTENING <url>` line (the program exited or failed to bind)")]
    Closed,
    #[error("no `RATCHET_LISTENING <url>` line on stdout within {0:?}")]
    Timeout(Duration),
}

/// A child's stdout read line by line on a thread of its own (so the child never blocks on a full
/// pipe), for the `RATCHET_LISTENING <url>` line of an agent, a model route or any program
/// that speaks this convention; the lines after it stay readable.
pub struct StdoutLines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl StdoutLines {
    pub fn spawn(stdout: impl std::io::Read + Send + 'static) -> StdoutLines {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StdoutLines { rx }
    }

    /// Wait up to `within` for the listening line and return its url (the lines before it are
    /// passed over).
    pub fn listening(&self, within: Duration) -> Result<String, ListeningError> {
        use std::sync::mpsc::RecvTimeoutError;
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) => {
                    if let Some(url) = parse_listening(&line) {
                        return Ok(url.to_string());
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(ListeningError::Timeout(within)),
                Err(RecvTimeoutError::Disconnected) => return Err(ListeningError::Closed),
            }
        }
    }

    /// The lines still to come.
    pub fn into_receiver(self) -> std::sync::mpsc::Receiver<String> {
        self.rx
    }
}

/// Where the agent runs: read from the environment.
#[derive(Debug, Clone)]
pub struct AgentEnv {
    pub name: String,
    pub home: PathBuf,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub token: Option<String>,
    pub max_body: usize,
    pub push: bool,
    /// Watch `worktrees/*/tasks/` for leased work (`RATCHET_WATCH=0` turns it off: the agent
    /// then takes work only over A2A).
    pub watch: bool,
    pub limits: HttpLimits,
}

/// The repository an agent works on: `RATCHET_HOME`, or the current directory.
pub fn home_from_env() -> anyhow::Result<PathBuf> {
    match std::env::var_os("RATCHET_HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h)),
        None => std::env::current_dir().context("reading the current directory for RATCHET_HOME"),
    }
}

impl AgentEnv {
    pub fn from_env(default_name: &str) -> anyhow::Result<AgentEnv> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let name = var("RATCHET_AGENT_NAME").unwrap_or_else(|| default_name.to_string());
        protocol::names::check_component("agent name", &name).context("RATCHET_AGENT_NAME")?;
        let home = home_from_env()?;
        let listen: SocketAddr = var("RATCHET_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:0".into())
            .parse()
            .context("RATCHET_LISTEN must be an address such as 127.0.0.1:0")?;
        let token = var(crate::auth::TOKEN_ENV);
        let open = match var(crate::auth::OPEN_ENV).as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => bail!("RATCHET_OPEN={other:?}: use 1 (the open mode) or leave it unset"),
        };
        match (&token, open) {
            (Some(_), true) => bail!(
                "both RATCHET_TOKEN and RATCHET_OPEN=1 are set; fix: unset RATCHET_OPEN (the token is required on every call) or RATCHET_TOKEN"
            ),
            (None, true) if !listen.ip().is_loopback() => bail!(
                "RATCHET_OPEN=1 serves without a token and is for loopback only, but RATCHET_LISTEN={listen}; fix: set RATCHET_TOKEN, or listen on 127.0.0.1"
            ),
            (None, false) => bail!(
                "RATCHET_TOKEN is unset: every endpoint but the Agent Card requires the swarm token, loopback included; \
                 fix: start agents with `ratchet up` (it makes the token and hands it over), set RATCHET_TOKEN yourself, \
                 or, on loopback for a client that cannot send a token (the A2A TCK), set RATCHET_OPEN=1"
            ),
            _ => {}
        }
        let state_dir = var("RATCHET_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::layout::Layout::new(&home).agent_state_dir(&name));
        let max_body = match var("RATCHET_MAX_BODY") {
            Some(v) => v.parse().context("RATCHET_MAX_BODY must be a number of bytes")?,
            None => DEFAULT_MAX_BODY,
        };
        let push = var("RATCHET_PUSH").as_deref() != Some("0");
        let watch = var("RATCHET_WATCH").as_deref() != Some("0");
        let mut limits = HttpLimits::default();
        let number = |k: &str| -> anyhow::Result<Option<u64>> {
            var(k)
                .map(|v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| format!("{k} must be a positive whole number, got {v:?}"))
                })
                .transpose()
        };
        if let Some(ms) = number("RATCHET_HEADER_TIMEOUT_MS")? {
            limits.header_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("RATCHET_WRITE_STALL_MS")? {
            limits.write_stall = Duration::from_millis(ms);
        }
        if let Some(n) = number("RATCHET_MAX_CONNECTIONS")? {
            limits.max_connections = n as usize;
        }
        Ok(AgentEnv { name, home, listen, state_dir, token, max_body, push, watch, limits })
    }
}

/// Serve `app(server)` on `listener` with `limits` until `shutdown` resolves; in-flight streams
/// get a short grace period, then the server stops regardless.
pub async fn run(
    listener: TcpListener,
    server: Arc<Server>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    crate::http::serve(listener, app(server), limits, shutdown).await;
}

/// `RATCHET_LIFELINE=stdin`: stdin is the agent's lifeline to its supervisor (see [`lifeline`]).
pub const LIFELINE_ENV: &str = "RATCHET_LIFELINE";

/// After the lifeline broke, the agent gets this long to shut down cleanly before it exits hard.
pub const LIFELINE_GRACE: Duration = Duration::from_secs(10);

/// Resolves when the agent's supervisor is gone; never for an agent without a lifeline.
///
/// `ratchet up` starts each member with `RATCHET_LIFELINE=stdin` and its stdin the read end of a
/// pipe whose write end only the supervisor holds (close-on-exec: no other process inherits it).
/// However the supervisor ends, `kill -9` included, the kernel closes that end and a read of
/// stdin returns end-of-file: the agent then shuts down as on SIGTERM, and exits hard if that
/// takes longer than [`LIFELINE_GRACE`]. Unlike `PR_SET_PDEATHSIG`, which fires when the
/// *thread* that forked the child ends (tokio retires idle threads), this cannot misfire.
///
/// Without the variable (an agent started by hand or by a test), or when stdin is not a pipe (a
/// terminal, `/dev/null`: a wrapper that redirected it), there is no lifeline and the agent
/// runs until it is stopped; `ratchet up` still finds such a leftover of a dead swarm through
/// `state.json` and stops it before starting its own members.
pub fn lifeline() -> impl Future<Output = ()> + Send + 'static {
    let broken = if std::env::var(LIFELINE_ENV).as_deref() == Ok("stdin") { watch_stdin() } else { None };
    async move {
        match broken {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// A thread that reads stdin until end-of-file (or an error), then fires the returned channel
/// and, after [`LIFELINE_GRACE`], ends the process. `None` when stdin is not a pipe.
fn watch_stdin() -> Option<tokio::sync::oneshot::Receiver<()>> {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let stdin = std::io::stdin();
    let fd = stdin.as_fd().try_clone_to_owned().ok()?;
    let is_pipe = std::fs::File::from(fd).metadata().map(|m| m.file_type().is_fifo()).unwrap_or(false);
    if !is_pipe {
        tracing::warn!("{LIFELINE_ENV}=stdin but stdin is not a pipe: running without a lifeline");
        return None;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("lifeline".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = stdin.lock();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            tracing::warn!("the lifeline to the supervisor broke (it is gone): shutting down");
            let _ = tx.send(());
            std::thread::sleep(LIFELINE_GRACE);
            tracing::error!("still running {LIFELINE_GRACE:?} after the supervisor went away: exiting");
            std::process::exit(1);
        })
        .ok()?;
    Some(rx)
}

/// Resolves on SIGINT or SIGTERM, or when the lifeline to the supervisor breaks.
pub async fn shutdown_or_orphaned() {
    let orphaned = lifeline();
    tokio::select! {
        () = shutdown_signal() => {}
        () = orphaned => {}
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Install the stderr logger (RUST_LOG, default `warn`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Bind per the environment, build the server for `spec`, print the listening line, serve.
pub async fn serve(env: AgentEnv, mut spec: AgentSpec) -> anyhow::Result<()> {
    spec.name = env.name.clone();
    spec.push_notifications &= env.push;
    let listener = TcpListener::bind(env.listen).await.with_context(|| format!("binding {}", env.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let url = format!("http://{addr}/");
    // Opening the task store reads its log: off the executor.
    let (state_dir, token, max_body, u) = (env.state_dir.clone(), env.token.clone(), env.max_body, url.clone());
    let server = tokio::task::spawn_blocking(move || Server::new(spec, state_dir, u, token, max_body))
        .await
        .context("opening the task store")?
        .with_context(|| format!("opening the task store under {}", env.state_dir.display()))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{LISTENING_PREFIX}{url}").context("writing the listening line to stdout")?;
        out.flush().ok();
    }
    run(listener, server, env.limits, shutdown_or_orphaned()).await;
    Ok(())
}

/// The whole `main` of an agent: logging, a current-thread runtime (small footprint),
/// environment, the spec (built inside the runtime), serve.
pub fn main_with(
    default_name: &str,
    make_spec: impl FnOnce(&AgentEnv) -> anyhow::Result<AgentSpec>,
) -> anyhow::Result<()> {
    init_logging();
    let env = AgentEnv::from_env(default_name)?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    // Inside the runtime, so the spec may spawn background work (watchers, reapers).
    let _guard = rt.enter();
    let spec = make_spec(&env)?;
    rt.block_on(serve(env, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line() {
        assert_eq!(parse_listening("RATCHET_LISTENING http://127.0.0.1:4/\n"), Some("http://127.0.0.1:4/"));
        assert_eq!(parse_listening("RATCHET_LISTENING \n"), None);
        assert_eq!(parse_listening("listening on http://x/"), None);
    }

    #[test]
    fn stdout_lines_find_the_url_and_keep_what_follows() {
        let out: &'static [u8] = b"warming up\nRATCHET_LISTENING http://127.0.0.1:9/\nready\n";
        let lines = StdoutLines::spawn(out);
        assert_eq!(lines.listening(Duration::from_secs(10)).unwrap(), "http://127.0.0.1:9/");
        assert_eq!(lines.into_receiver().recv().unwrap(), "ready");
        let silent = StdoutLines::spawn(&b"no url here\n"[..]);
        assert!(matches!(silent.listening(Duration::from_secs(10)), Err(ListeningError::Closed)));
    }
}
