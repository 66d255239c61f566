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
