//! What the critic's rails check a proposal against: its [`Declaration`] (declare, then verify)
//! and the class of a protected path it touched ([`PathClass`]).
//!
//! Every proposal carries a declaration: the files (or globs) it will touch, a one-line
//! rationale, and optionally its claims: the tests it adds or changes (each must appear in the
//! diff and fail on the code before the change) and the direction of the effect it expects. The
//! `sweep` strategy declares its config file; a `command` program writes
//! [`DECLARATION_FILE`] (TOML) in its checkout; an `openai` answer carries the same fields as
//! JSON. Both forms are parsed and validated here, so every process reads them the same way.

use serde::{Deserialize, Serialize};

/// Where a `command` program writes its declaration, relative to its checkout. The proposer
/// reads and removes it before it takes the diff: it is never part of a candidate.
pub const DECLARATION_FILE: &str = ".ratchet/proposal.toml";

/// The environment variable holding the absolute path of [`DECLARATION_FILE`].
pub const DECLARATION_ENV: &str = "RATCHET_DECLARATION_FILE";

/// Most entries in `files` or `tests`.
pub const MAX_ENTRIES: usize = 200;
/// Longest rationale, in characters.
pub const MAX_RATIONALE: usize = 300;
/// Longest path or glob, in bytes.
const MAX_PATH: usize = 400;

/// What a proposal says it does, before anyone looks at its diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// Repository-relative files or globs (`*` within a path component, `**` across them) the
    /// change touches. The critic blocks a changed file that none of these (nor `tests`) covers.
    pub files: Vec<String>,
    /// One line: why this change should move the metric.
    pub rationale: String,
    /// Test files the change adds or changes (plain paths). Each must appear in the diff with
    /// added lines, and fail on the code before the change (the bite check runs each alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<String>,
    /// The effect on the metric the change expects, recorded beside the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
}

/// The direction of the effect a proposal expects on the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// The metric gets better (in ethos.md's direction).
    Better,
    /// No change that matters (a refactor, a test).
    Same,
    /// Worse (a trade-off the proposal accepts).
    Worse,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Better => "better",
            Effect::Same => "same",
            Effect::Worse => "worse",
        }
    }
}

/// A refused declaration: where it came from, which field, what is wrong and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {field}: {problem}; fix: {fix}")]
pub struct DeclarationError {
    /// The file or answer it came from (e.g. `.ratchet/proposal.toml`).
    pub source_name: String,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl Declaration {
    /// Parse and validate a declaration file's TOML text; `source_name` names it in errors.
    pub fn from_toml(source_name: &str, text: &str) -> Result<Declaration, DeclarationError> {
        let d: Declaration = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let field = crate::governance::toml_error_field(text, &e, "declaration");
            DeclarationError {
                source_name: source_name.into(),
                field,
                problem: msg.trim().to_string(),
                fix: format!(
                    "write TOML with the keys files, rationale and optionally tests and effect, e.g.\n{}",
                    EXAMPLE_TOML
                ),
            }
        })?;
        d.check(source_name)?;
        Ok(d)
    }

    /// Parse and validate a declaration given as JSON (an `openai` answer's `declaration`).
    pub fn from_json(source_name: &str, value: &serde_json::Value) -> Result<Declaration, DeclarationError> {
        let d: Declaration = serde_json::from_value(value.clone()).map_err(|e| DeclarationError {
            source_name: source_name.into(),
            field: "declaration".into(),
            problem: e.to_string(),
            fix: "give an object with files (a list of paths), rationale (one line) and optionally tests (a list of \
                  test files) and effect (better, same or worse)"
                .into(),
        })?;
        d.check(source_name)?;
        Ok(d)
    }

    /// The checks every declaration passes, whatever its form.
    pub fn check(&self, source_name: &str) -> Result<(), DeclarationError> {
        let bad = |field: &str, problem: String, fix: &str| {
            Err(DeclarationError { source_name: source_name.into(), field: field.into(), problem, fix: fix.into() })
        };
        if self.files.is_empty() && self.tests.is_empty() {
            return bad(
                "files",
                "no file is declared".into(),
                "list every file the change touches (globs allowed), e.g. files = [\"src/sort.rs\"]",
            );
        }
        if self.files.len() > MAX_ENTRIES || self.tests.len() > MAX_ENTRIES {
            return bad(
                "files",
                format!("more than {MAX_ENTRIES} entries"),
                "declare directories with a glob (\"src/parser/**\") rather than every file",
            );
        }
        for (field, list) in [("files", &self.files), ("tests", &self.tests)] {
            for p in list {
                if let Some(problem) = path_problem(p) {
                    return bad(
                        field,
                        format!("{p:?} {problem}"),
                        "use paths relative to the repository root with / between components, e.g. \"src/sort.rs\"",
                    );
                }
            }
        }
        if let Some(t) = self.tests.iter().find(|t| t.contains(['*', '?', '['])) {
            return bad(
                "tests",
                format!("{t:?} is a glob"),
                "name each test file the change adds or changes; a claim is checked file by file",
            );
        }
        let r = self.rationale.trim();
        if r.is_empty() {
            return bad(
                "rationale",
                "the rationale is empty".into(),
                "say in one line why the change should move the metric",
            );
        }
        if r.contains('\n') {
            return bad("rationale", "the rationale spans several lines".into(), "keep it to one line");
        }
        if r.chars().count() > MAX_RATIONALE {
            return bad(
                "rationale",
                format!("the rationale has {} characters, over {MAX_RATIONALE}", r.chars().count()),
                "keep it to one short line",
            );
        }
        Ok(())
    }

    /// Every pattern the scope rail accepts a changed file under: `files`, then `tests`.
    pub fn scope(&self) -> impl Iterator<Item = &str> {
        self.files.iter().chain(&self.tests).map(String::as_str)
    }

    /// Whether `path` is covered by the declared scope.
    pub fn covers(&self, path: &str) -> bool {
        self.scope().any(|p| p == path || crate::governance::glob_match(p, path))
    }

    /// The declaration as TOML (how a `command` program writes it).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a declaration serializes to TOML")
    }
}

/// Why `p` is not a repository-relative path or glob, if it is not.
fn path_problem(p: &str) -> Option<&'static str> {
    if p.trim().is_empty() {
        return Some("is empty");
    }
    if p.len() > MAX_PATH {
        return Some("is too long");
    }
    if p.starts_with('/') || p.contains('\\') || p.contains('\0') || p.contains('\n') {
        return Some("is not a relative path with / separators");
    }
    let p = p.trim_start_matches("./");
    if p.split('/').any(|c| c == ".." || c == ".git") {
        return Some("leaves the repository or names .git");
    }
    None
}

/// The example a `command` program and the README show.
pub const EXAMPLE_TOML: &str = r#"# .ratchet/proposal.toml: what this change touches and why
files = ["src/sort.rs", "tests/sort_small.rs"]   # every file the diff touches (globs allowed)
rationale = "insertion sort below 16 elements avoids the recursion overhead"
tests = ["tests/sort_small.rs"]                  # optional: tests added or changed; each must fail without the change
effect = "better"                                # optional: better | same | worse
"#;

/// What kind of protected path a candidate touched: the evidence names it, so a person sees
/// at once that a candidate tampered with its own measurement or with the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathClass {
    /// constitution.md, ethos.md, cadence.md, agents.toml.
    Governance,
    /// ethos.md `benchmark_paths`.
    Benchmark,
    /// Continuous integration configuration.
    Ci,
    /// Tests and their runners.
    Tests,
    /// Any other protected path.
    Other,
}

impl PathClass {
    pub fn as_str(self) -> &'static str {
        match self {
            PathClass::Governance => "governance",
            PathClass::Benchmark => "benchmark",
            PathClass::Ci => "CI",
            PathClass::Tests => "tests",
            PathClass::Other => "other",
        }
    }

    /// The class of a protected `path` by what it names (for a pattern of constitution.md's
    /// `protected_paths`, whose purpose the constitution does not state): governance documents
    /// and agents.toml, CI configuration (`.github/`, `.gitlab-ci.yml`, `.ci/`, `ci/`,
    /// `.circleci/`, `.travis.yml`, `Jenkinsfile`, `azure-pipelines.yml`, `.buildkite/`), tests
    /// (a `tests`, `test`, `spec` or `__tests__` directory, a `*_test.*`, `test_*.*`, `*.test.*`
    /// or `*.spec.*` file), else other.
    pub fn of_path(path: &str) -> PathClass {
        let path = path.trim_start_matches("./");
        let mut parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let name = parts.pop().unwrap_or("");
        if parts.is_empty() && (crate::governance::DOCS.contains(&name) || name == "agents.toml") {
            return PathClass::Governance;
        }
        let ci_dirs = [".github", ".gitlab", ".ci", "ci", ".circleci", ".buildkite", ".woodpecker"];
        let ci_files = [".gitlab-ci.yml", ".travis.yml", "Jenkinsfile", "azure-pipelines.yml", ".drone.yml"];
        if parts.first().is_some_and(|d| ci_dirs.contains(d)) || (parts.is_empty() && ci_files.contains(&name)) {
            return PathClass::Ci;
        }
        let glob = crate::governance::glob_match;
        if parts.iter().any(|d| matches!(*d, "tests" | "test" | "spec" | "__tests__"))
            || ["*_test.*", "test_*.*", "*.test.*", "*.spec.*"].iter().any(|g| glob(g, name))
        {
            return PathClass::Tests;
        }
        PathClass::Other
    }
}

impl std::fmt::Display for PathClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_round_trips() {
        let d = Declaration::from_toml(DECLARATION_FILE, EXAMPLE_TOML).unwrap();
        assert_eq!(d.files, ["src/sort.rs", "tests/sort_small.rs"]);
        assert_eq!(d.tests, ["tests/sort_small.rs"]);
        assert_eq!(d.effect, Some(Effect::Better));
        assert_eq!(Declaration::from_toml("x", &d.to_toml()).unwrap(), d);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(Declaration::from_json("answer", &json).unwrap(), d);
        assert!(d.covers("src/sort.rs") && d.covers("tests/sort_small.rs") && !d.covers("src/other.rs"));
        let glob = Declaration { files: vec!["src/**".into()], ..d };
        assert!(glob.covers("src/a/b.rs") && !glob.covers("README.md"));
    }

    #[test]
    fn bad_declarations_name_the_field_and_the_fix() {
        let cases = [
            ("files = []\nrationale = \"r\"\n", "files: no file is declared"),
            ("files = [\"a\"]\n", "rationale"),
            ("files = [\"a\"]\nrationale = \"\"\n", "rationale: the rationale is empty"),
            ("files = [\"a\"]\nrationale = \"one\\ntwo\"\n", "rationale: the rationale spans several lines"),
            ("files = [\"/etc/passwd\"]\nrationale = \"r\"\n", "files: \"/etc/passwd\" is not a relative path"),
            ("files = [\"../x\"]\nrationale = \"r\"\n", "leaves the repository"),
            ("files = [\"a\"]\nrationale = \"r\"\ntests = [\"tests/*\"]\n", "tests: \"tests/*\" is a glob"),
            ("files = [\"a\"]\nrationale = \"r\"\neffect = \"faster\"\n", "effect"),
            ("files = [\"a\"]\nrationale = \"r\"\nsummary = \"s\"\n", "summary"),
            ("files = \"a\"\nrationale = \"r\"\n", "files"),
        ];
        for (text, want) in cases {
            let e = Declaration::from_toml(DECLARATION_FILE, text).unwrap_err().to_string();
            assert!(e.starts_with(".ratchet/proposal.toml: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("; fix: "), "{e}");
        }
        let e = Declaration::from_json("the answer", &serde_json::json!({"files": ["a"]})).unwrap_err();
        assert!(e.to_string().contains("rationale"), "{e}");
    }

    #[test]
    fn protected_paths_are_classed_by_what_they_name() {
        for (p, c) in [
            ("constitution.md", PathClass::Governance),
            ("agents.toml", PathClass::Governance),
            ("docs/ethos.md", PathClass::Other),
            (".github/workflows/ci.yml", PathClass::Ci),
            (".gitlab-ci.yml", PathClass::Ci),
            (".ci/run", PathClass::Ci),
            ("Jenkinsfile", PathClass::Ci),
            ("tests/run.sh", PathClass::Tests),
            ("src/sort_test.go", PathClass::Tests),
            ("web/a.spec.ts", PathClass::Tests),
            ("src/lib.rs", PathClass::Other),
        ] {
            assert_eq!(PathClass::of_path(p), c, "{p}");
        }
        assert_eq!(serde_json::to_string(&PathClass::Ci).unwrap(), "\"ci\"");
        assert_eq!(PathClass::Ci.to_string(), "CI");
    }
}
