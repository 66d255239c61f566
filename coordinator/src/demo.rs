//! `ratchet demo`: a fresh demo target repository (embedded in the binary) under `worktrees/`,
//! the whole swarm on it, the loop to its end with no model and no network, then the history.

use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::work::Verdict;
use serde_json::Value;

use crate::demo_target::FILES;
use crate::engine::{CandidateItem, LoopState, Summary, read_state};
use crate::supervisor::{self, LoopRequest, RestartPolicy, UpOptions, say};

/// The agents.toml written into the demo target: the five built-in agents, found beside the
/// running `ratchet` binary.
pub const DEMO_AGENTS: &str = r#"# The demo swarm: every built-in agent, each its own process.
[[agent]]
name = "coordinator"
role = "coordinator"
command = ["coordinator"]

[[agent]]
name = "proposer"
role = "proposer"
command = ["proposer"]

[[agent]]
name = "executor"
role = "executor"
command = ["executor"]

[[agent]]
name = "critic"
role = "critic"
command = ["critic"]

[[agent]]
name = "evaluator"
role = "evaluator"
command = ["evaluator"]
"#;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    kit::git::Git::new(dir).with_identity("Ratchet demo", "demo@ratchet.invalid").run_bytes(args)?;
    Ok(())
}

/// Write the demo target into a new repository under `<repo>/worktrees/` and return its path.
pub fn create_target(repo: &Path) -> anyhow::Result<PathBuf> {
    create_target_with(repo, None)
}

/// The model servers of `ratchet demo --model`: the proposer's and the reviewer's base URLs.
#[derive(Debug, Clone)]
pub struct DemoModels {
    pub writer: String,
    pub reviewer: String,
}

/// [`create_target`], with governance that puts models in the loop when `models` is given.
pub fn create_target_with(repo: &Path, models: Option<&DemoModels>) -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = kit::layout::Layout::new(repo).worktrees().join(format!("demo-{stamp}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (path, text) in FILES {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = match models {
            Some(m) => crate::models::demo_governance(path, text, &m.writer, &m.reviewer),
            None => text.to_string(),
        };
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    std::fs::write(dir.join("agents.toml"), DEMO_AGENTS)?;
    let gitignore = dir.join(".gitignore");
    let mut ignore = std::fs::read_to_string(&gitignore).unwrap_or_default();
    for line in ["worktrees/", "target/"] {
        if !ignore.lines().any(|l| l.trim() == line) {
            ignore.push_str(&format!("{line}\n"));
        }
    }
    std::fs::write(&gitignore, ignore)?;
    git(&dir, &["init", "-q", "-b", "main"])?;
    git(&dir, &["add", "-A"])?;
    git(&dir, &["commit", "-q", "-m", "sortbench: the demo target's baseline"])?;
    let dir = std::fs::canonicalize(&dir)?;
    // The demo's governance documents are its first approved versions.
    crate::govern::approve::approve_all_initial(&dir, "ratchet demo")?;
    Ok(dir)
}

/// The human history of a run: each cycle's candidates with verdict and reasons, promotions with
/// the metric before and after.
pub fn render_history(st: &LoopState, summary: &Summary) -> String {
    let mut o = String::new();
    let promotions = crate::dashboard::all_promotions(std::path::Path::new(&summary.repo), st);
    o.push_str("\nhistory\n");
    for cy in &st.finished {
        o.push_str(&format!("cycle {} (baseline {})\n", cy.cycle, &cy.baseline[..12.min(cy.baseline.len())]));
        if cy.candidates.is_empty() {
            o.push_str("  no candidates\n");
        }
        let metric = summary.metric.name.as_str();
        for c in &cy.candidates {
            // The same line the live progress and the web page show.
            o.push_str(&format!("  {}\n", crate::verdict::line(c, metric)));
        }
        if let Some((p, by)) = promotions.iter().find(|(p, _)| p.cycle == cy.cycle) {
            let effect = match (p.before, p.after) {
                (Some(b), Some(a)) if b != 0.0 => {
                    let rel = if summary.metric.direction == protocol::governance::Direction::Higher {
                        a / b - 1.0
                    } else {
                        1.0 - a / b
                    };
                    format!(" ({})", crate::verdict::effect_words(rel))
                }
                _ => String::new(),
            };
            o.push_str(&format!(
                "  => promoted {} onto main{}: {metric} {} -> {}{effect}\n",
                &p.commit[..12],
                if by == "loop" { String::new() } else { format!(" (approved by {by})") },
                p.before.map(crate::verdict::num).unwrap_or_else(|| "-".into()),
                p.after.map(crate::verdict::num).unwrap_or_else(|| "-".into()),
            ));
        }
    }
    o.push_str(&render_summary(summary));
    o
}

/// The closing lines of a run: why it stopped, the metric, the harness share.
pub fn render_summary(summary: &Summary) -> String {
    let num = |v: Option<f64>| v.map(crate::verdict::num).unwrap_or_else(|| "-".into());
    let mut o = String::new();
    o.push_str(&format!(
        "\nstopped: {} ({})\n",
        summary.stop_reason.as_deref().unwrap_or("-"),
        summary.stop_detail.as_deref().unwrap_or("")
    ));
    o.push_str(&format!(
        "metric {} ({}): baseline {} -> final {}\n",
        summary.metric.name,
        summary.metric.direction.as_str(),
        num(summary.metric.baseline),
        num(summary.metric.final_value)
    ));
    let pairing = if summary.pairing.is_empty() { "-" } else { summary.pairing.as_str() };
    o.push_str(&format!("pairing: {pairing} ({})\n", decisions(summary)));
    match &summary.calibration {
        Some(c) => o.push_str(&format!("calibrated noise: {}; first look at round {}\n", c.describe(), c.first_look)),
        None => o.push_str("calibrated noise: none (ethos.md calibration_rounds = 0, or the calibration failed)\n"),
    }
    o.push_str(&format!(
        "harness share of the loop's wall time: {:.1}% (everything but the target's gates and benchmarks and the models' answers)\n",
        summary.harness_share * 100.0
    ));
    o.push_str(&format!("repository: {}\n", summary.repo));
    o.push_str("explain a promotion: ratchet explain <commit> --repo <repository>\n");
    o
}

/// "rounds per decision: PROMOTE 5, REJECT 5, 6, HOLD 12 (no-change)".
fn decisions(summary: &Summary) -> String {
    let promoted = summary.promoted.iter().map(|i| (i.rounds, i.outcome));
    let others = |items: &[CandidateItem]| items.iter().map(|i| (i.rounds, i.outcome)).collect::<Vec<_>>();
    let mut parts = vec![];
    for (verdict, items) in [
        (Verdict::Promote, promoted.collect::<Vec<_>>()),
        (Verdict::Reject, others(&summary.rejected)),
        (Verdict::Hold, others(&summary.held)),
    ] {
        let rounds: Vec<String> = items
            .into_iter()
            .filter_map(|(rounds, outcome)| {
                let r = rounds?;
                Some(match outcome {
                    Some(o) if verdict == Verdict::Hold => format!("{r} ({})", o.as_str()),
                    _ => r.to_string(),
                })
            })
            .collect();
        if !rounds.is_empty() {
            parts.push(format!("{verdict} {}", rounds.join(", ")));
        }
    }
    if parts.is_empty() { "no decision measured".into() } else { format!("rounds per decision: {}", parts.join("; ")) }
}

/// Run the demo; prints the history (or the JSON summary) and returns the summary.
pub async fn demo(repo: &Path, json_out: bool) -> anyhow::Result<Value> {
    demo_with(repo, json_out, None).await
}

/// `ratchet demo --model`: start the local model route (two servers of it: the proposer's and
/// the reviewer's, so the reviewer is not the producer's endpoint), then run the demo with them
/// in a child `ratchet` whose environment alone holds the servers' key (never a file).
pub async fn demo_model(repo: &Path, json_out: bool) -> anyhow::Result<Value> {
    supervisor::human_output_to_stderr(json_out);
    let serve = crate::models::find_route()?;
    let key = kit::auth::new_token().context("making a key for the model servers")?;
    say("ratchet demo --model: starting the local model route (SmolLM2-135M-Instruct, twice: proposer and reviewer)");
    let (s, k) = (serve.clone(), key.clone());
    let writer =
        tokio::task::spawn_blocking(move || crate::models::RouteServer::start(&s, crate::models::DEMO_MODEL_ID, &k));
    let (s, k) = (serve.clone(), key.clone());
    let reviewer =
        tokio::task::spawn_blocking(move || crate::models::RouteServer::start(&s, crate::models::DEMO_MODEL_ID, &k));
    let writer = writer.await??;
    let reviewer = reviewer.await??;
    say(&format!(
        "proposer model at {}, reviewer model at {} (the same weights on two servers: the package registries hold one small instruct model; declare a different reviewer for real use)",
        writer.url, reviewer.url
    ));
    let exe = std::env::current_exe().context("locating the ratchet binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["demo", "--repo"])
        .arg(repo)
        .args(["--with-models", &format!("{},{}", writer.url, reviewer.url)])
        .env(crate::models::DEMO_KEY_ENV, &key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if json_out {
        cmd.arg("--json");
    }
    let out = cmd.spawn().context("starting the demo")?.wait_with_output().await.context("running the demo")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    supervisor::print_out(&stdout);
    drop((writer, reviewer));
    if !out.status.success() {
        anyhow::bail!("the demo with models failed ({})", out.status);
    }
    Ok(if json_out { serde_json::from_str(&stdout).unwrap_or(Value::Null) } else { Value::Null })
}

/// The demo, with models when `models` is given (the servers already run; their key is in this
/// process's environment).
pub async fn demo_with(repo: &Path, json_out: bool, models: Option<DemoModels>) -> anyhow::Result<Value> {
    supervisor::human_output_to_stderr(json_out);
    let target = create_target_with(repo, models.as_ref())?;
    say(&format!("ratchet demo: target repository {}", target.display()));
    let outcome = supervisor::up(UpOptions {
        repo: target.clone(),
        policy: RestartPolicy::default(),
        run_loop: Some(LoopRequest { max_cycles: 0, fresh: true, exit_when_done: true }),
    })
    .await?;
    let mut summary: Summary = outcome.loop_summary.context("the swarm stopped before the loop finished")?;
    summary.repo = target.display().to_string();
    let st = read_state(&target)?.context("the loop left no state")?;
    if json_out {
        supervisor::print_out(&format!("{}\n", serde_json::to_string_pretty(&summary)?));
    } else {
        say(&render_history(&st, &summary));
    }
    Ok(serde_json::to_value(summary)?)
}
