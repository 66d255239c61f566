//! Chaos: `kill -9` of the supervisor, of the coordinator mid-cycle and of agents chosen by a
//! seeded generator, during a multi-cycle run, then `ratchet up` again. Afterwards there is one
//! swarm (no process of the first one left, checked by pid and start time), no orphan process
//! (every `ratchet up` runs under `subreaper`, so orphans stay in the test's process tree and the
//! wrapper exits only once none is left), no duplicate event or promotion, and the run finishes
//! with the resumed run's result. And the split-swarm case: after `kill -9` of the supervisor a
//! second `ratchet up` is the only swarm serving, and a lease held by a process of the first swarm
//! is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kit::substrate::{self, Home, add_worktree, queue_task};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocol::lease::{TaskFile, TaskFileState};
use ratchet_tests::fixture::{Proposer, Spec, Target, UpRun, alive, of_type, read_jsonl};
use ratchet_tests::{Lines, ProcGuard, bin, hermetic, wait_for};
use serde_json::{Value, json};

/// The seed of every random choice here (which agent is killed).
const SEED: u64 = 0x5eed_0008;
const RUN: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);
/// The member started with its stdin redirected: it cannot see its lifeline, so only the next
/// `ratchet up` can stop it once its supervisor is gone.
const DEAF: &str = "critic";
const WORKERS: [&str; 4] = ["proposer", "executor", "critic", "evaluator"];

/// Each call takes 100 ms off delay_ms, down to 200: three promotions from 500.
const STEP_DOWN: &str = r#"cat > "$RATCHET_DECLARATION_FILE" <<'EOF'
files = ["params.toml"]
rationale = "a shorter delay"
EOF
d=$(sed -n 's/^delay_ms = //p' params.toml)
[ "$d" -gt 200 ] || { echo "nothing left to try below $d ms" >&2; exit 1; }
sed -i "s/^delay_ms = .*/delay_ms = $((d - 100))/" params.toml
echo "delay_ms $d -> $((d - 100))""#;

/// A small deterministic generator (xorshift64*): the same seed kills the same agents.
struct Rng(u64);

impl Rng {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        items[(x % items.len() as u64) as usize]
    }
}

/// The five built-in agents, the `deaf` one behind a shell that gives it /dev/null for stdin.
fn agents_toml(deaf: &str) -> String {
    let mut out = String::new();
    for name in ["coordinator", "proposer", "executor", "critic", "evaluator"] {
        let exe = bin(name).display().to_string();
        let command = if name == deaf {
            format!("[\"sh\", \"-c\", {:?}]", format!("exec '{exe}' </dev/null"))
        } else {
            format!("[{exe:?}]")
        };
        out.push_str(&format!("[[agent]]\nname = {name:?}\nrole = {name:?}\ncommand = {command}\n\n"));
    }
    out
}

/// A process as `state.json` recorded it: pid and start time (clock ticks after boot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    name: String,
    pid: i32,
    start: u64,
}

impl Proc {
    /// Whether that very process still runs (a recycled pid has another start time).
    fn alive(&self) -> bool {
        start_ticks(self.pid).is_some_and(|s| s == self.start) && alive(self.pid)
    }
}

fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

fn state(root: &Path) -> Value {
    let text = std::fs::read_to_string(root.join("worktrees/.swarm/state.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The members `state.json` lists now, with their recorded identity.
fn members(root: &Path) -> Vec<Proc> {
    let st = state(root);
    st["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| {
                    Some(Proc {
                        name: a["name"].as_str()?.to_string(),
                        pid: a["pid"].as_i64()? as i32,
                        start: a["identity"]["start_ticks"].as_u64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ready member `name` (pid), once state.json shows it ready.
fn ready_pid(root: &Path, name: &str) -> i32 {
    wait_for(&format!("{name} to be ready"), SHORT, || {
        state(root)["agents"].as_array()?.iter().find_map(|a| {
            (a["name"] == name && a["state"] == "ready").then(|| a["pid"].as_i64().map(|p| p as i32)).flatten()
        })
    })
}

/// `kill -9` member `name`, then wait until the supervisor has it ready again under a new pid.
fn kill_member(root: &Path, name: &str, seen: &mut BTreeSet<Proc>) {
    seen.extend(members(root));
    let pid = ready_pid(root, name);
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 a member");
    wait_for(&format!("{name} to be restarted"), SHORT, || (ready_pid(root, name) != pid).then_some(()));
    seen.extend(members(root));
}

/// `ratchet up <args> --repo <root>` under `subreaper`.
fn up_under_subreaper(t: &Target, args: &[&str]) -> UpRun {
    let mut cmd = t.command(&bin("subreaper"));
    cmd.arg(bin("ratchet")).args(args).arg("--repo").arg(t.path());
    UpRun::spawn_cmd(cmd, t.path())
}

/// The `ratchet up` process below a `subreaper`.
fn supervisor_of(up: &UpRun) -> i32 {
    let pid = up.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().next().and_then(|c| c.parse().ok()).expect("subreaper has started ratchet up")
}

/// Wait until the progress (stderr) holds `needle`.
fn wait_progress(up: &mut UpRun, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !up.stderr().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in the progress within {timeout:?}:\n{}", up.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `rel` exists in the directory of the cycle-`cycle` candidate (`worktrees/<run>-c<cycle>-1/`).
fn in_candidate_dir(root: &Path, cycle: u32, rel: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(kit::layout::Layout::new(root).worktrees()) else { return false };
    rd.flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(&format!("-c{cycle}-1")) && e.path().join(rel).exists())
}

/// Every event log of the target: the swarm's and each branch's.
fn event_logs(root: &Path) -> Vec<PathBuf> {
    let layout = kit::layout::Layout::new(root);
    let mut logs = vec![layout.events_file()];
    if let Ok(rd) = std::fs::read_dir(layout.worktrees()) {
        logs.extend(rd.flatten().map(|e| e.path().join("events/events.jsonl")).filter(|p| p.exists()));
    }
    logs
}

/// No event appears twice: no identical line in any log, and in each branch log at most one
/// claim and one accepted result per (task, token).
fn assert_no_duplicate_events(root: &Path) {
    for log in event_logs(root) {
        let text = std::fs::read_to_string(&log).expect("event log");
        let mut lines = BTreeSet::new();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            assert!(lines.insert(l), "{}: a duplicated event: {l}", log.display());
        }
        let mut once: BTreeMap<(String, String, u64), usize> = BTreeMap::new();
        for e in read_jsonl(&log) {
            if matches!(e["type"].as_str(), Some("lease_claimed" | "result_accepted")) {
                let key = (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["task"].to_string(),
                    e["token"].as_u64().unwrap_or(0),
                );
                *once.entry(key).or_default() += 1;
            }
        }
        let twice: Vec<_> = once.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{}: claims or results recorded twice: {twice:?}", log.display());
    }
}

#[test]
fn kill_9_of_supervisor_coordinator_and_agents_then_up_again_leaves_one_swarm_and_one_run() {
    let t = Target::new(Spec {
        delay_ms: 500,
        max_cycles: 3,
        proposer: Proposer::Command(STEP_DOWN.into()),
        agents_toml: Some(agents_toml(DEAF)),
        ..Spec::default()
    });
    let root = t.path().to_path_buf();
    let initial = t.main();
    let mut rng = Rng(SEED);
    let mut first: BTreeSet<Proc> = BTreeSet::new();

    // The first swarm: an agent and the coordinator killed in cycle 1, the supervisor in cycle 2.
    let mut a = up_under_subreaper(&t, &["up", "--once", "--json"]);
    a.wait_until("cycle 1's execute task", RUN, |r| in_candidate_dir(r, 1, "tasks/execute.json"));
    let victim = rng.pick(&WORKERS);
    kill_member(&root, victim, &mut first);
    a.wait_until("cycle 1's benchmark", RUN, |r| in_candidate_dir(r, 1, "leases/evaluate.lock"));
    kill_member(&root, "coordinator", &mut first);
    wait_progress(&mut a, "following the loop on the restarted coordinator", SHORT);
    a.wait_until("cycle 2's execute task", RUN, |r| in_candidate_dir(r, 2, "tasks/execute.json"));
    first.extend(members(&root));
    let run = t.loop_state()["run_id"].as_str().expect("run_id").to_string();
    let swarm_a = state(&root)["run_id"].as_str().expect("swarm id").to_string();
    let supervisor = supervisor_of(&a);
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).expect("kill -9 ratchet up");
    wait_for("the first supervisor to be gone", SHORT, || {
        (!Path::new(&format!("/proc/{supervisor}")).exists()).then_some(())
    });

    // Members that see their lifeline exit by themselves; the deaf one cannot and stays.
    let deaf: Vec<Proc> = first.iter().filter(|p| p.name == DEAF && p.alive()).cloned().collect();
    assert_eq!(deaf.len(), 1, "{first:?}");
    wait_for("the first swarm's members to exit on their lifeline", SHORT, || {
        first.iter().all(|p| p.name == DEAF || !p.alive()).then_some(())
    });
    assert!(deaf[0].alive(), "a member without its lifeline outlives its supervisor");

    // The second swarm stops the leftover (checked by identity) before starting its own.
    let mut b = up_under_subreaper(&t, &["up", "--once", "--json"]);
    wait_progress(&mut b, "swarm up (5 agents)", SHORT);
    let left: Vec<&Proc> = first.iter().filter(|p| p.alive()).collect();
    assert!(left.is_empty(), "processes of the first swarm still run: {left:?}");
    wait_progress(&mut b, &format!("{DEAF} (pid {}) of swarm {swarm_a} still runs", deaf[0].pid), SHORT);
    assert!(
        a.proc.wait_timeout(SHORT).is_some(),
        "orphans of the first swarm are left: {:?}",
        ratchet_tests::fixture::process_tree(a.pid())
    );
    let events = t.events();
    let stopped = of_type(&events, "leftover_stopped");
    assert_eq!(stopped.len(), 1, "{stopped:#?}");
    assert_eq!((stopped[0]["name"].as_str(), stopped[0]["swarm"].as_str()), (Some(DEAF), Some(swarm_a.as_str())));
    assert!(members(&root).iter().all(|m| !first.contains(m)), "only the second swarm's members serve");

    // In the second swarm: an agent killed in cycle 3, then the coordinator during its benchmark.
    let mut second = BTreeSet::new();
    b.wait_until("cycle 3's execute task", RUN, |r| in_candidate_dir(r, 3, "tasks/execute.json"));
    let victim = rng.pick(&WORKERS);
    kill_member(&root, victim, &mut second);
    b.wait_until("cycle 3's benchmark", RUN, |r| in_candidate_dir(r, 3, "leases/evaluate.lock"));
    kill_member(&root, "coordinator", &mut second);
    let end = b.finish(RUN);
    assert!(end.status.success(), "the second ratchet up failed ({}):\n{}\n{}", end.status, end.stderr, t.agent_logs());
    assert!(end.stderr.contains("following the loop on the restarted coordinator"), "{}", end.stderr);
    second.extend(members(&root));
    assert!(second.iter().all(|p| !p.alive()), "the second swarm stopped everything: {second:?}");

    // The resumed run's result: the run the first swarm started, to its budget.
    let s = &end.summary;
    assert_eq!(s["run_id"], run.as_str(), "{s:#}");
    assert_eq!(end.stop_reason(), "budget-cycles", "{s:#}");
    assert_eq!(s["cycles"], 3, "{s:#}");
    // Git and the logs: each promotion once.
    let history: Vec<String> =
        t.git(&["rev-list", "--reverse", &format!("{initial}..main")]).lines().map(String::from).collect();
    let delays: Vec<String> = history
        .iter()
        .map(|c| t.show(c, "params.toml").lines().find(|l| l.starts_with("delay_ms")).unwrap_or_default().to_string())
        .collect();
    assert_eq!(delays, ["delay_ms = 400", "delay_ms = 300", "delay_ms = 200"], "{s:#}");
    let events = t.events();
    let promoted: Vec<&str> = of_type(&events, "promoted").iter().filter_map(|e| e["commit"].as_str()).collect();
    assert_eq!(promoted, history.iter().map(String::as_str).collect::<Vec<_>>(), "one Promoted event per promotion");
    let mut proposed: Vec<u64> = of_type(&events, "proposed").iter().filter_map(|e| e["cycle"].as_u64()).collect();
    proposed.sort();
    assert_eq!(proposed, [1, 2, 3], "each cycle proposed once across the kills");
    for p in t.loop_state()["promotions"].as_array().expect("promotions") {
        let log = t.branch_events(p["branch"].as_str().expect("branch"));
        assert_eq!(log.iter().filter(|e| e["type"] == "promoted" && e["agent"] == "coordinator").count(), 1);
    }
    assert_no_duplicate_events(&root);
}

/// A task nobody in the swarm serves (role `survey`), for a lease a test process holds.
fn survey_task(bd: &substrate::BranchDir, id: &str) -> TaskFile {
    TaskFile { token: 0, ttl_ms: 120_000, ..TaskFile::queued(bd.branch(), id, "survey", "survey", json!({})) }
}

/// A process holding the lease of `task` as swarm instance `swarm` would (`lease_worker hold`).
fn hold(t: &Target, swarm: Option<&str>, agent: &str, task: &str) -> (ProcGuard, Lines) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lease_worker"));
    hermetic(&mut cmd, t.scratch());
    cmd.arg(t.path()).args([agent, "hold", "probe", task]);
    if let Some(s) = swarm {
        cmd.env(substrate::SWARM_ID_ENV, s);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut proc = ProcGuard::spawn(cmd);
    let mut lines = Lines::capture(&mut proc.child, |_| {});
    lines.wait_for("claimed 0", SHORT);
    (proc, lines)
}

fn branch_event<'a>(log: &'a [Value], ty: &str, task: &str) -> Option<&'a Value> {
    log.iter().find(|e| e["type"] == ty && e["task"] == task)
}

#[test]
fn after_kill_9_of_the_supervisor_a_second_up_is_the_only_swarm_and_refuses_the_first_ones_leases() {
    let t = Target::new(Spec { agents_toml: Some(agents_toml("evaluator")), ..Spec::default() });
    let root = t.path().to_path_buf();
    let home = Home::open(&root).expect("target repository").with_swarm(None);
    let bd = add_worktree(&home, "probe", &t.main()).expect("a branch for the probe tasks");
    for id in ["orphan", "member", "byhand", "marker"] {
        queue_task(&bd, &survey_task(&bd, id)).expect("queueing");
    }

    let mut a = up_under_subreaper(&t, &["up", "--no-loop", "--json"]);
    wait_progress(&mut a, "swarm up (5 agents)", SHORT);
    let swarm_a = state(&root)["run_id"].as_str().expect("swarm id").to_string();
    let first = members(&root);
    assert_eq!(first.len(), 5, "{first:?}");
    // A process of the first swarm holds a lease (as its evaluator could, mid-benchmark).
    let (mut orphan, mut orphan_out) = hold(&t, Some(&swarm_a), "evaluator", "orphan");

    let supervisor = supervisor_of(&a);
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).expect("kill -9 ratchet up");
    wait_for("the first supervisor to be gone", SHORT, || {
        (!Path::new(&format!("/proc/{supervisor}")).exists()).then_some(())
    });
    let mut b = up_under_subreaper(&t, &["up", "--no-loop", "--json"]);
    wait_progress(&mut b, "swarm up (5 agents)", SHORT);
    let swarm_b = state(&root)["run_id"].as_str().expect("swarm id").to_string();
    assert_ne!(swarm_a, swarm_b);

    // Only the second swarm's members serve: the first one's are gone (by identity) and its
    // wrapper has no orphan left; `ratchet status` lists the new members, all answering.
    let left: Vec<&Proc> = first.iter().filter(|p| p.alive()).collect();
    assert!(left.is_empty(), "processes of the first swarm still run: {left:?}");
    assert!(b.stderr().contains("evaluator (pid"), "the leftover evaluator was stopped:\n{}", b.stderr());
    assert!(a.proc.wait_timeout(SHORT).is_some(), "{:?}", ratchet_tests::fixture::process_tree(a.pid()));
    let status = t.ratchet_json(&["status"]);
    let listed: Vec<(String, i64)> = status
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            assert_eq!((a["state"].as_str(), a["card"].as_bool()), (Some("ready"), Some(true)), "{a}");
            (a["name"].as_str().unwrap_or_default().to_string(), a["pid"].as_i64().unwrap_or_default())
        })
        .collect();
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|(_, pid)| first.iter().all(|p| p.pid as i64 != *pid)), "{listed:?}");

    // Leases of this swarm and of processes started by hand are kept; the marker (its holder
    // killed afterwards) proves the reaper has passed over them since.
    let (_member, _) = hold(&t, Some(&swarm_b), "member", "member");
    let (_byhand, _) = hold(&t, None, "byhand", "byhand");
    let (marker, _) = hold(&t, Some(&swarm_b), "marker", "marker");
    drop(marker);
    let log = wait_for("the orphan's lease to be refused and the marker's reaped", SHORT, || {
        let log = t.branch_events("probe");
        (branch_event(&log, "lease_expired", "orphan").is_some()
            && branch_event(&log, "lease_expired", "marker").is_some())
        .then_some(log)
    });
    let reason = branch_event(&log, "lease_expired", "orphan").expect("checked")["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("of swarm instance {swarm_a}, not of this swarm ({swarm_b})")), "{reason}");
    for id in ["member", "byhand"] {
        assert!(branch_event(&log, "lease_expired", id).is_none(), "{id}'s lease was kept: {log:#?}");
        assert!(bd.lease_path(id).expect("path").exists(), "{id}");
    }
    // The orphan finishes anyway: its result is refused, never applied.
    orphan.child.stdin.as_mut().expect("stdin").write_all(b"go\n").expect("waking the orphan");
    orphan_out.wait_for("finished", SHORT);
    let refused = wait_for("the orphan's result to be refused", SHORT, || {
        branch_event(&t.branch_events("probe"), "result_refused", "orphan").cloned()
    });
    assert!(refused["reason"].as_str().unwrap_or_default().contains(&format!("swarm instance {swarm_a}")), "{refused}");
    let task = substrate::read_task(&bd, "orphan").expect("task");
    assert_eq!((task.state, task.attempt), (TaskFileState::Queued, 1), "refused, and no attempt used: {task:?}");
    drop(b);
}
