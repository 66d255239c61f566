//! The proposer agent's domain logic: turning the current baseline into candidate changes.
//!
//! Two strategies, each a plain function the A2A binary calls:
//! - [`propose_sweep`] (`sweep`): one-parameter changes of a TOML or JSON config file, never
//!   repeating an approach already tried or banned, ordered by what the history says. Needs no
//!   model and no process.
//! - [`propose_command`] (`command`): runs a configured program (a coding-agent CLI or a script)
//!   in a scratch checkout of the baseline and takes the diff it leaves.
//!
//! Every proposal has a [`Proposal::approach_key`]: the canonical string of the change that the
//! coordinator records in the history and, when the approach failed, in the hard-banned list.

pub mod brief;
mod command;
mod config;
pub mod openai;
mod sweep;
pub mod work;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use command::{CONTEXT_FILE, CommandLimits, propose_command};
pub use config::{ConfigFormat, set_value};
pub use sweep::{propose_sweep, sweep_key};

/// The proposal type is a wire type: it lives in `protocol` with its
/// [`approach_key`](Proposal::approach_key).
pub use protocol::work::{FileEdit, Proposal};

/// A value as it appears in an approach key and a summary: strings raw, the rest compact JSON.
pub(crate) fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What became of an approach the loop tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    /// The proposal's [`Proposal::approach_key`].
    pub key: String,
    pub outcome: TriedOutcome,
    /// Relative change of the metric's median, signed so that positive is better whatever the
    /// metric's direction (0.10 = 10% better); `None` when it was never measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriedOutcome {
    /// Verdict PROMOTE, and it went onto main.
    Promoted,
    /// Verdict PROMOTE, but another candidate of the cycle went onto main.
    Passed,
    /// Verdict HOLD: no evidence either way (noise, too few samples, unstable).
    Held,
    /// Verdict REJECT: worse, or refused by the critic.
    Rejected,
    /// The candidate failed its gates or could not be applied.
    Failed,
}

impl TriedOutcome {
    pub(crate) fn helped(self) -> bool {
        matches!(self, TriedOutcome::Promoted | TriedOutcome::Passed)
    }

    pub(crate) fn hurt(self) -> bool {
        matches!(self, TriedOutcome::Rejected | TriedOutcome::Failed)
    }
}

/// Why no proposal came out.
#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    /// The program ran and exited non-zero: the proposal failed (counts toward the circuit breaker).
    #[error("proposer command `{command}` {status}; its stderr ends with: {stderr_tail}")]
    CommandFailed { command: String, status: String, stderr_tail: String },
    /// The program could not run to its end (timeout, spawn error, signal, out of memory): an
    /// infrastructure failure, to be retried.
    #[error("proposer command `{command}` {status}; fix the command or raise its timeout ({stderr_tail})")]
    CommandInfra { command: String, status: String, stderr_tail: String },
    /// The program exited 0 but left the checkout unchanged: the proposal failed.
    #[error("proposer command `{command}` exited 0 but changed nothing in {}; it must edit files in its working directory", worktree.display())]
    EmptyDiff { command: String, worktree: PathBuf },
    #[error("`git {args}` in {} failed: {stderr}", dir.display())]
    Git { args: String, dir: PathBuf, stderr: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model answered, but not with a usable candidate (no diff, a diff or edit that does not
    /// apply): the proposal failed (counts toward the circuit breaker); nothing reaches a worktree.
    #[error("model {model} answered no usable candidate: {problem}")]
    Malformed { model: String, problem: String },
    /// The swept config file (or the search space) cannot be read or edited.
    #[error("{file}: {problem}; fix: {fix}")]
    Config { file: String, problem: String, fix: String },
    /// The program wrote a declaration that is not one: the proposal failed.
    #[error("the program's declaration is refused: {0}")]
    Declaration(protocol::rails::DeclarationError),
}

impl ProposalError {
    /// A failed `git args` in `dir` (run through `kit::git`).
    pub(crate) fn git(dir: &std::path::Path, args: &[&str], e: kit::git::GitError) -> ProposalError {
        let stderr = match e {
            kit::git::GitError::Failed { status, stderr, .. } => format!("{status}: {stderr}"),
            other => other.to_string(),
        };
        ProposalError::Git { args: args.join(" "), dir: dir.into(), stderr }
    }

    /// Not the proposal's fault: retry rather than count it toward the circuit breaker.
    pub fn is_infra(&self) -> bool {
        matches!(self, ProposalError::CommandInfra { .. } | ProposalError::Git { .. } | ProposalError::Io { .. })
    }
}

/// A `[A-Za-z0-9_-]` slug of `text` (runs of other characters become one `-`), at most `max` bytes.
pub(crate) fn slug(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(max).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_keys_are_the_proposals_approach_keys() {
        let p = |params: Value| Proposal {
            id: "x".into(),
            strategy: "sweep".into(),
            summary: String::new(),
            files: vec![],
            params,
            patch: None,
            edits: vec![],
            model: None,
            declaration: None,
        };
        for (param, value) in [("algorithm", "\"merge\""), ("cutoff", "32"), ("gaps", "[1, 4]"), ("f", "0.5")] {
            let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}")).unwrap()["v"].clone();
            let json = serde_json::json!({ param: serde_json::to_value(&v).unwrap() });
            assert_eq!(sweep_key(param, &v), p(json).approach_key());
        }
        assert_eq!(sweep_key("algorithm", &toml::Value::String("merge".into())), "algorithm=merge");
        assert_eq!(sweep_key("gaps", &toml::Value::Array(vec![1.into(), 4.into()])), "gaps=[1,4]");
    }

    #[test]
    fn slugs_are_valid_names() {
        assert_eq!(slug("cutoff=32", 40), "cutoff-32");
        assert_eq!(slug("a..b/../c\"d\"", 40), "a-b-c-d");
        assert_eq!(slug("--x--", 40), "x");
        assert_eq!(slug("abc-def", 4), "abc");
        protocol::names::check_component("id", &format!("sweep-{}", slug("gap=\"1..2\".lock", 40))).unwrap();
    }

    #[test]
    fn tried_deserializes() {
        let tried: Tried = serde_json::from_str(r#"{"key":"a=1","outcome":"passed","delta":0.1}"#).unwrap();
        assert_eq!(tried, Tried { key: "a=1".into(), outcome: TriedOutcome::Passed, delta: Some(0.1) });
    }
}
