//! The critic's leased `critique` skill: review a candidate commit with the rails, as evidence.

use std::sync::atomic::{AtomicU64, Ordering};

use kit::exec::{RunOutcome, RunSpec};
use kit::worker::{WorkCtx, WorkResult};
use protocol::work::{CritiqueInput, CritiqueOutput};
use serde_json::json;

use crate::{TestRunner, review};

/// Runs the bite check's test commands through the sandbox, logging each run as an artefact and
/// adding up the time they take (the target's time, not the harness's).
struct LoggedRunner {
    log: std::path::PathBuf,
    ms: AtomicU64,
}

impl TestRunner for LoggedRunner {
    async fn run(&self, spec: RunSpec) -> RunOutcome {
        let out = kit::exec::run(&spec.with_log(self.log.clone())).await;
        self.ms.fetch_add(out.duration.as_millis() as u64, Ordering::Relaxed);
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
    constitution.sandbox = input.sandbox.sandbox.clone();
    let runner = LoggedRunner { log: ctx.artifacts.join("bite.log"), ms: AtomicU64::new(0) };
    let repo = ctx.home.root().to_path_buf();
    let r =
        review(&repo, &input.base, &input.commit, &input.proposal.files, &constitution, &input.ethos, &runner).await;
    let out = CritiqueOutput {
        pass: r.pass,
        summary: r.summary.clone(),
        findings: json!(r.findings),
        command_ms: runner.ms.load(Ordering::Relaxed),
    };
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
