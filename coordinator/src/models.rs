//! `ratchet models compare`: the client side. The compare itself runs in the coordinator of a
//! running swarm (its `compare` skill, `crate::engine::compare_run`), which has the agents it
//! needs; this finds the coordinator from the swarm's state file, sends the request with the
//! swarm's token, waits for the report and renders it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kit::client::{A2aClient, skill_message};
use protocol::{TaskQueryParams, TaskState};
use serde_json::{Value, json};

use crate::engine::CompareReport;

/// The longest a compare may take (each task runs the whole pipeline twice).
pub const COMPARE_WAIT: Duration = Duration::from_secs(6 * 3600);

/// Ask the running swarm at `repo` to compare `current` with `candidate` on `tasks` tasks.
pub async fn compare(repo: &Path, current: &str, candidate: &str, tasks: u32) -> anyhow::Result<CompareReport> {
    let layout = kit::layout::Layout::new(repo);
    let state = crate::supervisor::state::read_state(&layout.state_file())
        .context("reading the swarm's state")?
        .filter(|s| s.state != crate::supervisor::state::SwarmPhase::Stopped)
        .with_context(|| {
            format!(
                "no swarm is running in {}; fix: start one with `ratchet up --no-loop` (the compare uses its proposer, executor, critic and evaluator)",
                repo.display()
            )
        })?;
    let url =
        state.agents.iter().find(|a| a.role == "coordinator").and_then(|a| a.url.clone()).context(
            "the running swarm has no coordinator serving yet; fix: wait for `ratchet status` to show it ready",
        )?;
    let token = kit::auth::read_token(&layout.swarm_token()).context("reading the swarm's token")?;
    let client = A2aClient::new(&url).with_token(Some(token));
    let msg = skill_message("compare", json!({"current": current, "candidate": candidate, "tasks": tasks}));
    let task = client.send(msg, false).await.context("sending the compare request to the coordinator")?;
    let deadline = Instant::now() + COMPARE_WAIT;
    let mut task = task;
    while !task.status.state.is_terminal() {
        if Instant::now() > deadline {
            bail!("the compare did not finish within {} s (task {} on {url})", COMPARE_WAIT.as_secs(), task.id);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let q = TaskQueryParams { id: task.id.clone(), history_length: None, metadata: None };
        task = client.call::<protocol::GetTask>(&q).await.context("asking the coordinator how the compare goes")?;
    }
    let msg = task.status.message.clone();
    match task.status.state {
        TaskState::Completed => {
            let data = msg.as_ref().and_then(|m| m.data()).context("the coordinator answered without a report")?;
            serde_json::from_value(Value::Object(data.clone()))
                .context("the coordinator's answer is not a compare report")
        }
        other => bail!("the compare ended {other:?}: {}", msg.map(|m| m.text()).unwrap_or_default()),
    }
}

/// The report for people.
pub fn render(r: &CompareReport) -> String {
    let mut o = format!("{} for candidate {} (current {})\n", r.decision, r.candidate.model, r.current.model);
    for reason in &r.reasons {
        o.push_str(&format!("  - {reason}\n"));
    }
    for side in [&r.current, &r.candidate] {
        o.push_str(&format!("  {}: {}\n", side.name, side.outcomes.join(", ")));
    }
    if let Some(s) = &r.switch {
        o.push_str(&format!("to switch: {s}\n"));
    }
    o.push_str(&format!("recorded as a model_compared event of run {} (baseline {})\n", r.run_id, &r.baseline[..12]));
    o
}

/// The key variable the demo's model servers and agents share.
pub const DEMO_KEY_ENV: &str = "RATCHET_MODEL_KEY";
/// The model id the local model route serves in the demo.
pub const DEMO_MODEL_ID: &str = "smollm2-135m-instruct";

/// `scripts/model/serve`: `RATCHET_MODEL_ROUTE`, else found above the running binary (a build
/// inside Ratchet's source tree: `target/<profile>/ratchet`).
pub fn find_route() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("RATCHET_MODEL_ROUTE") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("locating the ratchet binary")?;
    exe.ancestors()
        .map(|d| d.join("scripts/model/serve"))
        .find(|p| p.is_file())
        .context(
            "`ratchet demo --model` starts the local model route, scripts/model/serve in Ratchet's source tree, and found none above \
             this binary; fix: run a ratchet built in the source tree, or set RATCHET_MODEL_ROUTE=/path/to/scripts/model/serve",
        )
}

/// A model server of the local model route, started by `ratchet demo --model`; its whole
/// process group is killed when this drops.
pub struct RouteServer {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>/v1`.
    pub url: String,
}

impl RouteServer {
    /// Start `serve` on a free loopback port, serving the model as `model`, with `key`; waits
    /// (installing the route first if needed) for its `RATCHET_LISTENING` line.
    pub fn start(serve: &Path, model: &str, key: &str) -> anyhow::Result<RouteServer> {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(serve)
            .args(["--port", "0", "--name", model])
            .env(DEMO_KEY_ENV, key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", serve.display()))?;
        let lines = kit::agent::StdoutLines::spawn(child.stdout.take().expect("stdout is piped"));
        // Killed when dropped, on an error too.
        let mut server = RouteServer { child, url: String::new() };
        // The first start installs the route (npm and pip downloads): give it time.
        server.url = lines
            .listening(Duration::from_secs(900))
            .with_context(|| format!("{} did not report its address", serve.display()))?;
        Ok(server)
    }
}

impl Drop for RouteServer {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The demo target's governance with models: the writer proposes (a schema-constrained edit),
/// the reviewer reviews in advisory mode; `writer` and `reviewer` are their servers' base URLs.
pub fn demo_governance(doc: &str, text: &str, writer: &str, reviewer: &str) -> String {
    let close = |text: &str, add: &str| match text.rfind("\n```") {
        Some(i) => format!("{}\n{}{}", &text[..i], add, &text[i..]),
        None => text.to_string(),
    };
    let endpoint = |url: &str, tokens: u32, temperature: f64| {
        format!(
            "url = {url:?}\nmodel = {DEMO_MODEL_ID:?}\napi_key_env = {DEMO_KEY_ENV:?}\nmax_tokens = {tokens}\ntemperature = {temperature:?}\n"
        )
    };
    match doc {
        "constitution.md" => close(
            text,
            &format!(
                "model_review = \"advisory\"\n\n[constitution.models.writer]\n{}\n[constitution.models.reviewer]\n{}",
                // The proposer samples (each cycle's answers differ); the reviewer is deterministic.
                endpoint(writer, 160, 0.7),
                endpoint(reviewer, 200, 0.0)
            ),
        ),
        "ethos.md" => close(
            text,
            "\n[ethos.review]\nmodel = \"reviewer\"\nrubric = [\"the change keeps params.toml valid\", \"tests are not weakened\"]\nmax_findings = 2\n",
        ),
        "cadence.md" => {
            let mut out = String::new();
            let mut in_proposer = false;
            for line in text.lines() {
                let t = line.trim();
                if t.starts_with("[proposer") {
                    in_proposer = true;
                    continue;
                }
                if in_proposer && !t.starts_with("```") {
                    continue;
                }
                if t.starts_with("```") && in_proposer {
                    out.push_str("[proposer]\nstrategy = \"openai\"\nmodel = \"writer\"\ncontext = \"minimal\"\ntimeout_s = 300\n");
                    in_proposer = false;
                }
                let line = match t.split_once('=').map(|(k, _)| k.trim()) {
                    Some("candidates") => "candidates = 3".to_string(),
                    Some("stall_limit") => "stall_limit = 2".to_string(),
                    Some("breaker_limit") => "breaker_limit = 3".to_string(),
                    Some("max_cycles") => "max_cycles = 3".to_string(),
                    Some("max_wall_s") => "max_wall_s = 900".to_string(),
                    _ => line.to_string(),
                };
                out.push_str(&line);
                out.push('\n');
            }
            out
        }
        _ => text.to_string(),
    }
}
