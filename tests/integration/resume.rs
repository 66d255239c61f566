//! Crash-resume of the whole swarm: kill -9 every process (`ratchet up`, each agent, each command
//! they run) mid-cycle, start `ratchet up --once` again, and check from git and the events that
//! the loop continued the cycle it was in with no promotion lost or applied twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ratchet_tests::fixture::{Proposer, Spec, Target, UpRun, alive, of_type, read_jsonl};
use serde_json::Value;

const RUN: Duration = Duration::from_secs(180);

/// Each call takes 200 ms off delay_ms, down to 200: three promotions from 800.
const STEP_DOWN: &str = r#"cat > "$RATCHET_DECLARATION_FILE" <<'EOF'
files = ["params.toml"]
rationale = "a shorter delay"
EOF
d=$(sed -n 's/^delay_ms = //p' params.toml)
[ "$d" -gt 200 ] || { echo "nothing left to try below $d ms" >&2; exit 1; }
sed -i "s/^delay_ms = .*/delay_ms = $((d - 200))/" params.toml
echo "delay_ms $d -> $((d - 200))""#;

/// The loose ref file of main (promotion moves it with `update-ref` or `merge --ff-only`).
fn main_ref(root: &Path) -> String {
    std::fs::read_to_string(root.join(".git/refs/heads/main")).unwrap_or_default().trim().to_string()
}

/// Whether `rel` exists in the directory of the cycle-`cycle` candidate (`worktrees/<run>-c<cycle>-1/`).
fn in_candidate_dir(root: &Path, cycle: u32, rel: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(kit::layout::Layout::new(root).worktrees()) else { return false };
    rd.flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(&format!("-c{cycle}-1")) && e.path().join(rel).exists())
}

/// Whether the cycle-`cycle` candidate's lease on `task` holds a recorded claim: the claimer
/// creates the lease file empty and then writes its record, and a kill between the two is a claim
/// that never happened (the reaper expires it without counting an attempt).
fn claim_recorded(root: &Path, cycle: u32, task: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(kit::layout::Layout::new(root).worktrees()) else { return false };
    rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(&format!("-c{cycle}-1"))).any(|e| {
        std::fs::read(e.path().join(format!("leases/{task}.lock")))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["agent_id"].is_string())
    })
}

/// Kill the whole swarm at once and check that nothing of it survives.
fn kill_everything(up: &mut UpRun, what: &str) {
    let killed = up.kill9();
    assert!(killed.len() >= 6, "{what}: expected ratchet up and five agents, killed {killed:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while killed.iter().any(|&p| alive(p)) {
        assert!(std::time::Instant::now() < deadline, "{what}: processes survived kill -9: {killed:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Replace loop.json as the loop writes it (`kit::files::write_atomic`).
fn rewrite_loop_state(root: &Path, st: &Value) {
    let path = kit::layout::Layout::new(root).loop_state();
    kit::files::write_atomic(&path, &serde_json::to_vec_pretty(st).expect("json")).expect("write loop.json");
}

/// Cut the swarm's event log after its only event of type `ty`.
fn truncate_swarm_log_after(root: &Path, ty: &str) {
    let log = root.join("worktrees/.swarm/events.jsonl");
    let events = read_jsonl(&log);
    let text = std::fs::read_to_string(&log).expect("events");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), events.len());
    let at: Vec<usize> = events.iter().enumerate().filter(|(_, e)| e["type"] == ty).map(|(i, _)| i).collect();
    assert_eq!(at.len(), 1, "exactly one {ty} event before the rewind: {events:#?}");
    std::fs::write(&log, lines[..=at[0]].join("\n") + "\n").expect("truncate events");
}

fn run_id(t: &Target) -> String {
    t.loop_state()["run_id"].as_str().expect("run_id").to_string()
}

#[test]
fn kill_9_of_the_whole_swarm_mid_cycle_loses_and_repeats_no_promotion() {
    let t = Target::new(Spec {
        delay_ms: 800,
        max_cycles: 3,
        proposer: Proposer::Command(STEP_DOWN.into()),
        ..Spec::default()
    });
    let root = t.path().to_path_buf();
    let initial = t.main();

    // 1. The worst moment: main has just been fast-forwarded by cycle 1's promotion (the loop
    //    may or may not have recorded it yet).
    let mut up = t.spawn_up(&[]);
    up.wait_until("cycle 1's promotion to move main", RUN, |r| {
        let m = main_ref(r);
        !m.is_empty() && m != initial
    });
    kill_everything(&mut up, "kill 1");
    drop(up);
    let run = run_id(&t);

    // 2. Mid-cycle: cycle 2's execute task has been queued (and perhaps claimed, or done).
    let mut up = t.spawn_up(&[]);
    up.wait_until("cycle 2's execute task", RUN, |r| in_candidate_dir(r, 2, "tasks/execute.json"));
    kill_everything(&mut up, "kill 2");
    drop(up);
    assert_eq!(run_id(&t), run, "the restarted swarm continues the same run");

    // 3. In flight: cycle 3's candidate is being benchmarked.
    let mut up = t.spawn_up(&[]);
    up.wait_until("cycle 3's evaluate claim", RUN, |r| claim_recorded(r, 3, "evaluate"));
    kill_everything(&mut up, "kill 3");
    drop(up);
    assert_eq!(run_id(&t), run);

    // 4. Run to the end.
    let mut up = t.spawn_up(&[]);
    let end = up.finish(RUN);
    assert!(end.status.success(), "the last ratchet up failed ({}):\n{}\n{}", end.status, end.stderr, t.agent_logs());
    let s = &end.summary;
    assert_eq!(s["run_id"], run.as_str(), "{s:#}");
    assert_eq!(end.stop_reason(), "budget-cycles", "{s:#}");
    assert_eq!(s["cycles"], 3, "{s:#}");

    // Git: main is initial + exactly the three promotions, in order, by fast-forward.
    let history: Vec<String> =
        t.git(&["rev-list", "--reverse", &format!("{initial}..main")]).lines().map(String::from).collect();
    assert_eq!(
        history.len(),
        3,
        "one commit per promotion on main, none repeated: {history:?}\nsummary: {s:#}\nprogress of the last run:\n{}",
        end.stderr
    );
    assert_eq!(t.git(&["rev-list", "--merges", "main"]), "");
    let delays: Vec<String> = history
        .iter()
        .map(|c| t.show(c, "params.toml").lines().find(|l| l.starts_with("delay_ms")).unwrap_or_default().to_string())
        .collect();
    assert_eq!(delays, ["delay_ms = 600", "delay_ms = 400", "delay_ms = 200"]);

    // loop.json and the summary record the same promotions, one per cycle.
    let state = t.loop_state();
    let recorded: Vec<(u64, String)> = state["promotions"]
        .as_array()
        .expect("promotions")
        .iter()
        .map(|p| (p["cycle"].as_u64().expect("cycle"), p["commit"].as_str().expect("commit").to_string()))
        .collect();
    let expected: Vec<(u64, String)> = history.iter().cloned().enumerate().map(|(i, c)| (i as u64 + 1, c)).collect();
    assert_eq!(recorded, expected, "loop.json promotions match main's history");
    let summarized: Vec<String> =
        end.list("promoted").iter().map(|p| p["commit"].as_str().expect("commit").to_string()).collect();
    assert_eq!(summarized, history);

    // Events: exactly one Promoted per promoted commit in the swarm log, and one by the
    // coordinator in each branch's log; no Promoted for anything else.
    let events = t.events();
    let mut per_commit: BTreeMap<String, usize> = BTreeMap::new();
    for e in of_type(&events, "promoted") {
        *per_commit.entry(e["commit"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let once: BTreeMap<String, usize> = history.iter().map(|c| (c.clone(), 1)).collect();
    assert_eq!(per_commit, once, "Promoted events per commit in worktrees/.swarm/events.jsonl");
    for p in state["promotions"].as_array().expect("promotions") {
        let branch = p["branch"].as_str().expect("branch");
        let log = read_jsonl(&kit::layout::Layout::new(&root).branch_dir(branch).join("events/events.jsonl"));
        let by_coordinator = log.iter().filter(|e| e["type"] == "promoted" && e["agent"] == "coordinator").count();
        assert_eq!(by_coordinator, 1, "{branch}: the coordinator's Promoted events: {log:#?}");
    }
    // The loop continued the cycles it was in: each cycle proposed once (no cycle was started
    // over), and no cycle beyond the budget ran.
    let mut proposed: Vec<u64> = of_type(&events, "proposed").iter().filter_map(|e| e["cycle"].as_u64()).collect();
    proposed.sort();
    assert_eq!(proposed, [1, 2, 3], "each cycle proposed once across the restarts");
    let mut started: Vec<u64> = of_type(&events, "cycle_started").iter().filter_map(|e| e["cycle"].as_u64()).collect();
    started.dedup();
    assert_eq!(started, [1, 2, 3], "cycles started in order, none beyond the budget");
    // The benchmark killed in flight was re-run under a new token; the tasks finished before the
    // kill were not run again.
    let branch3 = state["promotions"][2]["branch"].as_str().expect("branch").to_string();
    let x = t.ratchet_json(&["inspect", &branch3]);
    let task = |id: &str| -> Value {
        x["tasks"].as_array().expect("tasks").iter().find(|t| t["id"] == id).cloned().unwrap_or(Value::Null)
    };
    let eval = task("evaluate");
    assert_eq!(eval["state"], "done", "{eval:#}");
    assert!(eval["attempt"].as_u64() >= Some(2), "the interrupted evaluation ran again: {eval:#}");
    assert!(eval["last_expired"].is_object(), "the dead holder's lease was expired and kept: {eval:#}");
    for id in ["execute", "critique"] {
        let done = task(id);
        assert_eq!(done["attempt"], 1, "{id} finished before the kill and was not re-run: {done:#}");
    }
}

/// The narrowest window: main fast-forwarded and the Promoted event written, the loop's own
/// record (loop.json) not yet saved. A kill -9 there cannot be timed from outside, so the test
/// builds that exact state from a finished one-cycle run: loop.json as the loop last saved it
/// before the promotion (the cycle in flight, every candidate decided, nothing recorded yet) and
/// the swarm's event log up to the Promoted event.
#[test]
fn a_crash_between_promotion_and_its_record_does_not_repeat_it() {
    let t = Target::new(Spec {
        delay_ms: 400,
        max_cycles: 1,
        proposer: Proposer::sweep("delay_ms", &["400", "200"]),
        ..Spec::default()
    });
    let initial = t.main();
    let first = t.up_once(&[], RUN);
    let promoted = first.list("promoted");
    assert_eq!(promoted.len(), 1, "{:#}", first.summary);
    let commit = promoted[0]["commit"].as_str().expect("commit").to_string();

    // loop.json just before finish_cycle saved it.
    let root = t.path().to_path_buf();
    let mut st = t.loop_state();
    let mut cycle = st["finished"].as_array_mut().expect("finished").pop().expect("cycle 1");
    cycle["phase"] = "running".into();
    assert_eq!(cycle["candidates"][0]["verdict"], "PROMOTE", "{cycle:#}");
    assert_eq!(cycle["candidates"][0]["stage"], "decided", "{cycle:#}");
    st["current"] = cycle;
    st["cycles_done"] = 0.into();
    st["stalls"] = 0.into();
    st["promotions"] = Value::Array(vec![]);
    st["tried"] = Value::Array(vec![]);
    st["banned"] = Value::Array(vec![]);
    st["stopped"] = Value::Null;
    rewrite_loop_state(&root, &st);
    // The swarm log up to and including the Promoted event.
    truncate_swarm_log_after(&root, "promoted");

    let second = t.up_once(&[], RUN);
    assert_eq!(second.summary["run_id"], st["run_id"], "the same run resumed: {:#}", second.summary);
    assert_eq!(t.git(&["rev-list", &format!("{initial}..main")]), commit, "main holds the promotion once");
    let state = t.loop_state();
    let recorded: Vec<&str> =
        state["promotions"].as_array().expect("promotions").iter().filter_map(|p| p["commit"].as_str()).collect();
    assert_eq!(recorded, [commit.as_str()], "loop.json records the promotion, once");
    let events = t.events();
    let promotions: Vec<&Value> = of_type(&events, "promoted");
    assert_eq!(
        promotions.len(),
        1,
        "the promotion made before the crash is recognised, not announced a second time: {promotions:#?}"
    );
}

/// A crash after the last cycle was recorded and before the loop recorded its stop: the restarted
/// swarm finishes that run (its coordinator resumes it at once) and `ratchet up --once` reports
/// it; it does not start a second run behind it.
#[test]
fn a_crash_after_the_last_cycle_finishes_that_run_and_starts_no_other() {
    let t = Target::new(Spec {
        delay_ms: 400,
        max_cycles: 1,
        proposer: Proposer::sweep("delay_ms", &["400", "200"]),
        ..Spec::default()
    });
    let first = t.up_once(&[], RUN);
    assert_eq!(first.stop_reason(), "budget-cycles", "{:#}", first.summary);
    let main_after = t.main();

    // loop.json as finish_cycle saved it, and the log up to the cycle's end.
    let root = t.path().to_path_buf();
    let mut st = t.loop_state();
    st["stopped"] = Value::Null;
    rewrite_loop_state(&root, &st);
    truncate_swarm_log_after(&root, "cycle_ended");

    let second = t.up_once(&[], RUN);
    let s = &second.summary;
    assert_eq!(
        s["run_id"], st["run_id"],
        "`ratchet up --once` reports the run it resumed, not a new one started behind it: {s:#}\n{}",
        second.stderr
    );
    assert_eq!(second.stop_reason(), "budget-cycles", "{s:#}");
    assert_eq!(s["cycles"], 1, "{s:#}");
    assert_eq!(s["promoted"], first.summary["promoted"], "{s:#}");
    assert_eq!(t.main(), main_after, "no new cycle ran");
    let events = t.events();
    assert_eq!(of_type(&events, "cycle_started").len(), 1, "no cycle after the resumed run stopped: {events:#?}");
    assert_eq!(of_type(&events, "loop_stopped").len(), 1, "{events:#?}");
    assert_eq!(t.loop_state()["run_id"], st["run_id"]);
}

/// `ratchet up --max-cycles N` is the run's budget, kept in loop.json: a run resumed by a plain
/// `ratchet up` (after a crash, or a coordinator restart) still stops at it.
#[test]
fn a_resumed_run_keeps_its_max_cycles_budget() {
    let t = Target::new(Spec { max_cycles: 0, ..Spec::default() });
    let first = t.up_once(&["--max-cycles", "1"], RUN);
    assert_eq!(first.stop_reason(), "budget-cycles", "{:#}", first.summary);
    assert_eq!(t.loop_state()["max_cycles"], 1);

    // As if the swarm died after the cycle was recorded, before the stop was.
    let root = t.path().to_path_buf();
    let mut st = t.loop_state();
    st["stopped"] = Value::Null;
    rewrite_loop_state(&root, &st);
    truncate_swarm_log_after(&root, "cycle_ended");

    let second = t.up_once(&[], RUN);
    let s = &second.summary;
    assert_eq!(s["run_id"], st["run_id"], "the same run resumed: {s:#}");
    assert_eq!(second.stop_reason(), "budget-cycles", "the saved budget holds: {s:#}\n{}", second.stderr);
    assert_eq!(s["cycles"], 1, "{s:#}");
    assert_eq!(of_type(&t.events(), "cycle_started").len(), 1, "no cycle past the budget");
}

/// A restarted loop whose cycle went stale (main moved while it was down) drops that cycle and
/// starts the next under a new number: new branches made on the new main, never the stale
/// cycle's directories and checkouts.
#[test]
fn a_cycle_dropped_because_main_moved_is_followed_by_a_new_one_on_new_branches() {
    let t = Target::new(Spec {
        delay_ms: 100,
        max_cycles: 2,
        proposer: Proposer::sweep("label", &["\"baseline\"", "\"tuned\""]),
        ..Spec::default()
    });
    let first = t.up_once(&["--max-cycles", "1"], RUN);
    assert_eq!(first.list("held").len(), 1, "{:#}", first.summary);

    // loop.json as it was while cycle 1 ran; then a person commits to main.
    let root = t.path().to_path_buf();
    let mut st = t.loop_state();
    let mut cycle = st["finished"].as_array_mut().expect("finished").pop().expect("cycle 1");
    let stale_branch = cycle["candidates"][0]["branch"].as_str().expect("branch").to_string();
    let stale_commit = cycle["candidates"][0]["exec"]["commit"].as_str().expect("commit").to_string();
    cycle["phase"] = "running".into();
    cycle["candidates"][0]["stage"] = "evaluating".into();
    cycle["candidates"][0]["verdict"] = Value::Null;
    cycle["candidates"][0]["reasons"] = Value::Array(vec![]);
    st["current"] = cycle;
    st["cycles_done"] = 0.into();
    st["max_cycles"] = 0.into();
    st["stopped"] = Value::Null;
    st["tried"] = Value::Array(vec![]);
    rewrite_loop_state(&root, &st);
    t.write("NOTES.md", "a person's change\n");
    t.git(&["add", "NOTES.md"]);
    t.git(&["commit", "-qm", "a person's commit"]);
    let moved = t.main();

    let second = t.up_once(&[], RUN);
    assert_eq!(second.stop_reason(), "budget-cycles", "{:#}\n{}", second.summary, second.stderr);
    let state = t.loop_state();
    let cycles = state["finished"].as_array().expect("finished");
    let shown: Vec<(u64, &str)> =
        cycles.iter().map(|c| (c["cycle"].as_u64().expect("cycle"), c["phase"].as_str().expect("phase"))).collect();
    assert_eq!(shown, [(1, "dropped"), (2, "done")], "{state:#}");
    assert!(cycles[0]["candidates"][0]["reasons"][0].as_str().expect("reason").contains("main moved"), "{state:#}");
    assert_eq!(cycles[1]["baseline"], moved.as_str());
    let fresh = &cycles[1]["candidates"][0];
    let branch = fresh["branch"].as_str().expect("branch");
    assert_ne!(branch, stale_branch, "the new cycle reused the stale cycle's branch");
    assert!(branch.ends_with("-c2-1"), "{branch}");
    let commit = fresh["exec"]["commit"].as_str().expect("the new candidate was executed");
    assert_ne!(commit, stale_commit);
    assert_eq!(t.git(&["rev-parse", &format!("{commit}^")]), moved, "the new candidate is built on the new main");
}
