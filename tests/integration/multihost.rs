//! Members on other hosts, without a shared file system: three network namespaces as hosts on
//! one machine (`ratchet_tests::netns`), each with its own directory tree. The coordinator (with
//! the proposer and the critic) runs in host 0 under `ratchet up`; the executor runs in host 1
//! and the evaluator in host 2, each in its own empty repository, claiming work over A2A and
//! moving code through the coordinator's git endpoint.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kit::client::{A2aClient, skill_message};
use protocol::remote::{ClaimAnswer, LeaseCall, incoming_ref};
use ratchet_tests::fixture::{Proposer, Spec, Target, of_type, read_jsonl};
use ratchet_tests::netns::{Hosts, skip_reason};
use ratchet_tests::{bin, git_in, hermetic};
use serde_json::{Value, json};

const RUN: Duration = Duration::from_secs(240);

/// Every event of every branch (the test reads the coordinator host's files; the members
/// cannot).
fn branch_events(root: &Path) -> Vec<Value> {
    let mut all = vec![];
    if let Ok(rd) = std::fs::read_dir(root.join("worktrees")) {
        for e in rd.flatten() {
            let log = e.path().join("events/events.jsonl");
            if log.is_file() {
                all.extend(read_jsonl(&log));
            }
        }
    }
    all
}

fn has_event(root: &Path, ty: &str, pred: impl Fn(&Value) -> bool) -> bool {
    branch_events(root).iter().any(|e| e["type"] == ty && pred(e))
}

fn logs_of(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {}\n{}\n",
                e.path().display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
    }
    out
}

/// A rogue holder in host 1: claims the first execute task, pushes a commit, and reports
/// another one. Returns (branch, token, the branch head it was given).
fn tampered_result(hosts: &Hosts, coordinator: &str, token: &str, dir: &Path) -> (String, u64, String, Value) {
    let (coordinator, token, dir) = (coordinator.to_string(), token.to_string(), dir.to_path_buf());
    hosts.on_host(1, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let client = A2aClient::new(&coordinator).with_token(Some(token.clone()));
        let lease = |call: LeaseCall| {
            let t = rt.block_on(client.send(skill_message("lease", json!(call)), true)).expect("lease call");
            (t.status.state, t.status.message.and_then(|m| m.data().cloned()).map(Value::Object).unwrap_or_default())
        };
        let claim = LeaseCall::Claim {
            agent: "rogue".into(),
            role: "executor".into(),
            skills: vec!["execute".into()],
            host: "host1".into(),
            engine: None,
            wait_ms: 20_000,
            branch: None,
            task_id: None,
        };
        let (_, data) = lease(claim);
        let grant = serde_json::from_value::<ClaimAnswer>(data).expect("a claim answer").grant.expect("a task granted");
        // Its own clone: fetch what it was given through the git endpoint, with the token.
        std::fs::create_dir_all(&dir).expect("rogue dir");
        git_in(&dir, &["init", "-q"]);
        let auth = format!("http.extraHeader=Authorization: Bearer {token}");
        let repo = format!("{coordinator}git/repo");
        git_in(&dir, &["-c", &auth, "fetch", "-q", &repo, &grant.head]);
        // Without the token the endpoint refuses.
        let mut anon = Command::new("git");
        hermetic(&mut anon, &dir);
        let anon = anon.arg("-C").arg(&dir).args(["fetch", "-q", &repo, &grant.head]).env("GIT_TERMINAL_PROMPT", "0");
        let out = anon.output().expect("git runs");
        assert!(!out.status.success(), "a fetch without the token must be refused");
        // git asks for credentials after a 401 (and may not, prompts being off).
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("401") || err.contains("could not read Username"), "{err}");
        git_in(&dir, &["checkout", "-q", &grant.head]);
        std::fs::write(dir.join("params.toml"), "delay_ms = 1\nlabel = \"rogue\"\n").expect("edit");
        git_in(&dir, &["commit", "-q", "-am", "pushed"]);
        let pushed = git_in(&dir, &["rev-parse", "HEAD"]);
        std::fs::write(dir.join("params.toml"), "delay_ms = 2\nlabel = \"rogue\"\n").expect("edit");
        git_in(&dir, &["commit", "-q", "-am", "claimed"]);
        let claimed = git_in(&dir, &["rev-parse", "HEAD"]);
        let dst = incoming_ref(&grant.branch, &grant.task.id, grant.task.token);
        // Nothing can be pushed into the swarm's repository itself.
        let mut direct = Command::new("git");
        hermetic(&mut direct, &dir);
        let out = direct
            .arg("-C")
            .arg(&dir)
            .args(["-c", &auth, "push", "-q", &repo, &format!("{pushed}:refs/heads/main")])
            .output()
            .expect("git runs");
        assert!(!out.status.success(), "a push to the swarm's repository must be refused");
        git_in(&dir, &["-c", &auth, "push", "-q", &format!("{coordinator}git/incoming"), &format!("{pushed}:{dst}")]);
        let finish = LeaseCall::Finish {
            agent: "rogue".into(),
            branch: grant.branch.clone(),
            task_id: grant.task.id.clone(),
            token: grant.task.token,
            outcome: protocol::lease::Outcome::Success,
            summary: "all good".into(),
            data: json!({"commit": claimed, "base": grant.base, "gates": [], "command_ms": 0}),
            commit: Some(claimed.clone()),
            artifacts: vec![],
        };
        let t = rt.block_on(client.send(skill_message("lease", json!(finish)), true)).expect("finish call");
        let text = t.status.message.map(|m| m.text()).unwrap_or_default();
        (grant.branch, grant.task.token, grant.head, json!({"state": format!("{:?}", t.status.state), "text": text}))
    })
}

#[test]
fn remote_executor_and_evaluator_run_the_loop_over_git_between_network_namespaces() {
    if let Some(why) = skip_reason() {
        eprintln!("{why}");
        return;
    }
    let hosts = Hosts::new(3);
    let agents = format!(
        "[[agent]]\nname = \"coordinator\"\nrole = \"coordinator\"\ncommand = [{c:?}]\nenv = {{ RATCHET_LISTEN = \"0.0.0.0:0\" }}\n\n\
         [[agent]]\nname = \"proposer\"\nrole = \"proposer\"\ncommand = [{p:?}]\n\n\
         [[agent]]\nname = \"critic\"\nrole = \"critic\"\ncommand = [{k:?}]\n",
        c = bin("coordinator").display().to_string(),
        p = bin("proposer").display().to_string(),
        k = bin("critic").display().to_string(),
    );
    let t = Target::new(Spec {
        delay_ms: 300,
        candidates: 2,
        lease_ttl_s: 3,
        proposer: Proposer::Sweep(vec![("delay_ms".into(), vec!["300".into(), "100".into(), "600".into()])]),
        agents_toml: Some(agents),
        ..Spec::default()
    });
    let old_main = t.main();
    let wrapper = hosts.wrapper(0);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut up = t.spawn_up_under(&wrapper, &["--max-cycles", "1"]);
    // The coordinator's address, as the other hosts reach it.
    let mut port = String::new();
    up.wait_until("the coordinator's address", Duration::from_secs(60), |root| {
        let state = std::fs::read_to_string(root.join("worktrees/.swarm/state.json")).unwrap_or_default();
        let state: Value = serde_json::from_str(&state).unwrap_or_default();
        let url = state["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["name"] == "coordinator"))
            .and_then(|a| a["url"].as_str())
            .unwrap_or_default();
        port = url.rsplit(':').next().unwrap_or_default().trim_end_matches('/').to_string();
        !port.is_empty()
    });
    let token = std::fs::read_to_string(t.path().join("worktrees/.swarm/token")).expect("the swarm token");
    let token = token.trim().to_string();
    let coordinator_for = |i: usize| format!("http://{}:{port}/", hosts.hub_addr(i));
    let world = t.tmp.path().join("hosts");

    // 1. A tampered result is refused: the branch does not move, the task goes back to the queue.
    let (branch, token1, head, answer) = tampered_result(&hosts, &coordinator_for(1), &token, &world.join("rogue"));
    assert_eq!(answer["state"], "Rejected", "{answer}");
    assert!(answer["text"].as_str().unwrap_or_default().contains("but the result names"), "{answer}");
    let events = branch_events(t.path());
    let refused = of_type(&events, "remote_result_refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["holder"], "rogue");
    assert_eq!(git_in(t.path(), &["rev-parse", &format!("refs/heads/{branch}")]), head, "the branch did not move");
    up.wait_until("the tampered task back in the queue", Duration::from_secs(30), |root| {
        has_event(root, "task_queued", |e| e["branch"] == branch.as_str() && e["token"].as_u64() > Some(token1))
    });

    // 2. The real members, each on its own host with its own empty repository.
    let _exec = hosts.remote_member(1, "executor", "exec-h1", &world.join("h1"), &coordinator_for(1), &token);
    let mut eval = hosts.remote_member(2, "evaluator", "eval-h2", &world.join("h2"), &coordinator_for(2), &token);
    // 3. The evaluator's host dies during its first evaluation: its lease expires by heartbeat
    // and the task is re-queued; a new evaluator on that host finishes the work.
    up.wait_until("the remote evaluator holding a task", RUN, |root| {
        has_event(root, "lease_held_remotely", |e| e["holder"] == "eval-h2")
    });
    // `ratchet status` shows where each member runs: the remote ones on their own hosts.
    let out = t.ratchet_under(&wrapper, &["status", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let row =
        |name: &str| rows.iter().find(|r| r["name"] == name).cloned().unwrap_or_else(|| panic!("{name}: {rows:#?}"));
    assert_eq!(row("exec-h1")["host"], "host1", "{rows:#?}");
    assert_eq!(row("exec-h1")["remote"], true, "{rows:#?}");
    assert_eq!(row("eval-h2")["host"], "host2", "{rows:#?}");
    assert_eq!(row("coordinator")["host"], ratchet_tests::hostname(), "{rows:#?}");
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(eval.pid()), nix::sys::signal::Signal::SIGKILL);
    let _ = eval.child.wait();
    up.wait_until("the dead evaluator's lease expired", Duration::from_secs(60), |root| {
        has_event(root, "lease_expired", |e| e["holder"] == "eval-h2")
    });
    let _eval2 = hosts.remote_member(2, "evaluator", "eval-h2b", &world.join("h2"), &coordinator_for(2), &token);
    let run = up.finish(RUN);
    let logs = format!("{}\n{}\n{}", t.agent_logs(), logs_of(&world.join("h1")), logs_of(&world.join("h2")));
    assert!(run.status.success(), "ratchet up failed: {}\n{logs}", run.stderr);
    let s = &run.summary;
    let promoted = run.list("promoted");
    assert_eq!(promoted.len(), 1, "{s:#}\n{logs}");
    assert_eq!(promoted[0]["approach"], "delay_ms=100", "{s:#}");
    let rejected = run.list("rejected");
    assert!(rejected.iter().any(|r| r["approach"] == "delay_ms=600"), "{s:#}\n{logs}");
    let commit = promoted[0]["commit"].as_str().expect("a commit");
    assert_eq!(t.main(), commit);
    assert_eq!(t.git(&["rev-parse", &format!("{commit}^")]), old_main);

    let events = branch_events(t.path());
    let remote = of_type(&events, "lease_held_remotely");
    for (holder, host) in [("exec-h1", "host1"), ("eval-h2", "host2"), ("eval-h2b", "host2")] {
        assert!(remote.iter().any(|e| e["holder"] == holder && e["host"] == host), "{holder} on {host}: {remote:#?}");
    }
    let expired = of_type(&events, "lease_expired");
    assert!(expired.iter().any(|e| e["holder"] == "eval-h2"), "{expired:#?}");
    // The evaluator's evidence came back with its hashes checked: the evaluation artefact is on
    // the coordinator's host.
    let cand = promoted[0]["branch"].as_str().expect("a branch");
    let evaluation = t.path().join(format!("worktrees/{cand}/artifacts/evaluate/evaluation.json"));
    assert!(evaluation.is_file(), "{} is missing\n{logs}", evaluation.display());
    // No member host ever had the coordinator's tree: each worked in its own repository.
    for h in ["h1", "h2"] {
        let repo = world.join(h).join("repo");
        assert!(repo.join(".git").is_dir(), "{h} has its own repository");
        assert!(!repo.join("worktrees/.swarm/token").exists(), "{h} never saw the swarm's files");
    }
}
