//! The critic's leased `critique` skill: review a candidate commit with the rails, as evidence.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kit::exec::{RunOutcome, RunSpec};
use kit::worker::{WorkCtx, WorkResult};
use protocol::governance::WeakSandbox;
use protocol::work::{CritiqueInput, CritiqueOutput, SandboxUsed};
use serde_json::json;

use crate::{TestRunner, model_review, review, review_rails_only};

/// Runs the bite check's test commands through the sandbox, logging each run as an artefact and
/// adding up the time they take (the target's time, not the harness's).
struct LoggedRunner {
    log: std::path::PathBuf,
    ms: AtomicU64,
    /// The sandbox the last run used, as evidence.
    sandbox: Mutex<Option<SandboxUsed>>,
}

impl TestRunner for LoggedRunner {
    async fn run(&self, spec: RunSpec) -> RunOutcome {
        let out = kit::exec::run(&spec.with_log(self.log.clone())).await;
        self.ms.fetch_add(out.duration.as_millis() as u64, Ordering::Relaxed);
        *self.sandbox.lock().expect("the sandbox record is never poisoned") = Some(out.sandbox_used());
        out
    }
}

pub async fn critique(ctx: WorkCtx) -> WorkResult {
    let input: CritiqueInput = match serde_json::from_value(ctx.task.input.clone()) {
        Ok(i) => i,
        Err(e) => {
            return WorkResult::candidate_failure(format!("task input is not a critique request: {e}"), json!({}));
        }
    };
    let mut constitution = input.constitution.clone();
    constitution.sandbox = input.sandbox.sandbox;
    constitution.weak_sandbox = if input.sandbox.allow_weak { WeakSandbox::Allow } else { WeakSandbox::Refuse };
    let runner = LoggedRunner { log: ctx.artifacts.join("bite.log"), ms: AtomicU64::new(0), sandbox: Mutex::new(None) };
    let repo = ctx.home.root().to_path_buf();
    let declaration = input.proposal.declaration.as_ref();
    let mut r = if input.rails_only {
        review_rails_only(&repo, &input.base, &input.commit, declaration, &constitution, &input.ethos).await
    } else {
        review(&repo, &input.base, &input.commit, declaration, &constitution, &input.ethos, &runner).await
    };
    let mut out = CritiqueOutput {
        pass: r.pass,
        summary: String::new(),
        findings: vec![],
        command_ms: runner.ms.load(Ordering::Relaxed),
        reviewer: None,
        model_verdict: None,
        calls: vec![],
        sandbox: runner.sandbox.lock().expect("the sandbox record is never poisoned").clone(),
    };
    // The model review runs only on what the rails let through (a rejected candidate costs no
    // tokens), and only when the constitution turns it on.
    let rails_clean = r.infra_error.is_none() && r.blocking().next().is_none() && !input.rails_only;
    let mode = input.constitution.model_review;
    if let (true, false, Some(settings)) = (rails_clean, mode.is_off(), &input.ethos.review) {
        match input.constitution.models.get(&settings.model) {
            Some(endpoint) => {
                let id = protocol::models::ModelId::of(&settings.model, endpoint);
                out.reviewer = Some(id.to_string());
                let (repo2, base, commit) = (repo.clone(), input.base.clone(), input.commit.clone());
                let diff = crate::blocking(move || model_review::diff_of(&repo2, &base, &commit)).await;
                match diff {
                    Ok((diff, files)) => {
                        let (verdict, calls) = model_review::ask(
                            id.clone(),
                            endpoint,
                            settings,
                            &input.ethos.goal,
                            &input.proposal.summary,
                            &diff,
                            &files,
                        )
                        .await;
                        out.calls = calls;
                        match verdict {
                            Ok(v) => {
                                model_review::merge(&mut r, &v, mode, &id);
                                out.model_verdict = Some(v);
                            }
                            Err(e) => {
                                r.pass = false;
                                r.infra_error = Some(format!("model review by {id}: {e}"));
                                r.summary = format!("inconclusive: the model review failed: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        r.pass = false;
                        r.infra_error = Some(format!("model review: reading the diff: {e}"));
                    }
                }
            }
            None => {
                r.pass = false;
                r.infra_error = Some(format!(
                    "ethos.md [ethos.review] model {:?} is not declared in the task's constitution.md [constitution.models]",
                    settings.model
                ));
            }
        }
    }
    out.pass = r.pass;
    out.summary = r.summary.clone();
    out.findings = r.findings.clone();
    if let Err(e) = ctx.write_artifact("review.json", &serde_json::to_vec_pretty(&r).unwrap_or_default()) {
        tracing::warn!("writing review.json: {e:#}");
    }
    let blocked = r.findings.iter().any(|f| f.severity == crate::Severity::Block);
    match &r.infra_error {
        // Inconclusive for reasons outside the candidate: retried, never counted against it.
        Some(e) if !blocked => WorkResult::infra_failure(format!("review inconclusive: {e}"), json!(out)),
        _ => WorkResult::success(r.summary.clone(), json!(out)),
    }
}
