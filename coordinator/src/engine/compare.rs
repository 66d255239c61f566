//! `ratchet models compare <current> <candidate>`: benchmark a candidate model endpoint against
//! the current one on the same proposal tasks, through the real rails and the real evaluator.
//!
//! Task `i` is the same for both endpoints: the current baseline, the loop's banned approaches
//! plus every approach either endpoint proposed in tasks before `i`. For each task each endpoint
//! is asked for one candidate (the proposer, `model` naming the declared endpoint); a candidate
//! goes through execute, critique (with the model review when it is on) and evaluate in its own
//! branch, exactly like a loop's, and is *accepted* when the evaluator says PROMOTE. Nothing is
//! ever promoted: every branch is marked rejected with a note. The decision
//! ([`protocol::models::compare_decision`]) is recorded as a `model_compared` event with every
//! figure; a switch is a governance edit a person approves (cadence.md `[proposer] model`).

use std::time::Instant;

use anyhow::{Context, bail};
use kit::substrate::{BranchState, Home};
use protocol::events::EventKind;
use protocol::models::{CompareStats, Usage, compare_decision};
use protocol::work::Verdict;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Candidate, CycleState, Engine, LoopCtx, LoopState, read_state};

/// What to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRequest {
    /// Declared model names (constitution.md `[constitution.models]`).
    pub current: String,
    pub candidate: String,
    /// Proposal tasks per endpoint.
    pub tasks: u32,
}

/// One endpoint's side of a compare run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideReport {
    pub name: String,
    /// `name: model @ url`.
    pub model: String,
    /// Per task: the candidate's verdict (PROMOTE, HOLD, REJECT, FAILED, INFRA) or `no-proposal`
    /// (the answer was malformed, or no answer came).
    pub outcomes: Vec<String>,
    /// Per task: whether its candidate was accepted (verdict PROMOTE).
    pub accepted: Vec<bool>,
    /// Every model call of this side.
    pub usage: Usage,
    /// Per task: milliseconds of model time.
    pub latency_ms: Vec<u64>,
}

/// The result of a compare run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub run_id: String,
    pub baseline: String,
    pub current: SideReport,
    pub candidate: SideReport,
    /// PROMOTE, HOLD or REJECT (the candidate endpoint).
    pub decision: Verdict,
    pub reasons: Vec<String>,
    pub stats: CompareStats,
    /// On PROMOTE: the governance proposal that switches the proposer to the candidate (applied
    /// only by `ratchet approve <id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    pub wall_ms: u64,
}

/// Run a compare (the coordinator's `compare` skill). `ctx.fresh` and `ctx.max_cycles` are unused.
pub async fn compare_run(ctx: LoopCtx, req: CompareRequest) -> anyhow::Result<CompareReport> {
    let started = Instant::now();
    let home = Home::open(&ctx.home)?.with_run_id(ctx.run_id.clone());
    let gov = crate::govern::load(&ctx.home)?;
    if req.tasks == 0 {
        bail!("--tasks 0 compares nothing; fix: ask for at least 1 task (each endpoint answers every task)");
    }
    let mut ids = vec![];
    for name in [&req.current, &req.candidate] {
        let (id, _) = gov.model(name).with_context(|| {
            let declared: Vec<&str> = gov.constitution.models.keys().map(String::as_str).collect();
            format!(
                "model {name:?} is not declared in approved constitution.md [constitution.models] (declared: {}); fix: declare it, \
                 `ratchet approve constitution.md`, then compare",
                if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
            )
        })?;
        ids.push(id.to_string());
    }
    if req.current == req.candidate {
        bail!("current and candidate are both {:?}: compare two declared models", req.current);
    }
    // The tasks start from what the loop knows: its banned approaches.
    let previous = read_state(&ctx.home)?;
    let mut st = LoopState::new(ctx.run_id.clone());
    st.tried = previous.as_ref().map(|p| p.tried.clone()).unwrap_or_default();
    st.banned = previous.as_ref().map(|p| p.banned.clone()).unwrap_or_default();
    let mut eng = Engine::start(ctx, home, gov, st, false).await;
    let baseline = eng.main_commit()?;
    let short: String = eng.st.run_id.chars().take(6).collect();
    let mut sides: Vec<SideReport> = [&req.current, &req.candidate]
        .iter()
        .zip(&ids)
        .map(|(name, id)| SideReport {
            name: name.to_string(),
            model: id.clone(),
            outcomes: vec![],
            accepted: vec![],
            usage: Usage::default(),
            latency_ms: vec![],
        })
        .collect();
    eng.say(&format!(
        "compare: {} (current) vs {} (candidate), {} task(s) each on baseline {}",
        ids[0],
        ids[1],
        req.tasks,
        &baseline[..12]
    ));
    for task in 1..=req.tasks as u64 {
        let mut proposed_keys = vec![];
        for (s, side) in sides.iter_mut().enumerate() {
            eng.st.current = Some(CycleState::new(task, baseline.clone(), super::Phase::Running));
            let answer = eng.propose_with(&baseline, 1, Some(side.name.clone())).await;
            let calls = answer.as_ref().map(|(o, _)| o.calls.clone()).unwrap_or_default();
            eng.record_calls(None, &calls);
            for c in &calls {
                side.usage.add(&c.usage);
            }
            side.latency_ms.push(calls.iter().map(|c| c.usage.latency_ms).sum());
            let proposal = match answer {
                Ok((out, _)) => out.proposals.into_iter().next(),
                Err(e) => {
                    eng.say(&format!("  task {task} {}: no answer: {e:#}", side.name));
                    None
                }
            };
            let Some(p) = proposal else {
                side.outcomes.push("no-proposal".into());
                side.accepted.push(false);
                eng.say(&format!("  task {task} {}: no usable proposal", side.name));
                continue;
            };
            proposed_keys.push(p.approach_key());
            let branch = format!("m{short}-t{task}-{}", if s == 0 { "cur" } else { "cand" });
            protocol::names::check_branch(&branch)?;
            eng.make_branch(&branch, &baseline, &p).await?;
            let models = eng.models_of(&p);
            eng.st.current.as_mut().expect("set above").candidates.push(Candidate::new(branch.clone(), p, models));
            eng.run_candidate(0).await?;
            let cand = eng.st.current.as_ref().and_then(|c| c.candidates.first().cloned()).expect("the candidate");
            let verdict = cand.verdict.unwrap_or(Verdict::Infra);
            side.accepted.push(verdict == Verdict::Promote);
            side.outcomes.push(verdict.to_string());
            // Never promoted: a compare measures, the loop decides.
            if let Ok(bd) = eng.home.branch_dir(&branch)
                && bd.exists()
            {
                let note = format!("compare run {}: {verdict}; never promoted", eng.st.run_id);
                let _ = tokio::task::spawn_blocking(move || bd.set_state(BranchState::Rejected, Some(&note))).await;
            }
        }
        // The next task bans what either endpoint proposed, for both alike.
        eng.st.banned.extend(proposed_keys);
        eng.st.current = None;
    }
    let (decision, mut reasons, stats) =
        compare_decision(&sides[0].accepted, &sides[1].accepted, eng.gov.ethos.confidence);
    for side in &sides {
        let mut lat = side.latency_ms.clone();
        lat.sort_unstable();
        let median = lat.get(lat.len() / 2).copied().unwrap_or(0);
        reasons.push(format!(
            "{}: {} tokens in {} calls ({} prompt, {} from the prefix cache, {} completion); median model time per task {median} ms",
            side.name,
            side.usage.total_tokens(),
            side.usage.calls,
            side.usage.prompt_tokens,
            side.usage.cached_prompt_tokens,
            side.usage.completion_tokens
        ));
    }
    // A switch is a governance edit a person approves: proposed here, applied by `ratchet approve`.
    let switch = if decision == Verdict::Promote {
        let evidence = json!({"run_id": eng.st.run_id, "baseline": baseline, "reasons": reasons,
                              "current": sides[0], "candidate": sides[1], "stats": stats});
        match crate::govern::proposals::propose_model_switch(&eng.ctx.home, &eng.gov, &req.candidate, evidence) {
            Ok(p) => Some(format!(
                "proposed as {}: `ratchet approve {}` switches cadence.md's proposer to {:?}",
                p.id, p.id, req.candidate
            )),
            Err(e) => Some(format!(
                "could not write the switch proposal ({e:#}); edit cadence.md [proposer] model = {:?} and `ratchet approve cadence.md`",
                req.candidate
            )),
        }
    } else {
        None
    };
    let candidate = sides.pop().expect("two sides");
    let current = sides.pop().expect("two sides");
    let report = CompareReport {
        run_id: eng.st.run_id.clone(),
        baseline: baseline.clone(),
        current,
        candidate,
        decision,
        reasons: reasons.clone(),
        stats,
        switch,
        wall_ms: started.elapsed().as_millis() as u64,
    };
    let evidence = json!({
        "stats": report.stats, "current": report.current, "candidate": report.candidate,
        "baseline": baseline, "switch": report.switch,
    });
    eng.emit(
        None,
        None,
        EventKind::ModelCompared {
            current: report.current.model.clone(),
            candidate: report.candidate.model.clone(),
            decision,
            reasons: reasons.clone(),
            evidence,
        },
    );
    eng.say(&format!("compare: {decision} for {}", report.candidate.model));
    for r in &reasons {
        eng.say(&format!("  {r}"));
    }
    Ok(report)
}
