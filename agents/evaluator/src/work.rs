//! The evaluator's leased `evaluate` skill: run the benchmark on baseline and candidate,
//! interleaved, always from the baseline's (trusted) copy of the benchmark, and judge.
//!
//! - The baseline runs in a checkout of the baseline commit shared by every candidate of that
//!   baseline (`worktrees/.swarm/baselines/<commit>`).
//! - The candidate runs in a checkout of its commit (`worktrees/.swarm/candidate`, reused and reset
//!   for each evaluation, keeping ignored build output so its build is incremental) in which every
//!   file matching `ethos.benchmark_paths` is replaced by the baseline's version (and files the
//!   candidate added there are removed): a candidate that edits the benchmark cannot grade itself.
//! - Benchmarks of the whole machine are serialized by `worktrees/.swarm/bench.lock`, so two
//!   evaluators never time each other.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use kit::exec::RunSpec;
use kit::git::Git;
use kit::worker::{WorkCtx, WorkResult};
use protocol::work::{CommandResult, CommandRun, EvaluateInput, EvaluateOutput, Recommendation};
use serde_json::json;

use crate::{EvalInput, Failure, Side, evaluate, parse_metrics, schedule};

fn infra(e: impl std::fmt::Display) -> String {
    format!("{e}")
}

/// A detached checkout of `commit` at `dir` (reused when it is already there at that commit).
fn checkout(repo: &Git, dir: &Path, commit: &str) -> Result<(), String> {
    if dir.join(".git").exists() {
        let head = Git::new(dir).run(["rev-parse", "HEAD"]).map_err(infra)?;
        if head == commit {
            return Ok(());
        }
        let d = dir.to_string_lossy().to_string();
        repo.run(["worktree", "remove", "--force", &d]).map_err(infra)?;
    }
    let d = dir.to_string_lossy().to_string();
    let _ = repo.run(["worktree", "prune"]);
    repo.run(["worktree", "add", "--detach", "--force", &d, commit]).map_err(infra)?;
    Ok(())
}

/// The candidate's checkout, reused from one evaluation to the next: switched to `commit` with
/// every tracked file reset and untracked files removed, while ignored build output (`target/`)
/// stays, so the benchmark's own build is incremental.
fn reset_checkout(repo: &Git, dir: &Path, commit: &str) -> Result<(), String> {
    if dir.join(".git").exists() {
        let g = Git::new(dir);
        if g.run(["checkout", "-q", "--detach", "--force", commit]).is_ok() && g.run(["clean", "-q", "-fd"]).is_ok() {
            return Ok(());
        }
        let d = dir.to_string_lossy().to_string();
        let _ = repo.run(["worktree", "remove", "--force", &d]);
        let _ = std::fs::remove_dir_all(dir);
    }
    checkout(repo, dir, commit)
}

/// Make every benchmark path in `dir` the baseline's version: files the candidate changed are
/// checked out from the baseline, files it added there are removed.
fn restore_benchmark(dir: &Path, base: &str, patterns: &[String]) -> Result<Vec<String>, String> {
    use protocol::governance::glob_match;
    let git = Git::new(dir);
    let matches = |f: &&str| patterns.iter().any(|p| glob_match(p, f));
    // Usually the candidate did not touch the benchmark (the critic blocks that): one diff says so.
    let changed = git.run(["diff", "--name-only", base, "HEAD"]).map_err(infra)?;
    if !changed.lines().any(|f| matches(&f)) {
        return Ok(vec![]);
    }
    let ours = git.run(["ls-files"]).map_err(infra)?;
    let theirs = git.run(["ls-tree", "-r", "--name-only", base]).map_err(infra)?;
    let theirs: Vec<&str> = theirs.lines().filter(|l| !l.is_empty()).filter(matches).collect();
    let mut restored = vec![];
    for f in ours.lines().filter(|l| !l.is_empty()).filter(matches).filter(|f| !theirs.contains(f)) {
        std::fs::remove_file(dir.join(f)).map_err(|e| format!("removing {f}: {e}"))?;
        restored.push(format!("-{f}"));
    }
    if !theirs.is_empty() {
        let mut args = vec!["checkout", base, "--"];
        args.extend(theirs.iter().copied());
        git.run(args).map_err(infra)?;
        restored.extend(theirs.iter().map(|f| f.to_string()));
    }
    Ok(restored)
}

pub async fn evaluate_task(ctx: WorkCtx) -> WorkResult {
    let input: EvaluateInput = match serde_json::from_value(ctx.task.input.clone()) {
        Ok(i) => i,
        Err(e) => {
            return WorkResult::candidate_failure(format!("task input is not an evaluate request: {e}"), json!({}));
        }
    };
    let root = ctx.home.root().to_path_buf();
    let layout = kit::layout::Layout::new(&root);
    let base_dir = layout.baselines_dir().join(&input.base[..16.min(input.base.len())]);
    let cand_dir = layout.candidate_checkout();
    // One benchmark at a time on this machine.
    let lock_path = layout.bench_lock();
    let lock = {
        let p = lock_path.clone();
        tokio::task::spawn_blocking(move || -> Result<File, String> {
            std::fs::create_dir_all(p.parent().expect("bench.lock has a parent")).map_err(infra)?;
            let f = File::options().create(true).truncate(false).write(true).open(&p).map_err(infra)?;
            f.lock().map_err(infra)?;
            Ok(f)
        })
        .await
    };
    let _lock = match lock {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return WorkResult::infra_failure(format!("taking {}: {e}", lock_path.display()), json!({})),
        Err(e) => return WorkResult::infra_failure(format!("taking the benchmark lock: {e}"), json!({})),
    };
    let prep = {
        let (root, base_dir, cand_dir, inp) = (root.clone(), base_dir.clone(), cand_dir.clone(), input.clone());
        tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
            let repo = Git::new(&root);
            let baselines = base_dir.parent().expect("baselines dir");
            std::fs::create_dir_all(baselines).map_err(infra)?;
            // Checkouts of older baselines are done with (we hold the benchmark lock).
            for old in std::fs::read_dir(baselines).map_err(infra)?.flatten() {
                if old.path() != base_dir {
                    let o = old.path().to_string_lossy().to_string();
                    let _ = repo.run(["worktree", "remove", "--force", &o]);
                    let _ = std::fs::remove_dir_all(old.path());
                }
            }
            checkout(&repo, &base_dir, &inp.base)?;
            reset_checkout(&repo, &cand_dir, &inp.commit)?;
            restore_benchmark(&cand_dir, &inp.base, &inp.ethos.benchmark_paths)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    let restored = match prep {
        Ok(r) => r,
        Err(e) => return WorkResult::infra_failure(format!("preparing the benchmark checkouts: {e}"), json!({})),
    };
    let mode = input.sandbox.sandbox;
    let mut runs = EvalInput::default();
    let mut evidence: Vec<CommandRun> = vec![];
    let mut command_ms = 0u64;
    let log = ctx.artifacts.join("bench.log");
    for run in schedule(input.repeats, input.warmup) {
        if ctx.lease_lost() {
            return WorkResult::infra_failure("lease lost while benchmarking", json!({}));
        }
        let (dir, side) = match run.side {
            Side::Baseline => (&base_dir, &mut runs.baseline),
            Side::Candidate => (&cand_dir, &mut runs.candidate),
        };
        let mut spec = RunSpec::new(input.ethos.benchmark.clone(), dir.clone())
            .with_timeout(Duration::from_secs(input.ethos.bench_timeout_s))
            .with_sandbox(mode)
            .with_network(input.sandbox.allow_network)
            .with_repository(&root)
            .with_weak_sandbox_allowed(input.sandbox.allow_weak)
            .with_log(log.clone());
        if input.sandbox.memory_mb > 0 {
            spec = spec.with_memory_limit(input.sandbox.memory_mb * 1024 * 1024);
        }
        let out = kit::exec::run(&spec).await;
        command_ms += out.duration.as_millis() as u64;
        let label = format!(
            "{}{} {}",
            if run.warmup { "warmup " } else { "" },
            match run.side {
                Side::Baseline => "baseline",
                Side::Candidate => "candidate",
            },
            run.round
        );
        let parsed = if out.success() {
            parse_metrics(&out.stdout, input.ethos.metric_pattern.as_deref(), &input.ethos.metric)
                .map_err(|e| e.to_string())
        } else {
            Err(out.describe())
        };
        evidence.push(CommandRun {
            command: label,
            result: match &parsed {
                Ok(_) => CommandResult::Ok,
                Err(_) if out.is_infra_failure() => CommandResult::Infra,
                Err(_) => CommandResult::Failed,
            },
            detail: match &parsed {
                Ok(m) => json!(m).to_string(),
                Err(e) => e.clone(),
            },
            duration_ms: out.duration.as_millis() as u64,
            log: Some("bench.log".into()),
            sandbox: Some(out.sandbox_used()),
        });
        match parsed {
            Ok(metrics) => {
                let v = metrics[&input.ethos.metric];
                if run.warmup {
                    side.warmup.push(v);
                } else {
                    side.samples.push(v);
                    for g in &input.ethos.guard {
                        if let Some(x) = metrics.get(&g.metric) {
                            side.guards.entry(g.metric.clone()).or_default().push(*x);
                        }
                    }
                }
            }
            Err(reason) => side.failures.push(Failure { round: run.round, warmup: run.warmup, reason }),
        }
    }
    // A benchmark that cannot run at all on the trusted baseline is the harness's problem.
    if runs.baseline.samples.is_empty() && !runs.baseline.failures.is_empty() {
        let why = runs.baseline.failures.last().map(|f| f.reason.clone()).unwrap_or_default();
        return WorkResult::infra_failure(
            format!("the benchmark fails on the baseline itself: {why}"),
            json!({"runs": evidence}),
        );
    }
    let ev = evaluate(&runs, &input.ethos);
    let recommendation = ev.diagnosis.recommendation.as_ref().map(|r: &crate::Recommendation| Recommendation {
        setting: r.setting.clone(),
        from: r.from,
        to: r.to,
        reason: r.reason.clone(),
    });
    let out = EvaluateOutput {
        verdict: ev.verdict.to_string(),
        reasons: ev.reasons.clone(),
        baseline_median: ev.stats.baseline.median,
        candidate_median: ev.stats.candidate.median,
        effect: ev.stats.improvement,
        stats: json!(ev.stats),
        diagnosis: json!(ev.diagnosis),
        recommendation,
        runs: evidence,
        command_ms,
    };
    let mut artefact = json!(ev);
    artefact["restored_benchmark_files"] = json!(restored);
    if let Err(e) = ctx.write_artifact("evaluation.json", &serde_json::to_vec_pretty(&artefact).unwrap_or_default()) {
        tracing::warn!("writing evaluation.json: {e:#}");
    }
    let headline = ev.reasons.first().cloned().unwrap_or_else(|| ev.verdict.to_string());
    WorkResult::success(headline, json!(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A candidate that edits the benchmark is still measured with the baseline's benchmark:
    /// changed files come back, added ones go, the code under test stays the candidate's.
    #[test]
    fn the_candidate_runs_the_baselines_benchmark() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(repo.join("bench")).unwrap();
        std::fs::write(repo.join("bench/bench.sh"), "echo '{\"ms\": 100}'\n").unwrap();
        std::fs::write(repo.join("code.txt"), "slow\n").unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "base"]);
        let base = git(repo, &["rev-parse", "HEAD"]);
        std::fs::write(repo.join("bench/bench.sh"), "echo '{\"ms\": 1}'\n").unwrap();
        std::fs::write(repo.join("bench/extra.sh"), "cheat\n").unwrap();
        std::fs::write(repo.join("code.txt"), "fast\n").unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "candidate edits the benchmark"]);
        let cand = git(repo, &["rev-parse", "HEAD"]);
        let dir = repo.join("worktrees").join("candidate");
        reset_checkout(&Git::new(repo), &dir, &cand).unwrap();
        let restored = restore_benchmark(&dir, &base, &["bench/**".to_string()]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("bench/bench.sh")).unwrap(), "echo '{\"ms\": 100}'\n");
        assert!(!dir.join("bench/extra.sh").exists(), "a file the candidate added to the benchmark is removed");
        assert_eq!(std::fs::read_to_string(dir.join("code.txt")).unwrap(), "fast\n", "the code is the candidate's");
        assert!(restored.contains(&"-bench/extra.sh".to_string()) && restored.contains(&"bench/bench.sh".to_string()));
        // Reused for the next evaluation: reset to another commit with nothing left over.
        reset_checkout(&Git::new(repo), &dir, &base).unwrap();
        assert!(!dir.join("bench/extra.sh").exists());
        assert_eq!(std::fs::read_to_string(dir.join("code.txt")).unwrap(), "slow\n");
        assert!(restore_benchmark(&dir, &base, &["bench/**".to_string()]).unwrap().is_empty());
    }
}
