//! The critic's deterministic rails: a candidate commit is reviewed against its parent, on a real git
//! repository, through the git CLI.
//!
//! [`review`] runs, in order:
//! 1. the static rails over the diff ([`rails`]): `protected-path`, `append-only`, `rule`, `size`,
//!    `scope` (declare, then verify) and `claim`; they need no execution, so they run for every candidate
//!    with a commit, a candidate that failed its gates included ([`review_rails_only`]);
//! 2. if none of them blocked, the `bite` rail ([`bite`]): the candidate's new or changed tests, applied
//!    alone to the parent in a scratch checkout, must fail there.
//!
//! Every finding names its rail, its severity, and where a file is involved the file and the line (in the
//! candidate's version of the file; for a deletion, in the parent's), with the evidence quoted. A review
//! passes when nothing blocks and nothing went wrong outside the candidate: [`Review::infra_error`] says the
//! review is inconclusive (a git failure, a test run that timed out), to be retried and never counted
//! against the candidate.

pub mod bite;
pub mod diff;
mod git;
pub mod model_review;
pub mod rails;
pub mod work;

#[cfg(test)]
mod review_tests;

use std::future::Future;
use std::path::{Path, PathBuf};

use kit::exec::{RunOutcome, RunSpec};
use protocol::governance::{Constitution, Ethos};
use protocol::rails::Declaration;
use serde::Serialize;

pub use diff::{ChangeStatus, FileChange, Hunk, diff_files};

/// A rail's observation and its weight are wire types: they travel in the critique result and
/// the `critiqued` event.
pub use protocol::work::{Finding, Severity};

/// The critic's verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    /// No blocking finding and no infrastructure error.
    pub pass: bool,
    pub findings: Vec<Finding>,
    /// The review could not finish for a reason outside the candidate: retry it, do not count it against the
    /// candidate. A blocking finding rejects the candidate even when this is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infra_error: Option<String>,
    /// One line for people and events.
    pub summary: String,
}

impl Review {
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Block)
    }
}

/// Why the critic could not read the candidate (never a verdict about it).
#[derive(Debug, thiserror::Error)]
pub enum CriticError {
    /// git could not be run, or printed what is not text (`kit::git` says which and the fix).
    #[error("{0}")]
    GitRun(String),
    #[error("`{command}` failed ({status}): {stderr}")]
    Git { command: String, status: String, stderr: String },
    #[error("{rev:?} is not a commit in {repo}; pass a commit id or branch that exists there")]
    NoSuchCommit { repo: PathBuf, rev: String },
    #[error("cannot read the diff: {what}")]
    DiffParse { what: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{file}: {field}: {problem}")]
    Settings { file: &'static str, field: &'static str, problem: String },
    #[error("a blocking critic task failed: {0}")]
    Join(String),
}

/// Runs the bite check's test command. [`ExecRunner`] is the real one (`kit::exec`); a caller may wrap it,
/// for example to keep a log file of the run (`spec.with_log(path)`).
pub trait TestRunner: Sync {
    fn run(&self, spec: RunSpec) -> impl Future<Output = RunOutcome> + Send;
}

/// Runs through `kit::exec`: sandboxed, process group killed at the timeout and at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecRunner;

impl TestRunner for ExecRunner {
    async fn run(&self, spec: RunSpec) -> RunOutcome {
        kit::exec::run(&spec).await
    }
}

/// Runs blocking git work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CriticError> + Send + 'static,
) -> Result<T, CriticError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CriticError::Join(e.to_string()))?
}

/// Reviews `commit` against `parent` in `repo`: every rail, the bite check included.
/// `declaration` is what the proposal declared (`None`: nothing, its scope is unverified). Never
/// fails: a problem outside the candidate becomes [`Review::infra_error`].
pub async fn review<R: TestRunner>(
    repo: &Path,
    parent: &str,
    commit: &str,
    declaration: Option<&Declaration>,
    constitution: &Constitution,
    ethos: &Ethos,
    runner: &R,
) -> Review {
    let subject = Candidate { repo, parent, commit, declaration };
    or_inconclusive(try_review(&subject, constitution, ethos, Some(runner)).await)
}

/// The static rails only (no test run): for a candidate that failed its gates, so its record
/// lists every rail it broke without spending more on it.
pub async fn review_rails_only(
    repo: &Path,
    parent: &str,
    commit: &str,
    declaration: Option<&Declaration>,
    constitution: &Constitution,
    ethos: &Ethos,
) -> Review {
    let subject = Candidate { repo, parent, commit, declaration };
    or_inconclusive(try_review::<ExecRunner>(&subject, constitution, ethos, None).await)
}

fn or_inconclusive(r: Result<Review, CriticError>) -> Review {
    match r {
        Ok(review) => review,
        Err(e) => Review {
            pass: false,
            findings: Vec::new(),
            infra_error: Some(e.to_string()),
            summary: format!("inconclusive: the review could not run: {e}"),
        },
    }
}

/// The candidate under review.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub repo: &'a Path,
    pub parent: &'a str,
    pub commit: &'a str,
    pub declaration: Option<&'a Declaration>,
}

/// Every static rail over `changes`, in the order the record lists them.
pub fn static_rails(
    changes: &[FileChange],
    declaration: Option<&Declaration>,
    constitution: &Constitution,
    ethos: &Ethos,
) -> Vec<Finding> {
    let mut findings = rails::protected_paths(changes, constitution, ethos);
    findings.extend(rails::append_only(changes, constitution));
    findings.extend(rails::rules(changes, constitution));
    findings.extend(rails::size(changes, constitution));
    findings.extend(rails::scope(changes, declaration, constitution.unverified_scope));
    findings.extend(rails::claims(changes, declaration));
    findings.extend(rails::test_config(changes, ethos));
    findings
}

/// [`review`] (with a runner) or [`review_rails_only`] (without), with the failures that leave
/// no findings at all (an unknown commit, git missing) as errors.
pub async fn try_review<R: TestRunner>(
    subject: &Candidate<'_>,
    constitution: &Constitution,
    ethos: &Ethos,
    runner: Option<&R>,
) -> Result<Review, CriticError> {
    let (parent, commit, changes) = {
        let (repo, parent, commit) =
            (subject.repo.to_path_buf(), subject.parent.to_string(), subject.commit.to_string());
        blocking(move || {
            let parent = git::resolve_commit(&repo, &parent)?;
            let commit = git::resolve_commit(&repo, &commit)?;
            let changes = diff_files(&repo, &parent, &commit)?;
            Ok((parent, commit, changes))
        })
        .await?
    };
    let mut findings = static_rails(&changes, subject.declaration, constitution, ethos);

    let mut infra_error = None;
    let blocked_statically = findings.iter().any(|f| f.severity == Severity::Block);
    let declared_tests = subject.declaration.map(|d| d.tests.clone()).unwrap_or_default();
    let bite_note = match runner {
        None => "bite: not run (the candidate failed its gates)".to_string(),
        Some(_) if blocked_statically => "bite: skipped (already rejected)".to_string(),
        Some(runner) => {
            let bite_subject = bite::Subject {
                repo: subject.repo,
                parent: &parent,
                commit: &commit,
                changes: &changes,
                declared_tests: &declared_tests,
            };
            match bite::check(&bite_subject, constitution, ethos, runner).await {
                Ok(report) => {
                    findings.extend(report.findings);
                    infra_error = report.infra_error;
                    report.note
                }
                Err(e) => {
                    let note = format!("bite: inconclusive ({e})");
                    infra_error = Some(format!("bite check: {e}"));
                    note
                }
            }
        }
    };

    let lines: u64 = changes.iter().map(|c| c.added + c.removed).sum();
    let blocks: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Block)
        .map(|f| format!("{} {}", f.rail, f.location()))
        .collect();
    let warns = findings.len() - blocks.len();
    let size = format!("{} files, {lines} lines", changes.len());
    let pass = blocks.is_empty() && infra_error.is_none();
    let summary = if !blocks.is_empty() {
        format!("reject ({size}): {} blocking: {}; {bite_note}", blocks.len(), blocks.join(", "))
    } else if infra_error.is_some() {
        format!("inconclusive ({size}): {bite_note}")
    } else {
        format!("pass ({size}): {warns} warnings; {bite_note}")
    };
    Ok(Review { pass, findings, infra_error, summary })
}
