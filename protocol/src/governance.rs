//! Governance documents: `constitution.md` (hard constraints), `ethos.md` (evaluation
//! standards) and `cadence.md` (the operational loop).
//!
//! Each is prose for people with one machine-readable block that the code reads: a fenced code
//! block whose info string is `toml ratchet`:
//!
//! ````markdown
//! ```toml ratchet
//! [cadence]
//! candidates = 2
//! ```
//! ````
//!
//! Exactly one such block per document. Unknown keys are refused, so a typo cannot silently turn
//! a gate off.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::models::{ModelEndpoint, ModelId, ReviewMode, ReviewSettings};

pub const CONSTITUTION: &str = "constitution.md";
pub const ETHOS: &str = "ethos.md";
pub const CADENCE: &str = "cadence.md";
/// The three documents, in injection order (most stable first).
pub const DOCS: [&str; 3] = [CONSTITUTION, ETHOS, CADENCE];

/// A refused governance document: which file, which line or field, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {problem}; fix: {fix}")]
pub struct GovernanceError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

/// sha256 hex of a document's bytes: the identity recorded with every event and promotion.
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Find the single ```` ```toml ratchet ```` block; returns (first line number of its body, body).
pub fn settings_block<'a>(file: &str, text: &'a str) -> Result<(usize, &'a str), GovernanceError> {
    let mut found: Option<(usize, usize, usize)> = None; // (body line, byte start, byte end)
    let mut offset = 0;
    let mut open: Option<(usize, usize)> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim();
        match open {
            None if t.starts_with("```")
                && t.trim_start_matches('`').split_whitespace().collect::<Vec<_>>() == ["toml", "ratchet"] =>
            {
                if let Some((l, _, _)) = found {
                    return Err(GovernanceError {
                        file: file.into(),
                        line: i + 1,
                        field: "settings".into(),
                        problem: format!("a second ```toml ratchet block (the first starts at line {})", l - 1),
                        fix: "keep exactly one settings block per document".into(),
                    });
                }
                open = Some((i + 2, offset + line.len()));
            }
            Some((l, start)) if t.starts_with("```") => {
                found = Some((l, start, offset));
                open = None;
            }
            _ => {}
        }
        offset += line.len();
    }
    if let Some((l, _)) = open {
        return Err(GovernanceError {
            file: file.into(),
            line: l - 1,
            field: "settings".into(),
            problem: "the ```toml ratchet block is never closed".into(),
            fix: "close it with a line of ```".into(),
        });
    }
    match found {
        Some((l, s, e)) => Ok((l, &text[s..e])),
        None => Err(GovernanceError {
            file: file.into(),
            line: 1,
            field: "settings".into(),
            problem: "no ```toml ratchet settings block".into(),
            fix: "add a fenced block whose first line is ```toml ratchet holding this document's settings".into(),
        }),
    }
}

/// Keys an earlier version read and this one does not: (section, key, what replaced it and the fix).
const RETIRED: [(&str, &str, &str); 4] = [
    (
        "ethos",
        "test",
        "retired: baseline and candidate now run in paired rounds judged by a sequential sign/signed-rank test, not a two-sample test; fix: remove the line (choose how runs are paired with pairing = \"sequential\" or \"duet\")",
    ),
    (
        "ethos",
        "min_samples",
        "retired: the evaluator samples paired rounds until the answer is clear; fix: rename it to min_rounds (the fewest paired rounds before a decision)",
    ),
    (
        "ethos",
        "max_cv",
        "retired: stability is judged on the paired ratios by the sequential test, which adds rounds while the answer is unclear; fix: remove the line (max_rounds caps the rounds)",
    ),
    (
        "cadence",
        "repeats",
        "retired: the evaluator samples sequentially until the answer is clear; fix: remove it from cadence.md and set max_rounds (the most rounds per measurement) in ethos.md",
    ),
];

/// A key of an earlier version, refused with what replaced it (rather than "unknown field").
fn retired_key(file: &str, first_line: usize, body: &str) -> Result<(), GovernanceError> {
    let Ok(table) = toml::from_str::<toml::Table>(body) else { return Ok(()) };
    for (section, key, why) in RETIRED {
        if table.get(section).and_then(|t| t.get(key)).is_some() {
            let line = body
                .lines()
                .position(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
                .map_or(0, |i| first_line + i);
            let (problem, fix) = why.split_once("; fix: ").expect("every retired key says its fix");
            return Err(GovernanceError {
                file: file.into(),
                line,
                field: key.into(),
                problem: problem.into(),
                fix: fix.into(),
            });
        }
    }
    Ok(())
}

fn parse_block<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, GovernanceError> {
    let (first_line, body) = settings_block(file, text)?;
    retired_key(file, first_line, body)?;
    toml::from_str(body).map_err(|e| {
        let line = e.span().map(|s| body[..s.start].matches('\n').count()).unwrap_or(0) + first_line;
        let msg = e.message().to_string();
        let field = toml_error_field(body, &e, "settings");
        let fix = if msg.contains("unknown field `endpoint`") {
            "model endpoints are declared once, in constitution.md [constitution.models.<name>] (url, model, api_key_env); \
             refer to one by name here: [proposer] model = \"<name>\""
        } else if msg.contains("unknown field") {
            "remove or rename it (see the comments in the template for the known keys)"
        } else if msg.contains("missing field") {
            "add it to the settings block"
        } else {
            "correct the value at this line"
        };
        GovernanceError { file: file.into(), line, field, problem: msg, fix: fix.into() }
    })
}

/// The field a TOML parse error of `text` is about: the one its message names (unknown or missing
/// field), else the key of the line it points at, else `default`.
pub(crate) fn toml_error_field(text: &str, e: &toml::de::Error, default: &str) -> String {
    let msg = e.message();
    msg.split('`')
        .nth(1)
        .filter(|_| msg.contains("field"))
        .map(String::from)
        .or_else(|| e.span().and_then(|s| toml_key_at(text, s.start)))
        .unwrap_or_else(|| default.into())
}

/// The key of the `key = value` line of TOML `text` that holds byte `offset` (for an error about
/// a value, which the toml crate locates but does not name).
pub(crate) fn toml_key_at(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    bare.then(|| key.to_string())
}

fn invalid(file: &str, field: &str, problem: String, fix: &str) -> GovernanceError {
    GovernanceError { file: file.into(), line: 0, field: field.into(), problem, fix: fix.into() }
}

// ---------------------------------------------------------------------------------------------
// constitution.md

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstitutionFile {
    pub constitution: Constitution,
}

/// Hard constraints. Nothing in the loop may relax these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constitution {
    /// Glob patterns (`*` within a component, `**` across components) no candidate may touch.
    pub protected_paths: Vec<String>,
    /// Most changed lines (added + removed) a candidate may have.
    pub max_diff_lines: u64,
    /// Most files a candidate may change.
    pub max_files_changed: u64,
    /// Sandbox for executed commands: auto | bwrap | namespaces | plain.
    #[serde(default)]
    pub sandbox: SandboxMode,
    /// Whether commands may run in a sandbox that does not confine them (plain, or auto on a
    /// machine where neither bubblewrap nor the namespaces sandbox works): refuse | allow.
    #[serde(default)]
    pub weak_sandbox: WeakSandbox,
    /// Whether executed commands may use the network.
    #[serde(default)]
    pub allow_network: bool,
    /// Memory limit for each executed command, in MiB (0 = no limit).
    #[serde(default)]
    pub command_memory_mb: u64,
    /// Rules distilled from evidence and approved by a human: `{ id, text, forbid_paths }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// The model endpoints the swarm may call, by name (`[constitution.models.<name>]`): the
    /// only places code and API keys may go.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelEndpoint>,
    /// Whether a model reviews candidates after the rails: off | advisory | blocking (the
    /// reviewer and its rubric are in ethos.md `[ethos.review]`).
    #[serde(default, skip_serializing_if = "ReviewMode::is_off")]
    pub model_review: ReviewMode,
    /// Where the executor's gates and the evaluator's benchmark runs execute
    /// (`[constitution.jobs]`): this host (`local`, the default) or an existing engine (`slurm`).
    #[serde(default, skip_serializing_if = "JobSettings::is_local")]
    pub jobs: JobSettings,
    /// Globs (like `protected_paths`) under which a candidate may add files and lines but not
    /// delete, change or move existing ones: tests may grow, not shrink or change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append_only_paths: Vec<String>,
    /// What a proposal that declares nothing gets from the critic's scope rail ("scope
    /// unverified"): block (default) or warn.
    #[serde(default, skip_serializing_if = "UnverifiedScope::is_block")]
    pub unverified_scope: UnverifiedScope,
}

/// The job engine heavy commands run on (constitution.md `[constitution.jobs] engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobEngine {
    /// On the agent's own host, as a child process.
    #[default]
    Local,
    /// As a Slurm job step (`srun`) of the cluster the agent's `SLURM_CONF` names; the sandbox
    /// runs inside the job.
    Slurm,
}

/// constitution.md `[constitution.jobs]`: where gates and benchmark runs execute. Only approved
/// governance sets it; a task carries it frozen in its `sandbox` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    #[serde(default)]
    pub engine: JobEngine,
    /// The Slurm partition (default: the cluster's default partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// A job's time limit in minutes (`--time`; default: the partition's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_min: Option<u64>,
    /// Benchmark runs take a whole node (`--exclusive`): nothing else runs beside them.
    #[serde(default)]
    pub exclusive_bench: bool,
    /// Benchmark runs are pinned to this CPU of their node (`--cpu-bind=map_cpu:N`; implies a
    /// whole node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench_cpu: Option<u32>,
}

impl JobSettings {
    pub fn is_local(&self) -> bool {
        self.engine == JobEngine::Local
    }
}

/// constitution.md `unverified_scope`: whether a proposal without a declaration is blocked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnverifiedScope {
    /// The candidate is rejected: its scope cannot be verified.
    #[default]
    Block,
    /// A warning in the record; the candidate goes on.
    Warn,
}

impl UnverifiedScope {
    pub fn is_block(&self) -> bool {
        *self == UnverifiedScope::Block
    }
}

impl Constitution {
    /// `weak_sandbox = "allow"`.
    pub fn allows_weak_sandbox(&self) -> bool {
        self.weak_sandbox == WeakSandbox::Allow
    }
}

/// How executed commands are confined (constitution.md `sandbox`); what each mode does and does
/// not protect is in `kit::exec`, which applies it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// The strongest mode that confines on this machine (bwrap, else namespaces).
    #[default]
    Auto,
    Bwrap,
    Namespaces,
    /// No confinement: resource limits and a process group only (weak).
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sandbox mode `{0}`: use one of auto, bwrap, namespaces, plain")]
pub struct ParseSandboxModeError(pub String);

impl std::str::FromStr for SandboxMode {
    type Err = ParseSandboxModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "bwrap" => Ok(Self::Bwrap),
            "namespaces" => Ok(Self::Namespaces),
            "plain" => Ok(Self::Plain),
            other => Err(ParseSandboxModeError(other.to_owned())),
        }
    }
}

impl std::fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Bwrap => "bwrap",
            Self::Namespaces => "namespaces",
            Self::Plain => "plain",
        }
    }

    /// A mode that does not confine the command (today: `Plain`).
    pub fn is_weak(self) -> bool {
        self == Self::Plain
    }
}

/// constitution.md `weak_sandbox`: whether a sandbox that does not confine may be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeakSandbox {
    /// Commands never run unconfined.
    #[default]
    Refuse,
    Allow,
}

/// An approved rule; `forbid_paths` (globs) are enforced by the critic like protected paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbid_paths: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// ethos.md

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EthosFile {
    pub ethos: Ethos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Lower,
    Higher,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Lower => "lower",
            Direction::Higher => "higher",
        }
    }

    /// Whether `a` is better than `b` under this direction.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Lower => a < b,
            Direction::Higher => a > b,
        }
    }
}

/// How baseline and candidate runs share the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pairing {
    /// One after the other in each round, the order randomized round by round.
    #[default]
    Sequential,
    /// Both at the same time, each pinned to its own CPU, twice per round with the CPUs swapped:
    /// both see the same machine, and a slow CPU slows both. Right for single-threaded CPU-bound
    /// benchmarks; wrong for multi-threaded or memory-bandwidth-bound ones (they would compete).
    /// Needs two CPUs.
    Duet,
}

impl Pairing {
    pub fn as_str(self) -> &'static str {
        match self {
            Pairing::Sequential => "sequential",
            Pairing::Duet => "duet",
        }
    }
}

/// What the evaluator measures (ethos.md `measure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// The number the benchmark prints (`metric`), compared in paired rounds by the sequential
    /// test: what users care about, but as noisy as the machine.
    #[default]
    Metric,
    /// The instructions the benchmark's processes execute (user space, the whole process tree),
    /// counted by `perf stat` where the CPU's counters are exposed, else by valgrind's callgrind:
    /// nearly the same number on every run whatever else the machine does, so a run or two a side
    /// decide. A proxy for time: cache misses, memory bandwidth, I/O and sleeping are not counted
    /// (see `guard_wall_time`).
    Instructions,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Metric => "metric",
            Measure::Instructions => "instructions",
        }
    }

    pub fn is_metric(&self) -> bool {
        *self == Measure::Metric
    }
}

/// The default `count_tolerance`: two runs of a side agree when their instruction counts differ
/// by at most 0.1%.
pub const DEFAULT_COUNT_TOLERANCE: f64 = 0.001;

fn default_count_tolerance() -> f64 {
    DEFAULT_COUNT_TOLERANCE
}

fn is_default_count_tolerance(t: &f64) -> bool {
    *t == DEFAULT_COUNT_TOLERANCE
}

/// The fewest rounds that can decide anything at `confidence`: a paired test whose validity
/// rests only on the randomized order has a smallest possible p-value of 2^-n after n rounds.
pub fn decision_floor(confidence: f64) -> u32 {
    let alpha = (1.0 - confidence).clamp(1e-9, 0.5);
    (1.0 / alpha).log2().ceil().max(1.0) as u32
}

/// Most rounds `max_rounds` may ask for (a measurement and its re-measurement stay below 200).
pub const MAX_ROUNDS_LIMIT: u32 = 100;

/// Evaluation standards: what "better" means and how sure we must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ethos {
    /// What the swarm is trying to achieve, in words (given to the proposer).
    pub goal: String,
    /// Fast-gate commands run in the candidate's worktree, in order (build, tests).
    pub gates: Vec<String>,
    /// Command that runs the tests (used by the critic's bite check).
    pub test_command: String,
    /// Benchmark command; always run from the baseline's (trusted) copy of `benchmark_paths`.
    pub benchmark: String,
    /// Paths (globs) that make up the benchmark and its data; protected and taken from the baseline.
    pub benchmark_paths: Vec<String>,
    /// Name of the metric in the benchmark's output.
    pub metric: String,
    pub direction: Direction,
    /// Optional pattern for reading the metric from plain output: text around `{}`, e.g. "time: {} ms".
    /// Without it the last stdout line must be a JSON object holding the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_pattern: Option<String>,
    /// Required confidence that the candidate is better (e.g. 0.95); the same holds for worse.
    pub confidence: f64,
    /// Minimum relative change that matters (e.g. 0.02 = 2%): smaller changes are "no change".
    pub min_effect: f64,
    /// How baseline and candidate runs share the machine: sequential (default) or duet.
    #[serde(default)]
    pub pairing: Pairing,
    /// The fewest paired rounds before a decision (raised to what `confidence` allows, and to
    /// what the calibrated noise suggests).
    #[serde(default = "default_min_rounds")]
    pub min_rounds: u32,
    /// Most paired rounds of one measurement; an undecided candidate is measured once more, up
    /// to as many again.
    #[serde(default = "default_max_rounds")]
    pub max_rounds: u32,
    /// A/A rounds run at the start of each run to measure the machine's noise (0: none).
    #[serde(default = "default_calibration_rounds")]
    pub calibration_rounds: u32,
    /// What is measured: `metric` (the number the benchmark prints; the default) or
    /// `instructions` (the instructions its processes execute; `direction` must be "lower").
    #[serde(default, skip_serializing_if = "Measure::is_metric")]
    pub measure: Measure,
    /// measure = "instructions": two runs of a side agree when their counts differ by at most
    /// this (relative; at most half of `min_effect`).
    #[serde(default = "default_count_tolerance", skip_serializing_if = "is_default_count_tolerance")]
    pub count_tolerance: f64,
    /// measure = "instructions": after a PROMOTE, a short paired wall-time check (the sequential
    /// test, `min_rounds` to `max_rounds`) must not show a significant regression.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guard_wall_time: bool,
    /// Seconds a gate command may run.
    pub gate_timeout_s: u64,
    /// Seconds one benchmark run may take.
    pub bench_timeout_s: u64,
    /// Other metrics that must not regress by more than their tolerance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guard: Vec<Guard>,
    /// The model review: which declared model reviews candidates, against what rubric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewSettings>,
    /// The baseline's tests (globs): these files are taken from the baseline, like the
    /// benchmark, and `test_command` runs with them against the candidate's code, as a gate
    /// after the candidate's own: a candidate that deletes or weakens a test still faces the
    /// original.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_tests: Vec<String>,
    /// Where the baseline's tests run: `reuse` (the default) in the candidate's own checkout,
    /// on the build its gates made (what the base's ignore rules ignore is trusted as that
    /// build, so a gate can plant there what a test runner loads: a `.pth` in a virtualenv);
    /// `fresh` in a new checkout of the candidate's commit that nothing of its gates reached,
    /// built from scratch (`trusted_build`, then `test_command`). Never skipped when fresh.
    #[serde(default, skip_serializing_if = "TrustedCheckout::is_reuse")]
    pub trusted_checkout: TrustedCheckout,
    /// `trusted_checkout = "fresh"`: the commands that build the fresh checkout, in order, before
    /// `test_command` (e.g. making a virtualenv and installing the project); none when
    /// `test_command` builds by itself (`cargo test`, `go test`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_build: Vec<String>,
}

/// Where the baseline's tests run (ethos.md `trusted_checkout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustedCheckout {
    /// In the candidate's own checkout, reusing the build its gates made.
    #[default]
    Reuse,
    /// In a new checkout of the candidate's commit, built from scratch.
    Fresh,
}

impl TrustedCheckout {
    pub fn is_reuse(&self) -> bool {
        *self == TrustedCheckout::Reuse
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrustedCheckout::Reuse => "reuse",
            TrustedCheckout::Fresh => "fresh",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub metric: String,
    pub direction: Direction,
    /// Allowed relative regression of the median (e.g. 0.05).
    pub max_regression: f64,
}

// ---------------------------------------------------------------------------------------------
// cadence.md

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceFile {
    pub cadence: Cadence,
    #[serde(default)]
    pub proposer: ProposerSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromotionMode {
    /// The best PROMOTE candidate goes onto main at once.
    Auto,
    /// Promotion waits for `ratchet approve <branch>`.
    Approval,
}

/// The operational loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    /// Candidates proposed per cycle.
    pub candidates: u32,
    /// Uncounted warmup rounds (one run per side each) before the counted rounds.
    pub warmup: u32,
    /// The most warmup rounds the loop may raise `warmup` to by itself when the evaluator's
    /// diagnosis sees a cold start (0, the default: it never does; it proposes a cadence.md
    /// edit for a person to approve instead).
    #[serde(default)]
    pub max_warmup: u32,
    /// Stop after this many consecutive cycles that move nothing (the correctable-loop invariant).
    pub stall_limit: u32,
    /// Stop after this many consecutive proposal failures (circuit breaker).
    pub breaker_limit: u32,
    /// Lease time-to-live in seconds.
    pub lease_ttl_s: u64,
    /// Attempts per task before it is an infrastructure failure.
    pub max_attempts: u32,
    pub promotion: PromotionMode,
    /// Budget: most cycles per run (0 = unlimited).
    pub max_cycles: u32,
    /// Budget: most wall-clock seconds per run (0 = unlimited).
    pub max_wall_s: u64,
    /// Budget: most model tokens (prompt + completion, every stage) per run (0 = unlimited).
    #[serde(default)]
    pub max_tokens: u64,
}

/// How the proposer proposes. The proposer reads these from the approved cadence.md itself;
/// no message can choose them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposerSettings {
    /// sweep | command | openai
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// sweep: the config file (TOML or JSON, relative to the repository root) whose parameters are swept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// sweep: parameter -> candidate values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub space: BTreeMap<String, Vec<toml::Value>>,
    /// command: the program run in the candidate's worktree (shell command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// openai: the model that proposes, by its name in constitution.md `[constitution.models]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What governance context the proposer's program gets: "full" (all three approved
    /// documents, the stable prefix) or "minimal" (the task, its tools and the constitution only,
    /// for sub-agents with small context windows).
    #[serde(default = "default_context")]
    pub context: String,
    /// command: whether the program may use the network (default false). A coding-agent CLI
    /// that reaches its model over the network needs `true`; say so in the prose beside it.
    #[serde(default)]
    pub allow_network: bool,
    /// command: seconds the program may run for one candidate; openai: seconds one answer may
    /// take.
    #[serde(default = "default_proposer_timeout")]
    pub timeout_s: u64,
    /// command: memory limit of the program, in MiB (0 = no limit).
    #[serde(default)]
    pub memory_mb: u64,
}

fn default_min_rounds() -> u32 {
    5
}

fn default_max_rounds() -> u32 {
    30
}

fn default_calibration_rounds() -> u32 {
    8
}

fn default_context() -> String {
    "full".into()
}

impl Default for ProposerSettings {
    fn default() -> ProposerSettings {
        ProposerSettings {
            strategy: default_strategy(),
            file: None,
            space: BTreeMap::new(),
            command: None,
            model: None,
            context: default_context(),
            allow_network: false,
            timeout_s: default_proposer_timeout(),
            memory_mb: 0,
        }
    }
}

fn default_proposer_timeout() -> u64 {
    600
}

fn default_strategy() -> String {
    "sweep".into()
}

// ---------------------------------------------------------------------------------------------
// The three together

/// Parsed, validated settings of all three documents plus their hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Governance {
    pub constitution: Constitution,
    pub ethos: Ethos,
    pub cadence: Cadence,
    pub proposer: ProposerSettings,
    /// doc name -> sha256 of the text these settings came from.
    pub hashes: BTreeMap<String, String>,
    /// doc name -> full text (injected into agents' context, stable prefix first).
    pub texts: BTreeMap<String, String>,
}

pub fn parse_constitution(text: &str) -> Result<Constitution, GovernanceError> {
    let c = parse_block::<ConstitutionFile>(CONSTITUTION, text)?.constitution;
    if c.protected_paths.iter().any(|p| p.trim().is_empty()) {
        return Err(invalid(CONSTITUTION, "protected_paths", "an empty pattern".into(), "remove the empty string"));
    }
    if c.append_only_paths.iter().any(|p| p.trim().is_empty()) {
        return Err(invalid(CONSTITUTION, "append_only_paths", "an empty pattern".into(), "remove the empty string"));
    }
    if c.sandbox == SandboxMode::Plain && !c.allows_weak_sandbox() {
        return Err(invalid(
            CONSTITUTION,
            "sandbox",
            "sandbox = \"plain\" does not confine commands (they can write outside their checkout, see the swarm's files and outlive their run), and weak_sandbox refuses that".into(),
            "use sandbox = \"auto\", or set weak_sandbox = \"allow\" to accept unconfined commands",
        ));
    }
    if c.max_diff_lines == 0 || c.max_files_changed == 0 {
        return Err(invalid(
            CONSTITUTION,
            "max_diff_lines",
            "a size limit of 0 forbids every change".into(),
            "set max_diff_lines and max_files_changed to at least 1",
        ));
    }
    for (name, m) in &c.models {
        check_model(name, m)?;
    }
    Ok(c)
}

/// A declared model endpoint: a valid name, an http(s) URL, a model id, a variable name (not a
/// key), sane sampling settings.
fn check_model(name: &str, m: &ModelEndpoint) -> Result<(), GovernanceError> {
    let field = |k: &str| format!("models.{name}.{k}");
    let bad = |k: &str, problem: String, fix: &str| Err(invalid(CONSTITUTION, &field(k), problem, fix));
    if crate::names::check_component("model name", name).is_err() {
        return Err(invalid(
            CONSTITUTION,
            &format!("models.{name}"),
            format!("{name:?} is not a valid model name"),
            "use letters, digits, '-', '_' and '.'",
        ));
    }
    let scheme = m.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return bad(
            "url",
            format!("{:?} is not an http(s) URL", m.url),
            "use the API's base URL, e.g. \"http://127.0.0.1:8089/v1\"",
        );
    }
    if m.model.trim().is_empty() {
        return bad(
            "model",
            "the model id is empty".into(),
            "give the model id the server serves (GET <url>/models lists them)",
        );
    }
    if let Some(v) = &m.api_key_env
        && (v.is_empty()
            || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || v.starts_with(|c: char| c.is_ascii_digit()))
    {
        return bad(
            "api_key_env",
            format!("{v:?} is not an environment variable name"),
            "name the variable that holds the key (e.g. \"RATCHET_MODEL_KEY\"); never put the key itself here",
        );
    }
    if !(0.0..=2.0).contains(&m.temperature) {
        return bad("temperature", format!("{} is outside [0, 2]", m.temperature), "use 0 for deterministic answers");
    }
    if m.max_tokens == 0 {
        return bad("max_tokens", "0 tokens per answer".into(), "use at least 1 (e.g. 512)");
    }
    Ok(())
}

pub fn parse_ethos(text: &str) -> Result<Ethos, GovernanceError> {
    let e = parse_block::<EthosFile>(ETHOS, text)?.ethos;
    let bad = |field: &str, problem: String, fix: &str| Err(invalid(ETHOS, field, problem, fix));
    if !(0.5..1.0).contains(&e.confidence) {
        return bad("confidence", format!("{} is outside [0.5, 1)", e.confidence), "use e.g. 0.95");
    }
    if !(0.0..1.0).contains(&e.min_effect) {
        return bad(
            "min_effect",
            format!("{} is outside [0, 1)", e.min_effect),
            "use a relative effect such as 0.02 (2%)",
        );
    }
    if e.min_rounds == 0 {
        return bad("min_rounds", "0 rounds".into(), "use at least 1 (5 is a sound default)");
    }
    let floor = decision_floor(e.confidence);
    if e.max_rounds < floor.max(e.min_rounds) || e.max_rounds > MAX_ROUNDS_LIMIT {
        return bad(
            "max_rounds",
            format!(
                "{} is outside [{}, {MAX_ROUNDS_LIMIT}] (at confidence {} no decision is possible before {floor} rounds; min_rounds is {})",
                e.max_rounds,
                floor.max(e.min_rounds),
                e.confidence,
                e.min_rounds
            ),
            "use e.g. 30",
        );
    }
    if e.calibration_rounds > MAX_ROUNDS_LIMIT {
        return bad(
            "calibration_rounds",
            format!("{} is above {MAX_ROUNDS_LIMIT}", e.calibration_rounds),
            "use e.g. 8 (0 turns calibration off)",
        );
    }
    if e.measure == Measure::Instructions {
        if e.direction != Direction::Lower {
            return bad(
                "direction",
                "measure = \"instructions\" counts instructions, which are better when fewer, but direction is \"higher\"".into(),
                "set direction = \"lower\" (the benchmark's own metric is not read in this mode)",
            );
        }
        if !(0.0..0.5).contains(&e.count_tolerance) || e.count_tolerance > e.min_effect / 2.0 {
            return bad(
                "count_tolerance",
                format!(
                    "{} is not within [0, min_effect / 2 = {}]: runs that disagree by more than half the smallest change that matters cannot decide it",
                    e.count_tolerance,
                    e.min_effect / 2.0
                ),
                "use e.g. count_tolerance = 0.001 (0.1%) with min_effect = 0.01 or more",
            );
        }
    } else if e.guard_wall_time {
        return bad(
            "guard_wall_time",
            "guard_wall_time guards an instruction-count decision, but measure is \"metric\" (the wall time is what is measured then)".into(),
            "remove guard_wall_time, or set measure = \"instructions\"",
        );
    }
    if e.benchmark.trim().is_empty() {
        return bad("benchmark", "the benchmark command is empty".into(), "give the command that prints the metric");
    }
    if e.metric.trim().is_empty() {
        return bad("metric", "the metric name is empty".into(), "name the metric the benchmark prints");
    }
    if let Some(p) = &e.metric_pattern
        && p.matches("{}").count() != 1
    {
        return bad(
            "metric_pattern",
            format!("{p:?} must contain exactly one {{}}"),
            "mark where the number is with {}",
        );
    }
    if e.trusted_tests.iter().any(|p| p.trim().is_empty()) {
        return bad("trusted_tests", "an empty pattern".into(), "remove the empty string");
    }
    if !e.trusted_tests.is_empty() && e.test_command.trim().is_empty() {
        return bad(
            "trusted_tests",
            "the baseline's tests need a command to run them, and test_command is empty".into(),
            "set test_command to the command that runs the tests, or remove trusted_tests",
        );
    }
    if e.trusted_checkout == TrustedCheckout::Fresh && e.trusted_tests.is_empty() {
        return bad(
            "trusted_checkout",
            "a fresh checkout is where the baseline's tests run, and trusted_tests is empty (no such run)".into(),
            "set trusted_tests to the globs of the tests, or remove trusted_checkout",
        );
    }
    if !e.trusted_build.is_empty() && e.trusted_checkout != TrustedCheckout::Fresh {
        return bad(
            "trusted_build",
            "trusted_build builds a fresh checkout, and trusted_checkout is not \"fresh\"".into(),
            "set trusted_checkout = \"fresh\", or remove trusted_build",
        );
    }
    if e.trusted_build.iter().any(|c| c.trim().is_empty()) {
        return bad("trusted_build", "an empty command".into(), "remove the empty string");
    }
    if e.gate_timeout_s == 0 || e.bench_timeout_s == 0 {
        return bad("gate_timeout_s", "a timeout of 0".into(), "set gate_timeout_s and bench_timeout_s to at least 1");
    }
    if let Some(r) = &e.review {
        if r.rubric.iter().all(|c| c.trim().is_empty()) {
            return bad(
                "review.rubric",
                "the rubric is empty".into(),
                "list what the reviewer checks, one criterion per entry",
            );
        }
        if r.max_findings == 0 || r.max_diff_bytes < 256 {
            return bad(
                "review.max_findings",
                "max_findings of 0 or max_diff_bytes under 256".into(),
                "use e.g. max_findings = 5 and max_diff_bytes = 16384",
            );
        }
    }
    Ok(e)
}

pub fn parse_cadence(text: &str) -> Result<(Cadence, ProposerSettings), GovernanceError> {
    let f = parse_block::<CadenceFile>(CADENCE, text)?;
    let c = &f.cadence;
    let bad = |field: &str, problem: String, fix: &str| Err(invalid(CADENCE, field, problem, fix));
    if c.candidates == 0 {
        return bad("candidates", "0 candidates per cycle".into(), "use at least 1");
    }
    if c.stall_limit == 0 || c.breaker_limit == 0 {
        return bad("stall_limit", "a stop limit of 0".into(), "set stall_limit and breaker_limit to at least 1");
    }
    if c.lease_ttl_s == 0 || c.max_attempts == 0 {
        return bad(
            "lease_ttl_s",
            "a zero lease TTL or attempt count".into(),
            "set lease_ttl_s and max_attempts to at least 1",
        );
    }
    let p = &f.proposer;
    if p.timeout_s == 0 {
        return bad("proposer.timeout_s", "a timeout of 0".into(), "set timeout_s to at least 1 (seconds)");
    }
    if !["", "full", "minimal"].contains(&p.context.as_str()) {
        return bad("proposer.context", format!("unknown context mode {:?}", p.context), "use \"full\" or \"minimal\"");
    }
    match p.strategy.as_str() {
        "sweep" => {
            if p.file.is_none() || p.space.is_empty() {
                return bad(
                    "proposer.file",
                    "strategy sweep needs a file and a space".into(),
                    "set [proposer] file = \"params.toml\" and a [proposer.space] table of parameter = [values]",
                );
            }
            if let Some((k, _)) = p.space.iter().find(|(_, v)| v.is_empty()) {
                return bad(&format!("proposer.space.{k}"), "no candidate values".into(), "list at least one value");
            }
        }
        "command" => {
            if p.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                return bad(
                    "proposer.command",
                    "strategy command needs a command".into(),
                    "set [proposer] command = \"your-agent --flags\"",
                );
            }
        }
        "openai" => {
            if p.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
                return bad(
                    "proposer.model",
                    "strategy openai needs a model".into(),
                    "declare the endpoint in constitution.md [constitution.models.<name>] and set [proposer] model = \"<name>\"",
                );
            }
        }
        other => {
            return bad("proposer.strategy", format!("unknown strategy {other:?}"), "use sweep, command or openai");
        }
    }
    Ok((f.cadence, f.proposer))
}

impl Governance {
    /// Parse all three documents from their texts (doc name -> text).
    pub fn from_texts(texts: BTreeMap<String, String>) -> Result<Governance, GovernanceError> {
        let get = |name: &str| {
            texts.get(name).ok_or_else(|| GovernanceError {
                file: name.into(),
                line: 0,
                field: "file".into(),
                problem: "the document is missing".into(),
                fix: format!("restore {name} (git checkout -- {name}) or run `ratchet init`"),
            })
        };
        let constitution = parse_constitution(get(CONSTITUTION)?)?;
        let ethos = parse_ethos(get(ETHOS)?)?;
        let (cadence, proposer) = parse_cadence(get(CADENCE)?)?;
        let hashes = texts.iter().map(|(k, v)| (k.clone(), hash(v))).collect();
        let g = Governance { constitution, ethos, cadence, proposer, hashes, texts };
        g.check_model_references()?;
        Ok(g)
    }

    /// Every model named in cadence.md and ethos.md is declared in constitution.md, and a model
    /// review that is on has a reviewer.
    fn check_model_references(&self) -> Result<(), GovernanceError> {
        let declared = || {
            let names: Vec<&str> = self.constitution.models.keys().map(String::as_str).collect();
            if names.is_empty() { "none is declared".to_string() } else { format!("declared: {}", names.join(", ")) }
        };
        let fix = "declare it in constitution.md as [constitution.models.<name>] (url, model, api_key_env), or use a declared name";
        if self.proposer.strategy == "openai"
            && let Some(m) = &self.proposer.model
            && !self.constitution.models.contains_key(m)
        {
            return Err(invalid(
                CADENCE,
                "proposer.model",
                format!("model {m:?} is not declared in constitution.md ({})", declared()),
                fix,
            ));
        }
        if let Some(r) = &self.ethos.review
            && !self.constitution.models.contains_key(&r.model)
        {
            return Err(invalid(
                ETHOS,
                "review.model",
                format!("model {:?} is not declared in constitution.md ({})", r.model, declared()),
                fix,
            ));
        }
        if !self.constitution.model_review.is_off() && self.ethos.review.is_none() {
            return Err(invalid(
                CONSTITUTION,
                "model_review",
                format!("model_review = {:?} but ethos.md has no [ethos.review]", self.constitution.model_review),
                "add [ethos.review] with model = \"<name>\" and a rubric to ethos.md, or set model_review = \"off\"",
            ));
        }
        Ok(())
    }

    /// A declared model with its identity.
    pub fn model(&self, name: &str) -> Option<(ModelId, &ModelEndpoint)> {
        self.constitution.models.get(name).map(|e| (ModelId::of(name, e), e))
    }

    /// The model that proposes (strategy openai), if any.
    pub fn proposer_model(&self) -> Option<(ModelId, &ModelEndpoint)> {
        (self.proposer.strategy == "openai")
            .then(|| self.proposer.model.as_deref().and_then(|m| self.model(m)))
            .flatten()
    }

    /// The model that reviews candidates, when the constitution turns the review on.
    pub fn reviewer_model(&self) -> Option<(ModelId, &ModelEndpoint)> {
        if self.constitution.model_review.is_off() {
            return None;
        }
        self.ethos.review.as_ref().and_then(|r| self.model(&r.model))
    }

    /// The reviewing model must differ from the producing one: refuses a configuration whose
    /// reviewer is the same endpoint and model as the proposer, naming the files and keys.
    pub fn check_reviewer_differs(&self) -> Result<(), String> {
        let (Some((p, pe)), Some((r, re))) = (self.proposer_model(), self.reviewer_model()) else { return Ok(()) };
        if !pe.same_model_as(re) {
            return Ok(());
        }
        Err(format!(
            "the reviewer is the producer: cadence.md [proposer] model = {:?} and ethos.md [ethos.review] model = {:?} are the same \
             endpoint and model ({} at {}; constitution.md [constitution.models.{}] and [constitution.models.{}]); a model must not \
             review its own candidates; fix: declare a different model (or another server) for the reviewer in constitution.md and \
             name it in ethos.md [ethos.review] model, or set constitution.md model_review = \"off\", then `ratchet approve` the documents",
            p.name, r.name, pe.model, p.url, p.name, r.name
        ))
    }

    /// The stable context prefix injected first into every agent's context: the approved texts in
    /// a fixed order, byte-identical between calls so a model server's prefix cache can reuse it.
    pub fn context_prefix(&self) -> String {
        let mut out = String::new();
        for doc in DOCS {
            if let Some(t) = self.texts.get(doc) {
                out.push_str(&format!("<governance doc=\"{doc}\" sha256=\"{}\">\n{t}\n</governance>\n", hash(t)));
            }
        }
        out
    }

    /// The minimal context for sub-tasks: the constitution only.
    pub fn minimal_prefix(&self) -> String {
        let t = self.texts.get(CONSTITUTION).map(String::as_str).unwrap_or("");
        format!("<governance doc=\"{CONSTITUTION}\" sha256=\"{}\">\n{t}\n</governance>\n", hash(t))
    }
}

/// Whether `path` (relative, `/`-separated) matches a glob where `*` matches within one component
/// and `**` matches any number of components.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn comp(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => comp(&p[1..], s) || (!s.is_empty() && comp(p, &s[1..])),
            (Some(a), Some(b)) if a == b || *a == b'?' => comp(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn parts(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => parts(&p[1..], s) || (!s.is_empty() && parts(p, &s[1..])),
            (Some(a), Some(b)) => comp(a.as_bytes(), b.as_bytes()) && parts(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.trim_start_matches("./").split('/').filter(|c| !c.is_empty()).collect();
    let s: Vec<&str> = path.trim_start_matches("./").split('/').filter(|c| !c.is_empty()).collect();
    // A bare directory pattern ("bench/") protects everything below it.
    if pattern.ends_with('/') {
        return s.len() > p.len() && parts(&p, &s[..p.len()]);
    }
    parts(&p, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("bench/**", "bench/data/x.txt"));
        assert!(glob_match("*.md", "ethos.md"));
        assert!(!glob_match("*.md", "docs/ethos.md"));
        assert!(glob_match("**/*.md", "docs/ethos.md"));
        assert!(glob_match(".ci/", ".ci/run"));
        assert!(!glob_match("src/*.rs", "src/a/b.rs"));
    }

    const ETHOS: &str = "# Ethos\n\n```toml ratchet\n[ethos]\ngoal = \"g\"\ngates = []\ntest_command = \"t\"\nbenchmark = \"b\"\nbenchmark_paths = []\nmetric = \"ms\"\ndirection = \"lower\"\nconfidence = 0.95\nmin_effect = 0.03\nEXTRA\ngate_timeout_s = 1\nbench_timeout_s = 1\n```\n";

    #[test]
    fn ethos_pairing_and_rounds() {
        let e = parse_ethos(&ETHOS.replace("EXTRA", "")).unwrap();
        assert_eq!((e.pairing, e.min_rounds, e.max_rounds, e.calibration_rounds), (Pairing::Sequential, 5, 30, 8));
        let e = parse_ethos(&ETHOS.replace("EXTRA", "pairing = \"duet\"\nmin_rounds = 8\nmax_rounds = 20")).unwrap();
        assert_eq!((e.pairing, e.min_rounds, e.max_rounds), (Pairing::Duet, 8, 20));
        let err = parse_ethos(&ETHOS.replace("EXTRA", "pairing = \"both\"")).unwrap_err().to_string();
        assert!(err.starts_with("ethos.md:14: pairing: unknown variant `both`"), "{err}");
        // No decision is possible before 5 rounds at 95%: a cap below that is refused.
        let err = parse_ethos(&ETHOS.replace("EXTRA", "max_rounds = 4")).unwrap_err().to_string();
        assert_eq!(
            err,
            "ethos.md:0: max_rounds: 4 is outside [5, 100] (at confidence 0.95 no decision is possible before 5 rounds; min_rounds is 5); fix: use e.g. 30"
        );
        assert_eq!((decision_floor(0.95), decision_floor(0.9), decision_floor(0.99)), (5, 4, 7));
    }

    #[test]
    fn ethos_measure_and_its_keys() {
        let e = parse_ethos(&ETHOS.replace("EXTRA", "")).unwrap();
        assert_eq!((e.measure, e.count_tolerance, e.guard_wall_time), (Measure::Metric, 0.001, false));
        let e = parse_ethos(&ETHOS.replace("EXTRA", "measure = \"instructions\"\nguard_wall_time = true")).unwrap();
        assert_eq!((e.measure, e.count_tolerance, e.guard_wall_time), (Measure::Instructions, 0.001, true));
        let err = parse_ethos(&ETHOS.replace("EXTRA", "measure = \"cycles\"")).unwrap_err().to_string();
        assert!(err.starts_with("ethos.md:14: measure: unknown variant `cycles`"), "{err}");
        let higher = ETHOS.replace("direction = \"lower\"", "direction = \"higher\"");
        let err = parse_ethos(&higher.replace("EXTRA", "measure = \"instructions\"")).unwrap_err().to_string();
        assert!(err.contains("direction") && err.contains("fix: set direction = \"lower\""), "{err}");
        // Runs that may disagree by more than half of min_effect (3%) cannot decide it.
        let err = parse_ethos(&ETHOS.replace("EXTRA", "measure = \"instructions\"\ncount_tolerance = 0.02"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("count_tolerance: 0.02 is not within [0, min_effect / 2 = 0.015]"), "{err}");
        let err = parse_ethos(&ETHOS.replace("EXTRA", "guard_wall_time = true")).unwrap_err().to_string();
        assert!(
            err.contains("guard_wall_time")
                && err.contains("fix: remove guard_wall_time, or set measure = \"instructions\""),
            "{err}"
        );
    }

    #[test]
    fn ethos_trusted_checkout_and_its_build() {
        let e = parse_ethos(&ETHOS.replace("EXTRA", "trusted_tests = [\"tests/**\"]")).unwrap();
        assert_eq!((e.trusted_checkout, e.trusted_build.len()), (TrustedCheckout::Reuse, 0));
        let fresh =
            "trusted_tests = [\"tests/**\"]\ntrusted_checkout = \"fresh\"\ntrusted_build = [\"python3 -m venv .venv\"]";
        let e = parse_ethos(&ETHOS.replace("EXTRA", fresh)).unwrap();
        assert_eq!(
            (e.trusted_checkout, e.trusted_build.as_slice()),
            (TrustedCheckout::Fresh, &["python3 -m venv .venv".to_string()][..])
        );
        let err = parse_ethos(&ETHOS.replace("EXTRA", "trusted_tests = [\"t\"]\ntrusted_checkout = \"clean\""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ethos.md:15: trusted_checkout: unknown variant `clean`"), "{err}");
        let err = parse_ethos(&ETHOS.replace("EXTRA", "trusted_checkout = \"fresh\"")).unwrap_err().to_string();
        assert!(
            err.contains("trusted_checkout") && err.contains("fix: set trusted_tests to the globs of the tests"),
            "{err}"
        );
        let err = parse_ethos(&ETHOS.replace("EXTRA", "trusted_tests = [\"t\"]\ntrusted_build = [\"make\"]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("trusted_build") && err.contains("fix: set trusted_checkout = \"fresh\""), "{err}");
        let err =
            parse_ethos(&ETHOS.replace("EXTRA", &fresh.replace("python3 -m venv .venv", " "))).unwrap_err().to_string();
        assert!(err.contains("trusted_build: an empty command"), "{err}");
    }

    #[test]
    fn retired_keys_name_their_replacement() {
        let err = parse_ethos(&ETHOS.replace("EXTRA", "test = \"mann-whitney\"\nmin_samples = 5\nmax_cv = 0.1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ethos.md:14: test: retired: baseline and candidate now run in paired rounds"),
            "{err}"
        );
        assert!(
            err.ends_with(
                "fix: remove the line (choose how runs are paired with pairing = \"sequential\" or \"duet\")"
            ),
            "{err}"
        );
        let err = parse_ethos(&ETHOS.replace("EXTRA", "min_samples = 5")).unwrap_err().to_string();
        assert!(
            err.starts_with("ethos.md:14: min_samples: retired:") && err.contains("fix: rename it to min_rounds"),
            "{err}"
        );
        let err = parse_ethos(&ETHOS.replace("EXTRA", "max_cv = 0.1")).unwrap_err().to_string();
        assert!(err.starts_with("ethos.md:14: max_cv: retired:"), "{err}");
        let cadence = "```toml ratchet\n[cadence]\ncandidates = 1\nrepeats = 7\nwarmup = 0\n```\n";
        let err = parse_cadence(cadence).unwrap_err().to_string();
        assert_eq!(
            err,
            "cadence.md:4: repeats: retired: the evaluator samples sequentially until the answer is clear; fix: remove it from cadence.md and set max_rounds (the most rounds per measurement) in ethos.md"
        );
    }

    #[test]
    fn block_errors_name_line_and_fix() {
        let e = settings_block("x.md", "# t\n").unwrap_err().to_string();
        assert!(e.starts_with("x.md:1: settings: no ```toml ratchet"), "{e}");
        let e = settings_block("x.md", "a\n```toml ratchet\nk=1\n").unwrap_err().to_string();
        assert!(e.contains("never closed"), "{e}");
        let (line, body) = settings_block("x.md", "a\n```toml ratchet\nk=1\n```\n").unwrap();
        assert_eq!((line, body), (3, "k=1\n"));
        let doc = "# Cadence\n\n```toml ratchet\n[cadence]\ncandidates = 3\nwarmpu = 7\n```\n";
        let good = "```toml ratchet\n[cadence]\ncandidates = 1\nwarmup = 0\nstall_limit = 1\nbreaker_limit = 1\nlease_ttl_s = 1\nmax_attempts = 1\npromotion = \"auto\"\nmax_cycles = 0\nmax_wall_s = 0\n[proposer]\nstrategy = \"command\"\ncommand = \"x\"\ncontext = \"CONTEXT\"\n```\n";
        assert_eq!(parse_cadence(&good.replace("CONTEXT", "minimal")).unwrap().1.context, "minimal");
        let e = parse_cadence(&good.replace("CONTEXT", "everything")).unwrap_err().to_string();
        assert!(e.contains("proposer.context") && e.contains("\"full\" or \"minimal\""), "{e}");
        let e = parse_cadence(doc).unwrap_err().to_string();
        assert!(e.starts_with("cadence.md:6: warmpu: unknown field"), "{e}");
    }

    /// The sandbox is typed where it is read: an unknown mode is refused at the line that names
    /// it (never silently `auto`), and a known one reaches every task as the same bytes.
    #[test]
    fn sandbox_settings_are_typed() {
        let doc = |sandbox: &str, weak: &str| {
            format!(
                "# C\n\n```toml ratchet\n[constitution]\nprotected_paths = []\nmax_diff_lines = 10\nmax_files_changed = 1\n{sandbox}{weak}```\n"
            )
        };
        let c = parse_constitution(&doc("", "")).unwrap();
        assert_eq!((c.sandbox, c.weak_sandbox), (SandboxMode::Auto, WeakSandbox::Refuse));
        let c = parse_constitution(&doc("sandbox = \"plain\"\n", "weak_sandbox = \"allow\"\n")).unwrap();
        assert_eq!((c.sandbox, c.allows_weak_sandbox()), (SandboxMode::Plain, true));
        let e = parse_constitution(&doc("sandbox = \"docker\"\n", "")).unwrap_err().to_string();
        assert!(e.starts_with("constitution.md:8: sandbox: unknown variant `docker`"), "{e}");
        let e = parse_constitution(&doc("", "weak_sandbox = \"sometimes\"\n")).unwrap_err().to_string();
        assert!(e.starts_with("constitution.md:8: weak_sandbox: unknown variant `sometimes`"), "{e}");
        let e = parse_constitution(&doc("sandbox = \"plain\"\n", "")).unwrap_err().to_string();
        assert!(e.contains("weak_sandbox refuses that"), "{e}");
        assert_eq!("bwrap".parse::<SandboxMode>(), Ok(SandboxMode::Bwrap));
        assert_eq!(serde_json::to_string(&SandboxMode::Namespaces).unwrap(), "\"namespaces\"");
    }
}
