//! `ratchet up` and `ratchet status` supervising the real agent binaries: cards, crash restarts,
//! giving up, live agents.toml edits, and shutdown that leaves no process behind.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use ratchet_tests::{Swarm, TestHome, bin, group_alive, ratchet_cmd, ratchet_status_json, rt};
use serde_json::Value;

const BUILTIN: [&str; 5] = ["proposer", "executor", "critic", "evaluator", "coordinator"];
/// Generous: the machine is shared; nothing here asserts on how fast things are, except the
/// 5 s shutdown bound the product promises.
const LONG: Duration = Duration::from_secs(30);

/// One `[[agent]]` table running the real binary `name` by absolute path; `extra` is appended.
fn agent(name: &str, role: &str, extra: &str) -> String {
    let exe = bin(name);
    format!("[[agent]]\nname = {name:?}\nrole = {role:?}\ncommand = [{:?}]\n{extra}\n", exe.display().to_string())
}

fn builtin_swarm() -> String {
    BUILTIN.iter().map(|n| agent(n, n, "")).collect()
}

/// Replace agents.toml the way editors do: write a temporary file, then rename it over.
fn write_config(home: &Path, text: &str) {
    let tmp = home.join(".agents.toml.swp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, home.join("agents.toml")).expect("rename config");
}

fn status(home: &Path) -> Vec<Value> {
    let (code, agents, stderr) = ratchet_status_json(home);
    assert_eq!(code, 0, "ratchet status failed: {stderr}");
    agents
}

fn find<'a>(agents: &'a [Value], name: &str) -> &'a Value {
    agents.iter().find(|a| a["name"] == name).unwrap_or_else(|| panic!("{name} not in status: {agents:?}"))
}

fn pid_of(agents: &[Value], name: &str) -> i32 {
    let a = find(agents, name);
    a["pid"].as_i64().unwrap_or_else(|| panic!("{name} has no pid: {a}")) as i32
}

fn read_state(home: &Path) -> Value {
    let text = std::fs::read_to_string(home.join("worktrees/.swarm/state.json")).expect("state file exists");
    serde_json::from_str(&text).expect("state file is JSON")
}

fn event_types(home: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(home.join("worktrees/.swarm/events.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("every event line is JSON");
            (v["type"].as_str().unwrap_or_default().to_string(), v["name"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn count(events: &[(String, String)], ty: &str, name: &str) -> usize {
    events.iter().filter(|(t, n)| t == ty && n == name).count()
}

/// SIGTERM the supervisor; it must exit 0 within 5 s with no agent process group left.
fn stop_swarm(swarm: &mut Swarm) {
    swarm.proc.signal(Signal::SIGTERM);
    let status = swarm.proc.wait_timeout(Duration::from_secs(5)).expect("ratchet up exits within 5 s of SIGTERM");
    assert!(status.success(), "ratchet up exited with {status}:\n{}", swarm.lines.all());
    let left: Vec<i32> = swarm.agent_pgids().into_iter().filter(|&g| group_alive(g)).collect();
    assert!(left.is_empty(), "process groups left behind: {left:?}\n{}", swarm.lines.all());
}

#[test]
fn up_starts_every_agent_and_status_checks_each_card_live() {
    let home = TestHome::new();
    std::fs::write(home.path().join("agents.toml"), builtin_swarm()).unwrap();
    let mut swarm = Swarm::up(home.path());
    let header = swarm.wait_for("NAME", LONG);
    for col in ["ROLE", "URL", "PID", "SKILLS"] {
        assert!(header.contains(col), "{header}");
    }
    let mut rows = Vec::new();
    for _ in BUILTIN {
        rows.push(swarm.wait_for("http://127.0.0.1:", LONG));
    }
    swarm.wait_for("swarm up (5 agents)", LONG);

    let agents = status(home.path());
    assert_eq!(agents.len(), 5, "{agents:?}");
    rt().block_on(async {
        for name in BUILTIN {
            let a = find(&agents, name);
            assert_eq!(a["role"], name);
            assert_eq!(a["state"], "ready", "{a}");
            assert_eq!(a["card"], true, "{a}");
            assert_eq!(a["restarts"], 0, "{a}");
            let pid = pid_of(&agents, name);
            let url = a["url"].as_str().expect("url");
            assert!(
                rows.iter().any(|r| r.starts_with(name) && r.contains(url) && r.contains(&pid.to_string())),
                "{rows:?}"
            );
            // The child leads its own process group.
            assert_eq!(nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap().as_raw(), pid);
            let card: protocol::AgentCard = reqwest::get(format!("{url}.well-known/agent.json"))
                .await
                .expect("card answers")
                .json()
                .await
                .expect("a card");
            assert_eq!(card.url, url, "the card names the address the supervisor reports");
            assert_eq!(card.ratchet_role().as_deref(), Some(name));
            // The contract: its own state dir, and its output in its log.
            assert!(home.path().join("worktrees/.swarm/agents").join(name).is_dir());
            let log = std::fs::read_to_string(home.path().join(format!("worktrees/.swarm/logs/{name}.log"))).unwrap();
            assert!(log.contains(&format!("RATCHET_LISTENING {url}")), "{log}");
        }
    });
    let state = read_state(home.path());
    assert_eq!(state["state"], "running");
    assert_eq!(state["supervisor_pid"].as_i64(), Some(swarm.proc.pid() as i64));
    let events = event_types(home.path());
    for name in BUILTIN {
        assert_eq!(count(&events, "agent_started", name), 1, "{events:?}");
    }

    // The table without --json.
    let out = ratchet_cmd(home.path(), &["status"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for col in ["NAME", "ROLE", "URL", "PID", "STATE", "RESTARTS"] {
        assert!(text.contains(col), "{text}");
    }
    assert_eq!(text.lines().filter(|l| l.contains(" ready ")).count(), 5, "{text}");

    // Running a second supervisor in the same home is refused.
    let second = ratchet_cmd(home.path(), &["up"]).output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("a swarm is already running"));
    stop_swarm(&mut swarm);
}

#[test]
fn sigterm_stops_every_process_group_within_5s() {
    let home = TestHome::new();
    // A real critic whose process group also holds a grandchild that ignores SIGTERM: only a
    // SIGKILL to the whole group ends it.
    let stubborn = format!(
        "[[agent]]\nname = \"stubborn\"\nrole = \"critic\"\ncommand = [\"sh\", \"-c\", \"(trap '' TERM; exec sleep 600 >/dev/null 2>&1) & exec {}\"]\n",
        bin("critic").display()
    );
    std::fs::write(home.path().join("agents.toml"), builtin_swarm() + &stubborn).unwrap();
    let mut swarm = Swarm::up(home.path());
    swarm.wait_for("swarm up (6 agents)", LONG);
    let pgids = swarm.agent_pgids();
    assert_eq!(pgids.len(), 6);
    assert!(pgids.iter().all(|&g| group_alive(g)));

    stop_swarm(&mut swarm);
    let out = swarm.lines.read_to_end(LONG);
    for name in BUILTIN.iter().chain(&["stubborn"]) {
        assert!(out.contains(&format!("{name}: stopped")), "{out}");
    }
    let state = read_state(home.path());
    assert_eq!(state["state"], "stopped");
    assert_eq!(state["agents"], serde_json::json!([]));
    assert_eq!(count(&event_types(home.path()), "agent_stopped", "stubborn"), 1);

    let (code, agents, stderr) = ratchet_status_json(home.path());
    assert_eq!(code, 1);
    assert!(agents.is_empty());
    assert!(stderr.contains("no swarm is running"), "{stderr}");
}

#[test]
fn a_killed_agent_is_restarted_and_counted() {
    let home = TestHome::new();
    std::fs::write(home.path().join("agents.toml"), agent("critic", "critic", "") + &agent("executor", "executor", ""))
        .unwrap();
    let mut swarm = Swarm::up(home.path());
    swarm.wait_for("swarm up", LONG);
    let before = status(home.path());
    let old = pid_of(&before, "critic");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
    swarm.wait_for("critic: exited (killed by signal 9", LONG);
    swarm.wait_for("critic: restarting in", LONG);
    swarm.wait_for("critic: ready at", LONG);

    let after = status(home.path());
    let critic = find(&after, "critic");
    assert_eq!(critic["restarts"], 1, "{critic}");
    assert_eq!(critic["state"], "ready", "{critic}");
    assert_eq!(critic["card"], true, "{critic}");
    assert_ne!(pid_of(&after, "critic"), old);
    assert!(!group_alive(old));
    assert_eq!(find(&after, "executor")["restarts"], 0);
    assert_eq!(pid_of(&after, "executor"), pid_of(&before, "executor"));
    let events = event_types(home.path());
    assert_eq!(count(&events, "agent_exited", "critic"), 1, "{events:?}");
    assert_eq!(count(&events, "agent_restarted", "critic"), 1, "{events:?}");
    assert_eq!(count(&events, "agent_started", "critic"), 2, "{events:?}");
    stop_swarm(&mut swarm);
}

#[test]
fn an_agent_that_always_crashes_is_given_up_and_the_swarm_goes_on() {
    let home = TestHome::new();
    let flaky = "[[agent]]\nname = \"flaky\"\nrole = \"security\"\ncommand = [\"false\"]\nrequired = false\n";
    std::fs::write(home.path().join("agents.toml"), agent("critic", "critic", "") + flaky).unwrap();
    let mut swarm = Swarm::up(home.path());
    swarm.wait_for("flaky: restarting in", LONG);
    let gave_up = swarm.wait_for("flaky: gave up", LONG);
    assert!(gave_up.contains("crashed 5 times") && gave_up.contains("exit code 1"), "{gave_up}");
    swarm.wait_for("swarm up (2 agents)", LONG);
    assert!(swarm.proc.child.try_wait().unwrap().is_none(), "the swarm goes on without an optional agent");

    let agents = status(home.path());
    let f = find(&agents, "flaky");
    assert_eq!(f["state"], "gave_up", "{f}");
    assert_eq!(f["restarts"], 4, "{f}");
    assert_eq!(f["required"], false);
    assert_eq!(find(&agents, "critic")["state"], "ready");
    let events = event_types(home.path());
    assert_eq!(count(&events, "agent_gave_up", "flaky"), 1, "{events:?}");
    assert_eq!(count(&events, "agent_exited", "flaky"), 5, "{events:?}");
    stop_swarm(&mut swarm);
}

#[test]
fn a_required_agent_that_cannot_run_stops_the_swarm() {
    let home = TestHome::new();
    // Role evaluator is required by default.
    let broken = "[[agent]]\nname = \"broken\"\nrole = \"evaluator\"\ncommand = [\"false\"]\n";
    std::fs::write(home.path().join("agents.toml"), agent("critic", "critic", "") + broken).unwrap();
    let mut swarm = Swarm::up(home.path());
    swarm.wait_for("critic: ready at", LONG);
    let status = swarm.proc.wait_timeout(LONG).expect("ratchet up exits when a required agent gives up");
    assert_eq!(status.code(), Some(1), "{}", swarm.lines.all());
    let out = swarm.lines.read_to_end(LONG);
    assert!(
        out.contains("stderr: error: required agent \"broken\" (role evaluator) gave up: crashed 5 times"),
        "{out}"
    );
    assert!(out.contains("fix: read") && out.contains("required = false"), "{out}");
    assert!(out.contains("critic: stopped"), "{out}");
    let left: Vec<i32> = swarm.agent_pgids().into_iter().filter(|&g| group_alive(g)).collect();
    assert!(left.is_empty(), "process groups left behind: {left:?}");
    let state = read_state(home.path());
    assert_eq!(state["state"], "stopped");
    assert!(state["reason"].as_str().unwrap_or_default().contains("broken"), "{state}");
}

#[test]
fn a_broken_agents_toml_starts_nothing() {
    let duplicate = agent("critic", "critic", "");
    let cases = [
        ("colour = \"red\"\n", "colour: unknown field", "fix: remove it"),
        (
            "[[agent]]\nname = \"x\"\nrole = \"critic\"\n",
            "command: agent \"x\" has neither command nor url",
            "fix: add command",
        ),
        (duplicate.as_str(), "name: duplicate agent name \"critic\" (first at line 1)", "fix: give every"),
    ];
    for (tail, error, fix) in cases {
        let home = TestHome::new();
        let prefix = format!("{}\n{}", agent("critic", "critic", ""), agent("executor", "executor", ""));
        let line = prefix.matches('\n').count() + 1;
        let text = prefix + tail;
        std::fs::write(home.path().join("agents.toml"), &text).unwrap();
        let out = ratchet_cmd(home.path(), &["up"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let want = format!("agents.toml:{line}: {error}");
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}\n---\n{text}");
        assert!(stderr.contains(fix), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("started"));
        assert!(!home.path().join("worktrees/.swarm/state.json").exists(), "nothing starts");
        assert!(!home.path().join("worktrees/.swarm/logs/critic.log").exists(), "nothing starts");
    }
}

#[test]
fn live_edits_add_change_remove_and_refuse() {
    let home = TestHome::new();
    let critic = agent("critic", "critic", "");
    // Not required: a required member's role may not be left without an agent by an edit.
    let evaluator = agent("evaluator", "evaluator", "required = false");
    std::fs::write(home.path().join("agents.toml"), &critic).unwrap();
    let mut swarm = Swarm::up(home.path());
    swarm.wait_for("swarm up (1 agents)", LONG);
    let critic_pid = pid_of(&status(home.path()), "critic");

    // Added: it starts.
    write_config(home.path(), &format!("{critic}\n{evaluator}"));
    swarm.wait_for("agents.toml: reloaded (added: evaluator; removed: -; changed: -)", LONG);
    swarm.wait_for("evaluator: ready at", LONG);
    let agents = status(home.path());
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert_eq!(find(&agents, "evaluator")["card"], true);
    let evaluator_pid = pid_of(&agents, "evaluator");
    assert_eq!(pid_of(&agents, "critic"), critic_pid, "an unchanged entry keeps running");

    // Invalid (written in place): refused, nothing changes.
    std::fs::write(home.path().join("agents.toml"), format!("{critic}\n{evaluator}colour = \"red\"\n")).unwrap();
    let refused = swarm.wait_for("agents.toml: refused:", LONG);
    assert!(refused.contains("colour: unknown field") && refused.contains("fix:"), "{refused}");
    let agents = status(home.path());
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert_eq!(pid_of(&agents, "critic"), critic_pid);
    assert_eq!(pid_of(&agents, "evaluator"), evaluator_pid);
    assert!(agents.iter().all(|a| a["state"] == "ready"), "{agents:?}");
    assert_eq!(count(&event_types(home.path()), "config_refused", ""), 1);

    // Removed: it stops, its whole group is gone; the other one is untouched.
    write_config(home.path(), &critic);
    swarm.wait_for("agents.toml: reloaded (added: -; removed: evaluator; changed: -)", LONG);
    swarm.wait_for("evaluator: stopped", LONG);
    assert!(!group_alive(evaluator_pid));
    let agents = status(home.path());
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(pid_of(&agents, "critic"), critic_pid);

    // Changed (any field): the new member starts and answers its card before the old one stops,
    // so the role is never without an agent.
    write_config(home.path(), &agent("critic", "critic", "env = { RUST_LOG = \"debug\" }"));
    swarm.wait_for("agents.toml: reloaded (added: -; removed: -; changed: critic)", LONG);
    let ready = swarm.wait_for("critic: ready at", LONG);
    assert!(ready.contains(&format!("stopping the member it replaces (pid {critic_pid})")), "{ready}");
    swarm.wait_for(&format!("critic: stopped the replaced member (pid {critic_pid})"), LONG);
    let agents = status(home.path());
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_ne!(pid_of(&agents, "critic"), critic_pid);
    assert!(!group_alive(critic_pid));
    assert_eq!(find(&agents, "critic")["state"], "ready");
    let events = event_types(home.path());
    let last = |ty: &str| events.iter().rposition(|(t, n)| t == ty && n == "critic").expect("critic events");
    assert!(
        last("agent_started") < last("agent_stopped"),
        "the new critic served before the old one stopped: {events:?}"
    );
    stop_swarm(&mut swarm);
}

/// The README's promise: an edit that cannot work is refused before anything is stopped, with
/// the line and the fix, and the members keep running as they were. The cases are the ones that
/// used to take the swarm down.
#[test]
fn live_edits_are_checked_before_anything_stops() {
    let home = TestHome::new();
    let (critic, executor) = (agent("critic", "critic", ""), agent("executor", "executor", ""));
    let good = format!("{critic}\n{executor}");
    std::fs::write(home.path().join("agents.toml"), &good).unwrap();
    let mut swarm = Swarm::up(home.path());
    swarm.wait_for("swarm up (2 agents)", LONG);
    let before = status(home.path());
    let pids = (pid_of(&before, "critic"), pid_of(&before, "executor"));
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let header = good.matches('\n').count() + 2;
    let cases: Vec<(String, String, &str)> = vec![
        (
            format!(
                "{good}\n[[agent]]\nname = \"linter\"\nrole = \"security\"\ncommand = [\"no-such-ratchet-linter\"]\n"
            ),
            format!("agents.toml:{header}: command: agent \"linter\": command: \"no-such-ratchet-linter\" not found"),
            "fix: correct the program name",
        ),
        (
            format!(
                "{good}\n[[agent]]\nname = \"remote\"\nrole = \"security\"\nurl = \"http://127.0.0.1:{closed_port}/\"\nrequired = false\n"
            ),
            format!("agents.toml:{header}: url: agent \"remote\": no Agent Card within 5s"),
            "fix: start the agent at http://127.0.0.1:",
        ),
        (
            format!(
                "[[agent]]\nname = \"critic\"\nrole = \"critic\"\ncommand = [{:?}]\n\n{executor}",
                format!("{}x", bin("critic").display())
            ),
            "agents.toml:1: command: agent \"critic\": command: ".to_string(),
            "fix: correct the path",
        ),
        (
            executor.clone(),
            "role: the edit leaves role \"critic\" without an agent (\"critic\", a required member, is gone)"
                .to_string(),
            "fix: keep an [[agent]] with role = \"critic\", or first set required = false on \"critic\"",
        ),
    ];
    for (i, (text, error, fix)) in cases.iter().enumerate() {
        write_config(home.path(), text);
        let refused = swarm.wait_for("agents.toml: refused:", LONG);
        assert!(refused.contains(error.as_str()), "case {i}: want {error:?} in {refused:?}");
        assert!(refused.contains(fix), "case {i}: want {fix:?} in {refused:?}");
        let agents = status(home.path());
        assert_eq!(agents.len(), 2, "case {i}: {agents:?}");
        assert_eq!((pid_of(&agents, "critic"), pid_of(&agents, "executor")), pids, "case {i}: members untouched");
        assert!(agents.iter().all(|a| a["state"] == "ready" && a["card"] == true), "case {i}: {agents:?}");
        // Back to the file in force (itself a no-op edit).
        write_config(home.path(), &good);
    }
    let out = swarm.lines.all();
    assert!(!out.contains("critic: stopped") && !out.contains("gave up"), "nothing was stopped:\n{out}");
    assert_eq!(count(&event_types(home.path()), "config_refused", ""), cases.len());
    assert!(swarm.proc.child.try_wait().unwrap().is_none(), "the swarm runs on");

    // An edit that passes the checks but whose new member never comes up (it exits at once): the
    // member in force keeps serving throughout, and the previous entry is back in force.
    let crashing = "[[agent]]\nname = \"critic\"\nrole = \"critic\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\n";
    write_config(home.path(), &format!("{crashing}\n{executor}"));
    swarm.wait_for("changed: critic)", LONG);
    let gave_up = swarm.wait_for("critic: gave up", LONG);
    assert!(gave_up.contains("exit code 3"), "{gave_up}");
    swarm.wait_for("critic: the edited entry did not come up", LONG);
    let agents = status(home.path());
    assert_eq!(pid_of(&agents, "critic"), pids.0, "the old critic never stopped: {agents:?}");
    assert_eq!(find(&agents, "critic")["state"], "ready");
    assert!(swarm.proc.child.try_wait().unwrap().is_none(), "a required member's failed edit does not stop the swarm");
    // The entry in force is the old one again: restoring the file is no change at all.
    write_config(home.path(), &good);
    let agents = status(home.path());
    assert_eq!(pid_of(&agents, "critic"), pids.0);
    stop_swarm(&mut swarm);
}

#[test]
fn status_says_when_no_swarm_is_running() {
    let home = TestHome::new();
    let out = ratchet_cmd(home.path(), &["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no swarm is running") && stderr.contains("fix: start one with `ratchet up`"), "{stderr}");
}

#[test]
fn a_url_entry_is_probed_and_listed_not_spawned() {
    let home = TestHome::new();
    // An agent running outside the swarm (here: a real critic started by the test).
    let outside = ratchet_tests::spawn_agent("critic", home.path(), &[]);
    let entry =
        format!("[[agent]]\nname = \"outside\"\nrole = \"critic\"\nurl = {:?}\nrequired = false\n", outside.url);
    std::fs::write(home.path().join("agents.toml"), agent("executor", "executor", "") + &entry).unwrap();
    let mut swarm = Swarm::up(home.path());
    swarm.wait_for(&format!("outside: ready at {} (remote)", outside.url), LONG);
    swarm.wait_for("swarm up (2 agents)", LONG);
    let agents = status(home.path());
    let o = find(&agents, "outside");
    assert_eq!(o["remote"], true, "{o}");
    assert_eq!(o["pid"], Value::Null, "{o}");
    assert_eq!(o["state"], "ready", "{o}");
    assert_eq!(o["card"], true, "{o}");
    assert_eq!(o["url"], outside.url.as_str());
    assert_eq!(swarm.agent_pgids().len(), 1, "only executor is spawned: {:?}", swarm.lines.all());
    stop_swarm(&mut swarm);
    assert!(outside.proc.group_alive(), "stopping the swarm leaves an outside agent alone");
}
