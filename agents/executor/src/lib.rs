//! The executor's job: apply a candidate in its worktree, commit it, run the fast gate, then the
//! baseline's tests against the candidate's code ([`trusted`]).
//!
//! Candidate failures (a patch that does not apply, a gate that exits non-zero) end the task as
//! `candidate-failure`; infrastructure failures (timeout, spawn error, signal, out of memory)
//! end it as `infra-failure`, which the coordinator retries under a new fencing token and never
//! counts against the candidate. A retry finds the candidate already committed and does not
//! commit it twice.

use std::path::{Component, Path};
use std::time::{Duration, Instant};

use kit::exec::RunSpec;
use kit::git::Git;
use kit::worker::{WorkCtx, WorkResult};
use protocol::governance::TrustedCheckout;
use protocol::work::{CommandRun, ExecuteInput, ExecuteOutput, FreshBuild, Proposal, SandboxSettings, TrustedTestsRun};
use serde_json::{Value, json};

pub mod trusted;
pub use trusted::{
    BaseIgnores, Stray, base_excludes, make_fresh, prepare_trusted, pristine, remove_fresh, restore_candidate, strays,
    trusted_changes, untracked_trusted,
};

/// Trailer that marks a commit as this candidate's.
pub fn candidate_trailer(id: &str) -> String {
    format!("Ratchet-Candidate: {id}")
}

/// The commit message: the proposal, its strategy, the models that produced it and will review
/// it (`name: model @ url`), and the governance hashes in force.
pub fn commit_message(
    p: &Proposal,
    governance: &std::collections::BTreeMap<String, String>,
    reviewer: Option<&str>,
) -> String {
    let mut msg = format!("ratchet: {}\n\n{}\nRatchet-Strategy: {}\n", p.summary, candidate_trailer(&p.id), p.strategy);
    if let Some(m) = &p.model {
        msg.push_str(&format!("Ratchet-Producer-Model: {m}\n"));
    }
    if let Some(r) = reviewer {
        msg.push_str(&format!("Ratchet-Reviewer-Model: {r}\n"));
    }
    for (doc, hash) in governance {
        msg.push_str(&format!("Ratchet-Governance: {doc} {hash}\n"));
    }
    msg
}

/// A gate's run in the candidate's checkout `cwd`, confined as the constitution says, with the
/// swarm's repository `home` hidden from it (but what the checkout needs).
pub fn spec_for(command: &str, cwd: &Path, home: &Path, timeout: Duration, sandbox: &SandboxSettings) -> RunSpec {
    let mut spec = RunSpec::new(command, cwd)
        .with_timeout(timeout)
        .with_sandbox(sandbox.sandbox)
        .with_network(sandbox.allow_network)
        .with_repository(home)
        .with_weak_sandbox_allowed(sandbox.allow_weak)
        .with_jobs(&sandbox.jobs, false);
    if sandbox.memory_mb > 0 {
        spec = spec.with_memory_limit(sandbox.memory_mb * 1024 * 1024);
    }
    spec
}

/// Run one command as evidence: its result class and its log as an artefact.
pub async fn run_logged(ctx: &WorkCtx, name: &str, spec: RunSpec) -> (CommandRun, kit::exec::RunOutcome) {
    let log_name = format!("{name}.log");
    let spec = spec.with_log(ctx.artifacts.join(&log_name));
    let out = kit::exec::run(&spec).await;
    let run = CommandRun {
        command: spec.command.clone(),
        result: out.result(),
        detail: out.describe(),
        duration_ms: out.duration.as_millis() as u64,
        log: Some(log_name),
        sandbox: Some(out.sandbox_used()),
        job: out.job.clone(),
    };
    (run, out)
}

fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.is_relative()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.split('/').any(|c| c == ".git")
}

/// Apply and commit the proposal in `tree` (or find it already committed). Returns the commit.
fn apply_and_commit(
    tree: &Path,
    artifacts: &Path,
    governance: &std::collections::BTreeMap<String, String>,
    input: &ExecuteInput,
    attempt: u32,
    reviewer: Option<&str>,
) -> Result<String, String> {
    let git = Git::new(tree);
    let head = git.run(["rev-parse", "HEAD"]).map_err(|e| format!("infra: {e}"))?;
    if head != input.base {
        let msg = git.run(["log", "-1", "--format=%B", "HEAD"]).map_err(|e| format!("infra: {e}"))?;
        if msg.contains(&candidate_trailer(&input.proposal.id)) {
            // Committed by an earlier attempt, which may have died with the baseline's tests
            // swapped in: the tracked files back as the candidate has them.
            git.run(["reset", "-q", "--hard", "HEAD"]).map_err(|e| format!("infra: {e}"))?;
            return Ok(head);
        }
        return Err(format!("infra: worktree HEAD {head} is neither the base {} nor this candidate", input.base));
    }
    // A retry starts from a clean tree at the base (an earlier attempt may have died
    // mid-apply); a first attempt has a fresh checkout.
    if attempt > 1 {
        git.run(["reset", "-q", "--hard", &input.base]).map_err(|e| format!("infra: {e}"))?;
        git.run(["clean", "-q", "-fd"]).map_err(|e| format!("infra: {e}"))?;
    }
    let p = &input.proposal;
    for edit in &p.edits {
        if !safe_relative(&edit.path) {
            return Err(format!("edit path {:?} escapes the worktree or touches .git", edit.path));
        }
        let path = tree.join(&edit.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("infra: creating {}: {e}", dir.display()))?;
        }
        std::fs::write(&path, &edit.content).map_err(|e| format!("infra: writing {}: {e}", path.display()))?;
    }
    if let Some(patch) = &p.patch {
        let patch_file = artifacts.join("candidate.patch");
        std::fs::write(&patch_file, patch).map_err(|e| format!("infra: {e}"))?;
        let patch_arg = patch_file.to_string_lossy().to_string();
        git.run(["apply", "--whitespace=nowarn", &patch_arg])
            .map_err(|e| format!("the patch does not apply: {}", e.stderr().trim()))?;
    }
    git.run(["add", "-A"]).map_err(|e| format!("infra: {e}"))?;
    let staged = git.run(["diff", "--cached", "--name-only"]).map_err(|e| format!("infra: {e}"))?;
    if staged.trim().is_empty() {
        return Err("the candidate changes nothing".into());
    }
    let msg = commit_message(p, governance, reviewer);
    git.clone()
        .env("GIT_AUTHOR_NAME", "Ratchet executor")
        .env("GIT_AUTHOR_EMAIL", "executor@ratchet.invalid")
        .env("GIT_COMMITTER_NAME", "Ratchet executor")
        .env("GIT_COMMITTER_EMAIL", "executor@ratchet.invalid")
        .run(["commit", "-q", "--no-verify", "-m", &msg])
        .map_err(|e| format!("infra: commit failed: {e}"))?;
    git.run(["rev-parse", "HEAD"]).map_err(|e| format!("infra: {e}"))
}

/// What ended the baseline's tests' run: the command (`test_command`, or a command of the fresh
/// build) and how it ended.
pub struct TrustedEnd {
    pub command: String,
    /// A command of ethos.md `trusted_build`, not `test_command`.
    pub build: bool,
    pub out: kit::exec::RunOutcome,
}

/// The baseline's tests (ethos.md `trusted_tests`, taken from the base like the benchmark) run
/// with `test_command` against the candidate's code, sandboxed like every gate, after its own
/// gates passed; what the run sees under those globs is exactly the base's files ([`trusted`]).
/// Where (ethos.md `trusted_checkout`, from the approved text at the task's hashes): `reuse`, in
/// the candidate's own checkout (so the gates' build is reused), skipped when the candidate
/// changed none of those files and a gate that already passed was `test_command` itself, run on
/// the commit as it is (`tests_ran_pristine`: nothing a gate wrote under the globs, no tracked
/// file changed); `fresh`, in a new checkout of the commit built from scratch ([`fresh_gate`]),
/// never skipped. `Err` is the task's end (infrastructure).
async fn trusted_gate(
    ctx: &WorkCtx,
    input: &ExecuteInput,
    commit: &str,
    tests_ran_pristine: bool,
    (checkout, build): (TrustedCheckout, &[String]),
) -> Result<Option<(TrustedTestsRun, Option<TrustedEnd>)>, String> {
    if input.trusted_tests.is_empty() || input.test_command.trim().is_empty() {
        return Ok(None);
    }
    let (tree, base, c, globs) = (ctx.bd.tree(), input.base.clone(), commit.to_string(), input.trusted_tests.clone());
    let (restored, set_aside) = tokio::task::spawn_blocking(move || trusted_changes(&tree, &base, &c, &globs))
        .await
        .unwrap_or_else(|e| Err(format!("infra: {e}")))?;
    if checkout == TrustedCheckout::Fresh {
        return fresh_gate(ctx, input, commit, restored, set_aside, build).await.map(Some);
    }
    if restored.is_empty() && set_aside.is_empty() && tests_ran_pristine {
        let why = format!(
            "the candidate changes none of the trusted tests ({}), and the gate `{}` already ran them on its commit",
            input.trusted_tests.join(", "),
            input.test_command
        );
        let t = TrustedTestsRun {
            restored,
            set_aside,
            untracked: vec![],
            run: None,
            skipped: Some(why),
            checkout: TrustedCheckout::Reuse,
            fresh: None,
        };
        return Ok(Some((t, None)));
    }
    let (tree, aside, base, globs) =
        (ctx.bd.tree(), ctx.bd.aside_dir(), input.base.clone(), input.trusted_tests.clone());
    let (r, a) = (restored.clone(), set_aside.clone());
    let (ignores, moved) = tokio::task::spawn_blocking(move || {
        let ignores = BaseIgnores::of(&tree, &base)?;
        prepare_trusted(&tree, &aside, &base, &r, &a, &globs, &ignores).map(|moved| (ignores, moved))
    })
    .await
    .unwrap_or_else(|e| Err(format!("infra: {e}")))?;
    let untracked: Vec<String> = moved.iter().map(Stray::display).collect();
    let spec = spec_for(
        &input.test_command,
        &ctx.bd.tree(),
        ctx.home.root(),
        Duration::from_secs(input.gate_timeout_s),
        &input.sandbox,
    );
    let (run, out) = run_logged(ctx, "trusted-tests", spec).await;
    let (tree, aside, globs) = (ctx.bd.tree(), ctx.bd.aside_dir(), input.trusted_tests.clone());
    let dropped = tokio::task::spawn_blocking(move || restore_candidate(&tree, &aside, &moved, &globs, &ignores))
        .await
        .unwrap_or_else(|e| Err(format!("infra: {e}")))?;
    if !dropped.is_empty() {
        let dropped: Vec<String> = dropped.iter().map(Stray::display).collect();
        tracing::warn!(
            ?dropped,
            "files in no commit moved out of the baseline's tests were not put back: the run put a symlink or a file in their way"
        );
    }
    let t = TrustedTestsRun {
        restored,
        set_aside,
        untracked,
        run: Some(run),
        skipped: None,
        checkout: TrustedCheckout::Reuse,
        fresh: None,
    };
    Ok(Some((t, Some(TrustedEnd { command: input.test_command.clone(), build: false, out }))))
}

/// The baseline's tests in a fresh checkout of the candidate's commit (ethos.md
/// `trusted_checkout = "fresh"`): made under the branch's directory (`fresh/`, a git worktree:
/// nothing untracked or ignored of the candidate's checkout is carried over, so nothing its gates
/// planted in its build reaches the run), the base's trusted tests put in, then each command of
/// `build` (ethos.md `trusted_build`) and `test_command`, sandboxed like every gate, stopping at
/// the first that fails; the checkout removed afterwards, whatever happened.
async fn fresh_gate(
    ctx: &WorkCtx,
    input: &ExecuteInput,
    commit: &str,
    restored: Vec<String>,
    set_aside: Vec<String>,
    build: &[String],
) -> Result<(TrustedTestsRun, Option<TrustedEnd>), String> {
    let started = Instant::now();
    let (repo, dir) = (ctx.home.root().to_path_buf(), ctx.bd.fresh_checkout());
    let (b, c, r, a) = (input.base.clone(), commit.to_string(), restored.clone(), set_aside.clone());
    let (rp, d) = (repo.clone(), dir.clone());
    tokio::task::spawn_blocking(move || make_fresh(&rp, &d, &b, &c, &r, &a))
        .await
        .unwrap_or_else(|e| Err(format!("infra: {e}")))?;
    let mut fresh = FreshBuild { checkout_ms: started.elapsed().as_millis() as u64, build: vec![] };
    let timeout = Duration::from_secs(input.gate_timeout_s);
    let mut end = None;
    for (i, cmd) in build.iter().enumerate() {
        if ctx.lease_lost() {
            break;
        }
        let spec = spec_for(cmd, &dir, ctx.home.root(), timeout, &input.sandbox);
        let (run, out) = run_logged(ctx, &format!("trusted-build-{}", i + 1), spec).await;
        fresh.build.push(run);
        if !out.success() {
            end = Some(TrustedEnd { command: cmd.clone(), build: true, out });
            break;
        }
    }
    let mut run = None;
    if end.is_none() && !ctx.lease_lost() {
        let spec = spec_for(&input.test_command, &dir, ctx.home.root(), timeout, &input.sandbox);
        let (r, out) = run_logged(ctx, "trusted-tests", spec).await;
        run = Some(r);
        end = Some(TrustedEnd { command: input.test_command.clone(), build: false, out });
    }
    let removed = tokio::task::spawn_blocking(move || remove_fresh(&repo, &dir))
        .await
        .unwrap_or_else(|e| Err(format!("infra: {e}")));
    if let Err(e) = removed {
        tracing::warn!(error = %e, "the fresh checkout of the baseline's tests was not removed (`ratchet gc` removes it)");
    }
    if ctx.lease_lost() {
        return Err("infra: lease lost during the baseline's tests".into());
    }
    let t = TrustedTestsRun {
        restored,
        set_aside,
        untracked: vec![],
        run,
        skipped: None,
        checkout: TrustedCheckout::Fresh,
        fresh: Some(fresh),
    };
    Ok((t, end))
}

/// The `execute` skill.
pub async fn execute(ctx: WorkCtx) -> WorkResult {
    let input: ExecuteInput = match serde_json::from_value(ctx.task.input.clone()) {
        Ok(i) => i,
        Err(e) => {
            return WorkResult::candidate_failure(format!("task input is not an execute request: {e}"), json!({}));
        }
    };
    let started = Instant::now();
    let (tree, artifacts, governance, inp) =
        (ctx.bd.tree(), ctx.artifacts.clone(), ctx.task.governance.clone(), input.clone());
    let attempt = ctx.attempt;
    let home = ctx.home.root().to_path_buf();
    let applied = tokio::task::spawn_blocking(move || {
        // The reviewer named by the approved governance the task was written under.
        let reviewer = kit::governance::Approved::at(&home)
            .load_at(&governance)
            .ok()
            .and_then(|g| g.reviewer_model().map(|(id, _)| id.to_string()));
        apply_and_commit(&tree, &artifacts, &governance, &inp, attempt, reviewer.as_deref())
    })
    .await
    .unwrap_or_else(|e| Err(format!("infra: apply task crashed: {e}")));
    let commit = match applied {
        Ok(c) => c,
        Err(e) if e.starts_with("infra: ") => return WorkResult::infra_failure(e, json!({})),
        Err(e) => return WorkResult::candidate_failure(e, json!({"base": input.base})),
    };
    let mut gates = vec![];
    let mut command_ms = 0;
    // Whether a gate that is `test_command` ran on the commit as it is (see `trusted_gate`).
    let mut tests_ran_pristine = false;
    for (i, cmd) in input.gates.iter().enumerate() {
        if ctx.lease_lost() {
            return WorkResult::infra_failure("lease lost while gating", json!({"commit": commit}));
        }
        kit::worker::write_progress(
            &ctx.artifacts,
            &protocol::work::StageProgress {
                version: protocol::work::PROGRESS_VERSION,
                step: "gate".into(),
                done: i as u32,
                of: input.gates.len() as u32,
                command: Some(cmd.clone()),
                estimate: None,
                at: protocol::timestamp(std::time::SystemTime::now()),
            },
        );
        let is_test_command = !input.trusted_tests.is_empty() && cmd.trim() == input.test_command.trim();
        let pristine_now = if is_test_command && !tests_ran_pristine {
            let (tree, base, globs) = (ctx.bd.tree(), input.base.clone(), input.trusted_tests.clone());
            tokio::task::spawn_blocking(move || pristine(&tree, &base, &globs)).await.ok().and_then(Result::ok)
        } else {
            None
        };
        let spec =
            spec_for(cmd, &ctx.bd.tree(), ctx.home.root(), Duration::from_secs(input.gate_timeout_s), &input.sandbox);
        let (run, out) = run_logged(&ctx, &format!("gate-{}", i + 1), spec).await;
        tests_ran_pristine |= pristine_now == Some(true);
        command_ms += run.duration_ms;
        gates.push(run);
        let data = || output(&commit, &input.base, &gates, command_ms, None);
        if out.is_infra_failure() {
            return WorkResult::infra_failure(format!("gate {cmd:?}: {}", out.describe()), data());
        }
        if !out.success() {
            return WorkResult::candidate_failure(format!("gate {cmd:?} failed: {}", out.describe()), data());
        }
    }
    if ctx.lease_lost() {
        return WorkResult::infra_failure("lease lost while gating", json!({"commit": commit}));
    }
    // Where the baseline's tests run: approved ethos.md at the task's hashes decides.
    let (checkout, build) = if input.trusted_tests.is_empty() {
        (TrustedCheckout::Reuse, vec![])
    } else {
        let (home, hashes) = (ctx.home.root().to_path_buf(), ctx.task.governance.clone());
        let gov = tokio::task::spawn_blocking(move || kit::governance::Approved::at(&home).load_at(&hashes))
            .await
            .map_err(|e| e.to_string())
            .and_then(|g| g.map_err(|e| e.to_string()));
        match gov {
            Ok(g) => (g.ethos.trusted_checkout, g.ethos.trusted_build.clone()),
            Err(e) => {
                let data = output(&commit, &input.base, &gates, command_ms, None);
                return WorkResult::infra_failure(
                    format!("the baseline's tests: reading ethos.md trusted_checkout at the task's hashes: {e}"),
                    data,
                );
            }
        }
    };
    let trusted = match trusted_gate(&ctx, &input, &commit, tests_ran_pristine, (checkout, &build)).await {
        Ok(t) => t,
        Err(e) => {
            let data = output(&commit, &input.base, &gates, command_ms, None);
            return WorkResult::infra_failure(format!("the baseline's tests: {e}"), data);
        }
    };
    let trusted = match trusted {
        Some((t, end)) => {
            command_ms += t.run.as_ref().map_or(0, |r| r.duration_ms);
            command_ms += t.fresh.as_ref().map_or(0, |f| f.build.iter().map(|r| r.duration_ms).sum::<u64>());
            let data = |t: &TrustedTestsRun| output(&commit, &input.base, &gates, command_ms, Some(t));
            let what = |e: &TrustedEnd| {
                if e.build { "the fresh build for the baseline's tests" } else { "the baseline's tests" }
            };
            if let Some(e) = end.as_ref().filter(|e| e.out.is_infra_failure()) {
                return WorkResult::infra_failure(
                    format!("{} `{}`: {}", what(e), e.command, e.out.describe()),
                    data(&t),
                );
            }
            if let Some(e) = end.as_ref().filter(|e| e.build && !e.out.success()) {
                return WorkResult::candidate_failure(
                    format!(
                        "the fresh build for the baseline's tests failed: `{}` {}: the candidate's commit does not build from scratch (ethos.md trusted_checkout = \"fresh\", trusted_build)",
                        e.command,
                        e.out.describe()
                    ),
                    data(&t),
                );
            }
            if let Some(out) = end.as_ref().map(|e| &e.out).filter(|o| !o.success()) {
                let changed: Vec<String> = t
                    .restored
                    .iter()
                    .map(|p| format!("{p} (restored)"))
                    .chain(t.set_aside.iter().map(|p| format!("{p} (set aside)")))
                    .collect();
                return WorkResult::candidate_failure(
                    format!(
                        "the baseline's tests failed on the candidate's code: `{}` {} with ethos.md trusted_tests ({}) taken from the base{}{}{}",
                        input.test_command,
                        out.describe(),
                        input.trusted_tests.join(", "),
                        if changed.is_empty() {
                            String::new()
                        } else {
                            format!("; the candidate changed {}", changed.join(", "))
                        },
                        if t.untracked.is_empty() {
                            String::new()
                        } else {
                            format!("; out of the run, in no commit (written by its gates): {}", t.untracked.join(", "))
                        },
                        if t.checkout == TrustedCheckout::Fresh {
                            "; in a fresh checkout of its commit, built from scratch (ethos.md trusted_checkout = \"fresh\")"
                        } else {
                            ""
                        }
                    ),
                    data(&t),
                );
            }
            Some(t)
        }
        None => None,
    };
    let took = started.elapsed().as_millis();
    let out = ExecuteOutput { commit: commit.clone(), base: input.base.clone(), gates, command_ms, trusted };
    let trusted_note = match &out.trusted {
        Some(t) if t.run.is_some() => " and the baseline's tests",
        _ => "",
    };
    WorkResult::success(
        format!(
            "committed {} and passed {} gate(s){trusted_note} in {took} ms",
            &commit[..12.min(commit.len())],
            out.gates.len()
        ),
        json!(out),
    )
}

/// The execute task's result data: the gates run so far, and the baseline's tests when they ran.
fn output(commit: &str, base: &str, gates: &[CommandRun], command_ms: u64, trusted: Option<&TrustedTestsRun>) -> Value {
    json!(ExecuteOutput {
        commit: commit.to_string(),
        base: base.to_string(),
        gates: gates.to_vec(),
        command_ms,
        trusted: trusted.cloned()
    })
}
