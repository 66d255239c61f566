//! The proposer's A2A `propose` skill: N candidates against the current baseline, under the
//! hard-banned list, by the strategy cadence.md names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::exec::SandboxMode;
use kit::git::Git;
use kit::server::{Skill, TaskEnd};
use protocol::work::{ProposeInput, ProposeOutput};
use serde_json::{Value, json};

use crate::{CommandLimits, ProposalError, Tried, TriedOutcome, propose_command, propose_sweep};

/// The loop's history in the proposer's terms.
fn history(input: &ProposeInput) -> Vec<Tried> {
    input
        .history
        .iter()
        .map(|t| Tried {
            key: t.key.clone(),
            outcome: match t.verdict.as_str() {
                "PROMOTED" => TriedOutcome::Promoted,
                "PROMOTE" => TriedOutcome::Passed,
                "HOLD" | "INFRA" => TriedOutcome::Held,
                "REJECT" => TriedOutcome::Rejected,
                _ => TriedOutcome::Failed,
            },
            delta: t.effect,
        })
        .collect()
}

fn sweep(home: &Path, input: &ProposeInput) -> Result<ProposeOutput, String> {
    let file = input.settings.file.clone().ok_or("cadence.md [proposer] has no file for the sweep")?;
    let text = Git::new(home).run(["show", &format!("{}:{file}", input.baseline)]).map_err(|e| {
        format!("reading {file} at the baseline {}: {e}", &input.baseline[..12.min(input.baseline.len())])
    })?;
    let proposals =
        propose_sweep(&text, &file, &input.settings.space, &history(input), &input.banned, input.n as usize)
            .map_err(|e| e.to_string())?;
    let exhausted = proposals.is_empty();
    Ok(ProposeOutput { proposals, exhausted, command_ms: 0 })
}

/// A scratch checkout of the baseline for the command strategy (the proposer's own, under its
/// state directory; never the user's checkout).
fn scratch(home: &Path, state_dir: &Path, baseline: &str) -> Result<PathBuf, String> {
    let dir = state_dir.join("scratch");
    let repo = Git::new(home);
    let d = dir.to_string_lossy().to_string();
    if dir.join(".git").exists() {
        let g = Git::new(&dir);
        g.run(["checkout", "-q", "--detach", "--force", baseline]).map_err(|e| e.to_string())?;
        g.run(["clean", "-q", "-fdx"]).map_err(|e| e.to_string())?;
    } else {
        let _ = repo.run(["worktree", "prune"]);
        repo.run(["worktree", "add", "-q", "--detach", "--force", &d, baseline]).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

async fn command(home: PathBuf, state_dir: PathBuf, input: &ProposeInput) -> Result<ProposeOutput, String> {
    let cmd = input.settings.command.clone().ok_or("cadence.md [proposer] has no command")?;
    let mut proposals = vec![];
    let mut banned = input.banned.clone();
    banned.extend(input.history.iter().map(|t| t.key.clone()));
    let started = std::time::Instant::now();
    let mut last_err = None;
    for _ in 0..input.n {
        let (h, s, b) = (home.clone(), state_dir.clone(), input.baseline.clone());
        let dir = tokio::task::spawn_blocking(move || scratch(&h, &s, &b)).await.map_err(|e| e.to_string())??;
        let limits = CommandLimits {
            timeout: Duration::from_secs(input.timeout_s),
            sandbox: SandboxMode::Auto,
            allow_network: true,
            memory_limit_bytes: None,
            env: forwarded_env(),
        };
        match propose_command(&cmd, &dir, &input.goal, &input.context, &banned, limits).await {
            Ok(p) => {
                let key = p.approach_key();
                if banned.contains(&key) || proposals.iter().any(|q: &protocol::work::Proposal| q.approach_key() == key)
                {
                    continue; // the program repeated itself or a banned approach: not proposed
                }
                banned.push(key);
                proposals.push(p);
            }
            Err(e) => last_err = Some(e),
        }
    }
    let command_ms = started.elapsed().as_millis() as u64;
    if proposals.is_empty()
        && let Some(e) = last_err
    {
        return Err(describe(&e));
    }
    Ok(ProposeOutput { proposals, exhausted: false, command_ms })
}

/// The environment the `command` strategy's program gets on top of the sandbox's minimal one:
/// `RATCHET_CODING_AGENT` (which CLI `scripts/propose` runs) and every variable named in
/// `RATCHET_PROPOSER_ENV` (comma-separated, e.g. the API key variable a coding-agent CLI needs;
/// set it in the proposer's `env` table in agents.toml). Nothing else passes.
fn forwarded_env() -> Vec<(String, String)> {
    let mut names = vec!["RATCHET_CODING_AGENT".to_string()];
    if let Ok(list) = std::env::var("RATCHET_PROPOSER_ENV") {
        names.extend(list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    }
    names.into_iter().filter_map(|k| std::env::var(&k).ok().map(|v| (k, v))).collect()
}

/// The `openai` strategy: N answers from the model, each checked to apply to the baseline.
async fn openai(home: PathBuf, state_dir: PathBuf, input: &ProposeInput) -> Result<ProposeOutput, String> {
    let endpoint = input.settings.endpoint.clone().ok_or("cadence.md [proposer] has no endpoint")?;
    let model = input.settings.model.clone().ok_or("cadence.md [proposer] has no model")?;
    let (h, s, b) = (home.clone(), state_dir.clone(), input.baseline.clone());
    let dir = tokio::task::spawn_blocking(move || scratch(&h, &s, &b)).await.map_err(|e| e.to_string())??;
    // An API key, when the server wants one, comes from the proposer's environment (agents.toml env).
    let key = std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty());
    let mut banned = input.banned.clone();
    banned.extend(input.history.iter().map(|t| t.key.clone()));
    let mut proposals: Vec<protocol::work::Proposal> = vec![];
    let mut last_err = None;
    let started = std::time::Instant::now();
    for _ in 0..input.n {
        let timeout = Duration::from_secs(input.timeout_s);
        match crate::openai::propose_openai(
            &endpoint,
            &model,
            &dir,
            &input.goal,
            &input.context,
            &banned,
            timeout,
            key.clone(),
        )
        .await
        {
            Ok(p)
                if !banned.contains(&p.approach_key())
                    && !proposals.iter().any(|q| q.approach_key() == p.approach_key()) =>
            {
                banned.push(p.approach_key());
                proposals.push(p);
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    if proposals.is_empty()
        && let Some(e) = last_err
    {
        return Err(describe(&e));
    }
    Ok(ProposeOutput { proposals, exhausted: false, command_ms: started.elapsed().as_millis() as u64 })
}

fn describe(e: &ProposalError) -> String {
    if e.is_infra() { format!("infrastructure: {e}") } else { e.to_string() }
}

/// The `propose` skill.
pub fn skill(home: PathBuf, state_dir: PathBuf) -> Skill {
    Skill::new(
        "propose",
        "Propose candidates",
        "Propose N candidate changes against the baseline, honouring the hard-banned list. Strategies: sweep (one config parameter at a time, no model), command (any coding-agent CLI or script, run in a scratch checkout) and openai (any OpenAI-compatible chat endpoint answering with a diff)",
        move |ctx| {
            let (home, state_dir) = (home.clone(), state_dir.clone());
            async move {
                let input: ProposeInput = match serde_json::from_value(Value::Object(ctx.input())) {
                    Ok(i) => i,
                    Err(e) => {
                        return TaskEnd::Rejected(format!(
                            "input is not a propose request: {e}; see protocol::work::ProposeInput"
                        ));
                    }
                };
                if protocol::names::check_component("commit", &input.baseline).is_err() {
                    return TaskEnd::Rejected(format!("baseline {:?} is not a commit id", input.baseline));
                }
                let out = match input.settings.strategy.as_str() {
                    "sweep" => {
                        let h = home.clone();
                        let i = input.clone();
                        tokio::task::spawn_blocking(move || sweep(&h, &i)).await.unwrap_or_else(|e| Err(e.to_string()))
                    }
                    "command" => command(home, state_dir, &input).await,
                    "openai" => openai(home, state_dir, &input).await,
                    other => Err(format!(
                        "strategy {other:?} is not available in this proposer; use sweep, command or openai"
                    )),
                };
                match out {
                    Ok(o) => {
                        let n = o.proposals.len();
                        TaskEnd::done(
                            format!(
                                "{n} candidate(s){}",
                                if o.exhausted { "; the search space is exhausted" } else { "" }
                            ),
                            json!(o),
                        )
                    }
                    Err(e) => TaskEnd::Failed(e),
                }
            }
        },
    )
}
