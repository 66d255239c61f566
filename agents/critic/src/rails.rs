//! The static rails: they read the diff only, never run anything.
//!
//! - `protected-path`: no changed path (nor the old path of a rename) matches a protected pattern: the three
//!   governance documents (always, even if the constitution forgot them), `constitution.protected_paths`
//!   and `ethos.benchmark_paths`.
//! - `rule`: likewise for every approved rule's `forbid_paths`; the finding names the rule.
//! - `size`: changed lines (added + removed; binary files count 0 lines) and changed files within the
//!   constitution's limits.
//! - `scope`: every changed path matches a file or glob the proposal declared.

use protocol::governance::{self, Constitution, Ethos, glob_match};

use crate::diff::FileChange;
use crate::{Finding, Severity};

pub const PROTECTED_PATH: &str = "protected-path";
pub const RULE: &str = "rule";
pub const SIZE: &str = "size";
pub const SCOPE: &str = "scope";

/// Lines of a hunk quoted in a finding's evidence.
const EXCERPT_LINES: usize = 6;

/// Every protected pattern with where it comes from, governance documents first.
pub fn protected_patterns(constitution: &Constitution, ethos: &Ethos) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> =
        governance::DOCS.iter().map(|d| (d.to_string(), "governance document (always protected)")).collect();
    out.extend(constitution.protected_paths.iter().map(|p| (p.clone(), "constitution.md protected_paths")));
    out.extend(ethos.benchmark_paths.iter().map(|p| (p.clone(), "ethos.md benchmark_paths")));
    out
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
            out.push(file_finding(
                PROTECTED_PATH,
                change,
                format!("touches protected path {path} ({})", change.status.as_str()),
                format!("{path} matches `{pattern}` ({source})"),
            ));
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
        });
    }
    out
}

/// Every changed path (both sides of a rename) must match a declared file or glob. A proposal that
/// declared nothing may change nothing.
pub fn scope(changes: &[FileChange], declared: &[String]) -> Vec<Finding> {
    let declared_list = if declared.is_empty() {
        "the proposal declared no files".to_string()
    } else {
        format!("declared: {}", declared.join(", "))
    };
    let mut out = Vec::new();
    for change in changes {
        let undeclared: Vec<&str> = change.paths().filter(|p| !declared.iter().any(|d| matches(d, p))).collect();
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
