//! Reviews of real candidates in real temporary git repositories. The target projects are small shell
//! projects, so the tests need nothing but `sh` and `git`.

use std::path::Path;

use protocol::governance::{Constitution, Direction, Ethos, Pairing, Rule, UnverifiedScope};
use protocol::rails::{Declaration, PathClass};

use crate::{ChangeStatus, ExecRunner, Review, Severity, diff_files, review, review_rails_only};

/// A temporary repository with hermetic git settings for the commands the test itself runs.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// The shell project every test starts from, committed on `main`.
    fn shell_project() -> Repo {
        let repo = Repo { dir: tempfile::tempdir().expect("temp dir") };
        repo.git(&["init", "--quiet", "-b", "main"]);
        repo.write("constitution.md", "# Constitution\n\nHard rules.\n");
        repo.write("ethos.md", "# Ethos\n\nHow we measure.\n");
        repo.write("cadence.md", "# Cadence\n\nHow often.\n");
        repo.write("bench/bench.sh", ". ./src/calc.sh\necho '{\"time\": 1}'\n");
        repo.write(".ci/check.sh", "sh run_tests.sh\n");
        repo.write("src/calc.sh", "add() {\n  echo $(($1 + $2))\n}\n");
        repo.write("run_tests.sh", "set -e\nfor t in tests/*.sh; do sh \"$t\"; done\n");
        repo.write("tests/test_add.sh", ". ./src/calc.sh\n[ \"$(add 1 2)\" = 3 ]\n");
        repo.commit("baseline");
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let git = kit::git::Git::new(self.path()).env("GIT_CONFIG_GLOBAL", "/dev/null").env("GIT_CONFIG_NOSYSTEM", "1");
        git.with_identity("Test", "test@example.invalid").run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.path().join(path);
        std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn append(&self, path: &str, text: &str) {
        let old = std::fs::read_to_string(self.path().join(path)).expect("read");
        self.write(path, &format!("{old}{text}"));
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Registered worktrees, the main one included.
    fn worktrees(&self) -> usize {
        self.git(&["worktree", "list", "--porcelain"]).lines().filter(|l| l.starts_with("worktree ")).count()
    }
}

fn constitution() -> Constitution {
    Constitution {
        protected_paths: vec![".ci/**".into()],
        max_diff_lines: 50,
        max_files_changed: 5,
        sandbox: protocol::governance::SandboxMode::Auto,
        weak_sandbox: protocol::governance::WeakSandbox::Refuse,
        allow_network: false,
        command_memory_mb: 0,
        rules: Vec::new(),
        models: Default::default(),
        model_review: Default::default(),
        jobs: Default::default(),
        append_only_paths: Vec::new(),
        unverified_scope: UnverifiedScope::Block,
    }
}

fn ethos() -> Ethos {
    Ethos {
        goal: "faster".into(),
        gates: vec!["sh run_tests.sh".into()],
        test_command: "sh run_tests.sh".into(),
        benchmark: "sh bench/bench.sh".into(),
        benchmark_paths: vec!["bench/**".into()],
        metric: "time".into(),
        direction: Direction::Lower,
        metric_pattern: None,
        confidence: 0.95,
        min_effect: 0.02,
        pairing: Pairing::Sequential,
        min_rounds: 5,
        max_rounds: 30,
        calibration_rounds: 8,
        measure: protocol::governance::Measure::Metric,
        count_tolerance: protocol::governance::DEFAULT_COUNT_TOLERANCE,
        guard_wall_time: false,
        gate_timeout_s: 60,
        bench_timeout_s: 60,
        guard: Vec::new(),
        review: None,
        trusted_tests: Vec::new(),
        trusted_checkout: Default::default(),
        trusted_build: vec![],
    }
}

/// A declaration of `files` (globs) and `tests`.
fn declared(files: &[&str], tests: &[&str]) -> Option<Declaration> {
    Some(Declaration {
        files: files.iter().map(|f| f.to_string()).collect(),
        rationale: "a test candidate".into(),
        tests: tests.iter().map(|f| f.to_string()).collect(),
        effect: None,
    })
}

fn all_files() -> Option<Declaration> {
    declared(&["**"], &[])
}

async fn review_with(repo: &Repo, parent: &str, d: Option<Declaration>, c: &Constitution, e: &Ethos) -> Review {
    let r = review(repo.path(), parent, "HEAD", d.as_ref(), c, e, &ExecRunner).await;
    // Whatever happened, the bite check registered nothing in the repository.
    assert_eq!(repo.worktrees(), 1, "a worktree was registered: {r:#?}");
    r
}

fn blocks<'a>(r: &'a Review, rail: &str) -> Vec<&'a crate::Finding> {
    r.findings.iter().filter(|f| f.rail == rail && f.severity == Severity::Block).collect()
}

#[tokio::test]
async fn clean_candidate_passes() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("src/calc.sh", "add() {\n  echo $(( $1 + $2 ))\n}\n");
    repo.commit("tidy add");
    let r = review_with(&repo, &parent, declared(&["src/calc.sh"], &[]), &constitution(), &ethos()).await;
    assert!(r.pass, "{r:#?}");
    assert!(r.findings.is_empty(), "{r:#?}");
    assert!(r.summary.contains("no test changes"), "{}", r.summary);
}

#[tokio::test]
async fn governance_doc_is_protected_even_if_the_constitution_forgot_it() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.append("constitution.md", "Anything goes.\n");
    repo.append(".ci/check.sh", "true\n");
    repo.commit("loosen the rules");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &ethos()).await;
    assert!(!r.pass);
    let found = blocks(&r, "protected-path");
    let cited: Vec<String> = found.iter().map(|f| f.location()).collect();
    assert_eq!(cited, [".ci/check.sh:2", "constitution.md:4"], "{r:#?}");
    assert!(found[1].evidence.contains("+Anything goes."), "{}", found[1].evidence);
    assert!(found[1].evidence.contains("governance document"), "{}", found[1].evidence);
}

#[tokio::test]
async fn benchmark_file_is_protected() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("bench/bench.sh", "echo '{\"time\": 0}'\n");
    repo.commit("make the benchmark say 0");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &ethos()).await;
    assert!(!r.pass);
    let found = blocks(&r, "protected-path");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert_eq!((found[0].file.as_deref(), found[0].line), (Some("bench/bench.sh"), Some(1)));
    assert!(found[0].evidence.contains("ethos.md benchmark_paths"), "{}", found[0].evidence);
}

#[tokio::test]
async fn renaming_a_protected_file_away_is_touching_it() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.git(&["mv", "bench/bench.sh", "old_bench.sh"]);
    repo.commit("move the benchmark");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &ethos()).await;
    let found = blocks(&r, "protected-path");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert_eq!(found[0].file.as_deref(), Some("old_bench.sh"));
    assert!(found[0].message.contains("bench/bench.sh"), "{}", found[0].message);
}

#[tokio::test]
async fn rule_forbid_paths_block_and_name_the_rule() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("vendor/lib.sh", "x=1\n");
    repo.commit("vendor something");
    let mut c = constitution();
    c.rules.push(Rule { id: "R1".into(), text: "never vendor code".into(), forbid_paths: vec!["vendor/".into()] });
    let r = review_with(&repo, &parent, all_files(), &c, &ethos()).await;
    let found = blocks(&r, "rule");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert_eq!(found[0].location(), "vendor/lib.sh:1");
    assert!(found[0].message.contains("R1: never vendor code"), "{}", found[0].message);
}

#[tokio::test]
async fn size_limits_lines_and_files() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("src/a.sh", &"a=1\n".repeat(8));
    repo.write("src/b.sh", "b=1\n");
    repo.write("src/c.sh", "c=1\n");
    repo.commit("three files, ten lines");
    let mut c = constitution();
    let r = review_with(&repo, &parent, all_files(), &c, &ethos()).await;
    assert!(r.pass, "within limits: {r:#?}");

    c.max_diff_lines = 9;
    c.max_files_changed = 2;
    let r = review_with(&repo, &parent, all_files(), &c, &ethos()).await;
    assert!(!r.pass);
    let found = blocks(&r, "size");
    assert_eq!(found.len(), 2, "{r:#?}");
    assert!(found[0].message.contains("10 lines, over the limit of 9"), "{}", found[0].message);
    assert_eq!(found[0].location(), "src/a.sh:1", "the largest file is cited");
    assert!(found[1].message.contains("3 files, over the limit of 2"), "{}", found[1].message);
    assert!(found[1].evidence.contains("src/c.sh: +1 -0"), "{}", found[1].evidence);
}

#[tokio::test]
async fn scope_guard_cites_undeclared_files_and_accepts_globs() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("src/calc.sh", "add() {\n  echo $(( $1 + $2 ))\n}\n");
    repo.write("src/extra.sh", "x=1\n");
    repo.write("README.md", "# hi\n");
    repo.commit("more than promised");
    let r = review_with(&repo, &parent, declared(&["src/*.sh", "README.md"], &[]), &constitution(), &ethos()).await;
    assert!(r.pass, "a declared glob covers src/: {r:#?}");

    let r = review_with(&repo, &parent, declared(&["src/calc.sh"], &[]), &constitution(), &ethos()).await;
    assert!(!r.pass);
    let cited: Vec<String> = blocks(&r, "scope").iter().map(|f| f.location()).collect();
    assert_eq!(cited, ["README.md:1", "src/extra.sh:1"], "{r:#?}");
}

#[tokio::test]
async fn non_biting_test_is_rejected() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("src/calc.sh", "add() {\n  echo $(( $1 + $2 ))\n}\n");
    // Tests behaviour the parent already has: passes with or without the change.
    repo.write("tests/test_add_more.sh", ". ./src/calc.sh\n[ \"$(add 2 2)\" = 4 ]\n");
    repo.commit("tidy add, with a test");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &ethos()).await;
    assert!(!r.pass, "{r:#?}");
    assert!(r.infra_error.is_none(), "{r:#?}");
    let found = blocks(&r, "bite");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert_eq!(found[0].location(), "tests/test_add_more.sh:1");
    assert!(found[0].message.starts_with("non-biting test"), "{}", found[0].message);
    assert!(found[0].evidence.contains("sh run_tests.sh"), "{}", found[0].evidence);
}

#[tokio::test]
async fn biting_test_passes() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.append("src/calc.sh", "mul() {\n  echo $(($1 * $2))\n}\n");
    repo.write("tests/test_mul.sh", ". ./src/calc.sh\n[ \"$(mul 2 3)\" = 6 ]\n");
    repo.commit("add mul, with a test");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &ethos()).await;
    assert!(r.pass, "{r:#?}");
    assert!(r.findings.is_empty(), "{r:#?}");
    assert!(r.summary.contains("fail on the parent as they must"), "{}", r.summary);
}

#[tokio::test]
async fn inline_rust_tests_are_applied_without_the_code_change() {
    let repo = Repo::shell_project();
    // A stand-in for `cargo test`: the test module's call of `mul` fails unless `mul` is defined.
    repo.write(
        "rtest.sh",
        "if grep -q 'assert_eq!(mul' src/lib.rs && ! grep -q 'pub fn mul' src/lib.rs; then exit 1; fi\n",
    );
    repo.write("src/lib.rs", "pub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n}\n");
    let parent = repo.commit("a rust file");
    repo.write(
        "src/lib.rs",
        "pub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n\npub fn mul(a: u32, b: u32) -> u32 {\n    a * b\n}\n\n\
         #[cfg(test)]\nmod tests {\n    #[test]\n    fn mul_works() {\n        assert_eq!(mul(2, 3), 6);\n    }\n}\n",
    );
    repo.commit("add mul with an inline test");
    let mut e = ethos();
    e.test_command = "sh rtest.sh".into();
    let r = review_with(&repo, &parent, all_files(), &constitution(), &e).await;
    assert!(r.pass, "only the test hunk is applied, so the test fails on the parent: {r:#?}");
    assert!(r.summary.contains("src/lib.rs:11"), "{}", r.summary);
}

#[tokio::test]
async fn removed_tests_warn_and_are_not_run() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.git(&["rm", "--quiet", "tests/test_add.sh"]);
    repo.write("tests/keep.txt", "");
    repo.commit("drop a test");
    let mut e = ethos();
    e.test_command = "exit 0".into(); // would make any run look non-biting
    let r = review_with(&repo, &parent, all_files(), &constitution(), &e).await;
    assert!(r.pass, "{r:#?}");
    let warns: Vec<_> = r.findings.iter().filter(|f| f.rail == "bite" && f.severity == Severity::Warn).collect();
    assert_eq!(warns.len(), 1, "{r:#?}");
    assert_eq!(warns[0].location(), "tests/test_add.sh:1");
}

#[tokio::test]
async fn a_test_run_timeout_is_an_infrastructure_error() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("tests/test_mul.sh", "[ 1 = 2 ]\n");
    repo.commit("a test");
    let mut e = ethos();
    e.test_command = "sleep 30".into();
    e.gate_timeout_s = 1;
    let r = review_with(&repo, &parent, all_files(), &constitution(), &e).await;
    assert!(!r.pass);
    assert!(r.findings.iter().all(|f| f.severity != Severity::Block), "not counted against the candidate: {r:#?}");
    let err = r.infra_error.expect("an infrastructure error");
    assert!(err.contains("timed out"), "{err}");
}

#[tokio::test]
async fn unknown_commit_is_inconclusive() {
    let repo = Repo::shell_project();
    let r =
        review(repo.path(), "--output=/tmp/x", "HEAD", all_files().as_ref(), &constitution(), &ethos(), &ExecRunner)
            .await;
    assert!(!r.pass);
    assert!(r.infra_error.as_deref().is_some_and(|e| e.contains("is not a commit")), "{r:#?}");
}

#[test]
fn diff_model_renames_binaries_and_line_numbers() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.git(&["mv", "src/calc.sh", "src/math.sh"]);
    repo.append("src/math.sh", "sub() {\n  echo $(($1 - $2))\n}\n");
    std::fs::write(repo.path().join("logo.bin"), [0u8, 1, 2, 0, 255]).expect("write");
    repo.write("run_tests.sh", "set -e\nfor t in tests/*.sh; do\n  sh \"$t\"\ndone\n");
    repo.commit("rename, binary, edit");
    let changes = diff_files(repo.path(), &parent, "HEAD").expect("diff");
    let by = |p: &str| changes.iter().find(|c| c.path == p).unwrap_or_else(|| panic!("{p} in {changes:#?}"));

    let bin = by("logo.bin");
    assert!(bin.binary && bin.hunks.is_empty() && bin.status == ChangeStatus::Added, "{bin:#?}");
    assert_eq!(bin.first_line(), None);

    let renamed = by("src/math.sh");
    assert_eq!((renamed.status, renamed.old_path.as_deref()), (ChangeStatus::Renamed, Some("src/calc.sh")));
    assert_eq!((renamed.added, renamed.removed), (3, 0));
    assert_eq!(renamed.first_line(), Some(4));

    let edited = by("run_tests.sh");
    assert_eq!((edited.added, edited.removed), (3, 1));
    assert_eq!(edited.hunks.len(), 1);
    assert_eq!(edited.hunks[0].removed, ["for t in tests/*.sh; do sh \"$t\"; done"]);
    assert_eq!(edited.first_line(), Some(2));
}

#[tokio::test]
async fn no_declaration_is_scope_unverified_never_clean() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.write("src/calc.sh", "add() {\n  echo $(( $1 + $2 ))\n}\n");
    repo.commit("tidy add");
    let r = review_with(&repo, &parent, None, &constitution(), &ethos()).await;
    assert!(!r.pass, "blocked by default: {r:#?}");
    let found = blocks(&r, "scope");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert!(found[0].message.starts_with("scope unverified"), "{}", found[0].message);
    assert!(
        found[0].evidence.contains("src/calc.sh:2") && found[0].evidence.contains("unverified_scope"),
        "{found:#?}"
    );
    assert!(r.summary.contains("scope (scope)"), "{}", r.summary);

    // The constitution may make it a warning: still in the record, never "clean".
    let mut c = constitution();
    c.unverified_scope = UnverifiedScope::Warn;
    let r = review_with(&repo, &parent, None, &c, &ethos()).await;
    assert!(r.pass, "{r:#?}");
    let warns: Vec<_> = r.findings.iter().filter(|f| f.rail == "scope" && f.severity == Severity::Warn).collect();
    assert_eq!(warns.len(), 1, "{r:#?}");
    assert!(warns[0].message.starts_with("scope unverified"), "{}", warns[0].message);
}

#[tokio::test]
async fn append_only_paths_may_grow_but_not_lose_or_change_a_line() {
    let mut c = constitution();
    c.append_only_paths = vec!["tests/**".into()];
    let repo = Repo::shell_project();
    repo.write("tests/test_sub.sh", "[ 1 = 1 ]\n[ 2 = 2 ]\n[ 3 = 3 ]\n");
    let parent = repo.commit("more tests");

    // Adding lines and files is fine.
    repo.append("tests/test_sub.sh", "[ 4 = 4 ]\n");
    repo.write("tests/test_new.sh", "[ 5 = 5 ]\n");
    repo.commit("grow the tests");
    let r = review_with(&repo, &parent, all_files(), &c, &ethos()).await;
    assert!(blocks(&r, "append-only").is_empty(), "{r:#?}");

    // A deleted line and a changed assertion: each cited with its line in the base.
    repo.git(&["reset", "--quiet", "--hard", &parent]);
    repo.write("tests/test_sub.sh", "[ 1 = 1 ]\n[ 3 = 4 ]\n");
    repo.commit("weaken the tests");
    let r = review_with(&repo, &parent, all_files(), &c, &ethos()).await;
    assert!(!r.pass);
    let found = blocks(&r, "append-only");
    let cited: Vec<String> = found.iter().map(|f| f.location()).collect();
    assert_eq!(cited, ["tests/test_sub.sh:2"], "one hunk: {r:#?}");
    let f = found[0];
    assert!(f.message.contains("changes 2 existing lines of tests/test_sub.sh (base line 2)"), "{}", f.message);
    assert!(f.evidence.contains("base tests/test_sub.sh:2: -[ 2 = 2 ]"), "{}", f.evidence);
    assert!(f.evidence.contains("base tests/test_sub.sh:3: -[ 3 = 3 ]"), "{}", f.evidence);
    assert!(f.evidence.contains("candidate tests/test_sub.sh:2: +[ 3 = 4 ]"), "{}", f.evidence);
    assert_eq!(f.class, Some(PathClass::Tests));

    // Two separate edits: two findings; a deleted file and a move: one each.
    repo.git(&["reset", "--quiet", "--hard", &parent]);
    repo.write("tests/test_sub.sh", "[ 1 = 0 ]\n[ 2 = 2 ]\n");
    repo.git(&["rm", "--quiet", "tests/test_add.sh"]);
    repo.commit("delete a test");
    let r = review_with(&repo, &parent, all_files(), &c, &ethos()).await;
    let found = blocks(&r, "append-only");
    let cited: Vec<String> = found.iter().map(|f| f.location()).collect();
    assert_eq!(cited, ["tests/test_add.sh:1", "tests/test_sub.sh:1", "tests/test_sub.sh:3"], "{r:#?}");
    assert!(found[0].message.starts_with("deletes tests/test_add.sh (2 lines)"), "{}", found[0].message);
    assert!(found[0].evidence.contains("base tests/test_add.sh:2: -[ \"$(add 1 2)\" = 3 ]"), "{}", found[0].evidence);
    assert!(found[2].message.starts_with("deletes 1 existing line"), "{}", found[2].message);

    repo.git(&["reset", "--quiet", "--hard", &parent]);
    repo.git(&["mv", "tests/test_sub.sh", "tests/sub.sh.off"]);
    repo.commit("move a test out of the runner's sight");
    let r = review_with(&repo, &parent, all_files(), &c, &ethos()).await;
    let found = blocks(&r, "append-only");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert!(found[0].message.starts_with("moves tests/test_sub.sh to tests/sub.sh.off"), "{}", found[0].message);
}

/// A file a test runner loads on its own, changed in the commit outside the trusted tests, is a
/// blocking `test-config` finding (added, changed or deleted, at any depth); under the trusted
/// tests (the base's copy runs) or with no trusted tests at all, it is not.
#[tokio::test]
async fn a_test_runner_file_outside_the_trusted_tests_blocks() {
    let mut e = ethos();
    e.trusted_tests = vec!["tests/**".into()];
    let repo = Repo::shell_project();
    repo.write("pkg/conftest.py", "import pytest\n");
    let parent = repo.commit("a conftest");

    repo.write("conftest.py", "def pytest_runtest_makereport(item, call):\n    pass\n");
    repo.append("pkg/conftest.py", "# more\n");
    repo.write("site/evil.pth", "import os\n");
    repo.write(".cargo/config.toml", "[target.x86_64-unknown-linux-gnu]\nrunner = \"true\"\n");
    repo.write("tests/conftest.py", "# the base's copy runs: fine\n");
    repo.write("src/notconftest.py", "x = 1\n");
    repo.commit("runner files");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &e).await;
    assert!(!r.pass, "{r:#?}");
    let found = blocks(&r, "test-config");
    let cited: Vec<String> = found.iter().map(|f| f.location()).collect();
    assert_eq!(cited, [".cargo/config.toml:1", "conftest.py:1", "pkg/conftest.py:2", "site/evil.pth:1"], "{r:#?}");
    let f = found.iter().find(|f| f.file.as_deref() == Some("conftest.py")).expect("the root conftest");
    assert!(f.message.starts_with("adds conftest.py, which a test runner loads on its own"), "{}", f.message);
    assert!(f.evidence.contains("pytest loads every conftest.py"), "{}", f.evidence);
    assert!(f.evidence.contains("trusted_tests (tests/**) does not cover it"), "{}", f.evidence);
    assert!(f.evidence.contains("`**/conftest.py`"), "{}", f.evidence);
    assert!(f.evidence.contains("+def pytest_runtest_makereport"), "{}", f.evidence);

    // Deleting one is changing how the tests run too.
    repo.git(&["reset", "--quiet", "--hard", &parent]);
    repo.git(&["rm", "--quiet", "pkg/conftest.py"]);
    repo.commit("no conftest");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &e).await;
    let found = blocks(&r, "test-config");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert!(found[0].message.starts_with("deletes pkg/conftest.py"), "{}", found[0].message);

    // Covered by the trusted tests, or no trusted tests: no finding.
    e.trusted_tests.push("**/conftest.py".into());
    let r = review_with(&repo, &parent, all_files(), &constitution(), &e).await;
    assert!(blocks(&r, "test-config").is_empty(), "{r:#?}");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &ethos()).await;
    assert!(blocks(&r, "test-config").is_empty(), "{r:#?}");
}

#[tokio::test]
async fn protected_path_findings_name_the_class() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.append(".ci/check.sh", "exit 0\n");
    repo.append("bench/bench.sh", "# faster\n");
    repo.append("ethos.md", "Anything goes.\n");
    repo.commit("tamper");
    let r = review_with(&repo, &parent, all_files(), &constitution(), &ethos()).await;
    let found = blocks(&r, "protected-path");
    let classes: Vec<(String, Option<PathClass>)> = found.iter().map(|f| (f.location(), f.class)).collect();
    assert_eq!(
        classes,
        [
            (".ci/check.sh:2".into(), Some(PathClass::Ci)),
            ("bench/bench.sh:3".into(), Some(PathClass::Benchmark)),
            ("ethos.md:4".into(), Some(PathClass::Governance)),
        ],
        "{r:#?}"
    );
    assert!(
        found[0].message.starts_with("tampering (CI): touches protected path .ci/check.sh"),
        "{}",
        found[0].message
    );
    let json = serde_json::to_value(found[0]).unwrap();
    assert_eq!(json["class"], "ci");
}

#[tokio::test]
async fn a_declared_test_must_appear_and_bite_on_its_own() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.append("src/calc.sh", "mul() {\n  echo $(($1 * $2))\n}\n");
    repo.write("tests/test_mul.sh", ". ./src/calc.sh\n[ \"$(mul 2 3)\" = 6 ]\n");
    // Passes on the parent: only a run of its own shows it.
    repo.write("tests/test_add_more.sh", ". ./src/calc.sh\n[ \"$(add 2 2)\" = 4 ]\n");
    repo.commit("add mul, with tests");
    let files = ["src/calc.sh", "tests/*"];

    // Undeclared, the two tests run together and the biting one lets the other through.
    let r = review_with(&repo, &parent, declared(&files, &[]), &constitution(), &ethos()).await;
    assert!(r.pass, "{r:#?}");

    // Declared, each runs alone: the non-biting one is named.
    let d = declared(&files, &["tests/test_mul.sh", "tests/test_add_more.sh"]);
    let r = review_with(&repo, &parent, d, &constitution(), &ethos()).await;
    assert!(!r.pass, "{r:#?}");
    let found = blocks(&r, "bite");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert_eq!(found[0].location(), "tests/test_add_more.sh:1");
    assert!(
        found[0].message.contains("declared test tests/test_add_more.sh passes on the parent"),
        "{}",
        found[0].message
    );
    assert!(r.summary.contains("tests fail on the parent as they must (tests/test_mul.sh:1"), "{}", r.summary);

    // A claimed test that is not in the diff is a false claim (and costs no test run).
    let d = declared(&files, &["tests/test_mul.sh", "tests/test_div.sh"]);
    let r = review_with(&repo, &parent, d, &constitution(), &ethos()).await;
    let found = blocks(&r, "claim");
    assert_eq!(found.len(), 1, "{r:#?}");
    assert_eq!(found[0].file.as_deref(), Some("tests/test_div.sh"));
    assert!(found[0].message.contains("is not in the diff"), "{}", found[0].message);
    assert!(r.summary.contains("bite: skipped"), "{}", r.summary);

    // A declared test outside the naming heuristic is still taken as a test.
    repo.git(&["reset", "--quiet", "--hard", &parent]);
    repo.append("src/calc.sh", "mul() {\n  echo $(($1 * $2))\n}\n");
    repo.write("checks/mul.sh", ". ./src/calc.sh\n[ \"$(mul 2 2)\" = 4 ]\n");
    repo.write("run_tests.sh", "set -e\nfor t in tests/*.sh checks/*.sh; do [ -e \"$t\" ] && sh \"$t\"; done\n");
    let parent = repo.commit("a checks/ directory");
    repo.git(&["reset", "--quiet", "--hard", &parent]);
    repo.write("checks/mul3.sh", ". ./src/calc.sh\n[ \"$(mul 3 3)\" = 9 ]\n");
    repo.commit("a check that passes already");
    let r = review_with(&repo, &parent, declared(&["checks/mul3.sh"], &["checks/mul3.sh"]), &constitution(), &ethos())
        .await;
    let found = blocks(&r, "bite");
    assert_eq!(found.len(), 1, "checks/mul3.sh ran as a declared test: {r:#?}");
}

#[tokio::test]
async fn rails_only_lists_every_static_finding_and_runs_nothing() {
    let repo = Repo::shell_project();
    let parent = repo.head();
    repo.append(".ci/check.sh", "exit 0\n");
    repo.write("tests/test_mul.sh", "[ 1 = 1 ]\n");
    repo.write("src/calc.sh", "add() {\n  echo 0\n}\n");
    repo.commit("ci tampering and an undeclared file");
    let mut e = ethos();
    e.test_command = "echo ran > /dev/stderr; exit 1".into();
    let d = declared(&[".ci/check.sh", "tests/test_mul.sh"], &["tests/test_mul.sh"]);
    let r = review_rails_only(repo.path(), &parent, "HEAD", d.as_ref(), &constitution(), &e).await;
    assert!(!r.pass);
    assert_eq!(blocks(&r, "protected-path").len(), 1, "{r:#?}");
    assert_eq!(blocks(&r, "scope").iter().map(|f| f.location()).collect::<Vec<_>>(), ["src/calc.sh:2"]);
    assert!(r.findings.iter().all(|f| f.rail != "bite"), "{r:#?}");
    assert!(r.summary.contains("bite: not run (the candidate failed its gates)"), "{}", r.summary);
}
