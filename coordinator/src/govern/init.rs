//! `ratchet init`: make an existing git repository a swarm home in one step.
//!
//! Writes agents.toml and the three governance documents from commented templates (embedded in
//! the binary; the gates are guessed from the project's build files), adds `worktrees/` to
//! .gitignore, and records the documents as the first approved versions. Existing files are kept
//! (never overwritten) unless `--force`; a kept document that was approved before keeps its
//! approval, so a pending edit stays pending. Nothing is committed to `main`.

use std::path::Path;

use anyhow::{Context, bail};
use protocol::governance::{DOCS, TrustedCheckout};
use serde::Serialize;

use super::approve::{ApproveOutcome, approve_all_initial, approve_texts};
use super::store::Store;
use super::write_atomic;

pub const AGENTS_TEMPLATE: &str = include_str!("../../templates/agents.toml");
pub const CONSTITUTION_TEMPLATE: &str = include_str!("../../templates/constitution.md");
pub const ETHOS_TEMPLATE: &str = include_str!("../../templates/ethos.md");
pub const CADENCE_TEMPLATE: &str = include_str!("../../templates/cadence.md");

#[derive(Debug, Clone, Serialize)]
pub struct InitOutcome {
    pub home: String,
    pub written: Vec<String>,
    /// Files that existed and were left as they are (no --force).
    pub kept: Vec<String>,
    pub gitignore_updated: bool,
    pub approvals: Vec<ApproveOutcome>,
    /// ethos.md `trusted_checkout` as init chose it for this project, and why.
    pub trusted_checkout: TrustedChoice,
}

/// Where init put the baseline's tests (ethos.md `trusted_checkout`), and why.
#[derive(Debug, Clone, Serialize)]
pub struct TrustedChoice {
    pub checkout: TrustedCheckout,
    pub why: String,
}

/// Gates and test command for the project at `home`, guessed from its build files.
fn gates_for(home: &Path) -> (Vec<&'static str>, &'static str) {
    let has = |f: &str| home.join(f).exists();
    if has("Cargo.toml") {
        (vec!["cargo build --release", "cargo test --release"], "cargo test --release")
    } else if has("go.mod") {
        (vec!["go build ./...", "go test ./..."], "go test ./...")
    } else if has("package.json") {
        (vec!["npm test"], "npm test")
    } else if has("pyproject.toml") || has("setup.py") {
        (vec!["python3 -m pytest -q"], "python3 -m pytest -q")
    } else if has("Makefile") {
        (vec!["make", "make test"], "make test")
    } else {
        (vec!["scripts/test"], "scripts/test")
    }
}

/// Where the project at `home` keeps its tests, as globs: the test directories that exist
/// (`tests/`, `test/`, `spec/`, `__tests__/`) and the test-file patterns of its language (Go's
/// `*_test.go`, JavaScript's `*.test.*` and `*.spec.*`, Python's `test_*.py` and `conftest.py`); `tests/**` when
/// nothing is found. Used for constitution.md `append_only_paths` and ethos.md `trusted_tests`.
pub fn test_paths_for(home: &Path) -> Vec<String> {
    let mut out: Vec<String> = ["tests", "test", "spec", "__tests__"]
        .iter()
        .filter(|d| home.join(d).is_dir())
        .map(|d| format!("{d}/**"))
        .collect();
    let has = |f: &str| home.join(f).exists();
    if has("go.mod") {
        out.push("**/*_test.go".into());
    }
    if has("package.json") {
        out.extend(["**/*.test.*".into(), "**/*.spec.*".into()]);
    }
    if has("pyproject.toml") || has("setup.py") {
        // pytest loads every conftest.py on its way to the tests: part of the tests.
        out.extend(["**/test_*.py".into(), "**/conftest.py".into()]);
    }
    if out.is_empty() {
        out.push("tests/**".into());
    }
    out
}

/// Where the baseline's tests should run for the project at `home` (ethos.md
/// `trusted_checkout`), and why: `fresh` where the build directories a gate writes and the base
/// ignores can hold code a test runner loads on its own, so that reusing them would let a gate
/// plant it, and a fresh checkout needs nothing from the network to run the tests; `reuse`
/// otherwise, saying what closing it would take.
pub fn trusted_checkout_for(home: &Path) -> (TrustedCheckout, &'static str) {
    let has = |f: &str| home.join(f).exists();
    let venv =
        std::fs::read_dir(home).map(|rd| rd.flatten().any(|e| e.path().join("pyvenv.cfg").is_file())).unwrap_or(false);
    if has("pyproject.toml") || has("setup.py") || has("setup.cfg") || has("requirements.txt") || venv {
        (
            TrustedCheckout::Fresh,
            "a Python project: Python runs every `.pth` and `sitecustomize.py` of a virtualenv at start, and pytest every \
             `conftest.py` it collects, so a gate could plant one in an ignored build directory; the tests run without \
             network, so a fresh checkout costs little (give trusted_build the commands that make a virtualenv, if the \
             tests need one)",
        )
    } else if has("package.json") {
        (
            TrustedCheckout::Reuse,
            "a Node project: `node_modules/` holds code the test runner loads, but a fresh checkout must reinstall it \
             (`npm ci`), which needs the network the sandbox denies by default; to close it, set trusted_checkout = \
             \"fresh\", trusted_build = [\"npm ci\"] and constitution.md allow_network = true",
        )
    } else if has("Cargo.toml") {
        (
            TrustedCheckout::Reuse,
            "a Rust project: a fresh checkout rebuilds `target/` from scratch for every candidate (a full compile); the \
             reused `target/` is trusted as the candidate's build (cargo decides freshness by timestamps, so a gate could \
             leave there a binary cargo reuses): set trusted_checkout = \"fresh\" if that matters more than the time",
        )
    } else if has("go.mod") {
        (
            TrustedCheckout::Reuse,
            "a Go project: Go keeps its build in its cache outside the checkout, keyed by content, so no ignored file of \
             the checkout holds code `go test` loads",
        )
    } else {
        (
            TrustedCheckout::Reuse,
            "no build directory whose code a test runner loads on its own was recognised: set trusted_checkout = \
             \"fresh\" if the ignored build directories hold code the tests load",
        )
    }
}

/// The four files `init` writes for `home`: (name, text).
pub fn templates(home: &Path) -> Vec<(&'static str, String)> {
    let (gates, test) = gates_for(home);
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let list = |items: &[String]| format!("[{}]", items.iter().map(|i| q(i)).collect::<Vec<_>>().join(", "));
    let tests = list(&test_paths_for(home));
    let gates_toml = format!("[{}]", gates.iter().map(|g| q(g)).collect::<Vec<_>>().join(", "));
    let prose = gates.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", then ");
    let ethos = ETHOS_TEMPLATE
        .replace("{{GATES}}", &gates_toml)
        .replace("{{TEST_COMMAND}}", &q(test))
        .replace("{{GATES_PROSE}}", &prose)
        .replace("{{TRUSTED_TESTS}}", &tests)
        .replace("{{TRUSTED_CHECKOUT}}", &q(trusted_checkout_for(home).0.as_str()));
    vec![
        ("agents.toml", AGENTS_TEMPLATE.to_string()),
        ("constitution.md", CONSTITUTION_TEMPLATE.replace("{{APPEND_ONLY}}", &tests)),
        ("ethos.md", ethos),
        ("cadence.md", CADENCE_TEMPLATE.to_string()),
    ]
}

pub fn init(home: &Path, force: bool, by: Option<&str>) -> anyhow::Result<InitOutcome> {
    let store = Store::new(home);
    if !store.is_repository() {
        bail!("{} is not a git repository; fix: `git init` it first (or pass --repo PATH)", home.display());
    }
    let by = match by.map(str::trim).filter(|b| !b.is_empty()) {
        Some(b) => b.to_string(),
        None => store.identity().context(
            "who approves the first versions? no git identity is configured; fix: pass --by NAME or set one (git config user.name ...; git config user.email ...)",
        )?,
    };
    let mut written = vec![];
    let mut kept = vec![];
    for (name, text) in templates(home) {
        let path = home.join(name);
        if path.exists() && !force {
            kept.push(name.to_string());
            continue;
        }
        write_atomic(&path, text.as_bytes())?;
        written.push(name.to_string());
    }
    let gitignore = home.join(".gitignore");
    let mut ignore = match std::fs::read_to_string(&gitignore) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", gitignore.display())),
    };
    let ignored = ignore.lines().any(|l| matches!(l.trim(), "worktrees/" | "worktrees" | "/worktrees/" | "/worktrees"));
    if !ignored {
        if !ignore.is_empty() && !ignore.ends_with('\n') {
            ignore.push('\n');
        }
        ignore.push_str("worktrees/\n");
        write_atomic(&gitignore, ignore.as_bytes())?;
    }
    // Documents written now are approved as written (with --force they replace an approval);
    // documents kept are approved only if they never were.
    let fresh: Vec<&str> = DOCS.iter().copied().filter(|d| written.iter().any(|w| w == d)).collect();
    let mut approvals = if fresh.is_empty() { vec![] } else { approve_texts(home, &fresh, &by)? };
    approvals.extend(approve_all_initial(home, &by).with_context(|| {
        format!("the files are written ({}), but a kept document cannot be approved", written.join(", "))
    })?);
    let (checkout, why) = trusted_checkout_for(home);
    Ok(InitOutcome {
        home: home.display().to_string(),
        written,
        kept,
        gitignore_updated: !ignored,
        approvals,
        trusted_checkout: TrustedChoice { checkout, why: why.to_string() },
    })
}

/// The human rendering of an init.
pub fn render(o: &InitOutcome) -> String {
    let mut s = format!("ratchet init in {}\n", o.home);
    for w in &o.written {
        s.push_str(&format!("  wrote {w}\n"));
    }
    for k in &o.kept {
        s.push_str(&format!("  kept {k} (it exists; --force overwrites it)\n"));
    }
    if o.gitignore_updated {
        s.push_str("  added worktrees/ to .gitignore\n");
    }
    if o.written.iter().any(|w| w == "ethos.md") {
        s.push_str(&format!(
            "  the baseline's tests: trusted_checkout = \"{}\" in ethos.md: {}\n",
            o.trusted_checkout.checkout.as_str(),
            o.trusted_checkout.why
        ));
    }
    for a in &o.approvals {
        if a.recorded {
            s.push_str(&format!("  approved {} ({}) by {}\n", a.doc, &a.sha256[..12], a.approved_by));
        }
    }
    s.push_str(
        "next: edit ethos.md (goal, benchmark) and cadence.md (proposer), `ratchet approve <doc>` each edit, \
         commit the files, then `ratchet up`\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new directory holding an empty file `name`.
    fn dir_with(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), "").unwrap();
        dir
    }

    fn ethos_of(home: &Path) -> String {
        templates(home).into_iter().find(|(n, _)| *n == "ethos.md").unwrap().1
    }

    #[test]
    fn templates_validate() {
        let dir = std::env::temp_dir().join(format!("ratchet-init-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in templates(&dir) {
            if name.ends_with(".md") {
                super::super::validate(name, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
            } else {
                protocol::config::AgentsFile::parse(&text, name).unwrap();
            }
        }
        let constitution = &templates(&dir).into_iter().find(|(n, _)| *n == "constitution.md").unwrap().1;
        assert!(constitution.contains("append_only_paths = [\"tests/**\"]"), "{constitution}");
        assert!(constitution.contains("unverified_scope = \"block\""), "{constitution}");
        std::fs::write(dir.join("Cargo.toml"), "").unwrap();
        std::fs::write(dir.join("go.mod"), "").unwrap();
        std::fs::create_dir_all(dir.join("test")).unwrap();
        let t = templates(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let ethos = &t.iter().find(|(n, _)| *n == "ethos.md").unwrap().1;
        assert!(ethos.contains("gates = [\"cargo build --release\", \"cargo test --release\"]"), "{ethos}");
        assert!(ethos.contains("trusted_tests = [\"test/**\", \"**/*_test.go\"]"), "{ethos}");
        super::super::validate("ethos.md", ethos).unwrap();
        let constitution = &t.iter().find(|(n, _)| *n == "constitution.md").unwrap().1;
        let parsed = protocol::governance::parse_constitution(constitution).unwrap();
        assert_eq!(parsed.append_only_paths, ["test/**", "**/*_test.go"]);
        let python = std::env::temp_dir().join(format!("ratchet-init-python-{}", std::process::id()));
        std::fs::create_dir_all(&python).unwrap();
        std::fs::write(python.join("pyproject.toml"), "").unwrap();
        assert_eq!(test_paths_for(&python), ["**/test_*.py", "**/conftest.py"]);
        // A Python project's baseline tests run in a fresh checkout; the others say why not.
        let ethos = &templates(&python).into_iter().find(|(n, _)| *n == "ethos.md").unwrap().1;
        assert!(ethos.contains("\ntrusted_checkout = \"fresh\"\n"), "{ethos}");
        let parsed = protocol::governance::parse_ethos(ethos).unwrap();
        assert_eq!(parsed.trusted_checkout, TrustedCheckout::Fresh);
        std::fs::remove_dir_all(&python).unwrap();
        assert!(ethos_of(dir_with("Cargo.toml").path()).contains("\ntrusted_checkout = \"reuse\"\n"));
        let (checkout, why) = trusted_checkout_for(dir_with("package.json").path());
        assert_eq!(checkout, TrustedCheckout::Reuse);
        assert!(why.contains("npm ci") && why.contains("allow_network"), "{why}");
        // A virtualenv alone says Python.
        let venv = dir_with("README");
        std::fs::create_dir_all(venv.path().join(".venv")).unwrap();
        std::fs::write(venv.path().join(".venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        assert_eq!(trusted_checkout_for(venv.path()).0, TrustedCheckout::Fresh);
    }
}
