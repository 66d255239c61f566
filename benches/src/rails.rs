//! `rails-bench`: what the rails of issue 11 add to each candidate, measured on a real project
//! (the demo target, a dependency-free Rust crate: `cargo build --release`, `cargo test --release`
//! as its gates, `tests/` as its trusted and append-only tests).
//!
//! The candidate changes code in `src/`, loosens an assertion in `tests/sorts.rs` and adds a test
//! file, with a declaration. Measured, through the same functions the agents call:
//! - the static rails (`critic::diff_files`: three `git diff` calls; then `critic::static_rails`:
//!   protected paths with classes, append-only, rules, size, scope against the declaration,
//!   claims), median of 30 runs, and as a share of the candidate's gate time;
//! - the baseline's tests (`executor::trusted_changes`, `prepare_trusted`, `test_command` through
//!   `kit::exec` sandboxed like every gate, `restore_candidate`) against the gates (build and
//!   tests in a fresh checkout, as the executor runs them for every candidate), median of 3
//!   rounds; and the cost when the candidate changes no test (the checks that skip the run:
//!   `trusted_changes` and `pristine`);
//! - the same baseline's tests in a fresh checkout (ethos.md `trusted_checkout = "fresh"`:
//!   `executor::make_fresh`, `test_command` building from scratch, `executor::remove_fresh`), as a
//!   ratio to the reused build, here and on a small Python project whose tests run in a virtualenv
//!   (`trusted_build` makes it anew), the case `ratchet init` turns it on for.
//!
//! Reproduce: `cargo build --release -p ratchet-bench -p ratchet-kit --bins && target/release/rails-bench`
//! (the sandbox launcher must sit beside it; writes its section of BENCHMARKS.md; `--no-write`
//! prints only).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use protocol::governance::{Constitution, Ethos};
use protocol::rails::Declaration;
use protocol::work::SandboxSettings;
use ratchet_bench::report::write_section;
use ratchet_bench::scratch;

const SECTION: &str = "## Rails (issue 11)";
const RAIL_RUNS: usize = 30;
const GATE_ROUNDS: usize = 3;

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name == "target" {
            continue;
        }
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(&name))?;
        } else {
            std::fs::copy(e.path(), to.join(&name))?;
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The demo target's governance, parsed, with the rails on.
fn governance(repo: &Path) -> anyhow::Result<(Constitution, Ethos)> {
    let mut c = protocol::governance::parse_constitution(&std::fs::read_to_string(repo.join("constitution.md"))?)?;
    let mut e = protocol::governance::parse_ethos(&std::fs::read_to_string(repo.join("ethos.md"))?)?;
    c.append_only_paths = vec!["tests/**".into()];
    e.trusted_tests = vec!["tests/**".into()];
    Ok((c, e))
}

/// Run `command` in `cwd` as the executor runs a gate; its wall time.
async fn gate(
    command: &str,
    cwd: &Path,
    home: &Path,
    timeout: Duration,
    sandbox: &SandboxSettings,
) -> anyhow::Result<Duration> {
    let spec = executor::spec_for(command, cwd, home, timeout, sandbox);
    let t = Instant::now();
    let out = kit::exec::run(&spec).await;
    let took = t.elapsed();
    if !out.success() {
        bail!("`{command}` in {}: {}\n{}{}", cwd.display(), out.describe(), out.stdout, out.stderr);
    }
    Ok(took)
}

/// The baseline's tests in a fresh checkout, as the executor runs them with ethos.md
/// `trusted_checkout = "fresh"` (`executor::make_fresh`, the build commands and `test_command`
/// sandboxed, `executor::remove_fresh`).
struct Fresh<'a> {
    repo: &'a Path,
    dir: &'a Path,
    timeout: Duration,
    sandbox: &'a SandboxSettings,
}

impl Fresh<'_> {
    /// (making the checkout, the whole run) in ms.
    async fn run(
        &self,
        (base, commit): (&str, &str),
        (restored, added): (&[String], &[String]),
        build: &[&str],
        test_command: &str,
    ) -> anyhow::Result<(f64, f64)> {
        let t = Instant::now();
        executor::make_fresh(self.repo, self.dir, base, commit, restored, added).map_err(anyhow::Error::msg)?;
        let made = ms(t.elapsed());
        for cmd in build.iter().chain([&test_command]) {
            gate(cmd, self.dir, self.repo, self.timeout, self.sandbox).await?;
        }
        executor::remove_fresh(self.repo, self.dir).map_err(anyhow::Error::msg)?;
        Ok((made, ms(t.elapsed())))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let write = !std::env::args().any(|a| a == "--no-write");
    let load_before = load_avg();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("repo");
    copy_dir(&root.join("coordinator/demo-target"), &repo)?;
    let base = scratch::init(&repo, &[(".gitignore", "target/\nworktrees/\n")], "base")?;

    // The candidate: code, a loosened assertion, a new test file.
    let sort = std::fs::read_to_string(repo.join("src/sort.rs"))?;
    std::fs::write(
        repo.join("src/sort.rs"),
        format!("{sort}\n/// The candidate's addition.\npub fn twice(x: u64) -> u64 {{\n    x * 2\n}}\n"),
    )?;
    let tests = std::fs::read_to_string(repo.join("tests/sorts.rs"))?;
    let loosened = tests.replacen("assert_eq!(got, expected", "assert_eq!(got.len(), expected.len()", 1);
    if loosened == tests {
        bail!("tests/sorts.rs has no `assert_eq!(got, expected` to loosen");
    }
    std::fs::write(repo.join("tests/sorts.rs"), loosened)?;
    std::fs::write(
        repo.join("tests/twice.rs"),
        "#[test]\nfn twice_doubles() {\n    assert_eq!(sortbench::sort::twice(21), 42);\n}\n",
    )?;
    let candidate = scratch::commit_all(&repo, "candidate")?;
    let declaration = Declaration {
        files: vec!["src/sort.rs".into(), "tests/**".into()],
        rationale: "twice".into(),
        tests: vec!["tests/twice.rs".into()],
        effect: None,
    };
    let (constitution, ethos) = governance(&repo)?;

    // The static rails.
    let (mut diff_ms, mut rails_ms, mut findings) = (vec![], vec![], 0);
    for _ in 0..RAIL_RUNS {
        let t = Instant::now();
        let changes = critic::diff_files(&repo, &base, &candidate)?;
        let t1 = Instant::now();
        let f = critic::static_rails(&changes, Some(&declaration), &constitution, &ethos);
        let t2 = Instant::now();
        findings = f.len();
        diff_ms.push(ms(t1 - t));
        rails_ms.push(ms(t2 - t1));
    }
    let (diff_ms, rails_ms) = (median(diff_ms), median(rails_ms));

    // The gates and the baseline's tests, in a fresh checkout per round.
    let sandbox = SandboxSettings::from(&constitution);
    let timeout = Duration::from_secs(ethos.gate_timeout_s);
    let (mut gates_ms, mut own_tests_ms, mut trusted_ms, mut check_ms) = (vec![], vec![], vec![], vec![]);
    let (mut fresh_ms, mut fresh_checkout_ms) = (vec![], vec![]);
    for round in 0..GATE_ROUNDS {
        let tree = tmp.path().join(format!("tree-{round}"));
        kit::git::Git::new(&repo).scratch_checkout(&tree, &candidate)?;
        let mut g = Duration::ZERO;
        for cmd in &ethos.gates {
            let took = gate(cmd, &tree, &repo, timeout, &sandbox).await?;
            if *cmd == ethos.test_command {
                own_tests_ms.push(ms(took));
            }
            g += took;
        }
        gates_ms.push(ms(g));
        let t = Instant::now();
        let (restored, set_aside) =
            executor::trusted_changes(&tree, &base, &candidate, &ethos.trusted_tests).map_err(anyhow::Error::msg)?;
        let aside = tmp.path().join(format!("aside-{round}"));
        let globs = &ethos.trusted_tests;
        let ignores = executor::BaseIgnores::of(&tree, &base).map_err(anyhow::Error::msg)?;
        let moved = executor::prepare_trusted(&tree, &aside, &base, &restored, &set_aside, globs, &ignores)
            .map_err(anyhow::Error::msg)?;
        gate(&ethos.test_command, &tree, &repo, timeout, &sandbox).await?;
        executor::restore_candidate(&tree, &aside, &moved, globs, &ignores).map_err(anyhow::Error::msg)?;
        trusted_ms.push(ms(t.elapsed()));
        if restored != ["tests/sorts.rs"] || set_aside != ["tests/twice.rs"] {
            bail!("unexpected trusted changes: restored {restored:?}, set aside {set_aside:?}");
        }
        // The same run in a fresh checkout (ethos.md trusted_checkout = "fresh"): a worktree of
        // the commit, the base's tests put in, `test_command` building from scratch, removed.
        let fresh = Fresh { repo: &repo, dir: &tmp.path().join(format!("fresh-{round}")), timeout, sandbox: &sandbox };
        let (made, took) = fresh.run((&base, &candidate), (&restored, &set_aside), &[], &ethos.test_command).await?;
        fresh_checkout_ms.push(made);
        fresh_ms.push(took);
        // A candidate that changes no test: only the check that skips the run.
        let t = Instant::now();
        let (r, a) =
            executor::trusted_changes(&tree, &base, &base, &ethos.trusted_tests).map_err(anyhow::Error::msg)?;
        let pristine = executor::pristine(&tree, &base, &ethos.trusted_tests).map_err(anyhow::Error::msg)?;
        check_ms.push(ms(t.elapsed()));
        if !(r.is_empty() && a.is_empty() && pristine) {
            bail!("the skip's checks: changes {r:?} {a:?}, the checkout as committed: {pristine}");
        }
        std::fs::remove_dir_all(&tree)?;
    }
    let (gates_ms, trusted_ms, check_ms) = (median(gates_ms), median(trusted_ms), median(check_ms));
    let (fresh_ms, fresh_checkout_ms) = (median(fresh_ms), median(fresh_checkout_ms));
    let py = python_case(tmp.path(), &sandbox, timeout).await?;
    let own_tests_ms = median(own_tests_ms);
    let statics = diff_ms + rails_ms;

    let mut md = String::new();
    let _ = writeln!(md, "{SECTION}\n");
    let _ = writeln!(
        md,
        "Reproduce: `cargo build --release -p ratchet-bench -p ratchet-kit --bins && target/release/rails-bench` (one run; shares from the same run).\n\
         Target: the demo target (a dependency-free Rust crate), gates `{}`, test command `{}`, `tests/**` trusted and append-only; \
         commands sandboxed (`{}`) as the executor runs them. Load average (1, 5, 15 min) before: {load_before}; after: {}.\n",
        ethos.gates.join("` then `"),
        ethos.test_command,
        constitution.sandbox,
        load_avg()
    );
    let _ = writeln!(md, "| per candidate | time | share of the gate time |");
    let _ = writeln!(md, "| --- | --- | --- |");
    let _ = writeln!(md, "| gates in a fresh checkout (build + tests), the floor | {gates_ms:.0} ms | 100% |");
    let _ = writeln!(
        md,
        "| of which the candidate's own test gate (`{}`) | {own_tests_ms:.0} ms | {:.0}% |",
        ethos.test_command,
        own_tests_ms / gates_ms * 100.0
    );
    let _ = writeln!(
        md,
        "| static rails: the diff model (3 `git diff` calls) | {diff_ms:.1} ms | {:.2}% |",
        diff_ms / gates_ms * 100.0
    );
    let _ = writeln!(
        md,
        "| static rails: the rails over it (protected paths, append-only, rules, size, scope, claims, test-config; {findings} finding{}) | {rails_ms:.3} ms | {:.4}% |",
        if findings == 1 { "" } else { "s" },
        rails_ms / gates_ms * 100.0
    );
    let _ = writeln!(md, "| **static rails, total** | **{statics:.1} ms** | **{:.2}%** |", statics / gates_ms * 100.0);
    let _ = writeln!(
        md,
        "| **the baseline's tests** (what the gates wrote in no commit set aside: under the trusted globs all of it, elsewhere what the base's .gitignore does not ignore, so `target/` stays; tracked files reset, the base's tests swapped in, `{}`, all swapped back) | **{trusted_ms:.0} ms** | **{:.0}%** |",
        ethos.test_command,
        trusted_ms / gates_ms * 100.0
    );
    let _ = writeln!(
        md,
        "| the baseline's tests when the candidate changes no test (the checks: its diff, and the checkout as committed with the base's ignore rules; the run is skipped) | {check_ms:.1} ms | {:.2}% |",
        check_ms / gates_ms * 100.0
    );
    let _ = writeln!(
        md,
        "| **the baseline's tests in a fresh checkout** (ethos.md `trusted_checkout = \"fresh\"`: a git worktree of the commit with nothing the gates wrote, the base's tests put in ({fresh_checkout_ms:.0} ms), `{}` building from scratch, the checkout removed; never skipped) | **{fresh_ms:.0} ms** | **{:.0}%** |",
        ethos.test_command,
        fresh_ms / gates_ms * 100.0
    );
    let _ = writeln!(
        md,
        "\n**Fresh against reuse** (the same baseline's tests, same run): {:.1}x on this Rust crate ({fresh_ms:.0} ms against {trusted_ms:.0} ms: \
         the fresh checkout compiles the crate and its tests from nothing, where reuse recompiles only the changed test files); \
         {:.1}x on a small Python project whose tests run in a virtualenv ({:.0} ms against {:.0} ms, of which the fresh checkout {:.0} ms and \
         `{PY_VENV}` {:.0} ms): the setting `ratchet init` turns on for Python projects. When the candidate changes no test, reuse \
         usually skips the run ({check_ms:.1} ms of checks) and fresh does not: against that, fresh costs the whole run.",
        fresh_ms / trusted_ms,
        py.fresh / py.reuse,
        py.fresh,
        py.reuse,
        py.checkout,
        py.build
    );
    let _ = writeln!(
        md,
        "\nMedians: the static rails of {RAIL_RUNS} runs, the gates and the baseline's tests of {GATE_ROUNDS} rounds. \
         The baseline's tests run in the candidate's own checkout after its gates, so they reuse its build: \
         their cost is about one more test run (the changed test files recompiled), not a second build. \
         The bite check (a test run on the parent) and the evaluation are not rails of this issue and are not counted here."
    );
    print!("{md}");
    if write {
        let out = root.join("BENCHMARKS.md");
        write_section(&out, SECTION, &md)?;
        eprintln!("wrote its section of {}", out.display());
    }
    Ok(())
}

/// The build of the Python case: a virtualenv (no pip: nothing from the network).
const PY_VENV: &str = "python3 -m venv --without-pip .venv";

/// The Python case's medians, in ms: the baseline's tests reused and fresh, and of the fresh run
/// its checkout and its build.
struct PyCase {
    reuse: f64,
    fresh: f64,
    checkout: f64,
    build: f64,
}

/// A small Python project whose tests run in a virtualenv its first gate makes (`.venv/`, ignored):
/// the candidate changes `params.toml` and adds a test; the baseline's tests reused against the same
/// in a fresh checkout (the virtualenv made anew), `GATE_ROUNDS` rounds.
async fn python_case(tmp: &Path, sandbox: &SandboxSettings, timeout: Duration) -> anyhow::Result<PyCase> {
    let repo = tmp.join("py");
    let test = ".venv/bin/python -c 'import limits, sys; sys.exit(0 if limits.ok() else 1)'\n";
    let run = "for t in tests/test_*.sh; do sh \"$t\" || exit 1; done\n";
    let limits = "import re\n\ndef ok():\n    d = re.search(r'^delay_ms = (\\d+)', open('params.toml').read(), re.M)\n    return d is not None and int(d.group(1)) > 0\n";
    let files = [
        (".gitignore", ".venv/\n__pycache__/\n"),
        ("params.toml", "delay_ms = 300\n"),
        ("limits.py", limits),
        ("tests/run.sh", run),
        ("tests/test_params.sh", test),
    ];
    let base = scratch::init(&repo, &files, "base")?;
    std::fs::write(repo.join("params.toml"), "delay_ms = 250\n")?;
    std::fs::write(repo.join("tests/test_more.sh"), test)?;
    let candidate = scratch::commit_all(&repo, "candidate")?;
    let globs = vec!["tests/**".to_string()];
    let test_command = "sh tests/run.sh";
    let (mut reuse, mut fresh, mut checkout, mut build) = (vec![], vec![], vec![], vec![]);
    for round in 0..GATE_ROUNDS {
        let tree = tmp.join(format!("py-tree-{round}"));
        kit::git::Git::new(&repo).scratch_checkout(&tree, &candidate)?;
        for cmd in [PY_VENV, test_command] {
            gate(cmd, &tree, &repo, timeout, sandbox).await?;
        }
        let t = Instant::now();
        let (restored, added) =
            executor::trusted_changes(&tree, &base, &candidate, &globs).map_err(anyhow::Error::msg)?;
        let aside = tmp.join(format!("py-aside-{round}"));
        let ignores = executor::BaseIgnores::of(&tree, &base).map_err(anyhow::Error::msg)?;
        let moved = executor::prepare_trusted(&tree, &aside, &base, &restored, &added, &globs, &ignores)
            .map_err(anyhow::Error::msg)?;
        gate(test_command, &tree, &repo, timeout, sandbox).await?;
        executor::restore_candidate(&tree, &aside, &moved, &globs, &ignores).map_err(anyhow::Error::msg)?;
        reuse.push(ms(t.elapsed()));
        let dir = tmp.join(format!("py-fresh-{round}"));
        let f = Fresh { repo: &repo, dir: &dir, timeout, sandbox };
        let t = Instant::now();
        executor::make_fresh(&repo, &dir, &base, &candidate, &restored, &added).map_err(anyhow::Error::msg)?;
        let made = t.elapsed();
        gate(PY_VENV, &dir, &repo, timeout, sandbox).await?;
        build.push(ms(t.elapsed() - made));
        executor::remove_fresh(&repo, &dir).map_err(anyhow::Error::msg)?;
        checkout.push(ms(made));
        let (_, took) = f.run((&base, &candidate), (&restored, &added), &[PY_VENV], test_command).await?;
        fresh.push(took);
        std::fs::remove_dir_all(&tree)?;
    }
    Ok(PyCase { reuse: median(reuse), fresh: median(fresh), checkout: median(checkout), build: median(build) })
}
