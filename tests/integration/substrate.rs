//! The coordination substrate with real processes and real git repositories: exactly-once
//! claims under contention, crash and hang detection with fencing, promotion as a
//! compare-and-swap, name validation, quarantine of corrupt files, gc.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use kit::substrate::{
    self, BranchDir, BranchState, Home, PromoteOutcome, SubstrateError, TaskWatcher, Wakeup, add_worktree,
    find_claimable, promote, queue_task, reap_all, try_claim,
};
use nix::sys::signal::Signal;
use protocol::events::{Event, EventKind};
use protocol::lease::{LeaseFile, Outcome, ResultFile, TaskFile, TaskFileState};
use ratchet_tests::{Lines, ProcGuard, TestHome, git_in, hermetic, wait_for};
use serde_json::json;

const ROLE: &str = "executor";

/// The `promoted` event a caller of `promote` would record.
fn announce(from: &str, to: &str) -> Event {
    let kind =
        EventKind::Promoted { candidate: "c".into(), commit: to.into(), from: from.into(), before: None, after: None };
    Event::new("test", kind)
}

fn open_home(t: &TestHome) -> Home {
    Home::open(t.path())
        .expect("test home is a repository")
        .with_run_id("test-run")
        .with_git_env("GIT_CONFIG_GLOBAL", "/dev/null")
        .with_git_env("GIT_CONFIG_NOSYSTEM", "1")
}

fn head(dir: &Path) -> String {
    git_in(dir, &["rev-parse", "HEAD"])
}

/// Commits `file` with `content` in the checkout at `dir`; returns the new commit id.
fn commit_file(dir: &Path, file: &str, content: &str) -> String {
    fs::write(dir.join(file), content).expect("writing a file to commit");
    git_in(dir, &["add", file]);
    git_in(dir, &["commit", "-q", "-m", &format!("change {file}")]);
    head(dir)
}

fn task(bd: &BranchDir, id: &str, ttl_ms: u64, max_attempts: u32) -> TaskFile {
    TaskFile { token: 0, ttl_ms, max_attempts, ..TaskFile::queued(bd.branch(), id, ROLE, "apply", json!({})) }
}

fn events(bd: &BranchDir) -> Vec<Event> {
    substrate::read_events(&bd.events_file()).expect("reading events").events
}

fn worker_cmd(home: &Home, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lease_worker"));
    hermetic(&mut cmd, home.root());
    cmd.arg(home.root()).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// A worker process with its output captured.
struct Worker {
    proc: ProcGuard,
    lines: Lines,
}

fn spawn_worker(home: &Home, args: &[&str]) -> Worker {
    let mut proc = ProcGuard::spawn(worker_cmd(home, args));
    let lines = Lines::capture(&mut proc.child, |_| {});
    Worker { proc, lines }
}

/// The coordinator's reaper, in a thread, until dropped.
struct ReaperLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl ReaperLoop {
    fn start(home: &Home, interval: Duration) -> ReaperLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (home, stop2, errors2) = (home.clone(), stop.clone(), errors.clone());
        let host = substrate::hostname();
        let handle = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if let Err(e) = reap_all(&home, &host) {
                    errors2.lock().expect("error list").push(e.to_string());
                }
                std::thread::sleep(interval);
            }
        });
        ReaperLoop { stop, handle: Some(handle), errors }
    }
}

impl Drop for ReaperLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let errors = self.errors.lock().expect("error list");
        if !std::thread::panicking() {
            assert!(errors.is_empty(), "the reaper failed: {errors:?}");
        }
    }
}

fn wait_event(bd: &BranchDir, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    wait_for(what, Duration::from_secs(30), || events(bd).into_iter().find(|e| pred(e)))
}

fn markers(bd: &BranchDir, task: &str) -> Vec<String> {
    let dir = bd.artifact_dir(task).expect("valid task id");
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n.starts_with("done-"));
    names.sort();
    names
}

fn accepted_result(bd: &BranchDir, task: &str, token: u64) -> Option<ResultFile> {
    let path = bd.results_dir().join("accepted").join(format!("{task}.{token}.json"));
    fs::read(path).ok().map(|b| serde_json::from_slice(&b).expect("accepted results parse"))
}

#[test]
fn eight_processes_complete_two_thousand_tasks_exactly_once() {
    let t = TestHome::new();
    let home = open_home(&t);
    let base = head(t.path());
    let bd = add_worktree(&home, "race", &base).expect("adding a worktree");
    const N: usize = 2000;
    for i in 0..N {
        queue_task(&bd, &task(&bd, &format!("t{i:04}"), 30_000, 3)).expect("queueing");
    }
    let reaper = ReaperLoop::start(&home, Duration::from_millis(20));
    let mut workers: Vec<Worker> = (0..8).map(|i| spawn_worker(&home, &[&format!("w{i}"), "race", ROLE])).collect();
    let mut completed = 0;
    for w in &mut workers {
        let status = w.proc.wait_timeout(Duration::from_secs(300));
        let out = w.lines.read_to_end(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "worker failed: {out}");
        completed += out
            .lines()
            .find_map(|l| l.strip_prefix("completed "))
            .and_then(|n| n.parse::<usize>().ok())
            .expect("worker reports its completions");
    }
    drop(reaper);
    assert_eq!(completed, N, "the workers completed {completed} tasks, not {N}");
    let winners: std::collections::BTreeSet<usize> = (0..N)
        .map(|i| {
            let id = format!("t{i:04}");
            let m = markers(&bd, &id);
            assert_eq!(m.len(), 1, "task {id} was completed {} times: {m:?}", m.len());
            let task = substrate::read_task(&bd, &id).expect("task file");
            assert_eq!(task.state, TaskFileState::Done, "task {id}");
            assert_eq!(task.history.len(), 1, "task {id} history {:?}", task.history);
            let r = accepted_result(&bd, &id, 0).expect("accepted result");
            assert_eq!(r.data["marker"], json!(m[0]));
            m[0].split('-').nth(1).and_then(|p| p.parse().ok()).expect("marker names a pid")
        })
        .collect();
    assert!(winners.len() > 1, "only one worker ever won a claim: no contention was exercised");
    let evs = events(&bd);
    assert!(!evs.iter().any(|e| matches!(e.kind, EventKind::ResultRefused { .. } | EventKind::LeaseExpired { .. })));
    assert_eq!(evs.iter().filter(|e| matches!(e.kind, EventKind::LeaseClaimed { .. })).count(), N);
    assert!(fs::read_dir(bd.leases_dir()).expect("leases dir").flatten().all(|e| e.path().is_dir()));
}

#[test]
fn a_killed_holder_is_detected_and_its_task_rerun_without_its_partial_work() {
    let t = TestHome::new();
    let home = open_home(&t);
    let bd = add_worktree(&home, "crash", &head(t.path())).expect("adding a worktree");
    // A long TTL: only the released lock can reveal the death quickly.
    queue_task(&bd, &task(&bd, "job", 60_000, 3)).expect("queueing");
    let mut w1 = spawn_worker(&home, &["w1", "block", "crash", "job"]);
    w1.lines.wait_for("claimed 0", Duration::from_secs(30));
    let w1_pid = w1.proc.pid() as u32;

    let _reaper = ReaperLoop::start(&home, substrate::DEFAULT_REAP_INTERVAL);
    // While it lives, nothing happens to its lease.
    assert!(try_claim(&bd, "job", "thief").expect("claiming").is_none());
    let killed_at = Instant::now();
    w1.proc.signal(Signal::SIGKILL);
    let expired = wait_event(
        &bd,
        "the lease of the killed holder to expire",
        |e| matches!(&e.kind, EventKind::LeaseExpired { holder, token: 0, .. } if holder == "w1"),
    );
    let latency = killed_at.elapsed();
    eprintln!("crash detected {latency:?} after SIGKILL (reap interval {:?})", substrate::DEFAULT_REAP_INTERVAL);
    assert!(latency < Duration::from_secs(10), "detection took {latency:?}");
    let EventKind::LeaseExpired { reason, .. } = &expired.kind else { unreachable!() };
    assert!(reason.contains("gone"), "reason: {reason}");

    let requeued = substrate::read_task(&bd, "job").expect("task");
    assert_eq!((requeued.state, requeued.attempt, requeued.token), (TaskFileState::Queued, 2, 1));
    // The expired lease is kept for inspection.
    let kept: LeaseFile =
        serde_json::from_slice(&fs::read(bd.expired_path("job", 0).expect("path")).expect("expired lease kept"))
            .expect("expired lease parses");
    assert_eq!((kept.pid, kept.agent_id.as_str()), (w1_pid, "w1"));

    let mut w2 = spawn_worker(&home, &["w2", "race", ROLE]);
    assert!(w2.proc.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "{}", w2.lines.all());
    let done = substrate::read_task(&bd, "job").expect("task");
    assert_eq!(done.state, TaskFileState::Done);
    assert_eq!(done.history.len(), 2);
    assert_eq!(done.history[0].holder.as_deref(), Some("w1"));
    assert!(matches!(done.history[0].outcome, protocol::lease::AttemptOutcome::Expired(_)), "{:?}", done.history[0]);
    let result = accepted_result(&bd, "job", 1).expect("w2's result accepted under token 1");
    assert_eq!(result.agent_id, "w2");
    assert!(accepted_result(&bd, "job", 0).is_none(), "nothing of the dead holder is applied");
    let m = markers(&bd, "job");
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(result.data["marker"], json!(m[0]));
    assert!(!result.data.to_string().contains("partial"));

    let report = substrate::inspect(&home, "crash").expect("inspect");
    let last = report.tasks[0].last_expired.as_ref().expect("last holder shown");
    assert_eq!(last.agent_id, "w1");
    assert!(last.reason.as_deref().is_some_and(|r| r.contains("gone")), "{last:?}");
    let text = substrate::render_text(&report);
    assert!(text.contains("last holder w1") || text.contains("by w1"), "{text}");
    assert!(report.artifacts.iter().any(|a| a.path.starts_with("job/partial-") && a.bytes > 0));
}

#[test]
fn a_stopped_holder_loses_its_lease_and_its_late_result_is_refused() {
    let t = TestHome::new();
    let home = open_home(&t);
    let bd = add_worktree(&home, "hang", &head(t.path())).expect("adding a worktree");
    queue_task(&bd, &task(&bd, "job", 300, 3)).expect("queueing");
    let mut w1 = spawn_worker(&home, &["w1", "hold", "hang", "job"]);
    w1.lines.wait_for("claimed 0", Duration::from_secs(30));
    w1.proc.signal(Signal::SIGSTOP);

    let reaper = ReaperLoop::start(&home, Duration::from_millis(20));
    let expired = wait_event(
        &bd,
        "the stopped holder's lease to expire",
        |e| matches!(&e.kind, EventKind::LeaseExpired { holder, .. } if holder == "w1"),
    );
    let EventKind::LeaseExpired { reason, .. } = &expired.kind else { unreachable!() };
    assert!(reason.contains("heartbeat"), "a stopped process is alive; only its heartbeat can expire: {reason}");
    drop(reaper);

    // A second holder takes the task under the next token while the first still lives.
    let lease = try_claim(&bd, "job", "w2").expect("claiming").expect("the task is claimable again");
    assert_eq!(lease.token(), 1);

    w1.proc.signal(Signal::SIGCONT);
    w1.proc.child.stdin.as_mut().expect("stdin").write_all(b"go\n").expect("waking the worker");
    w1.lines.wait_for("lost", Duration::from_secs(30));
    w1.lines.wait_for("finished", Duration::from_secs(30));
    assert!(w1.proc.wait_timeout(Duration::from_secs(30)).is_some_and(|s| s.success()));
    lease.check().expect("the stale holder did not disturb the new lease");
    lease.finish(Outcome::Success, "on time", json!({"by": "w2"})).expect("finishing");

    let evs = reap_all(&home, &substrate::hostname()).expect("reaping");
    let refused = evs
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ResultRefused { token, current_token, .. } => Some((*token, *current_token)),
            _ => None,
        })
        .expect("the late result is refused");
    assert_eq!(refused, (0, 1));
    let done = substrate::read_task(&bd, "job").expect("task");
    assert_eq!(done.state, TaskFileState::Done);
    assert_eq!(accepted_result(&bd, "job", 1).expect("w2's result").data, json!({"by": "w2"}));
    assert!(bd.results_dir().join("refused").join("job.0.json").exists());
    assert!(accepted_result(&bd, "job", 0).is_none());
}

#[test]
fn a_result_for_a_removed_branch_directory_fails_and_does_not_make_it_again() {
    let t = TestHome::new();
    let home = open_home(&t);
    let bd = add_worktree(&home, "gone", &head(t.path())).expect("adding a worktree");
    queue_task(&bd, &task(&bd, "job", 60_000, 3)).expect("queueing");
    let lease = try_claim(&bd, "job", "w1").expect("claiming").expect("the task is claimable");
    // The branch's directory goes (removed by hand) while its holder works.
    fs::remove_dir_all(bd.dir()).expect("removing the branch directory");
    let e = lease.finish(Outcome::Success, "late", json!({})).expect_err("there is no branch to write into");
    let result = bd.results_dir().join("job.0.json");
    assert!(e.to_string().starts_with(&format!("writing {}", result.display())), "{e}");
    assert!(!bd.dir().exists(), "the write made the removed branch directory again");
}

#[test]
fn promotion_is_refused_when_main_moved() {
    let t = TestHome::new();
    let home = open_home(&t);
    let base = head(t.path());
    let bd = add_worktree(&home, "late", &base).expect("adding a worktree");
    let cand = commit_file(&bd.tree(), "a.txt", "candidate\n");
    let moved = commit_file(t.path(), "b.txt", "someone else\n");

    let out = promote(&home, "late", &cand, &base, announce).expect("promote runs");
    assert_eq!(out, PromoteOutcome::Stale { main_now: moved.clone() });
    assert_eq!(git_in(t.path(), &["rev-parse", "refs/heads/main"]), moved, "main did not move");
    assert_eq!(bd.read_meta().expect("meta").expect("meta exists").state, BranchState::Stale);
    assert!(events(&bd).iter().any(|e| matches!(e.kind, EventKind::PromotionRefused { .. })));
    let parents = git_in(t.path(), &["rev-list", "--parents", "-n", "1", "main"]);
    assert_eq!(parents.split(' ').count(), 2, "no merge commit: {parents}");
}

#[test]
fn of_two_concurrent_promotions_exactly_one_wins() {
    // Once with main checked out at the repository root (fast-forward of the checkout), once
    // with the root detached (compare-and-swap of the ref alone).
    for detached in [false, true] {
        let t = TestHome::new();
        let home = open_home(&t);
        let base = head(t.path());
        if detached {
            git_in(t.path(), &["checkout", "-q", "--detach"]);
        }
        let mut cands = Vec::new();
        for b in ["c1", "c2"] {
            let bd = add_worktree(&home, b, &base).expect("adding a worktree");
            cands.push((b, commit_file(&bd.tree(), &format!("{b}.txt"), b)));
        }
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = cands
            .iter()
            .cloned()
            .map(|(b, c)| {
                let (home, base, barrier) = (home.clone(), base.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (b, c.clone(), promote(&home, b, &c, &base, announce).expect("promote runs"))
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().expect("promotion thread")).collect();
        let winners: Vec<_> =
            outcomes.iter().filter(|(_, _, o)| matches!(o, PromoteOutcome::Promoted { .. })).collect();
        assert_eq!(winners.len(), 1, "detached={detached}: {outcomes:?}");
        let (win_b, win_c, _) = winners[0];
        let (lose_b, _, lose_o) = outcomes.iter().find(|(b, _, _)| b != win_b).expect("a loser");
        assert_eq!(lose_o, &PromoteOutcome::Stale { main_now: win_c.clone() });
        assert_eq!(git_in(t.path(), &["rev-parse", "refs/heads/main"]), *win_c);
        let state = |b: &str| home.open_branch(b).expect("branch").read_meta().expect("meta").expect("meta").state;
        assert_eq!(state(win_b), BranchState::Promoted);
        assert_eq!(state(lose_b), BranchState::Stale);
        if !detached {
            assert!(t.path().join(format!("{win_b}.txt")).exists(), "the checkout of main moved with the ref");
        }
        // Repeating the winning promotion (as after a crash) changes nothing and records nothing twice.
        let again = promote(&home, win_b, win_c, &base, announce).expect("promote runs");
        assert!(matches!(again, PromoteOutcome::Promoted { .. }));
        let bd = home.open_branch(win_b).expect("branch");
        assert_eq!(events(&bd).iter().filter(|e| matches!(e.kind, EventKind::Promoted { .. })).count(), 1);
        // One `promoted` event per promotion, in the branch's log and in the swarm's.
        let swarm_log = kit::substrate::read_events(&kit::layout::Layout::new(t.path()).events_file()).expect("log");
        let promoted: Vec<&Event> =
            swarm_log.events.iter().filter(|e| matches!(e.kind, EventKind::Promoted { .. })).collect();
        assert_eq!(promoted.len(), 1, "{promoted:?}");
        assert_eq!(promoted[0].branch.as_deref(), Some(*win_b));
    }
}

#[test]
fn a_dirty_checkout_of_main_holds_the_promotion_and_a_clean_one_moves_with_it() {
    let t = TestHome::new();
    let home = open_home(&t);
    let base = head(t.path());
    let bd = add_worktree(&home, "feat", &base).expect("adding a worktree");
    let cand = commit_file(&bd.tree(), "feature.txt", "new\n");

    fs::write(t.path().join("README.md"), "uncommitted edit\n").expect("editing");
    let out = promote(&home, "feat", &cand, &base, announce).expect("promote runs");
    let PromoteOutcome::Held { reason } = out else { panic!("expected Held, got {out:?}") };
    assert!(reason.contains(&t.path().canonicalize().expect("path").display().to_string()), "{reason}");
    assert!(reason.contains("uncommitted"), "{reason}");
    assert_eq!(git_in(t.path(), &["rev-parse", "refs/heads/main"]), base, "main did not move");
    assert_eq!(fs::read_to_string(t.path().join("README.md")).expect("read"), "uncommitted edit\n");
    assert!(!t.path().join("feature.txt").exists());

    git_in(t.path(), &["checkout", "--", "README.md"]);
    let out = promote(&home, "feat", &cand, &base, announce).expect("promote runs");
    assert_eq!(out, PromoteOutcome::Promoted { from: base.clone(), to: cand.clone() });
    assert_eq!(head(t.path()), cand);
    assert_eq!(fs::read_to_string(t.path().join("feature.txt")).expect("file moved with main"), "new\n");
    assert_eq!(git_in(t.path(), &["status", "--porcelain", "--untracked-files=no"]), "");
}

fn snapshot(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name() == ".git" {
                continue;
            }
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

#[test]
fn names_that_could_escape_are_refused_and_change_nothing() {
    let t = TestHome::new();
    let home = open_home(&t);
    let base = head(t.path());
    let bd = add_worktree(&home, "ok", &base).expect("adding a worktree");
    queue_task(&bd, &task(&bd, "t1", 30_000, 3)).expect("queueing");
    let outside = t.path().parent().expect("temp dir has a parent").to_path_buf();
    let before = snapshot(t.path());
    let branches_before = git_in(t.path(), &["branch", "--list"]);
    let long = "a".repeat(101);
    let bad = ["../evil", "..", "/tmp/abs", "a/b", "x\0y", "a\nb", ".hidden", "-rf", "tree.lock", long.as_str()];
    for name in bad {
        let is_name_error = |r: Result<(), SubstrateError>| matches!(r, Err(SubstrateError::Name(_)));
        assert!(is_name_error(add_worktree(&home, name, &base).map(|_| ())), "branch {name:?}");
        assert!(is_name_error(home.branch_dir(name).map(|_| ())), "branch {name:?}");
        assert!(is_name_error(try_claim(&bd, name, "w").map(|_| ())), "task {name:?}");
        assert!(is_name_error(try_claim(&bd, "t1", name).map(|_| ())), "agent {name:?}");
        assert!(is_name_error(substrate::write_task(&bd, &task(&bd, name, 1, 1))), "task {name:?}");
        assert!(is_name_error(substrate::read_task(&bd, name).map(|_| ())), "task {name:?}");
        assert!(is_name_error(bd.artifact_path("t1", name).map(|_| ())), "artefact {name:?}");
        assert!(is_name_error(promote(&home, name, &base, &base, announce).map(|_| ())), "branch {name:?}");
    }
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = add_worktree(&home, "fine", missing).map(|_| ()).expect_err("no such commit");
    assert!(matches!(err, SubstrateError::NoSuchCommit { .. }), "{err}");
    let err = add_worktree(&home, "fine", "no-such-ref").map(|_| ()).expect_err("no such commit");
    assert!(matches!(err, SubstrateError::NoSuchCommit { .. }), "{err}");
    let err = add_worktree(&home, "../evil", &base).map(|_| ()).expect_err("refused").to_string();
    assert!(err.contains("branch name") && err.contains("path separator"), "{err}");
    assert_eq!(snapshot(t.path()), before, "a refused name created or changed something");
    assert!(!outside.join("evil").exists());
    assert_eq!(git_in(t.path(), &["branch", "--list"]), branches_before);
}

#[test]
fn corrupt_task_lease_and_result_files_are_quarantined_and_the_reaper_goes_on() {
    let t = TestHome::new();
    let home = open_home(&t);
    let bd = add_worktree(&home, "corrupt", &head(t.path())).expect("adding a worktree");
    for id in ["good", "badtask", "badlease"] {
        queue_task(&bd, &task(&bd, id, 30_000, 3)).expect("queueing");
    }
    let full = fs::read(bd.task_path("badtask").expect("path")).expect("task file");
    fs::write(bd.task_path("badtask").expect("path"), &full[..full.len() / 2]).expect("truncating");
    let lease_path = bd.lease_path("badlease").expect("path");
    fs::write(&lease_path, br#"{"version":1,"task_id":"badlease","agent_id":"w"#).expect("writing");
    // Older than the grace given to a claimer between creating and locking its lease.
    let old = SystemTime::now() - substrate::EMPTY_LEASE_GRACE - Duration::from_secs(5);
    fs::File::options().write(true).open(&lease_path).expect("open").set_modified(old).expect("mtime");
    fs::create_dir_all(bd.results_dir()).expect("mkdir");
    fs::write(bd.results_dir().join("good.7.json"), b"{\"task_id\": \"go").expect("writing");

    let evs = reap_all(&home, &substrate::hostname()).expect("the reaper survives corrupt files");
    let quarantined: Vec<&str> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FileQuarantined { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(quarantined.len(), 3, "{evs:#?}");
    assert!(quarantined.iter().any(|p| p.contains("tasks/quarantine/badtask.json")), "{quarantined:?}");
    assert!(quarantined.iter().any(|p| p.contains("leases/quarantine/badlease.lock")), "{quarantined:?}");
    assert!(quarantined.iter().any(|p| p.contains("results/quarantine/good.7.json")), "{quarantined:?}");
    assert!(!bd.task_path("badtask").expect("path").exists());
    assert!(!lease_path.exists());
    for p in &quarantined {
        assert!(Path::new(p).exists(), "{p} kept for inspection");
    }

    // The corrupt lease's token is dead and the task claimable again; the good task is untouched.
    let badlease = substrate::read_task(&bd, "badlease").expect("task");
    assert_eq!((badlease.token, badlease.state), (1, TaskFileState::Queued));
    let mut claimable: Vec<String> = find_claimable(&home, ROLE).expect("scan").into_iter().map(|(_, t)| t).collect();
    claimable.sort();
    assert_eq!(claimable, ["badlease", "good"]);
    for id in ["good", "badlease"] {
        let lease = try_claim(&bd, id, "w").expect("claiming").expect("claimable");
        lease.finish(Outcome::Success, "ok", json!(null)).expect("finishing");
    }
    reap_all(&home, &substrate::hostname()).expect("reaping");
    for id in ["good", "badlease"] {
        assert_eq!(substrate::read_task(&bd, id).expect("task").state, TaskFileState::Done, "{id}");
    }
    let report = substrate::inspect(&home, "corrupt").expect("inspect");
    assert_eq!(report.quarantined.len(), 3, "{:?}", report.quarantined);
}

#[test]
fn an_expiry_interrupted_by_a_crash_is_finished_by_the_next_pass() {
    let t = TestHome::new();
    let home = open_home(&t);
    let bd = add_worktree(&home, "resume", &head(t.path())).expect("adding a worktree");
    queue_task(&bd, &task(&bd, "job", 30_000, 3)).expect("queueing");
    let lease = try_claim(&bd, "job", "w1").expect("claiming").expect("claimable");
    // The coordinator died right after killing token 0 (the rename), before bumping the task.
    fs::create_dir_all(bd.expired_dir()).expect("mkdir");
    fs::rename(bd.lease_path("job").expect("path"), bd.expired_path("job", 0).expect("path")).expect("rename");
    assert!(try_claim(&bd, "job", "w2").expect("claiming").is_none(), "a killed token is never handed out again");
    assert!(lease.check().is_err(), "the holder learns it lost the lease");
    reap_all(&home, &substrate::hostname()).expect("reaping");
    let task = substrate::read_task(&bd, "job").expect("task");
    assert_eq!((task.state, task.attempt, task.token), (TaskFileState::Queued, 2, 1));
    // w2's refused claim left its lease file (token 0) for the reaper to move, which it does
    // once nobody holds that file's lock. A process another test forks meanwhile holds a copy of
    // every descriptor until its exec, the lock included, so the pass that moves it may be a
    // later one.
    let claimed = (0..200).find_map(|_| {
        let lease = try_claim(&bd, "job", "w2").expect("claiming");
        if lease.is_none() {
            std::thread::sleep(Duration::from_millis(10));
            reap_all(&home, &substrate::hostname()).expect("reaping");
        }
        lease
    });
    assert_eq!(claimed.expect("claimable once the refused claim's leftover is moved").token(), 1);
}

#[test]
fn infra_failures_are_retried_until_attempts_run_out() {
    let t = TestHome::new();
    let home = open_home(&t);
    let bd = add_worktree(&home, "flaky", &head(t.path())).expect("adding a worktree");
    queue_task(&bd, &task(&bd, "job", 30_000, 2)).expect("queueing");
    for expected_token in [0, 1] {
        let lease = try_claim(&bd, "job", "w").expect("claiming").expect("claimable");
        assert_eq!(lease.token(), expected_token);
        lease.finish(Outcome::InfraFailure, "oom", json!(null)).expect("finishing");
        reap_all(&home, &substrate::hostname()).expect("reaping");
    }
    let task = substrate::read_task(&bd, "job").expect("task");
    assert_eq!(task.state, TaskFileState::InfraFailed);
    assert_eq!(task.history.len(), 2);
    assert!(events(&bd).iter().any(|e| matches!(e.kind, EventKind::TaskFailed { infra: true, .. })));
    assert!(try_claim(&bd, "job", "w").expect("claiming").is_none());
}

#[test]
fn the_watcher_wakes_an_agent_for_a_task_on_a_branch_created_after_it_started() {
    let t = TestHome::new();
    let home = open_home(&t);
    let (_watcher, mut wakeups) =
        TaskWatcher::blocking(home.worktrees_dir(), Duration::from_secs(120)).expect("watching");
    let bd = add_worktree(&home, "later", &head(t.path())).expect("adding a worktree");
    queue_task(&bd, &task(&bd, "job", 30_000, 3)).expect("queueing");
    let started = Instant::now();
    loop {
        // A rescan would mean the notification was missed (the interval is far beyond the test).
        assert_eq!(wakeups.wait(), Wakeup::Changed);
        if find_claimable(&home, ROLE).expect("scan").contains(&("later".to_string(), "job".to_string())) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no wakeup found the task");
    }
}

#[test]
fn gc_leaves_no_registration_no_orphan_and_loses_no_commit() {
    let t = TestHome::new();
    let home = open_home(&t);
    let base = head(t.path());
    // promoted
    let p = add_worktree(&home, "p", &base).expect("adding a worktree");
    let p_commit = commit_file(&p.tree(), "p.txt", "p");
    assert!(matches!(
        promote(&home, "p", &p_commit, &base, announce).expect("promote"),
        PromoteOutcome::Promoted { .. }
    ));
    // rejected, with a commit that is not on main
    let r = add_worktree(&home, "r", &base).expect("adding a worktree");
    let r_commit = commit_file(&r.tree(), "r.txt", "r");
    queue_task(&r, &task(&r, "job", 30_000, 3)).expect("queueing");
    fs::create_dir_all(r.artifact_dir("job").expect("path")).expect("mkdir");
    fs::write(r.artifact_path("job", "review.md").expect("path"), "no").expect("write");
    r.set_state(BranchState::Rejected, Some("worse")).expect("state");
    // still active
    let a = add_worktree(&home, "a", &base).expect("adding a worktree");
    // an add that crashed before writing meta.json, with a commit of its own
    let o_dir = home.worktrees_dir().join("o");
    fs::create_dir_all(&o_dir).expect("mkdir");
    git_in(t.path(), &["worktree", "add", "-q", "-b", "o", o_dir.join("tree").to_str().expect("utf-8"), &base]);
    let o_commit = commit_file(&o_dir.join("tree"), "o.txt", "o");
    let old = SystemTime::now() - substrate::ORPHAN_GRACE - Duration::from_secs(5);
    fs::File::open(&o_dir).expect("open dir").set_modified(old).expect("mtime");
    // a registration whose directory vanished
    let gone = t.path().join("gone-wt");
    git_in(t.path(), &["worktree", "add", "-q", "--detach", gone.to_str().expect("utf-8"), &base]);
    fs::remove_dir_all(&gone).expect("rm");

    let report = substrate::gc(&home).expect("gc");
    let mut removed = report.removed_checkouts.clone();
    removed.sort();
    assert_eq!(removed, ["p", "r"], "{report:?}");

    let list = git_in(t.path(), &["worktree", "list", "--porcelain"]);
    let registered: Vec<&str> = list.lines().filter_map(|l| l.strip_prefix("worktree ")).collect();
    let root = t.path().canonicalize().expect("path");
    let a_tree = a.tree().canonicalize().expect("active tree stays");
    assert_eq!(registered, [root.to_str().expect("utf-8"), a_tree.to_str().expect("utf-8")], "{list}");
    for b in ["p", "r", "o"] {
        assert!(git_in(t.path(), &["branch", "--list", b]).is_empty(), "branch {b} deleted");
    }
    assert_eq!(git_in(t.path(), &["rev-parse", "refs/ratchet/archive/r"]), r_commit);
    assert_eq!(git_in(t.path(), &["rev-parse", "refs/ratchet/archive/o"]), o_commit);
    assert!(git_in(t.path(), &["for-each-ref", "refs/ratchet/archive/p"]).is_empty(), "p is on main");
    for c in [&p_commit, &r_commit, &o_commit] {
        let holders = git_in(t.path(), &["for-each-ref", "--contains", c, "--format=%(refname)"]);
        assert!(!holders.is_empty(), "commit {c} is reachable from no ref");
    }
    assert!(!o_dir.exists(), "the orphan directory is gone");
    assert!(!p.tree().exists() && !r.tree().exists());
    // What remains stays inspectable.
    for bd in [&p, &r] {
        assert!(bd.meta_path().exists() && bd.events_file().exists() && bd.tasks_dir().exists());
    }
    let inspected = substrate::inspect(&home, "r").expect("inspect after gc");
    assert_eq!(inspected.artifacts.len(), 1);
    assert!(inspected.diff_stat.as_deref().is_some_and(|d| d.contains("r.txt")), "{inspected:?}");
    assert!(
        events(&r).iter().any(
            |e| matches!(&e.kind, EventKind::WorktreeRemoved { archived: Some(a) } if a == "refs/ratchet/archive/r")
        )
    );
    // Idempotent.
    let again = substrate::gc(&home).expect("gc again");
    assert!(again.removed_checkouts.is_empty() && again.deleted_branches.is_empty(), "{again:?}");
}

/// A worker process of swarm instance `swarm` (`RATCHET_SWARM_ID`; `None`: started by hand).
fn spawn_swarm_worker(home: &Home, swarm: Option<&str>, args: &[&str]) -> Worker {
    let mut cmd = worker_cmd(home, args);
    if let Some(s) = swarm {
        cmd.env(substrate::SWARM_ID_ENV, s);
    }
    let mut proc = ProcGuard::spawn(cmd);
    let lines = Lines::capture(&mut proc.child, |_| {});
    Worker { proc, lines }
}

/// One swarm per repository: a holder of another swarm instance (a leftover of a swarm whose
/// supervisor died) loses its lease at once, like a holder of an old fencing token, without
/// using up an attempt, and its late result is refused; holders of this instance, and holders
/// started by hand (no swarm id), are judged by the usual rules. A lease or result in a newer
/// file format is refused too, with a message that says so.
#[test]
fn leases_and_results_of_another_swarm_instance_are_refused() {
    let t = TestHome::new();
    let home = open_home(&t);
    let bd = add_worktree(&home, "split", &head(t.path())).expect("adding a worktree");
    for id in ["old", "ours", "byhand", "future"] {
        queue_task(&bd, &task(&bd, id, 60_000, 3)).expect("queueing");
    }
    let mut old = spawn_swarm_worker(&home, Some("swarm-a"), &["orphan", "hold", "split", "old"]);
    let mut ours = spawn_swarm_worker(&home, Some("swarm-b"), &["member", "hold", "split", "ours"]);
    let mut byhand = spawn_swarm_worker(&home, None, &["byhand", "hold", "split", "byhand"]);
    for w in [&mut old, &mut ours, &mut byhand] {
        w.lines.wait_for("claimed 0", Duration::from_secs(30));
    }
    let lease_of = |id: &str| -> LeaseFile {
        protocol::lease::parse_lease(&fs::read(bd.lease_path(id).expect("path")).expect("lease")).expect("parses")
    };
    assert_eq!(lease_of("old").swarm.as_deref(), Some("swarm-a"));
    assert_eq!(lease_of("byhand").swarm, None);
    // A holder written by a newer build (a format this one cannot read), alive and locked.
    let future = bd.lease_path("future").expect("path");
    fs::write(&future, br#"{"version":3,"task_id":"future","holder":{"swarm":"swarm-b"}}"#).expect("writing");
    let lock = fs::File::open(&future).expect("open");
    lock.lock().expect("locking as its holder would");

    // The coordinator of swarm B reaps: everything held is alive, heartbeating, within its ttl.
    let b = home.clone().with_swarm(Some("swarm-b".into()));
    let evs = reap_all(&b, &substrate::hostname()).expect("reaping");
    let expired: BTreeMap<String, String> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LeaseExpired { reason, .. } => Some((e.task.clone().unwrap_or_default(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(expired.keys().collect::<Vec<_>>(), ["future", "old"], "{evs:#?}");
    assert!(
        expired["old"].contains("held by orphan")
            && expired["old"].contains("of swarm instance swarm-a, not of this swarm (swarm-b)"),
        "{}",
        expired["old"]
    );
    assert!(expired["future"].contains("lease file version 3 is newer than this build"), "{}", expired["future"]);
    for id in ["old", "future"] {
        let t = substrate::read_task(&bd, id).expect("task");
        assert_eq!(
            (t.state, t.token, t.attempt),
            (TaskFileState::Queued, 1, 1),
            "{id}: the token moved on, no attempt used"
        );
    }
    for id in ["ours", "byhand"] {
        assert!(bd.lease_path(id).expect("path").exists(), "{id} is still held");
        assert_eq!(substrate::read_task(&bd, id).expect("task").token, 0);
    }

    // Every holder finishes; the orphan's result is refused (and never applied), the others accepted.
    for w in [&mut old, &mut ours, &mut byhand] {
        w.proc.child.stdin.as_mut().expect("stdin").write_all(b"go\n").expect("waking the worker");
        w.lines.wait_for("finished", Duration::from_secs(30));
    }
    assert!(old.lines.all().contains("lost"), "the orphan learns it lost the lease: {}", old.lines.all());
    let evs = reap_all(&b, &substrate::hostname()).expect("reaping");
    let refused: Vec<(String, String)> = evs
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ResultRefused { reason, .. } => Some((e.task.clone().unwrap_or_default(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1, "{evs:#?}");
    assert_eq!(refused[0].0, "old");
    assert!(refused[0].1.contains("written by orphan of swarm instance swarm-a"), "{}", refused[0].1);
    assert!(accepted_result(&bd, "old", 0).is_none());
    for id in ["ours", "byhand"] {
        assert_eq!(substrate::read_task(&bd, id).expect("task").state, TaskFileState::Done, "{id}");
        assert!(accepted_result(&bd, id, 0).is_some(), "{id}");
    }

    // A result file of a newer format is refused as such, not quarantined as corrupt.
    let lease = try_claim(&bd, "future", "w").expect("claiming").expect("claimable again under token 1");
    drop(lock);
    fs::write(bd.result_path("future", 1).expect("path"), br#"{"version":7,"task_id":"future","token":1}"#)
        .expect("writing");
    let evs = reap_all(&b, &substrate::hostname()).expect("reaping");
    let reason = evs
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ResultRefused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("the newer result is refused");
    assert!(reason.contains("result file version 7 is newer than this build of Ratchet reads (up to 2)"), "{reason}");
    assert!(bd.results_dir().join("refused").join("future.1.json").exists());
    drop(lease);
}
