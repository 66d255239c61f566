//! The proposer's A2A `propose` skill: N candidates against the current baseline, under the
//! hard-banned list, by the strategy cadence.md names.
//!
//! What runs comes only from approved governance: the skill loads the approved documents from
//! `refs/ratchet/governance` in its home repository (`kit::governance`) and takes the strategy,
//! command, endpoint, model, goal, context and limits from them. A request carries only what
//! the loop chooses per call ([`ProposeInput`]: baseline, n, history, banned, and the governance
//! hashes the coordinator has in force, which must be the approved ones); a request that tries
//! to choose a setting is refused, naming the key and the fix. The `openai` strategy's model is
//! declared in approved constitution.md (`[constitution.models.<name>]`: url, model, the
//! variable holding its key) and named by approved cadence.md, so its API key (read from that
//! variable in the proposer's environment: `ratchet up`'s, or its `env` table in agents.toml)
//! goes only to an endpoint a person approved.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::git::Git;
use kit::server::{Skill, TaskEnd};
use protocol::governance::{DOCS, Governance};
use protocol::work::{Dropped, ProposeInput, ProposeOutput, Verdict};
use serde_json::{Map, Value, json};

/// Refuse a request that carries anything but [`ProposeInput::KEYS`] (and `skill`): whatever
/// else it names (`settings`, `command`, `endpoint`, `goal`, ...) would choose what runs.
fn check_keys(input: &Map<String, Value>) -> Result<(), String> {
    let extra: Vec<String> = input
        .keys()
        .filter(|k| *k != "skill" && !ProposeInput::KEYS.contains(&k.as_str()))
        .map(|k| format!("`{k}`"))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the propose request carries {}: an A2A caller can ask for proposals but cannot choose what the proposer runs; \
         settings come from approved cadence.md; run `ratchet approve cadence.md` after editing it (the goal comes from \
         ethos.md and the sandbox from constitution.md, approved the same way); fix: send only {}",
        extra.join(", "),
        ProposeInput::KEYS.join(", ")
    ))
}

/// The request's governance hashes must be the approved ones in force.
fn check_hashes(asked: &BTreeMap<String, String>, gov: &Governance) -> Result<(), String> {
    let short = |h: Option<&String>| h.map(|h| h[..12.min(h.len())].to_string()).unwrap_or_else(|| "none".into());
    let differ: Vec<String> = DOCS
        .iter()
        .filter(|d| asked.get(**d) != gov.hashes.get(**d))
        .map(|d| format!("{d} {} (approved: {})", short(asked.get(*d)), short(gov.hashes.get(*d))))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the request's governance is not the approved governance in force ({}); the proposer works only under approved \
         governance; fix: the coordinator reloads governance at each cycle (retry), or approve the documents with `ratchet approve`",
        differ.join(", ")
    ))
}

/// What one call works under: the request and the approved governance.
struct Call {
    input: ProposeInput,
    gov: Governance,
}

impl Call {
    fn context(&self) -> String {
        if self.gov.proposer.context == "minimal" { self.gov.minimal_prefix() } else { self.gov.context_prefix() }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.gov.proposer.timeout_s)
    }
}

use crate::{CommandLimits, ProposalError, Tried, TriedOutcome, propose_command, propose_sweep};

/// The loop's history in the proposer's terms.
fn history(input: &ProposeInput) -> Vec<Tried> {
    input
        .history
        .iter()
        .map(|t| Tried {
            key: t.key.clone(),
            outcome: match t.verdict {
                Verdict::Promoted => TriedOutcome::Promoted,
                Verdict::Promote => TriedOutcome::Passed,
                Verdict::Hold | Verdict::Infra => TriedOutcome::Held,
                Verdict::Reject => TriedOutcome::Rejected,
                // Not made a candidate (a duplicate, no change): as the string match did.
                Verdict::Failed | Verdict::Dropped => TriedOutcome::Failed,
            },
            delta: t.effect,
        })
        .collect()
}

fn sweep(home: &Path, call: &Call) -> Result<ProposeOutput, String> {
    let (input, settings) = (&call.input, &call.gov.proposer);
    let file = settings.file.clone().ok_or("cadence.md [proposer] has no file for the sweep")?;
    let text = Git::new(home).run(["show", &format!("{}:{file}", input.baseline)]).map_err(|e| {
        format!("reading {file} at the baseline {}: {e}", &input.baseline[..12.min(input.baseline.len())])
    })?;
    let proposals = propose_sweep(&text, &file, &settings.space, &history(input), &input.banned, input.n as usize)
        .map_err(|e| e.to_string())?;
    let exhausted = proposals.is_empty();
    Ok(ProposeOutput { proposals, exhausted, command_ms: 0, calls: vec![], failure: None, dropped: vec![] })
}

/// A scratch checkout of the baseline for the command and openai strategies (the proposer's own,
/// under its state directory; never the user's checkout): self-contained, its git directory inside
/// it borrowing the repository's objects (`kit::git::Git::scratch_checkout`), so that a sandboxed
/// program sees nothing of the repository's `.git` but objects, and can commit without touching it.
fn scratch(home: &Path, state_dir: &Path, baseline: &str) -> Result<PathBuf, String> {
    let dir = scratch_dir(state_dir);
    let repo = Git::new(home);
    if dir.join(".git").is_file() {
        // A linked worktree from an earlier version: unregister it; its files are reset below.
        let d = dir.to_string_lossy().to_string();
        let _ = repo.run(["worktree", "remove", "--force", &d]);
        let _ = repo.run(["worktree", "prune"]);
    }
    repo.scratch_checkout(&dir, baseline).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The proposer's scratch checkout in its state directory (`RATCHET_STATE_DIR`).
fn scratch_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("scratch")
}

/// Held (flock) by the task that uses the scratch checkout: one at a time, and never removed under it.
fn scratch_lock(state_dir: &Path) -> std::io::Result<File> {
    std::fs::create_dir_all(state_dir)?;
    File::options().create(true).truncate(false).write(true).open(state_dir.join("scratch.lock"))
}

/// Run a strategy that works in the scratch checkout while holding its lock, and remove the
/// checkout after it (the proposer cleans its own directory; only its `home/` stays).
async fn in_scratch<F: std::future::Future<Output = Result<ProposeOutput, String>>>(
    state_dir: &Path,
    run: F,
) -> Result<ProposeOutput, String> {
    let s = state_dir.to_path_buf();
    let lock = tokio::task::spawn_blocking(move || scratch_lock(&s).and_then(|f| f.lock().map(|()| f)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("infrastructure: taking the scratch lock in {}: {e}", state_dir.display()))?;
    let out = run.await;
    let s = state_dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || {
        remove_dir(&scratch_dir(&s));
        drop(lock);
    })
    .await;
    out
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// The proposer's housekeeping: remove the scratch checkout of each of `state_dirs` that no task
/// holds (left by a proposer that died in a task). At every start for its own state directory,
/// and `proposer --gc` (run by `ratchet gc`) for every agent's. Returns the checkouts removed.
pub fn gc(state_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut removed = vec![];
    for state_dir in state_dirs {
        let dir = scratch_dir(state_dir);
        if !dir.exists() {
            continue;
        }
        let Ok(lock) = scratch_lock(state_dir) else { continue };
        if lock.try_lock().is_ok() {
            remove_dir(&dir);
            removed.push(dir);
        }
    }
    removed
}

async fn command(home: PathBuf, state_dir: PathBuf, call: &Call) -> Result<ProposeOutput, String> {
    let (input, settings) = (&call.input, &call.gov.proposer);
    let cmd = settings.command.clone().ok_or("cadence.md [proposer] has no command")?;
    // Every limit from approved governance: the sandbox mode from the constitution, network,
    // timeout and memory from cadence.md's [proposer].
    let sandbox = call.gov.constitution.sandbox;
    let context = call.context();
    let brief = crate::brief::brief(input, &call.gov);
    let mut proposals = vec![];
    let mut dropped = vec![];
    let started = std::time::Instant::now();
    let mut last_err = None;
    for _ in 0..input.n {
        let (h, s, b) = (home.clone(), state_dir.clone(), input.baseline.clone());
        let dir = tokio::task::spawn_blocking(move || scratch(&h, &s, &b)).await.map_err(|e| e.to_string())??;
        let limits = CommandLimits {
            timeout: call.timeout(),
            sandbox,
            allow_weak: call.gov.constitution.allows_weak_sandbox(),
            repository: Some(home.clone()),
            home: Some(state_dir.join("home")),
            allow_network: settings.allow_network,
            memory_limit_bytes: (settings.memory_mb > 0).then(|| settings.memory_mb * 1024 * 1024),
            env: forwarded_env(),
        };
        match propose_command(&cmd, &dir, &call.gov.ethos.goal, &context, &brief, limits).await {
            Ok(p) => match duplicate_of(input, &proposals, &p) {
                // The program repeated itself or an approach already tried: said, not proposed.
                Some(why) => {
                    dropped.push(Dropped { summary: p.summary.clone(), key: Some(p.approach_key()), reason: why })
                }
                None => proposals.push(p),
            },
            Err(e @ ProposalError::EmptyDiff { .. }) => {
                dropped.push(Dropped {
                    summary: format!("`{}`", clip(&cmd, 60)),
                    key: None,
                    reason: "empty diff: the program exited 0 without changing a file".into(),
                });
                last_err = Some(e);
            }
            Err(e) => last_err = Some(e),
        }
    }
    let command_ms = started.elapsed().as_millis() as u64;
    let failure = proposals.is_empty().then(|| no_candidate(last_err.as_ref(), &dropped));
    Ok(ProposeOutput { proposals, exhausted: false, command_ms, calls: vec![], failure, dropped })
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

/// The `openai` strategy: N answers from the declared model, each checked to apply to the
/// baseline. Every call is reported (tokens, latency, outcome), usable or not; when no answer
/// gave a proposal, the output says why (a proposal failure for the loop's circuit breaker).
async fn openai(home: PathBuf, state_dir: PathBuf, call: &Call) -> Result<ProposeOutput, String> {
    let input = &call.input;
    // The endpoint comes from approved governance only (constitution.md declares it, cadence.md
    // names it), so its key below can go nowhere else.
    let (id, endpoint) = match &input.model {
        // A benchmark of another approved endpoint (`ratchet models compare`): only a declared name.
        Some(name) => call.gov.model(name).ok_or_else(|| {
            format!("model {name:?} is not declared in approved constitution.md [constitution.models]; only a declared model can be asked")
        })?,
        None => call
            .gov
            .proposer_model()
            .ok_or("cadence.md [proposer] model names no model declared in constitution.md [constitution.models]")?,
    };
    let client =
        kit::model::ModelClient::new(id, endpoint, call.timeout()).map_err(|e| format!("infrastructure: {e}"))?;
    let context = call.context();
    let (h, s, b) = (home.clone(), state_dir.clone(), input.baseline.clone());
    let dir = tokio::task::spawn_blocking(move || scratch(&h, &s, &b)).await.map_err(|e| e.to_string())??;
    // What the model may change: what the critic would not reject as protected.
    let mut protected: Vec<String> = DOCS.iter().map(|d| d.to_string()).collect();
    protected.extend(call.gov.constitution.protected_paths.iter().cloned());
    protected.extend(call.gov.ethos.benchmark_paths.iter().cloned());
    let d = dir.clone();
    let editable = tokio::task::spawn_blocking(move || crate::openai::editable_files(&d, &protected))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("infrastructure: listing the baseline's files: {e}"))?;
    let brief = crate::brief::brief(input, &call.gov);
    let mut proposals: Vec<protocol::work::Proposal> = vec![];
    let mut dropped = vec![];
    let mut calls = vec![];
    let mut last_err = None;
    let started = std::time::Instant::now();
    for _ in 0..input.n {
        let (result, mut record) =
            crate::openai::propose_openai(&client, &dir, &editable, &call.gov.ethos.goal, &context, &brief.text).await;
        match result {
            Ok(p) => match duplicate_of(input, &proposals, &p) {
                None => proposals.push(p),
                Some(why) => {
                    record.detail = Some(why.clone());
                    dropped.push(Dropped { summary: p.summary.clone(), key: Some(p.approach_key()), reason: why });
                }
            },
            Err(e) => last_err = Some(e),
        }
        calls.push(record);
    }
    let failure = proposals.is_empty().then(|| no_candidate(last_err.as_ref(), &dropped));
    let command_ms = started.elapsed().as_millis() as u64;
    Ok(ProposeOutput { proposals, exhausted: false, command_ms, calls, failure, dropped })
}

/// Why `p` is not a new candidate, if it is not: it repeats an approach of the history (whatever
/// became of it), a banned one, or one proposed earlier in this call.
fn duplicate_of(
    input: &ProposeInput,
    earlier: &[protocol::work::Proposal],
    p: &protocol::work::Proposal,
) -> Option<String> {
    let key = p.approach_key();
    if let Some(t) = input.history.iter().rev().find(|t| t.key == key) {
        let what = if t.summary.is_empty() { key.clone() } else { format!("\"{}\"", t.summary) };
        return Some(format!(
            "duplicate of an approach already tried: {what} ({} in cycle {})",
            t.verdict.as_str().to_lowercase(),
            t.cycle
        ));
    }
    if input.banned.contains(&key) {
        return Some(format!("duplicate of a banned approach ({key})"));
    }
    earlier
        .iter()
        .find(|q| q.approach_key() == key)
        .map(|q| format!("duplicate of \"{}\", proposed in the same call", q.summary))
}

/// Why a call gave no candidate: the last failure, and what was dropped.
fn no_candidate(last: Option<&ProposalError>, dropped: &[Dropped]) -> String {
    let drops = if dropped.is_empty() {
        String::new()
    } else {
        let items: Vec<String> = dropped.iter().map(|d| format!("{}: {}", d.summary, d.reason)).collect();
        format!("{} answer(s) dropped ({})", dropped.len(), items.join("; "))
    };
    match last {
        Some(e) if !matches!(e, ProposalError::EmptyDiff { .. }) || drops.is_empty() => {
            if drops.is_empty() {
                describe(e)
            } else {
                format!("{}; {drops}", describe(e))
            }
        }
        _ if !drops.is_empty() => format!("no candidate: {drops}"),
        _ => "the proposer returned no candidates".into(),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() > n { format!("{}...", s.chars().take(n).collect::<String>()) } else { s.to_string() }
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
                let raw = ctx.input();
                if let Err(why) = check_keys(&raw) {
                    return TaskEnd::Rejected(why);
                }
                let mut raw = raw;
                raw.remove("skill");
                let input: ProposeInput = match serde_json::from_value(Value::Object(raw)) {
                    Ok(i) => i,
                    Err(e) => {
                        return TaskEnd::Rejected(format!(
                            "input is not a propose request: {e}; send {}; see protocol::work::ProposeInput",
                            ProposeInput::KEYS.join(", ")
                        ));
                    }
                };
                if protocol::names::check_component("commit", &input.baseline).is_err() {
                    return TaskEnd::Rejected(format!("baseline {:?} is not a commit id", input.baseline));
                }
                // Reloaded per call (one `git rev-parse` when the ref has not moved).
                let h = home.clone();
                let gov = match tokio::task::spawn_blocking(move || kit::governance::load(&h)).await {
                    Ok(Ok(g)) => g,
                    Ok(Err(e)) => return TaskEnd::Failed(format!("loading approved governance: {e}")),
                    Err(e) => return TaskEnd::Failed(format!("loading approved governance: {e}")),
                };
                if let Err(why) = check_hashes(&input.governance, &gov) {
                    return TaskEnd::Rejected(why);
                }
                // A request may pick a model only by a name approved constitution.md declares.
                if let Some(m) = &input.model
                    && gov.model(m).is_none()
                {
                    return TaskEnd::Rejected(format!(
                        "the propose request names model {m:?}, which approved constitution.md does not declare; a request can \
                         pick among the declared models by name, never name an endpoint; fix: declare it in \
                         [constitution.models] and `ratchet approve constitution.md`, or name a declared model"
                    ));
                }
                let call = Call { input, gov };
                let strategy =
                    if call.input.model.is_some() { "openai".to_string() } else { call.gov.proposer.strategy.clone() };
                let out = match strategy.as_str() {
                    "sweep" => {
                        let h = home.clone();
                        tokio::task::spawn_blocking(move || sweep(&h, &call))
                            .await
                            .unwrap_or_else(|e| Err(e.to_string()))
                    }
                    "command" => in_scratch(&state_dir.clone(), command(home, state_dir, &call)).await,
                    "openai" => in_scratch(&state_dir.clone(), openai(home, state_dir, &call)).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn gc_removes_a_scratch_checkout_only_when_no_task_holds_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (busy, idle, empty) = (tmp.path().join("busy"), tmp.path().join("idle"), tmp.path().join("empty"));
        for d in [&busy, &idle] {
            std::fs::create_dir_all(scratch_dir(d).join(".git")).expect("a scratch checkout");
        }
        std::fs::create_dir_all(&empty).expect("a state dir without scratch");
        let held = scratch_lock(&busy).expect("lock file");
        held.lock().expect("a task holds it");
        let removed = gc(&[busy.clone(), idle.clone(), empty]);
        assert_eq!(removed, [scratch_dir(&idle)]);
        assert!(scratch_dir(&busy).exists(), "a held scratch checkout was removed");
        assert!(!scratch_dir(&idle).exists());
        drop(held);
        // Another test of this process may fork between our open and our drop: its child holds
        // the lock's open file description until it execs (a few ms), so ask again briefly.
        let mut freed = vec![];
        for _ in 0..100 {
            freed = gc(std::slice::from_ref(&busy));
            if !freed.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(freed, [scratch_dir(&busy)], "free once the task ends");
    }

    #[test]
    fn a_request_cannot_carry_settings() {
        let ok = json!({"skill": "propose", "baseline": "abc", "n": 1, "history": [], "banned": [], "governance": {}});
        check_keys(&obj(ok.clone())).unwrap();
        for key in ["settings", "command", "endpoint", "goal", "colour"] {
            let mut m = obj(ok.clone());
            m.insert(key.into(), json!("x"));
            let e = check_keys(&m).unwrap_err();
            assert!(e.contains(&format!("carries `{key}`")) && e.contains("run `ratchet approve cadence.md`"), "{e}");
            assert!(
                e.contains("send only baseline, n, history, banned, governance, model, metric, start_metric"),
                "{e}"
            );
        }
    }
}
