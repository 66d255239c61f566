//! `ratchet demo`: a fresh demo target repository (embedded in the binary) under `worktrees/`,
//! the whole swarm on it, the loop to its end with no model and no network, then the history.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use crate::demo_target::FILES;
use crate::engine::{LoopState, read_state};
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
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = kit::layout::Layout::new(repo).worktrees().join(format!("demo-{stamp}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (path, text) in FILES {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
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
pub fn render_history(st: &LoopState, summary: &Value) -> String {
    let mut o = String::new();
    o.push_str("\nhistory\n");
    for cy in &st.finished {
        o.push_str(&format!("cycle {} (baseline {})\n", cy.cycle, &cy.baseline[..12.min(cy.baseline.len())]));
        if cy.candidates.is_empty() {
            o.push_str("  no candidates\n");
        }
        for c in &cy.candidates {
            o.push_str(&format!(
                "  {:<8} {:<28} {}\n",
                c.verdict.clone().unwrap_or_default(),
                c.proposal.approach_key(),
                c.branch
            ));
            for r in c.reasons.iter().take(6) {
                o.push_str(&format!("           - {r}\n"));
            }
        }
        if let Some(p) = st.promotions.iter().find(|p| p.cycle == cy.cycle) {
            o.push_str(&format!(
                "  => promoted {} onto main: {} {:.3} -> {:.3}\n",
                &p.commit[..12],
                summary["metric"]["name"].as_str().unwrap_or("metric"),
                p.before.unwrap_or(f64::NAN),
                p.after.unwrap_or(f64::NAN)
            ));
        }
    }
    o.push_str(&render_summary(summary));
    o
}

/// The closing lines of a run: why it stopped, the metric, the harness share.
pub fn render_summary(summary: &Value) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "\nstopped: {} ({})\n",
        summary["stop_reason"].as_str().unwrap_or("-"),
        summary["stop_detail"].as_str().unwrap_or("")
    ));
    o.push_str(&format!(
        "metric {} ({}): baseline {} -> final {}\n",
        summary["metric"]["name"].as_str().unwrap_or("-"),
        summary["metric"]["direction"].as_str().unwrap_or("-"),
        fmt_num(&summary["metric"]["baseline"]),
        fmt_num(&summary["metric"]["final"])
    ));
    o.push_str(&format!(
        "harness share of the loop's wall time: {:.1}% (everything but the target's gates and benchmarks)\n",
        summary["harness_share"].as_f64().unwrap_or(0.0) * 100.0
    ));
    o.push_str(&format!("repository: {}\n", summary["repo"].as_str().unwrap_or("-")));
    o.push_str("explain a promotion: ratchet explain <commit> --repo <repository>\n");
    o
}

fn fmt_num(v: &Value) -> String {
    v.as_f64().map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())
}

/// Run the demo; prints the history (or the JSON summary) and returns the summary.
pub async fn demo(repo: &Path, json_out: bool) -> anyhow::Result<Value> {
    supervisor::human_output_to_stderr(json_out);
    let target = create_target(repo)?;
    say(&format!("ratchet demo: target repository {}", target.display()));
    let outcome = supervisor::up(UpOptions {
        repo: target.clone(),
        policy: RestartPolicy::default(),
        run_loop: Some(LoopRequest { max_cycles: 0, fresh: true, exit_when_done: true }),
    })
    .await?;
    let mut summary = outcome.loop_summary.context("the swarm stopped before the loop finished")?;
    summary["repo"] = json!(target.display().to_string());
    let st = read_state(&target)?.context("the loop left no state")?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        say(&render_history(&st, &summary));
    }
    Ok(summary)
}
