//! The loop's payloads: what the coordinator asks of each role and what each answers. They
//! travel as the data part of A2A messages (proposer) or as a task file's `input` and a result
//! file's `data` (executor, critic, evaluator). Leased tasks carry their settings inside the
//! input, frozen at the governance hashes the coordinator had in force (the evidence freeze);
//! the worker checks them against the approved texts at those hashes before running anything.
//! The proposer takes no settings from its message at all: it loads approved governance itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::governance::{Constitution, Ethos};
use crate::models::ModelCall;

/// One candidate change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// A file-system-safe name (`[A-Za-z0-9._-]`, at most 64 bytes), unique per approach.
    pub id: String,
    /// `sweep`, `command` or `openai`.
    pub strategy: String,
    /// One line for people.
    pub summary: String,
    /// The files the change declares it touches (repository-relative, `/`-separated): the
    /// critic's scope guard holds the diff to these.
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

/// An approach already tried, with how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub key: String,
    /// PROMOTED (went onto main), PROMOTE (promotable, another candidate won), HOLD, REJECT,
    /// or FAILED (did not apply or build).
    pub verdict: String,
    /// Relative improvement of the metric's median (positive = better), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// The cycle it was tried in.
    pub cycle: u64,
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
}

impl ProposeInput {
    /// The keys a propose request may carry (besides `skill`, which names the skill).
    pub const KEYS: [&'static str; 6] = ["baseline", "n", "history", "banned", "governance", "model"];
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
}

/// How executed commands are confined (from the constitution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSettings {
    pub sandbox: String,
    pub allow_network: bool,
    pub memory_mb: u64,
    /// constitution.md `weak_sandbox = "allow"`: a sandbox that does not confine may be used.
    #[serde(default)]
    pub allow_weak: bool,
}

/// The sandbox a command actually ran in, as evidence: `{"mode": "bwrap", "weak": false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxUsed {
    /// bwrap, namespaces or plain (never auto).
    pub mode: String,
    /// The mode does not confine the command (plain).
    pub weak: bool,
}

impl From<&Constitution> for SandboxSettings {
    fn from(c: &Constitution) -> SandboxSettings {
        SandboxSettings {
            sandbox: c.sandbox.clone(),
            allow_network: c.allow_network,
            memory_mb: c.command_memory_mb,
            allow_weak: c.allows_weak_sandbox(),
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
}

/// One command run by an agent, as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRun {
    pub command: String,
    /// `ok`, `failed` (the candidate's fault) or `infra` (the harness's fault).
    pub result: String,
    pub detail: String,
    pub duration_ms: u64,
    /// Artefact file holding the full output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The sandbox it ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxUsed>,
}

/// executor `execute` result data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteOutput {
    pub commit: String,
    pub base: String,
    pub gates: Vec<CommandRun>,
    pub command_ms: u64,
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
}

/// critic `critique` result data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CritiqueOutput {
    pub pass: bool,
    pub summary: String,
    /// Findings: `[{rail, severity, file, line, message, evidence}]`.
    pub findings: Value,
    pub command_ms: u64,
    /// The model that reviewed it (`name: model @ url`), when the constitution turns the model
    /// review on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// The reviewer's validated answer (`{verdict, findings}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_verdict: Option<Value>,
    /// Every call to the reviewing model, usable or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ModelCall>,
    /// The sandbox the bite check's test command ran in (none when no command ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxUsed>,
}

/// evaluator `evaluate` task input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateInput {
    pub base: String,
    pub commit: String,
    pub ethos: Ethos,
    pub repeats: u32,
    pub warmup: u32,
    pub sandbox: SandboxSettings,
}

/// A change the loop may apply to its own operational settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// `cadence.repeats` or `cadence.warmup`.
    pub setting: String,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// evaluator `evaluate` result data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateOutput {
    /// PROMOTE, HOLD or REJECT.
    pub verdict: String,
    pub reasons: Vec<String>,
    pub baseline_median: Option<f64>,
    pub candidate_median: Option<f64>,
    /// Relative improvement of the median (positive = better in the metric's direction).
    pub effect: Option<f64>,
    /// Full statistics and every sample.
    pub stats: Value,
    /// Pattern name (steady, cold-start, capability-ceiling, high-variance) and detail.
    pub diagnosis: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Recommendation>,
    pub runs: Vec<CommandRun>,
    pub command_ms: u64,
}
