//! Substrate benchmark: claims per second (1 process, 8 contending processes) against the raw
//! create-new-file floor measured in the same run; crash-detection latency; worktree add and
//! remove against the `git worktree` CLI on a generated ~1,000-file repository; promotion time.
//!
//! Run: `cargo bench -p ratchet-kit --bench substrate` (add `--features bench-git2` for the rows
//! that measure git2 against the git CLI; libgit2 is built only then). Prints a markdown table and writes it to
//! its section of `BENCHMARKS.md` at the repository root.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::events::{Event, EventKind};
use protocol::lease::TaskFile;
use ratchet_kit::substrate::{self, BranchDir, Home, PromoteOutcome};

// The shared report module names kit as the `ratchet-bench` crate does.
extern crate ratchet_kit as kit;
#[path = "../../benches/src/report.rs"]
mod common;
use common::{loadavg, write_section};

const CHILD_ENV: &str = "RATCHET_BENCH_CHILD";
const CLAIM_TASKS: usize = 2000;
const CLAIM_ROUNDS: usize = 5;
const PROCS: usize = 8;
const CRASH_TRIALS: usize = 10;
const WORKTREE_ROUNDS: usize = 11;
const REPO_FILES: usize = 1000;
const PROMOTIONS: usize = 7;
#[cfg(feature = "bench-git2")]
const GIT_OPS: usize = 50;
#[cfg(feature = "bench-git2")]
const GIT2_VERSION: &str = "0.20";

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        child(&mode);
        return;
    }
    let load_before = loadavg();
    let scratch = tempfile::Builder::new().prefix("ratchet-bench-").tempdir().expect("temp dir");
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // Claims against the floor, on the system temp dir's file system and on tmpfs (where file
    // creation is cheap, so the claim protocol's own cost shows).
    let shm = Path::new("/dev/shm");
    let shm_scratch =
        shm.is_dir().then(|| tempfile::Builder::new().prefix("ratchet-bench-").tempdir_in(shm).ok()).flatten();
    let fs_label = format!("{} ({})", std::env::temp_dir().display(), fs_type(&std::env::temp_dir()));
    claim_rows(scratch.path(), &fs_label, &mut rows);
    if let Some(shm_scratch) = &shm_scratch {
        claim_rows(shm_scratch.path(), "/dev/shm (tmpfs)", &mut rows);
    }
    if std::env::var("RATCHET_BENCH_ONLY").is_ok_and(|v| v == "claims") {
        for (a, b, c) in &rows {
            println!("| {a} | {b} | {c} |");
        }
        return;
    }

    // Crash detection.
    let lat = crash_latency(&scratch.path().join("crash"));
    rows.push((
        format!("crash detection (SIGKILL -> lease expired), reaper every {:?}", substrate::DEFAULT_REAP_INTERVAL),
        format!("median {} ms, max {} ms", ms(median(&lat)), ms(*lat.iter().max().expect("trials"))),
        format!("{CRASH_TRIALS} trials (target < 1000 ms)"),
    ));

    // Worktrees.
    let wt = worktrees(&scratch.path().join("wt"));
    rows.push((
        format!("worktree add, {REPO_FILES}-file repo: `git worktree add` CLI"),
        format!("{:.1} ms", msf(wt.cli_add)),
        format!("median of {WORKTREE_ROUNDS}"),
    ));
    rows.push((
        "worktree add: substrate::add_worktree".into(),
        format!("{:.1} ms", msf(wt.add)),
        format!("{:.2}x the CLI (median of per-round ratios; target <= 1.1x)", wt.add_ratio),
    ));
    rows.push((
        "worktree remove: `git worktree remove --force` CLI".into(),
        format!("{:.1} ms", msf(wt.cli_remove)),
        format!("median of {WORKTREE_ROUNDS}"),
    ));
    rows.push((
        "worktree remove: substrate::remove_checkout".into(),
        format!("{:.1} ms", msf(wt.remove)),
        format!("{:.2}x the CLI (median of per-round ratios)", wt.remove_ratio),
    ));

    // Promotion.
    let (checked_out, detached) = promotions(&scratch.path().join("promote"));
    rows.push((
        "promotion, main checked out and clean (ff of the checkout)".into(),
        format!("{:.1} ms", msf(checked_out)),
        format!("median of {PROMOTIONS}"),
    ));
    rows.push((
        "promotion, main not checked out (update-ref compare-and-swap)".into(),
        format!("{:.1} ms", msf(detached)),
        format!("median of {PROMOTIONS}"),
    ));

    // git in process (git2) against the CLI, for the small operations the loop repeats.
    #[cfg(feature = "bench-git2")]
    let g = git_ops(&scratch.path().join("git2"));
    #[cfg(feature = "bench-git2")]
    {
        for (what, cli, lib) in [
            ("rev-parse `main^{commit}`", g.rev_parse_cli, g.rev_parse_lib),
            ("ref compare-and-swap (`update-ref <ref> <new> <old>`)", g.cas_cli, g.cas_lib),
            ("read a 1 KiB blob (`cat-file blob`)", g.blob_cli, g.blob_lib),
            ("promotion's git work (4 rev-parse, merge-base, worktree list, CAS)", g.promote_cli, g.promote_lib),
        ] {
            rows.push((
                format!("{what}: CLI / git2"),
                format!("{:.2} ms / {:.3} ms", msf(cli), msf(lib)),
                format!(
                    "git2 {:.0}x faster (median of {GIT_OPS}; git2 opens the repository each time)",
                    msf(cli) / msf(lib)
                ),
            ));
        }
        let saved = msf(g.promote_cli) - msf(g.promote_lib);
        rows.push((
            "promotion, main not checked out, with git2 for its git work".into(),
            format!("{:.1} ms (estimate)", msf(detached) - saved),
            format!("{:.1} ms now, less the {saved:.1} ms git2 saves on the same calls", msf(detached)),
        ));
    }

    let mut md = String::new();
    let _ = writeln!(md, "## Coordination substrate (issue 3)\n");
    let _ = writeln!(
        md,
        "Reproduce: `cargo bench -p ratchet-kit --bench substrate --features bench-git2` (release build; one run, ratios from the same run; without the feature, the same without the git2 rows)."
    );
    let _ = writeln!(
        md,
        "Machine: {} CPUs; git scratch repositories under {} (the system temp dir).\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::env::temp_dir().display()
    );
    let _ = writeln!(
        md,
        "Load average (1 min) {load_before} at the start and {} at the end: other work on the machine \
         shows up as noise, so compare ratios from one run, not absolute numbers across runs.\n",
        loadavg()
    );
    let _ = writeln!(md, "| measurement | result | notes |");
    let _ = writeln!(md, "| --- | --- | --- |");
    for (a, b, c) in &rows {
        let _ = writeln!(md, "| {a} | {b} | {c} |");
    }
    let _ = writeln!(
        md,
        "\nRatios are medians of per-round ratios (each claim run measured right after its floor run). \
         A claim is: create `leases/<task>.lock` (O_EXCL), flock it, read the task file, check the token \
         tombstone, write the lease record, re-check the path's inode, append a `lease_claimed` event. \
         The floor is the bare `open(O_CREAT|O_EXCL)` + close of the same number of files. In the \
         contended runs every process walks the same {CLAIM_TASKS} names in the same order, so each \
         name is fought over by all {PROCS}."
    );
    #[cfg(feature = "bench-git2")]
    let _ = writeln!(
        md,
        "\nThe git2 rows measure `git2` {} (libgit2 {}, default features off: no https, no ssh) on the \
         same repository as the CLI rows, each operation alone and the git work of one promotion \
         (resolve main, the base and the candidate, `merge-base --is-ancestor`, list worktrees, the \
         compare-and-swap of `main`, resolve main again). Why Ratchet keeps the CLI anyway is in \
         ARCHITECTURE.md (\"Dependencies and why\").",
        GIT2_VERSION,
        git2::Version::get().libgit2_version().0.to_string()
            + "."
            + &git2::Version::get().libgit2_version().1.to_string()
            + "."
            + &git2::Version::get().libgit2_version().2.to_string()
    );
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("BENCHMARKS.md");
    write_section(&out, "## Coordination substrate (issue 3)", &md).expect("writing BENCHMARKS.md");
    eprintln!("wrote its section of {}", out.display());
}

/// Claims against the floor, interleaved over a few rounds so that a change in the machine's
/// load hits both alike; medians.
fn claim_rows(scratch: &Path, label: &str, rows: &mut Vec<(String, String, String)>) {
    let (mut f1, mut c1, mut f8, mut c8) = (vec![], vec![], vec![], vec![]);
    for round in 0..CLAIM_ROUNDS {
        let d = scratch.join(format!("round{round}"));
        f1.push(floor_single(&d.join("floor1")));
        c1.push(claims_single(&d.join("claim1")));
        f8.push(floor_contended(&d.join("floor8")));
        c8.push(claims_contended(&d.join("claim8")));
    }
    let (floor1, claim1, floor8, claim8) = (median_f(&f1), median_f(&c1), median_f(&f8), median_f(&c8));
    // Ratios per round (each claim run next to its floor run), then the median.
    let ratio1 = median_f(&c1.iter().zip(&f1).map(|(c, f)| c / f).collect::<Vec<_>>());
    let ratio8 = median_f(&c8.iter().zip(&f8).map(|(c, f)| c / f).collect::<Vec<_>>());
    let runs = format!("median of {CLAIM_ROUNDS} interleaved runs of {CLAIM_TASKS} names");
    rows.push((format!("create-new floor, 1 process, {label}"), format!("{floor1:.0} files/s"), runs.clone()));
    rows.push((
        format!("create-new floor, {PROCS} contending processes, {label}"),
        format!("{floor8:.0} files/s"),
        runs,
    ));
    rows.push((
        format!("claims, 1 process, {label}"),
        format!("{claim1:.0} claims/s"),
        format!("{:.0}% of the 1-process floor", 100.0 * ratio1),
    ));
    rows.push((
        format!("claims, {PROCS} contending processes, {label}"),
        format!("{claim8:.0} claims/s"),
        format!("{:.0}% of the contended floor (target >= 50%)", 100.0 * ratio8),
    ));
}

/// The file system type of `path`, from /proc/mounts (longest matching mount point).
fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && path.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
        })
        .max()
        .map(|(_, t)| t)
        .unwrap_or_else(|| "unknown fs".into())
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn msf(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_f(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

// ------------------------------------------------------------------------------------------------
// Hermetic git

fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@ratchet.invalid")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@ratchet.invalid")
        .stdin(Stdio::null());
    cmd
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_cmd(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Medians of one git operation through the CLI (`kit::git`, what Ratchet runs) and in process
/// (`git2`).
#[cfg(feature = "bench-git2")]
struct GitOps {
    rev_parse_cli: Duration,
    rev_parse_lib: Duration,
    cas_cli: Duration,
    cas_lib: Duration,
    blob_cli: Duration,
    blob_lib: Duration,
    promote_cli: Duration,
    promote_lib: Duration,
}

#[cfg(feature = "bench-git2")]
fn git_ops(dir: &Path) -> GitOps {
    let home = make_repo(dir, 100);
    let cli = home.git().clone();
    let first = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("src00/f0000.rs"), "changed\n").expect("write");
    git(dir, &["commit", "-qam", "second"]);
    let second = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "-q", "--detach"]);
    git(dir, &["branch", "bench", &first]);
    let blob = git(dir, &["rev-parse", &format!("{first}:src01/f0001.rs")]);
    let open = || git2::Repository::open(dir).expect("git2 opens the repository");
    let oid = |s: &str| git2::Oid::from_str(s).expect("an object id");
    let time = |f: &mut dyn FnMut(usize)| -> Duration {
        let mut v: Vec<Duration> = (0..GIT_OPS)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
            .collect();
        v.sort();
        v[v.len() / 2]
    };
    // Alternates the ref between the two commits, so each compare-and-swap succeeds.
    let flip = |i: usize| {
        if i.is_multiple_of(2) { (second.as_str(), first.as_str()) } else { (first.as_str(), second.as_str()) }
    };
    let rev_parse_cli = time(&mut |_| {
        cli.resolve_commit("refs/heads/main").expect("rev-parse").expect("main");
    });
    let rev_parse_lib = time(&mut |_| {
        open().revparse_single("refs/heads/main^{commit}").expect("revparse");
    });
    let cas_cli = time(&mut |i| {
        let (new, old) = flip(i);
        cli.run(["update-ref", "-m", "bench", "refs/heads/bench", new, old]).expect("update-ref");
    });
    let cas_lib = time(&mut |i| {
        let (new, old) = flip(i);
        open().reference_matching("refs/heads/bench", oid(new), true, oid(old), "bench").expect("reference_matching");
    });
    let blob_cli = time(&mut |_| {
        cli.run_bytes(["cat-file", "blob", blob.as_str()]).expect("cat-file");
    });
    let blob_lib = time(&mut |_| {
        assert!(!open().find_blob(oid(&blob)).expect("blob").content().is_empty());
    });
    let promote_cli = time(&mut |i| {
        let (new, old) = flip(i);
        for rev in ["refs/heads/bench", old, new] {
            cli.resolve_commit(rev).expect("rev-parse").expect("a commit");
        }
        assert!(cli.is_ancestor(old, new).expect("merge-base") || !i.is_multiple_of(2));
        cli.worktrees().expect("worktree list");
        cli.run(["update-ref", "-m", "bench", "refs/heads/bench", new, old]).expect("update-ref");
        cli.resolve_commit("refs/heads/bench").expect("rev-parse");
    });
    let promote_lib = time(&mut |i| {
        let (new, old) = flip(i);
        let repo = open();
        for rev in ["refs/heads/bench", old, new] {
            repo.revparse_single(&format!("{rev}^{{commit}}")).expect("revparse");
        }
        let _ = repo.graph_descendant_of(oid(new), oid(old)).expect("graph");
        for name in repo.worktrees().expect("worktrees").iter().flatten() {
            let wt = repo.find_worktree(name).expect("worktree");
            let _ =
                git2::Repository::open_from_worktree(&wt).and_then(|r| r.head().map(|h| h.name().map(String::from)));
        }
        let _ = repo.head_detached();
        repo.reference_matching("refs/heads/bench", oid(new), true, oid(old), "bench").expect("reference_matching");
        repo.revparse_single("refs/heads/bench^{commit}").expect("revparse");
    });
    GitOps { rev_parse_cli, rev_parse_lib, cas_cli, cas_lib, blob_cli, blob_lib, promote_cli, promote_lib }
}

/// A repository with `files` files (about 1 KiB each, 20 directories) and one commit.
fn make_repo(dir: &Path, files: usize) -> Home {
    std::fs::create_dir_all(dir).expect("mkdir");
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".gitignore"), "worktrees/\n").expect("write");
    for i in 0..files {
        let sub = dir.join(format!("src{:02}", i % 20));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let body: String = (0..16).map(|l| format!("// file {i} line {l}: some ordinary source text\n")).collect();
        std::fs::write(sub.join(format!("f{i:04}.rs")), body).expect("write");
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "generated"]);
    Home::open(dir)
        .expect("repo")
        .with_run_id("bench")
        .with_git_env("GIT_CONFIG_GLOBAL", "/dev/null")
        .with_git_env("GIT_CONFIG_NOSYSTEM", "1")
}

fn task(bd: &BranchDir, id: &str, ttl_ms: u64) -> TaskFile {
    let input = serde_json::json!({"candidate": "c1", "note": "a typical small task input"});
    TaskFile { token: 0, ttl_ms, ..TaskFile::queued(bd.branch(), id, "executor", "apply", input) }
}

fn task_id(i: usize) -> String {
    format!("t{i:05}")
}

fn claim_branch(dir: &Path) -> (Home, BranchDir) {
    let home = make_repo(dir, 1);
    let base = git(dir, &["rev-parse", "HEAD"]);
    let bd = substrate::add_worktree(&home, "bench", &base).expect("add worktree");
    for i in 0..CLAIM_TASKS {
        substrate::write_task(&bd, &task(&bd, &task_id(i), 30_000)).expect("write task");
    }
    (home, bd)
}

// ------------------------------------------------------------------------------------------------
// Children (the bench binary re-executed)

fn child(mode: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wait_go = || {
        println!("ready");
        std::io::stdout().flush().expect("stdout");
        let mut b = [0u8; 1];
        std::io::stdin().read_exact(&mut b).expect("go byte");
    };
    match mode {
        "floor" => {
            let dir = PathBuf::from(&args[0]);
            wait_go();
            let mut won = 0;
            for i in 0..CLAIM_TASKS {
                if OpenOptions::new().write(true).create_new(true).open(dir.join(task_id(i))).is_ok() {
                    won += 1;
                }
            }
            println!("won {won}");
        }
        "claim" => {
            let home = Home::open(&args[0]).expect("repo");
            let bd = home.open_branch("bench").expect("branch");
            let agent = &args[1];
            wait_go();
            let mut won = 0;
            for i in 0..CLAIM_TASKS {
                if substrate::try_claim(&bd, &task_id(i), agent).expect("claim").is_some() {
                    won += 1;
                }
            }
            println!("won {won}");
        }
        "block" => {
            let home = Home::open(&args[0]).expect("repo");
            let bd = home.open_branch(&args[1]).expect("branch");
            let lease = substrate::try_claim(&bd, &args[2], "victim").expect("claim").expect("claimable");
            println!("claimed {}", lease.token());
            std::io::stdout().flush().expect("stdout");
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn_child(mode: &str, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut c = Command::new(std::env::current_exe().expect("bench exe"))
        .env(CHILD_ENV, mode)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning a bench child");
    let out = BufReader::new(c.stdout.take().expect("stdout"));
    (c, out)
}

/// Runs `PROCS` children that wait for a go byte; returns (elapsed from go to last exit, total won).
fn race(mode: &str, args: impl Fn(usize) -> Vec<String>) -> (Duration, usize) {
    let mut kids: Vec<_> = (0..PROCS)
        .map(|i| {
            let a = args(i);
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            spawn_child(mode, &refs)
        })
        .collect();
    for (_, out) in &mut kids {
        let mut line = String::new();
        out.read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready");
    }
    let start = Instant::now();
    for (c, _) in &mut kids {
        c.stdin.as_mut().expect("stdin").write_all(b"g").expect("go");
    }
    let mut won = 0;
    for (c, out) in &mut kids {
        let mut line = String::new();
        out.read_line(&mut line).expect("result line");
        won += line.trim().strip_prefix("won ").and_then(|n| n.parse::<usize>().ok()).expect("won N");
        assert!(c.wait().expect("wait").success());
    }
    (start.elapsed(), won)
}

fn floor_single(dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).expect("mkdir");
    let start = Instant::now();
    for i in 0..CLAIM_TASKS {
        OpenOptions::new().write(true).create_new(true).open(dir.join(task_id(i))).expect("create");
    }
    CLAIM_TASKS as f64 / start.elapsed().as_secs_f64()
}

fn floor_contended(dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).expect("mkdir");
    let d = dir.display().to_string();
    let (elapsed, won) = race("floor", |_| vec![d.clone()]);
    assert_eq!(won, CLAIM_TASKS, "every file created exactly once");
    CLAIM_TASKS as f64 / elapsed.as_secs_f64()
}

fn claims_single(dir: &Path) -> f64 {
    let (_home, bd) = claim_branch(dir);
    let start = Instant::now();
    for i in 0..CLAIM_TASKS {
        substrate::try_claim(&bd, &task_id(i), "solo").expect("claim").expect("claimable");
    }
    CLAIM_TASKS as f64 / start.elapsed().as_secs_f64()
}

fn claims_contended(dir: &Path) -> f64 {
    let (home, _bd) = claim_branch(dir);
    let root = home.root().display().to_string();
    let (elapsed, won) = race("claim", |i| vec![root.clone(), format!("w{i}")]);
    assert_eq!(won, CLAIM_TASKS, "every task claimed exactly once");
    CLAIM_TASKS as f64 / elapsed.as_secs_f64()
}

// ------------------------------------------------------------------------------------------------

fn crash_latency(dir: &Path) -> Vec<Duration> {
    let home = make_repo(dir, 1);
    let base = git(dir, &["rev-parse", "HEAD"]);
    let bd = substrate::add_worktree(&home, "crash", &base).expect("add worktree");
    let detected: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reaper = {
        let (home, detected, stop) = (home.clone(), detected.clone(), stop.clone());
        std::thread::spawn(move || {
            let host = substrate::hostname();
            while !stop.load(Ordering::Relaxed) {
                for e in substrate::reap_all(&home, &host).expect("reap") {
                    if matches!(e.kind, EventKind::LeaseExpired { .. }) {
                        detected.lock().expect("list").push((e.task.clone().unwrap_or_default(), Instant::now()));
                    }
                }
                std::thread::sleep(substrate::DEFAULT_REAP_INTERVAL);
            }
        })
    };
    let mut lat = Vec::new();
    for trial in 0..CRASH_TRIALS {
        let id = format!("crash{trial}");
        substrate::write_task(&bd, &task(&bd, &id, 60_000)).expect("task");
        let root = home.root().display().to_string();
        let (mut c, mut out) = spawn_child("block", &[&root, "crash", &id]);
        let mut line = String::new();
        out.read_line(&mut line).expect("claimed line");
        assert!(line.starts_with("claimed"), "{line}");
        // Vary the phase against the reaper's period.
        std::thread::sleep(Duration::from_millis(37 * trial as u64 % 200));
        let killed = Instant::now();
        c.kill().expect("kill");
        c.wait().expect("wait");
        let deadline = killed + Duration::from_secs(10);
        let at = loop {
            if let Some((_, at)) = detected.lock().expect("list").iter().find(|(t, _)| *t == id) {
                break *at;
            }
            assert!(Instant::now() < deadline, "crash of {id} not detected in 10 s");
            std::thread::sleep(Duration::from_millis(1));
        };
        lat.push(at.saturating_duration_since(killed));
    }
    stop.store(true, Ordering::Relaxed);
    reaper.join().expect("reaper thread");
    lat
}

// ------------------------------------------------------------------------------------------------

struct WorktreeTimes {
    cli_add: Duration,
    add: Duration,
    cli_remove: Duration,
    remove: Duration,
    /// Medians of the per-round ratios (ours / CLI, measured back to back).
    add_ratio: f64,
    remove_ratio: f64,
}

fn worktrees(dir: &Path) -> WorktreeTimes {
    let home = make_repo(dir, REPO_FILES);
    let base = git(dir, &["rev-parse", "HEAD"]);
    let cli_dir = dir.join("cli-worktrees");
    std::fs::create_dir_all(&cli_dir).expect("mkdir");
    let (mut cli_add, mut add, mut cli_remove, mut remove) = (vec![], vec![], vec![], vec![]);
    for round in 0..=WORKTREE_ROUNDS {
        let cli_path = cli_dir.join(format!("cli{round}"));
        let cli_path_s = cli_path.display().to_string();
        let cli_add_once = || {
            let t = Instant::now();
            git(dir, &["worktree", "add", "--quiet", "-b", &format!("cli{round}"), &cli_path_s, &base]);
            t.elapsed()
        };
        let add_once = || {
            let t = Instant::now();
            let bd = substrate::add_worktree(&home, &format!("ours{round}"), &base).expect("add worktree");
            (t.elapsed(), bd)
        };
        // Alternate which goes first, so neither always pays for the other's writeback.
        let (d_cli_add, (d_add, bd)) = if round % 2 == 0 {
            let c = cli_add_once();
            (c, add_once())
        } else {
            let o = add_once();
            (cli_add_once(), o)
        };
        let cli_remove_once = || {
            let t = Instant::now();
            git(dir, &["worktree", "remove", "--force", &cli_path_s]);
            t.elapsed()
        };
        let remove_once = || {
            let t = Instant::now();
            assert!(substrate::remove_checkout(&bd).expect("remove"));
            t.elapsed()
        };
        let (d_cli_remove, d_remove) = if round % 2 == 0 {
            let c = cli_remove_once();
            (c, remove_once())
        } else {
            let o = remove_once();
            (cli_remove_once(), o)
        };
        // Round 0 is a warm-up.
        if round > 0 {
            cli_add.push(d_cli_add);
            add.push(d_add);
            cli_remove.push(d_cli_remove);
            remove.push(d_remove);
        }
    }
    let ratio = |ours: &[Duration], cli: &[Duration]| {
        median_f(&ours.iter().zip(cli).map(|(o, c)| o.as_secs_f64() / c.as_secs_f64()).collect::<Vec<_>>())
    };
    WorktreeTimes {
        cli_add: median(&cli_add),
        add: median(&add),
        cli_remove: median(&cli_remove),
        remove: median(&remove),
        add_ratio: ratio(&add, &cli_add),
        remove_ratio: ratio(&remove, &cli_remove),
    }
}

fn promotions(dir: &Path) -> (Duration, Duration) {
    let mut out = Vec::new();
    for detached in [false, true] {
        let d = dir.join(if detached { "detached" } else { "checked-out" });
        let home = make_repo(&d, 100);
        if detached {
            git(&d, &["checkout", "-q", "--detach"]);
        }
        let mut times = Vec::new();
        for i in 0..PROMOTIONS {
            let base = git(&d, &["rev-parse", "refs/heads/main"]);
            let branch = format!("p{i}");
            let bd = substrate::add_worktree(&home, &branch, &base).expect("add worktree");
            std::fs::write(bd.tree().join(format!("new{i}.txt")), "x\n").expect("write");
            git(&bd.tree(), &["add", "-A"]);
            git(&bd.tree(), &["commit", "-q", "-m", "candidate"]);
            let cand = git(&bd.tree(), &["rev-parse", "HEAD"]);
            let t = Instant::now();
            let o = substrate::promote(&home, &branch, &cand, &base, |from, to| {
                let kind = EventKind::Promoted {
                    candidate: branch.clone(),
                    commit: to.into(),
                    from: from.into(),
                    before: None,
                    after: None,
                };
                Event::new("bench", kind)
            })
            .expect("promote");
            times.push(t.elapsed());
            assert!(matches!(o, PromoteOutcome::Promoted { .. }), "{o:?}");
        }
        out.push(median(&times));
    }
    (out[0], out[1])
}
