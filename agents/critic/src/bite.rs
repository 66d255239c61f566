//! The bite check: a new or changed test must fail on the code before the change.
//!
//! **Which changes are tests** (a deliberately simple heuristic):
//! - a *test file*: any file under a directory named `tests`, `test` or `__tests__`; a file whose name
//!   matches `*_test.*`, `test_*.*`, `*.test.*` or `*.spec.*`; a Rust file named `tests.rs` or `test.rs`.
//!   Test files are taken whole from the candidate (data files under `tests/` included).
//! - *inline Rust tests*: in any other `.rs` file, the hunks that lie at or after the file's first
//!   `#[cfg(test)]` line (the convention of a test module at the bottom of the file), plus any hunk that
//!   adds a test attribute (`#[test]`, `#[tokio::test]`, any `#[...::test...]`). Only those hunks are
//!   applied, so the code change under test stays out. A pure insertion that spans the `#[cfg(test)]` line
//!   (a new file with code and tests) is split there and only its test part applied.
//!
//! - a file the proposal *declared* as a test (its declaration's `tests`): taken whole from the candidate
//!   (a non-test `.rs` file: its test hunks, as above), whatever its name.
//!
//! A test change that only removes lines (a deleted test file, removed test lines) is not a new or changed
//! test: it gets a warning, and if nothing else changed in the tests, no run. A pure rename of a test file
//! is ignored.
//!
//! **The check**: a scratch checkout of the parent commit (self-contained: its git directory inside it,
//! borrowing the repository's objects read-only; in a temporary directory, removed afterwards whatever
//! happens), the test changes applied there, and `ethos.test_command` run there under the constitution's
//! sandbox (the repository's files hidden, only the scratch writable) with `ethos.gate_timeout_s`. It must fail. If it passes, the
//! tests pass without the change: "non-biting", a blocking finding. A timeout, spawn error, signal or memory
//! exhaustion proves nothing either way and is reported as an infrastructure error, never held against the
//! candidate.
//!
//! Each declared test is checked on its own (only its changes applied), so a declared test that does not
//! bite is named; the test changes the proposal did not declare are applied and run together, so among
//! those one biting test lets a non-biting one through. The check stops at the first blocking finding.

use std::path::Path;
use std::time::Duration;

use kit::exec::{RunOutcome, RunSpec};
use protocol::governance::{Constitution, Ethos, glob_match};
use serde::Serialize;

use crate::diff::{ChangeStatus, FileChange, Hunk, apply_hunks};
use crate::git::{ScratchCheckout, git, show_file};
use crate::{CriticError, Finding, Severity, TestRunner, blocking};

pub const BITE: &str = "bite";

/// Lines of the test command's output quoted in a finding.
const OUTPUT_TAIL_LINES: usize = 30;

/// Whether `path` (relative, `/`-separated) is a test file by name or directory; see the module docs.
pub fn is_test_path(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or("");
    parts.iter().any(|d| matches!(*d, "tests" | "test" | "__tests__"))
        || ["*_test.*", "test_*.*", "*.test.*", "*.spec.*"].iter().any(|g| glob_match(g, name))
        || matches!(name, "tests.rs" | "test.rs")
}

/// Whether a line is a Rust test attribute: `#[test]`, `#[tokio::test]`, `#[tokio::test(flavor = ...)]`.
fn is_test_attribute(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("#[") && (t.starts_with("#[test") || t.contains("::test"))
}

/// A place where the candidate changed a test, for findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestSite {
    pub file: String,
    pub line: Option<u32>,
}

impl std::fmt::Display for TestSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// The candidate's test changes, split by how they are applied to the parent.
#[derive(Debug, Clone, Default)]
pub struct TestChanges {
    /// Test files taken whole from the candidate commit.
    pub whole_files: Vec<String>,
    /// Other Rust files: only these hunks (their test parts) are applied to the parent's text.
    pub partial: Vec<(FileChange, Vec<Hunk>)>,
    /// Where the new or changed tests are.
    pub sites: Vec<TestSite>,
    /// Tests the candidate removed.
    pub removed: Vec<TestSite>,
}

impl TestChanges {
    pub fn is_empty(&self) -> bool {
        self.whole_files.is_empty() && self.partial.is_empty()
    }

    /// The changes of the files `keep` says yes to.
    fn filtered(&self, keep: impl Fn(&str) -> bool) -> TestChanges {
        TestChanges {
            whole_files: self.whole_files.iter().filter(|f| keep(f)).cloned().collect(),
            partial: self.partial.iter().filter(|(c, _)| keep(&c.path)).cloned().collect(),
            sites: self.sites.iter().filter(|s| keep(&s.file)).cloned().collect(),
            removed: vec![],
        }
    }
}

/// The test parts of a non-test Rust file's hunks; `new_text` is the file in the candidate.
fn rust_test_hunks(new_text: &str, hunks: &[Hunk]) -> Vec<Hunk> {
    let module = new_text.lines().position(|l| l.trim_start().starts_with("#[cfg(test)]")).map(|i| i as u32 + 1);
    let mut out = Vec::new();
    for h in hunks {
        if let Some(t) = module {
            let end = h.new_start + h.new_lines; // one past the hunk's last line in the candidate
            if h.old_lines == 0 && h.new_start < t && end > t {
                let k = (t - h.new_start) as usize;
                out.push(Hunk {
                    new_start: t,
                    new_lines: h.new_lines - k as u32,
                    added: h.added[k..].to_vec(),
                    ..h.clone()
                });
                continue;
            }
            let in_module = if h.new_lines > 0 { end > t } else { h.new_start >= t };
            if in_module {
                out.push(h.clone());
                continue;
            }
        }
        if h.added.iter().any(|l| is_test_attribute(l)) {
            out.push(h.clone());
        }
    }
    out
}

/// Finds the candidate's test changes (see the module docs for the heuristic).
pub fn find_test_changes(
    repo: &Path,
    commit: &str,
    changes: &[FileChange],
    declared: &[String],
) -> Result<TestChanges, CriticError> {
    let mut tc = TestChanges::default();
    for c in changes {
        let first_added = |hunks: &[Hunk]| hunks.iter().find(|h| h.new_lines > 0).map(|h| h.new_start);
        let declared_whole = declared.contains(&c.path) && !c.path.ends_with(".rs");
        if is_test_path(&c.path) || declared_whole {
            let site = TestSite { file: c.path.clone(), line: first_added(&c.hunks).or(c.first_line()) };
            match c.status {
                ChangeStatus::Deleted => tc.removed.push(site),
                _ if c.binary || c.added > 0 => {
                    tc.whole_files.push(c.path.clone());
                    tc.sites.push(site);
                }
                _ if c.removed > 0 => tc.removed.push(site),
                _ => {} // a pure rename or mode change: the same tests as before
            }
            continue;
        }
        if !c.path.ends_with(".rs") || c.binary || c.status == ChangeStatus::Deleted {
            continue;
        }
        let text = show_file(repo, commit, &c.path)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        let hunks = rust_test_hunks(&text.unwrap_or_default(), &c.hunks);
        let Some(first) = hunks.first() else { continue };
        if hunks.iter().any(|h| !h.added.is_empty()) {
            tc.sites.push(TestSite { file: c.path.clone(), line: first_added(&hunks) });
            tc.partial.push((c.clone(), hunks));
        } else {
            tc.removed.push(TestSite { file: c.path.clone(), line: Some(first.line()) });
        }
    }
    Ok(tc)
}

/// Applies the test changes to a checkout of the parent at `dir`.
fn apply_test_changes(
    repo: &Path,
    parent: &str,
    commit: &str,
    dir: &Path,
    tc: &TestChanges,
) -> Result<(), CriticError> {
    if !tc.whole_files.is_empty() {
        let mut args = vec!["--literal-pathspecs", "checkout", "--quiet", commit, "--"];
        args.extend(tc.whole_files.iter().map(String::as_str));
        git(dir, args)?;
    }
    for (change, hunks) in &tc.partial {
        let source = change.old_path.as_deref().unwrap_or(&change.path);
        let parent_text = show_file(repo, parent, source)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        let text = apply_hunks(&parent_text.unwrap_or_default(), &hunks.iter().collect::<Vec<_>>());
        let io = |what: String| move |source| CriticError::Io { what, source };
        if let Some(old) = &change.old_path {
            std::fs::remove_file(dir.join(old))
                .map_err(io(format!("removing {old} (renamed) in the bite check's checkout")))?;
        }
        let target = dir.join(&change.path);
        if let Some(parent_dir) = target.parent() {
            std::fs::create_dir_all(parent_dir)
                .map_err(io(format!("creating the directory of {} in the bite check's checkout", change.path)))?;
        }
        std::fs::write(&target, text).map_err(io(format!("writing {} in the bite check's checkout", change.path)))?;
    }
    Ok(())
}

/// The run of `ethos.test_command` in `cwd` (a scratch checkout of `repo`) under the constitution's
/// limits, with `repo`'s files hidden from it.
pub fn test_spec(ethos: &Ethos, constitution: &Constitution, cwd: &Path, repo: &Path) -> Result<RunSpec, CriticError> {
    let mut spec = RunSpec::new(ethos.test_command.clone(), cwd)
        .with_timeout(Duration::from_secs(ethos.gate_timeout_s))
        .with_network(constitution.allow_network)
        .with_sandbox(constitution.sandbox)
        .with_repository(repo)
        .with_weak_sandbox_allowed(constitution.allows_weak_sandbox());
    if constitution.command_memory_mb > 0 {
        spec = spec.with_memory_limit(constitution.command_memory_mb.saturating_mul(1024 * 1024));
    }
    Ok(spec)
}

/// What the bite rail found.
#[derive(Debug, Clone, Default)]
pub struct BiteReport {
    pub findings: Vec<Finding>,
    /// The run proved nothing for a reason outside the candidate (timeout, spawn error, ...).
    pub infra_error: Option<String>,
    /// One line for the review's summary.
    pub note: String,
}

fn tail(outcome: &RunOutcome) -> String {
    let both = format!("{}{}", outcome.stdout, outcome.stderr);
    let lines: Vec<&str> = both.lines().collect();
    let start = lines.len().saturating_sub(OUTPUT_TAIL_LINES);
    lines[start..].iter().map(|l| crate::diff::truncate(l, 200)).collect::<Vec<_>>().join("\n")
}

/// The candidate the bite check looks at: `commit` against `parent` (both resolved commit ids) in
/// `repo`, its changed files, and the tests its proposal declared.
pub struct Subject<'a> {
    pub repo: &'a Path,
    pub parent: &'a str,
    pub commit: &'a str,
    pub changes: &'a [FileChange],
    pub declared_tests: &'a [String],
}

/// Runs the bite check; see the module documentation.
pub async fn check<R: TestRunner>(
    subject: &Subject<'_>,
    constitution: &Constitution,
    ethos: &Ethos,
    runner: &R,
) -> Result<BiteReport, CriticError> {
    let tc = {
        let (repo, commit, changes) =
            (subject.repo.to_path_buf(), subject.commit.to_string(), subject.changes.to_vec());
        let declared = subject.declared_tests.to_vec();
        blocking(move || find_test_changes(&repo, &commit, &changes, &declared)).await?
    };
    let mut report = BiteReport::default();
    for site in &tc.removed {
        report.findings.push(Finding {
            rail: BITE.into(),
            severity: Severity::Warn,
            file: Some(site.file.clone()),
            line: site.line,
            message: format!("the candidate removes tests in {}", site.file),
            evidence: format!("{site}: test lines removed or test file deleted, no new test takes their place there"),
            class: None,
        });
    }
    if tc.is_empty() {
        report.note = "no test changes".into();
        return Ok(report);
    }
    let sites = tc.sites.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if ethos.test_command.trim().is_empty() {
        let first = &tc.sites[0];
        report.findings.push(Finding {
            rail: BITE.into(),
            severity: Severity::Warn,
            file: Some(first.file.clone()),
            line: first.line,
            message:
                "the bite check cannot run: ethos.md test_command is empty; set it to the command that runs the tests"
                    .into(),
            evidence: format!("test changes not checked: {sites}"),
            class: None,
        });
        report.note = "bite check skipped: no test_command".into();
        return Ok(report);
    }

    // Each declared test alone, then the undeclared test changes together.
    let declared = subject.declared_tests;
    let mut groups: Vec<(Option<&str>, TestChanges)> = declared
        .iter()
        .map(|t| (Some(t.as_str()), tc.filtered(|f| f == t.as_str())))
        .filter(|(_, g)| !g.is_empty())
        .collect();
    let rest = tc.filtered(|f| !declared.iter().any(|t| t == f));
    if !rest.is_empty() {
        groups.push((None, rest));
    }
    let mut notes = vec![];
    for (declared_test, group) in groups {
        let sites = group.sites.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let outcome = run_group(subject, &group, constitution, ethos, runner).await?;
        let short = &subject.parent[..subject.parent.len().min(12)];
        let ran = format!(
            "ran `{}` in a scratch checkout of the parent {short} with only {} applied ({sites}): {}",
            ethos.test_command,
            if declared_test.is_some() { "this declared test's changes" } else { "the test changes" },
            outcome.describe()
        );
        if outcome.success() {
            let first = &group.sites[0];
            let message = match declared_test {
                Some(t) => format!(
                    "non-biting test: the declared test {t} passes on the parent without the change, so it does not test it"
                ),
                None => format!(
                    "non-biting test: the candidate's tests ({sites}) pass on the parent without the change, so they do not test it"
                ),
            };
            report.findings.push(Finding {
                rail: BITE.into(),
                severity: Severity::Block,
                file: Some(first.file.clone()),
                line: first.line,
                message,
                evidence: format!("{ran}\noutput tail:\n{}", tail(&outcome)),
                class: None,
            });
            notes.push(format!("bite: non-biting ({sites} pass on the parent)"));
            break; // expensive work stops at the first block
        } else if outcome.is_infra_failure() {
            report.infra_error = Some(format!(
                "bite check: {ran}; an infrastructure failure, not the candidate's: retry, or raise gate_timeout_s in ethos.md if the tests need longer"
            ));
            notes.push(format!("bite: inconclusive ({})", outcome.describe()));
            break;
        } else {
            notes.push(format!("bite: tests fail on the parent as they must ({sites}: {})", outcome.describe()));
        }
    }
    report.note = notes.join("; ");
    Ok(report)
}

/// One run of the test command on the parent with `group`'s test changes applied.
async fn run_group<R: TestRunner>(
    subject: &Subject<'_>,
    group: &TestChanges,
    constitution: &Constitution,
    ethos: &Ethos,
    runner: &R,
) -> Result<RunOutcome, CriticError> {
    let scratch = {
        let (repo, parent, commit, tc) =
            (subject.repo.to_path_buf(), subject.parent.to_string(), subject.commit.to_string(), group.clone());
        blocking(move || {
            let scratch = ScratchCheckout::create(&repo, &parent)?;
            apply_test_changes(&repo, &parent, &commit, scratch.path(), &tc)?;
            Ok(scratch)
        })
        .await?
    };
    let spec = test_spec(ethos, constitution, scratch.path(), subject.repo);
    let outcome = match spec {
        Ok(spec) => Ok(runner.run(spec).await),
        Err(e) => Err(e),
    };
    // Removing a checkout deletes files: keep it off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(scratch)).await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths() {
        for p in ["tests/a.sh", "pkg/test/x.py", "src/foo_test.go", "test_foo.py", "web/a.test.js", "src/tests.rs"] {
            assert!(is_test_path(p), "{p}");
        }
        for p in ["src/lib.rs", "run_tests.sh", "testing/x.rs", "src/attest.rs", "tests"] {
            assert!(!is_test_path(p), "{p}");
        }
    }

    #[test]
    fn inline_rust_tests_are_split_from_code() {
        // A new file: code then a test module, one pure insertion hunk.
        let text = "pub fn f() -> u32 { 2 }\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n";
        let added: Vec<String> = text.lines().map(String::from).collect();
        let h = Hunk {
            old_start: 0,
            old_lines: 0,
            new_start: 1,
            new_lines: added.len() as u32,
            removed: vec![],
            added,
            added_no_eol: false,
        };
        let got = rust_test_hunks(text, &[h]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].new_start, 3);
        assert_eq!(got[0].added[0], "#[cfg(test)]");
        assert_eq!(apply_hunks("", &[&got[0]]), "#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n");

        // A code change above the module is left out; a change inside it is kept.
        let code = Hunk {
            old_start: 1,
            old_lines: 1,
            new_start: 1,
            new_lines: 1,
            removed: vec!["pub fn f() -> u32 { 1 }".into()],
            added: vec!["pub fn f() -> u32 { 2 }".into()],
            added_no_eol: false,
        };
        let test = Hunk {
            old_start: 5,
            old_lines: 0,
            new_start: 6,
            new_lines: 1,
            removed: vec![],
            added: vec!["    fn u() {}".into()],
            added_no_eol: false,
        };
        assert_eq!(rust_test_hunks(text, &[code, test.clone()]), vec![test]);
        assert!(is_test_attribute("    #[tokio::test(flavor = \"multi_thread\")]"));
        assert!(!is_test_attribute("#[derive(Debug)]"));
    }
}
