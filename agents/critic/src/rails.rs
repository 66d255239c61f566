//! The static rails: they read the diff only, never run anything, so they run for every
//! candidate that has a commit (after a failed gate too), and a record lists every rail it broke.
//!
//! - `protected-path`: no changed path (nor the old path of a rename) matches a protected pattern: the three
//!   governance documents (always, even if the constitution forgot them), `constitution.protected_paths`
//!   and `ethos.benchmark_paths`. The finding names the path's class (governance, benchmark, CI, tests).
//! - `rule`: likewise for every approved rule's `forbid_paths`; the finding names the rule.
//! - `size`: changed lines (added + removed; binary files count 0 lines) and changed files within the
//!   constitution's limits.
//! - `scope`: every changed path matches a file or glob the proposal declared (its `files` or
//!   `tests`); a proposal without a declaration is "scope unverified" (blocking unless
//!   `constitution.unverified_scope` is `warn`), never clean.
//! - `append-only`: under `constitution.append_only_paths`, files and lines may be added, never
//!   deleted, changed, moved or retyped; each finding cites the base's lines it removes or changes.
//! - `claim`: every test the proposal declared appears in the diff with added lines (whether it
//!   bites is the bite rail's question).
//! - `test-config`: when ethos.md has `trusted_tests`, no changed path is a file a test runner
//!   loads on its own ([`RUNNER_FILES`]: `conftest.py`, `sitecustomize.py`, a `.pth`, a
//!   `GNUmakefile`, `.cargo/config.toml`...) outside those globs: the baseline's tests run over the
//!   candidate's commit, so such a file would change how they run (a `conftest.py` hook can pass
//!   every test). Under `trusted_tests` the base's copy runs instead, so a project that lets
//!   candidates change one lists it there. (The executor keeps such files out of that run when a
//!   gate writes them in no commit; this rail is for the ones in the commit.)

use protocol::governance::{self, Constitution, Ethos, UnverifiedScope, glob_match};
use protocol::rails::{Declaration, PathClass};

use crate::diff::{ChangeStatus, FileChange, truncate};
use crate::{Finding, Severity};

pub const PROTECTED_PATH: &str = "protected-path";
pub const RULE: &str = "rule";
pub const SIZE: &str = "size";
pub const SCOPE: &str = "scope";
pub const APPEND_ONLY: &str = "append-only";
pub const CLAIM: &str = "claim";
pub const TEST_CONFIG: &str = "test-config";

/// Files a test runner or the interpreter under it loads on its own, by name (or by path, with a
/// `/`), with who loads them: a candidate that changes one outside `trusted_tests` changes how
/// the baseline's tests run. Files that also hold other settings (`pyproject.toml`, `setup.cfg`,
/// `tox.ini`, `package.json`) are not listed; a project protects them through constitution.md
/// `protected_paths` or `trusted_tests`.
pub const RUNNER_FILES: &[(&str, &str)] = &[
    (
        "conftest.py",
        "pytest loads every conftest.py on the way to the tests it collects (hooks can rewrite any outcome)",
    ),
    ("pytest.ini", "pytest's configuration (addopts, plugins, which tests it collects)"),
    ("sitecustomize.py", "Python imports it at startup from its path"),
    ("usercustomize.py", "Python imports it at startup from its path"),
    ("*.pth", "Python's site module runs its import lines at startup"),
    ("GNUmakefile", "GNU make reads it before Makefile"),
    ("makefile", "GNU make reads it before Makefile"),
    (".cargo/config.toml", "cargo's configuration (a target runner can replace every test binary)"),
    (".cargo/config", "cargo's configuration (a target runner can replace every test binary)"),
    ("jest.config.*", "jest's configuration"),
    ("vitest.config.*", "vitest's configuration"),
    (".mocharc.*", "mocha's configuration"),
    ("karma.conf.*", "karma's configuration"),
];

/// Who loads `path` on its own, when it is one of [`RUNNER_FILES`].
pub fn runner_file(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    RUNNER_FILES.iter().find_map(|(pattern, who)| {
        let hit = if pattern.contains('/') {
            path == *pattern || path.ends_with(&format!("/{pattern}"))
        } else {
            glob_match(pattern, name)
        };
        hit.then_some(*who)
    })
}

/// Lines of a hunk quoted in a finding's evidence.
const EXCERPT_LINES: usize = 6;
/// Removed or changed lines cited in one append-only finding.
const CITED_LINES: usize = 20;
/// Append-only findings for one file (one per hunk); the last one says how many more there are.
const HUNKS_CITED: usize = 10;

/// Where a protected pattern comes from, which decides its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The three governance documents: always protected.
    Governance,
    /// constitution.md `protected_paths`: the class is read from the path.
    Constitution,
    /// ethos.md `benchmark_paths`.
    Benchmark,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::Governance => "governance document (always protected)",
            Source::Constitution => "constitution.md protected_paths",
            Source::Benchmark => "ethos.md benchmark_paths",
        }
    }
}

/// Every protected pattern with where it comes from, governance documents first.
pub fn protected_patterns(constitution: &Constitution, ethos: &Ethos) -> Vec<(String, Source)> {
    let mut out: Vec<(String, Source)> = governance::DOCS.iter().map(|d| (d.to_string(), Source::Governance)).collect();
    out.extend(constitution.protected_paths.iter().map(|p| (p.clone(), Source::Constitution)));
    out.extend(ethos.benchmark_paths.iter().map(|p| (p.clone(), Source::Benchmark)));
    out
}

/// The class of protected `path`, matched by a pattern from `source`: the benchmark's paths are
/// the benchmark wherever else they are listed; a path the constitution protects is classed by
/// what it names, and one under the trusted tests or the append-only paths is a test.
pub fn class_of(path: &str, source: Source, constitution: &Constitution, ethos: &Ethos) -> PathClass {
    if source == Source::Governance {
        return PathClass::Governance;
    }
    if source == Source::Benchmark || ethos.benchmark_paths.iter().any(|p| matches(p, path)) {
        return PathClass::Benchmark;
    }
    match PathClass::of_path(path) {
        PathClass::Other
            if ethos.trusted_tests.iter().chain(&constitution.append_only_paths).any(|p| matches(p, path)) =>
        {
            PathClass::Tests
        }
        class => class,
    }
}

fn matches(pattern: &str, path: &str) -> bool {
    pattern == path || glob_match(pattern, path)
}

/// A finding about one changed file, citing its first changed line and quoting the change.
fn file_finding(rail: &str, change: &FileChange, message: String, why: String) -> Finding {
    Finding {
        rail: rail.into(),
        severity: Severity::Block,
        file: Some(change.path.clone()),
        line: change.first_line(),
        message,
        evidence: format!("{why}\n{}", change.excerpt(EXCERPT_LINES)),
        class: None,
    }
}

pub fn protected_paths(changes: &[FileChange], constitution: &Constitution, ethos: &Ethos) -> Vec<Finding> {
    let patterns = protected_patterns(constitution, ethos);
    let mut out = Vec::new();
    for change in changes {
        let hit = change
            .paths()
            .find_map(|path| patterns.iter().find(|(p, _)| matches(p, path)).map(|(p, source)| (path, p, *source)));
        if let Some((path, pattern, source)) = hit {
            let class = class_of(path, source, constitution, ethos);
            let mut f = file_finding(
                PROTECTED_PATH,
                change,
                format!("tampering ({class}): touches protected path {path} ({})", change.status.as_str()),
                format!("{path} matches `{pattern}` ({}; class {class})", source.describe()),
            );
            f.class = Some(class);
            out.push(f);
        }
    }
    out
}

pub fn rules(changes: &[FileChange], constitution: &Constitution) -> Vec<Finding> {
    let mut out = Vec::new();
    for change in changes {
        let hit = change.paths().find_map(|path| {
            constitution.rules.iter().find_map(|rule| {
                rule.forbid_paths.iter().find(|p| matches(p, path)).map(|pattern| (path, rule, pattern))
            })
        });
        if let Some((path, rule, pattern)) = hit {
            out.push(file_finding(
                RULE,
                change,
                format!("touches {path}, forbidden by rule {}: {}", rule.id, rule.text),
                format!("{path} matches `{pattern}` (constitution.md rules[id = {:?}].forbid_paths)", rule.id),
            ));
        }
    }
    out
}

pub fn size(changes: &[FileChange], constitution: &Constitution) -> Vec<Finding> {
    let lines: u64 = changes.iter().map(|c| c.added + c.removed).sum();
    let mut by_size: Vec<&FileChange> = changes.iter().collect();
    by_size.sort_by_key(|c| std::cmp::Reverse(c.added + c.removed));
    let table = |max: usize| {
        let mut t: Vec<String> = by_size
            .iter()
            .take(max)
            .map(|c| {
                if c.binary {
                    format!("{}: binary", c.path)
                } else {
                    format!("{}: +{} -{}", c.path, c.added, c.removed)
                }
            })
            .collect();
        if by_size.len() > max {
            t.push(format!("... and {} more files", by_size.len() - max));
        }
        t.join("\n")
    };
    let mut out = Vec::new();
    if lines > constitution.max_diff_lines {
        let largest = by_size.first().expect("more than 0 changed lines means at least one file");
        out.push(Finding {
            rail: SIZE.into(),
            severity: Severity::Block,
            file: Some(largest.path.clone()),
            line: largest.first_line(),
            message: format!(
                "the diff changes {lines} lines, over the limit of {} (constitution.md max_diff_lines); largest: {}",
                constitution.max_diff_lines, largest.path
            ),
            evidence: table(20),
            class: None,
        });
    }
    if changes.len() as u64 > constitution.max_files_changed {
        out.push(Finding {
            rail: SIZE.into(),
            severity: Severity::Block,
            file: None,
            line: None,
            message: format!(
                "the diff changes {} files, over the limit of {} (constitution.md max_files_changed)",
                changes.len(),
                constitution.max_files_changed
            ),
            evidence: table(changes.len()),
            class: None,
        });
    }
    out
}

/// Every changed path (both sides of a rename) must match a file or glob the proposal declared.
/// A proposal that declared nothing is "scope unverified": one finding, blocking unless the
/// constitution says `unverified_scope = "warn"`.
pub fn scope(changes: &[FileChange], declaration: Option<&Declaration>, unverified: UnverifiedScope) -> Vec<Finding> {
    let Some(declaration) = declaration else {
        if changes.is_empty() {
            return vec![];
        }
        let (severity, consequence) = match unverified {
            UnverifiedScope::Block => (Severity::Block, "blocks (constitution.md unverified_scope = \"block\")"),
            UnverifiedScope::Warn => (Severity::Warn, "warns (constitution.md unverified_scope = \"warn\")"),
        };
        let listed: Vec<String> =
            changes.iter().map(|c| format!("{}:{}", c.path, c.first_line().unwrap_or(1))).collect();
        return vec![Finding {
            rail: SCOPE.into(),
            severity,
            file: None,
            line: None,
            message: format!(
                "scope unverified: the proposal declared nothing, so its diff ({} file{}) cannot be checked against what it meant to change",
                changes.len(),
                if changes.len() == 1 { "" } else { "s" }
            ),
            evidence: format!(
                "no declaration ({} for a command program, the declaration field for a model); this {consequence}\nchanged: {}",
                protocol::rails::DECLARATION_FILE,
                listed.join(", ")
            ),
            class: None,
        }];
    };
    let declared_list = format!("declared: {}", declaration.scope().collect::<Vec<_>>().join(", "));
    let mut out = Vec::new();
    for change in changes {
        let undeclared: Vec<&str> = change.paths().filter(|p| !declaration.covers(p)).collect();
        if !undeclared.is_empty() {
            out.push(file_finding(
                SCOPE,
                change,
                format!("{} is outside the proposal's declared files", undeclared.join(" and ")),
                declared_list.clone(),
            ));
        }
    }
    out
}

/// The base's lines a hunk removes, numbered, and what replaces them, for evidence.
fn cite_hunk(path: &str, h: &crate::diff::Hunk) -> Vec<String> {
    let mut lines: Vec<String> = h
        .removed
        .iter()
        .enumerate()
        .map(|(i, l)| format!("base {path}:{}: -{}", h.old_start as usize + i, truncate(l, 160)))
        .collect();
    lines.extend(
        h.added
            .iter()
            .enumerate()
            .map(|(i, l)| format!("candidate {path}:{}: +{}", h.new_start as usize + i, truncate(l, 160))),
    );
    lines
}

fn capped(lines: Vec<String>) -> String {
    let n = lines.len();
    let mut out: Vec<String> = lines.into_iter().take(CITED_LINES).collect();
    if n > CITED_LINES {
        out.push(format!("... and {} more lines", n - CITED_LINES));
    }
    out.join("\n")
}

/// Under `constitution.append_only_paths` a candidate may add files and lines, never delete,
/// change, move or retype what the base has. One finding per hunk that removes or changes the
/// base's lines (at most [`HUNKS_CITED`] per file), citing each of them with its line number in
/// the base and what the candidate put in its place.
pub fn append_only(changes: &[FileChange], constitution: &Constitution) -> Vec<Finding> {
    let patterns = &constitution.append_only_paths;
    let mut out = Vec::new();
    for change in changes {
        if matches!(change.status, ChangeStatus::Added | ChangeStatus::Copied) {
            continue; // new files may be added anywhere
        }
        let base_path = change.old_path.as_deref().unwrap_or(&change.path);
        let Some(pattern) = patterns.iter().find(|p| matches(p, base_path)) else { continue };
        let class = Some(PathClass::of_path(base_path));
        let why = format!(
            "{base_path} matches `{pattern}` (constitution.md append_only_paths: tests may grow, not shrink or change)"
        );
        let whole = |message: String, evidence: String| Finding {
            rail: APPEND_ONLY.into(),
            severity: Severity::Block,
            file: Some(base_path.to_string()),
            line: change.hunks.first().map(|h| h.old_start.max(1)).or(Some(1)),
            message,
            evidence: format!("{why}\n{evidence}"),
            class,
        };
        match change.status {
            ChangeStatus::Deleted => {
                let lines: Vec<String> = change.hunks.iter().flat_map(|h| cite_hunk(base_path, h)).collect();
                out.push(whole(
                    format!("deletes {base_path} ({} lines), under append-only `{pattern}`", change.removed),
                    capped(lines),
                ));
                continue;
            }
            ChangeStatus::Renamed => {
                out.push(whole(
                    format!("moves {base_path} to {}, under append-only `{pattern}`", change.path),
                    format!("renamed {base_path} -> {} (+{} -{})", change.path, change.added, change.removed),
                ));
                continue;
            }
            ChangeStatus::TypeChanged | ChangeStatus::Other => {
                out.push(whole(
                    format!("changes the type of {base_path}, under append-only `{pattern}`"),
                    change.excerpt(EXCERPT_LINES),
                ));
                continue;
            }
            _ if change.binary => {
                out.push(whole(
                    format!("changes the binary file {base_path}, under append-only `{pattern}`"),
                    change.excerpt(EXCERPT_LINES),
                ));
                continue;
            }
            _ => {}
        }
        let touching: Vec<&crate::diff::Hunk> = change.hunks.iter().filter(|h| !h.removed.is_empty()).collect();
        let n = touching.len();
        for (i, h) in touching.into_iter().enumerate().take(HUNKS_CITED) {
            let what = if h.added.is_empty() { "deletes" } else { "changes" };
            let count = h.removed.len();
            let mut evidence = capped(cite_hunk(base_path, h));
            if i + 1 == HUNKS_CITED && n > HUNKS_CITED {
                evidence.push_str(&format!("\n... and {} more hunks that remove or change lines", n - HUNKS_CITED));
            }
            out.push(Finding {
                rail: APPEND_ONLY.into(),
                severity: Severity::Block,
                file: Some(base_path.to_string()),
                line: Some(h.old_start.max(1)),
                message: format!(
                    "{what} {count} existing line{} of {base_path} (base line {}), under append-only `{pattern}`",
                    if count == 1 { "" } else { "s" },
                    h.old_start.max(1)
                ),
                evidence: format!("{why}\n{evidence}"),
                class,
            });
        }
    }
    out
}

/// Every test the proposal declared must appear in the diff as a file it adds or changes (with
/// added lines): a claimed test that is not there is a false claim.
pub fn claims(changes: &[FileChange], declaration: Option<&Declaration>) -> Vec<Finding> {
    let Some(d) = declaration else { return vec![] };
    let mut out = Vec::new();
    for test in &d.tests {
        let change = changes.iter().find(|c| c.path == *test);
        let problem = match change {
            None => "is not in the diff".to_string(),
            Some(c) if c.status == ChangeStatus::Deleted => "is deleted, not added".to_string(),
            Some(c) if c.added == 0 && !c.binary => format!("only loses lines ({})", c.status.as_str()),
            Some(_) => continue,
        };
        let changed: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        out.push(Finding {
            rail: CLAIM.into(),
            severity: Severity::Block,
            file: Some(test.clone()),
            line: change.and_then(FileChange::first_line),
            message: format!("declared test {test} {problem}: the proposal claims a test it does not add"),
            evidence: format!("declared tests: {}\nchanged: {}", d.tests.join(", "), changed.join(", ")),
            class: None,
        });
    }
    out
}

/// A changed file a test runner loads on its own, outside `ethos.trusted_tests` (when there are
/// trusted tests): the baseline's tests would run with the candidate's copy of it. One blocking
/// finding per file, naming who loads it and the fix.
pub fn test_config(changes: &[FileChange], ethos: &Ethos) -> Vec<Finding> {
    if ethos.trusted_tests.is_empty() {
        return vec![];
    }
    let mut out = Vec::new();
    for change in changes {
        let hit = change.paths().find_map(|path| {
            let trusted = ethos.trusted_tests.iter().any(|g| matches(g, path));
            runner_file(path).filter(|_| !trusted).map(|who| (path, who))
        });
        if let Some((path, who)) = hit {
            out.push(file_finding(
                TEST_CONFIG,
                change,
                format!(
                    "{} {path}, which a test runner loads on its own, outside the baseline's tests: they would run with the candidate's copy",
                    match change.status {
                        ChangeStatus::Added => "adds",
                        ChangeStatus::Deleted => "deletes",
                        _ => "changes",
                    }
                ),
                format!(
                    "{path}: {who}; ethos.md trusted_tests ({}) does not cover it; fix: list it there (e.g. `**/{}`) so the base's copy runs with the baseline's tests, or leave it unchanged",
                    ethos.trusted_tests.join(", "),
                    path.rsplit('/').next().unwrap_or(path)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::runner_file;

    /// A runner file counts at any depth (cargo reads `.cargo/config.toml` in every parent of
    /// where it runs, pytest every `conftest.py` on its way), and only by its whole name.
    #[test]
    fn runner_files_at_any_depth_by_their_whole_name() {
        for path in [".cargo/config.toml", "crates/x/.cargo/config.toml", "crates/x/.cargo/config", "a/b/conftest.py"] {
            assert!(runner_file(path).is_some(), "{path}");
        }
        for path in ["x.cargo/config.toml", "crates/x/cargo/config.toml", "src/notconftest.py", "conftest.py.bak"] {
            assert!(runner_file(path).is_none(), "{path}");
        }
    }
}
