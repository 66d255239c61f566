//! The loop's payloads: what the coordinator asks of each role and what each answers. They
//! travel as the data part of A2A messages (proposer) or as a task file's `input` and a result
//! file's `data` (executor, critic, evaluator). Leased tasks carry their settings inside the
//! input, frozen at the governance hashes the coordinator had in force (the evidence freeze);
//! the worker checks them against the approved texts at those hashes before running anything.
//! The proposer takes no settings from its message at all: it loads approved governance itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evaluation::{Calibration, Outcome, Pair, Sampling};
use crate::governance::{Constitution, Ethos, SandboxMode, TrustedCheckout};
use crate::models::ModelCall;
use crate::rails::Declaration;

/// One candidate change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// A file-system-safe name (`[A-Za-z0-9._-]`, at most 64 bytes), unique per approach.
    pub id: String,
    /// `sweep`, `command` or `openai`.
    pub strategy: String,
    /// One line for people.
    pub summary: String,
    /// The files the change touches (repository-relative, `/`-separated), as its diff or edits
    /// show them. What it *declared* is [`Proposal::declaration`].
    pub files: Vec<String>,
    /// The parameters the change sets (`{"algorithm": "merge"}`); `{}` when it is not a
    /// parameter change.
    #[serde(default)]
    pub params: Value,
    /// A unified diff for `git apply` (command strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Full new contents of files (sweep strategy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<FileEdit>,
    /// The model that produced it (`name: model @ url`), when a model did (openai strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the proposal declared before anyone looked at its diff (files, rationale, claims):
    /// the critic holds the diff to it. `None`: it declared nothing, and its scope is
    /// unverified (blocked unless constitution.md `unverified_scope = "warn"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declaration: Option<Declaration>,
}

/// The full new contents of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdit {
    pub path: String,
    pub content: String,
}

impl Proposal {
    /// The canonical string of the change, for the history and the hard-banned list.
    ///
    /// A parameter change is `name=value` per parameter, sorted by name and joined with `,`
    /// (values in their JSON form, strings without quotes); any other change is
    /// `<strategy>:<sha256 of the patch, 16 hex>`.
    pub fn approach_key(&self) -> String {
        if let Value::Object(m) = &self.params
            && !m.is_empty()
        {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            parts.sort();
            return parts.join(",");
        }
        let body = self.patch.clone().unwrap_or_else(|| {
            self.edits.iter().map(|e| format!("{}\n{}", e.path, e.content)).collect::<Vec<_>>().join("\n")
        });
        format!("{}:{}", self.strategy, &crate::governance::hash(&body)[..16])
    }
}

/// What happened to a candidate. The evaluator gives `PROMOTE`, `HOLD` or `REJECT` (its
/// outcome's: [`crate::evaluation::Outcome::verdict`]); the loop adds `FAILED` (the candidate's
/// fault before evaluation: it did not apply, build or pass its gates), `INFRA` (the harness's
/// fault: not counted against it) and, in its history, `PROMOTED` (the one that went onto main;
/// `PROMOTE` there means promotable, but another candidate won, or waiting for a person) and
/// `DROPPED` (the proposer's answer was not made a candidate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Promote,
    Hold,
    Reject,
    Failed,
    Infra,
    Promoted,
    Dropped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Promote => "PROMOTE",
            Verdict::Hold => "HOLD",
            Verdict::Reject => "REJECT",
            Verdict::Failed => "FAILED",
            Verdict::Infra => "INFRA",
            Verdict::Promoted => "PROMOTED",
            Verdict::Dropped => "DROPPED",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<crate::evaluation::Outcome> for Verdict {
    fn from(o: crate::evaluation::Outcome) -> Verdict {
        o.verdict_of()
    }
}

/// An approach already tried, with how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub key: String,
    /// PROMOTED (went onto main), PROMOTE (promotable, another candidate won, or waiting for a
    /// person), HOLD, REJECT, FAILED (did not apply or build), or DROPPED (the proposer's
    /// answer was not made a candidate: a duplicate of an approach already tried, or no change);
    /// never INFRA (the harness's failures may be tried again).
    pub verdict: Verdict,
    /// Relative improvement of the metric's median (positive = better), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// The cycle it was tried in.
    pub cycle: u64,
    /// The approach in the proposal's own words (never only its key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// Why it was not promoted, in words: the failing checks, the critic's findings, the failed
    /// gate, the reason it was dropped, or who rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The metric of the baseline and of the candidate in its evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<f64>,
}

/// An answer of the proposer that did not become a candidate, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    pub summary: String,
    /// Its approach key, when it had a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `duplicate of an approach already tried (...)`, `empty diff: ...`.
    pub reason: String,
}

/// proposer `propose` skill input: only what the loop chooses per call. What runs (strategy,
/// command, endpoint, model, goal, context, limits) the proposer takes from the approved
/// governance it loads itself, never from the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeInput {
    /// The baseline commit (current `main`).
    pub baseline: String,
    /// How many candidates to propose.
    pub n: u32,
    pub history: Vec<Tried>,
    /// Approach keys that already failed: never propose these again.
    pub banned: Vec<String>,
    /// The governance hashes the coordinator has in force (doc -> sha256); the proposer refuses
    /// to work when they are not the approved ones it loaded.
    pub governance: BTreeMap<String, String>,
    /// Ask this model instead of cadence.md's (`ratchet models compare`): a *name* declared in
    /// approved constitution.md `[constitution.models]`, never a URL; anything else is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The metric's value on the baseline as last measured (the loop's own number; the name and
    /// direction are approved ethos.md's), and at the start of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_metric: Option<f64>,
}

impl ProposeInput {
    /// The keys a propose request may carry (besides `skill`, which names the skill).
    pub const KEYS: [&'static str; 8] =
        ["baseline", "n", "history", "banned", "governance", "model", "metric", "start_metric"];
}

/// proposer `propose` skill output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposeOutput {
    pub proposals: Vec<Proposal>,
    /// The strategy has nothing left to propose (the sweep space is exhausted).
    pub exhausted: bool,
    /// Milliseconds spent in external commands (the `command` strategy's program).
    #[serde(default)]
    pub command_ms: u64,
    /// Every model call made for this answer (openai strategy), usable or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ModelCall>,
    /// Why there are no proposals, when the strategy tried and failed (e.g. every model answer
    /// was malformed): a proposal failure, counted by the circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Answers that did not become candidates (a duplicate, an empty diff), said explicitly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Dropped>,
}

/// How executed commands are confined (from the constitution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSettings {
    pub sandbox: SandboxMode,
    pub allow_network: bool,
    pub memory_mb: u64,
    /// constitution.md `weak_sandbox = "allow"`: a sandbox that does not confine may be used.
    #[serde(default)]
    pub allow_weak: bool,
    /// constitution.md `[constitution.jobs]`: where gates and benchmark runs execute.
    #[serde(default, skip_serializing_if = "crate::governance::JobSettings::is_local")]
    pub jobs: crate::governance::JobSettings,
}

/// The sandbox a command actually ran in, as evidence: `{"mode": "bwrap", "weak": false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxUsed {
    /// bwrap, namespaces or plain (never auto).
    pub mode: SandboxMode,
    /// The mode does not confine the command (plain).
    pub weak: bool,
}

impl From<&Constitution> for SandboxSettings {
    fn from(c: &Constitution) -> SandboxSettings {
        SandboxSettings {
            sandbox: c.sandbox,
            allow_network: c.allow_network,
            memory_mb: c.command_memory_mb,
            allow_weak: c.allows_weak_sandbox(),
            jobs: c.jobs.clone(),
        }
    }
}

/// executor `execute` task input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteInput {
    pub proposal: Proposal,
    pub base: String,
    pub gates: Vec<String>,
    pub gate_timeout_s: u64,
    pub sandbox: SandboxSettings,
    /// ethos.md `trusted_tests`: after the gates, `test_command` runs with these files taken
    /// from the base (none: no such gate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_tests: Vec<String>,
    /// ethos.md `test_command`, for the trusted tests' run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub test_command: String,
}

/// The baseline's tests run against the candidate's code (ethos.md `trusted_tests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedTestsRun {
    /// The base's files under `trusted_tests` that the candidate changed or deleted: put back
    /// as the base has them for the run.
    pub restored: Vec<String>,
    /// Files the candidate added under `trusted_tests`: left out of the run (its own gates ran
    /// them).
    pub set_aside: Vec<String>,
    /// What was in the checkout but in no commit, moved out for the run and put back after it:
    /// under `trusted_tests` everything (untracked or ignored files a gate or a build wrote
    /// there), elsewhere what the base commit's ignore rules do not ignore (a planted
    /// `conftest.py`, `sitecustomize.py`...); the build the base ignores stays. A nested
    /// repository ends in `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untracked: Vec<String>,
    /// The run of `test_command`; `None` when it was not needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<CommandRun>,
    /// Why it did not run (the candidate changes none of these files, and a gate that already
    /// passed is `test_command` itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Where it ran (ethos.md `trusted_checkout`): `reuse`, the candidate's checkout and the
    /// build its gates made; `fresh`, a new checkout of its commit built from scratch
    /// ([`TrustedTestsRun::fresh`]). Evidence written before this was recorded is `reuse`.
    #[serde(default)]
    pub checkout: TrustedCheckout,
    /// `fresh`: how the checkout was made and built before `test_command` ran in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<FreshBuild>,
}

/// The fresh checkout the baseline's tests ran in (ethos.md `trusted_checkout = "fresh"`): a
/// new checkout of the candidate's commit with nothing its gates wrote, the base's trusted tests
/// put in, built by ethos.md `trusted_build`; removed after the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreshBuild {
    /// Making the checkout (a git worktree of the commit under the branch's directory) and
    /// putting the base's tests in it.
    pub checkout_ms: u64,
    /// Each command of `trusted_build`, in order (it stops at the first that fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build: Vec<CommandRun>,
}

impl FreshBuild {
    /// What the fresh build cost before `test_command`: the checkout and the build commands.
    pub fn build_ms(&self) -> u64 {
        self.checkout_ms + self.build.iter().map(|r| r.duration_ms).sum::<u64>()
    }
}

/// How a command an agent ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandResult {
    Ok,
    /// The candidate's fault (a gate failed, the benchmark's output has no metric).
    Failed,
    /// The harness's fault (timeout, spawn error, signal, out of memory).
    Infra,
}

impl CommandResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandResult::Ok => "ok",
            CommandResult::Failed => "failed",
            CommandResult::Infra => "infra",
        }
    }
}

impl std::fmt::Display for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One command run by an agent, as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRun {
    pub command: String,
    pub result: CommandResult,
    pub detail: String,
    pub duration_ms: u64,
    /// Artefact file holding the full output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The sandbox it ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxUsed>,
    /// The engine's job it ran as (not on the agent's own host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRecord>,
}

/// A command that ran as a job of an engine: `{"engine": "slurm", "id": "12", "node": "n1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub engine: crate::governance::JobEngine,
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// executor `execute` result data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteOutput {
    pub commit: String,
    pub base: String,
    pub gates: Vec<CommandRun>,
    pub command_ms: u64,
    /// The baseline's tests against the candidate's code, when ethos.md names them and the
    /// gates passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<TrustedTestsRun>,
}

/// critic `critique` task input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CritiqueInput {
    pub proposal: Proposal,
    pub base: String,
    pub commit: String,
    pub constitution: Constitution,
    pub ethos: Ethos,
    pub sandbox: SandboxSettings,
    /// The candidate failed its gates: run the static rails only (they need no execution, so
    /// the record lists every rail it broke); no test runs, no model review.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rails_only: bool,
}

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The candidate is rejected.
    Block,
    /// Worth a look; does not reject.
    Warn,
}

/// One rail's observation about a candidate (the critic's rails, the bite check, a model review).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `protected-path`, `size`, `scope`, `bite`, `rule`, `model-review`, ...
    pub rail: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based; absent when the file has no lines to cite (binary, pure rename) or no single
    /// file is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    pub message: String,
    pub evidence: String,
    /// For a change to a protected (or append-only) path: what kind of path it is (governance,
    /// benchmark, ci, tests), so the record names the tampering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<crate::rails::PathClass>,
}

impl Finding {
    /// `file:line`, `file`, or the rail name when no file is involved.
    pub fn location(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            (Some(f), None) => f.clone(),
            (None, _) => format!("({})", self.rail),
        }
    }

    /// One line for people: `[rail] file:line: message`.
    pub fn line_for_people(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("[{}] {f}:{l}: {}", self.rail, self.message),
            (Some(f), None) => format!("[{}] {f}: {}", self.rail, self.message),
            _ => format!("[{}] {}", self.rail, self.message),
        }
    }

    pub fn blocks(&self) -> bool {
        self.severity == Severity::Block
    }
}

/// The fixed shape of a model's review (the critic validates it: `verdict` and each finding's
/// `severity` against the schema, `file` against the diff).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelVerdict {
    /// `pass` or `block`.
    pub verdict: String,
    pub findings: Vec<ModelFinding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFinding {
    /// `block` or `warn`.
    pub severity: String,
    /// One of the files the diff changes.
    pub file: String,
    pub message: String,
}

/// critic `critique` result data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CritiqueOutput {
    pub pass: bool,
    pub summary: String,
    pub findings: Vec<Finding>,
    pub command_ms: u64,
    /// The model that reviewed it (`name: model @ url`), when the constitution turns the model
    /// review on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// The reviewer's validated answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_verdict: Option<ModelVerdict>,
    /// Every call to the reviewing model, usable or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ModelCall>,
    /// The sandbox the bite check's test command ran in (none when no command ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxUsed>,
}

/// A custom-role reviewer's answer (the data part of its reply): `{"pass": false, "reason":
/// "..."}` blocks the candidate; anything else, or no data part, is advisory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewerReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ReviewerReply {
    /// The reply in a message's data part, read field by field: a `pass: false` blocks whatever
    /// else the part holds (a reason that is not a string is kept as its JSON text), so a reviewer
    /// is never turned advisory by an odd shape of the rest of its answer.
    pub fn from_data(data: &serde_json::Map<String, Value>) -> ReviewerReply {
        let reason = data.get("reason").and_then(|r| match r {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        });
        ReviewerReply { pass: data.get("pass").and_then(Value::as_bool), reason }
    }

    pub fn blocks(&self) -> bool {
        self.pass == Some(false)
    }
}

/// What an `evaluate` task asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluateMode {
    /// Measure the candidate against the baseline and decide.
    #[default]
    Evaluate,
    /// Measure the baseline against itself for `ethos.calibration_rounds` rounds: the noise.
    Calibrate,
}

/// evaluator `evaluate` task input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateInput {
    pub base: String,
    /// The candidate's commit (the base itself for a calibration).
    pub commit: String,
    pub ethos: Ethos,
    /// Uncounted warmup rounds before the counted ones (cadence.md).
    pub warmup: u32,
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub mode: EvaluateMode,
    /// The first look sized by the loop from its calibration (never below ethos `min_rounds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_look: Option<u32>,
    /// A re-measurement: the rounds of this candidate's earlier measurement, which this one
    /// continues (the sequential design spans both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<Pair>,
    /// The calibration in force, recorded with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// A change the loop may apply to its own operational settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// `cadence.warmup`.
    pub setting: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// evaluator `evaluate` result data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateOutput {
    /// PROMOTE, HOLD or REJECT.
    pub verdict: Verdict,
    /// What the evaluation concluded, typed (the verdict is `outcome.verdict()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    pub reasons: Vec<String>,
    pub baseline_median: Option<f64>,
    pub candidate_median: Option<f64>,
    /// Relative improvement: the median of the paired ratios (positive = better in the metric's
    /// direction).
    pub effect: Option<f64>,
    /// Every pair, the rule that stopped sampling, the rounds, the effect with its interval and
    /// the calibrated noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// A calibration's result (mode `calibrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The numbers behind the verdict (`null` when nothing was measured).
    #[serde(default)]
    pub stats: Option<crate::evaluation::Stats>,
    /// What the rounds show, by pattern, with its recommendation (`null` when nothing was
    /// measured).
    #[serde(default)]
    pub diagnosis: Option<crate::evaluation::Diagnosis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Recommendation>,
    pub runs: Vec<CommandRun>,
    pub command_ms: u64,
}

/// evaluator `evaluate` result data in mode `calibrate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrateOutput {
    pub calibration: Calibration,
    pub runs: Vec<CommandRun>,
    pub command_ms: u64,
    /// `measure = "instructions"`: the counters that work here and the benchmark's slowdown
    /// under the chosen one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counting: Option<crate::evaluation::Counting>,
}

/// The name of a leased task's progress file, `artifacts/<task>/progress.json`.
pub const PROGRESS_FILE: &str = "progress.json";
pub const PROGRESS_VERSION: u32 = 1;

/// Where a long stage is, written by the worker that holds the task (temp + rename, replaced as
/// it goes) into the task's artefacts: the executor before each gate, the evaluator after each
/// round. The coordinator says it as progress and the dashboard shows it; nothing decides on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageProgress {
    pub version: u32,
    /// `gate` (running gate `done + 1` of `of`), `round` (`done` rounds measured of at most
    /// `of`), `calibration` (`done` A/A rounds of `of`).
    pub step: String,
    pub done: u32,
    pub of: u32,
    /// The gate's command, for `gate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The current estimate of the effect, positive = better (`round`, once a round scored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// RFC 3339.
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn progress_shape() {
        let p = StageProgress {
            version: PROGRESS_VERSION,
            step: "round".into(),
            done: 6,
            of: 20,
            command: None,
            estimate: Some(0.125),
            at: "2026-11-29T14:00:00Z".into(),
        };
        expect![[r#"{"version":1,"step":"round","done":6,"of":20,"estimate":0.125,"at":"2026-11-29T14:00:00Z"}"#]]
            .assert_eq(&serde_json::to_string(&p).unwrap());
    }

    /// A reviewer's `pass: false` blocks whatever shape the rest of its data part has.
    #[test]
    fn a_reviewer_blocks_whatever_the_reason_looks_like() {
        let read = |v: Value| ReviewerReply::from_data(v.as_object().expect("object"));
        assert!(read(serde_json::json!({"pass": false, "reason": "slower"})).blocks());
        let odd = read(serde_json::json!({"pass": false, "reason": {"why": ["slower"]}, "extra": 1}));
        assert!(odd.blocks());
        assert_eq!(odd.reason.as_deref(), Some(r#"{"why":["slower"]}"#));
        assert!(read(serde_json::json!({"pass": false, "reason": 3})).blocks());
        assert!(!read(serde_json::json!({"pass": true, "reason": 3})).blocks());
        assert!(!read(serde_json::json!({"pass": "false"})).blocks());
        assert!(!read(serde_json::json!({"note": "looks fine"})).blocks());
    }

    /// The loop's vocabulary keeps the bytes it had as strings.
    #[test]
    fn vocabulary_shapes() {
        let run = CommandRun {
            command: "cargo test".into(),
            result: CommandResult::Infra,
            detail: "timed out after 60s".into(),
            duration_ms: 60000,
            log: Some("gate-1.log".into()),
            sandbox: Some(SandboxUsed { mode: SandboxMode::Namespaces, weak: false }),
            job: None,
        };
        expect![[r#"{"command":"cargo test","result":"infra","detail":"timed out after 60s","duration_ms":60000,"log":"gate-1.log","sandbox":{"mode":"namespaces","weak":false}}"#]]
            .assert_eq(&serde_json::to_string(&run).unwrap());
        let f = Finding {
            rail: "scope".into(),
            severity: Severity::Block,
            file: Some("src/a.rs".into()),
            line: Some(3),
            message: "not declared".into(),
            evidence: "+x".into(),
            class: None,
        };
        expect![[
            r#"{"rail":"scope","severity":"block","file":"src/a.rs","line":3,"message":"not declared","evidence":"+x"}"#
        ]]
        .assert_eq(&serde_json::to_string(&f).unwrap());
        assert_eq!(f.line_for_people(), "[scope] src/a.rs:3: not declared");
        let tampering =
            Finding { rail: "protected-path".into(), class: Some(crate::rails::PathClass::Ci), ..f.clone() };
        expect![[
            r#"{"rail":"protected-path","severity":"block","file":"src/a.rs","line":3,"message":"not declared","evidence":"+x","class":"ci"}"#
        ]]
        .assert_eq(&serde_json::to_string(&tampering).unwrap());
        let s = SandboxSettings {
            sandbox: SandboxMode::Auto,
            allow_network: false,
            memory_mb: 0,
            allow_weak: false,
            jobs: Default::default(),
        };
        expect![[r#"{"sandbox":"auto","allow_network":false,"memory_mb":0,"allow_weak":false}"#]]
            .assert_eq(&serde_json::to_string(&s).unwrap());
        // An unknown sandbox or result is refused, never read as another.
        assert!(
            serde_json::from_str::<SandboxSettings>(r#"{"sandbox":"docker","allow_network":false,"memory_mb":0}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<CommandResult>(r#""maybe""#).is_err());
        assert!(serde_json::from_str::<Severity>(r#""Block""#).is_err());
        let tried = Tried {
            key: "k=1".into(),
            verdict: Verdict::Promoted,
            effect: Some(0.25),
            cycle: 2,
            summary: String::new(),
            reason: None,
            before: None,
            after: None,
        };
        expect![[r#"{"key":"k=1","verdict":"PROMOTED","effect":0.25,"cycle":2}"#]]
            .assert_eq(&serde_json::to_string(&tried).unwrap());
        let all = [
            Verdict::Promote,
            Verdict::Hold,
            Verdict::Reject,
            Verdict::Failed,
            Verdict::Infra,
            Verdict::Promoted,
            Verdict::Dropped,
        ];
        expect![[r#"["PROMOTE","HOLD","REJECT","FAILED","INFRA","PROMOTED","DROPPED"]"#]]
            .assert_eq(&serde_json::to_string(&all).unwrap());
        for v in all {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
            assert_eq!(format!("{v:<8}|"), format!("{:<8}|", v.as_str()), "Display pads like the string did");
        }
        assert!(serde_json::from_str::<Verdict>(r#""promote""#).is_err());
        use crate::evaluation::Outcome;
        assert_eq!(Verdict::from(Outcome::Better), Verdict::Promote);
        assert_eq!(Verdict::from(Outcome::GuardRegressed), Verdict::Reject);
        assert_eq!(Verdict::from(Outcome::TooNoisy), Verdict::Hold);
        // How a task and a model call ended (`executed` and `model_called` events).
        use crate::lease::{StageEnd, TaskFileState};
        let ends = [
            TaskFileState::Done,
            TaskFileState::Failed,
            TaskFileState::InfraFailed,
            TaskFileState::Canceled,
            TaskFileState::Queued,
        ]
        .map(TaskFileState::end);
        expect![[r#"["success","candidate-failure","infra-failure","canceled","queued"]"#]]
            .assert_eq(&serde_json::to_string(&ends).unwrap());
        for e in ends {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
            assert_eq!(format!("{e:<18}|"), format!("{:<18}|", e.as_str()));
        }
        assert!(serde_json::from_str::<StageEnd>(r#""done""#).is_err());
        use crate::models::CallOutcome;
        let calls = [CallOutcome::Ok, CallOutcome::Malformed, CallOutcome::Error];
        expect![[r#"["ok","malformed","error"]"#]].assert_eq(&serde_json::to_string(&calls).unwrap());
        for c in calls {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert!(serde_json::from_str::<CallOutcome>(r#""timeout""#).is_err());
    }
}
