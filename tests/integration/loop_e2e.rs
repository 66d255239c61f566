//! The improvement loop end to end: the real swarm (`ratchet up --once --json`) on small shell
//! targets built by `ratchet_tests::fixture`, checked through the run summary, git history and
//! the events.

use std::time::Duration;

use ratchet_tests::fixture::{Proposer, Spec, Target, declare, of_type};
use serde_json::Value;

/// Generous: the machine is shared; nothing here asserts on speed.
const RUN: Duration = Duration::from_secs(180);

/// sha256 of a file of the target, as `sha256sum` prints it.
fn sha256(t: &Target, rel: &str) -> String {
    let out = std::process::Command::new("sha256sum").arg(t.path().join(rel)).output().expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("a hash").to_string()
}

fn approach(item: &Value) -> &str {
    item["approach"].as_str().unwrap_or_default()
}

fn find<'a>(items: &'a [Value], key: &str) -> &'a Value {
    items.iter().find(|i| approach(i) == key).unwrap_or_else(|| panic!("no candidate {key} in {items:#?}"))
}

#[test]
fn a_real_improvement_is_promoted_by_fast_forward_and_explained() {
    let t = Target::new(Spec {
        delay_ms: 300,
        candidates: 2,
        proposer: Proposer::Sweep(vec![
            ("delay_ms".into(), vec!["300".into(), "100".into()]),
            ("label".into(), vec!["\"baseline\"".into(), "\"tuned\"".into()]),
        ]),
        ..Spec::default()
    });
    let old_main = t.main();
    let run = t.up_once(&["--max-cycles", "1"], RUN);
    let s = &run.summary;
    assert_eq!(run.stop_reason(), "budget-cycles", "{s:#}");
    assert_eq!(s["cycles"], 1, "{s:#}");

    let promoted = run.list("promoted");
    assert_eq!(promoted.len(), 1, "exactly one promotion: {s:#}");
    let p = &promoted[0];
    let commit = p["commit"].as_str().expect("a commit").to_string();
    let (before, after) = (p["before"].as_f64().expect("before"), p["after"].as_f64().expect("after"));
    assert!(before >= 300.0 && (100.0..200.0).contains(&after), "the metric went 300 -> 100 ms: {p}");
    assert_eq!(s["metric"]["name"], "ms");
    assert_eq!(s["metric"]["direction"], "lower");
    assert_eq!(s["metric"]["final"].as_f64(), Some(after), "{s:#}");
    // The noise candidate of the same cycle was held, not promoted.
    let held = run.list("held");
    assert_eq!(find(&held, "label=tuned")["verdict"], "HOLD", "{s:#}");

    // main was fast-forwarded onto the candidate: one new commit whose parent is the old main.
    assert_eq!(t.main(), commit);
    assert_eq!(t.git(&["rev-parse", &format!("{commit}^")]), old_main);
    assert_eq!(t.git(&["rev-list", "--count", &format!("{old_main}..main")]), "1");
    assert_eq!(t.git(&["rev-list", "--merges", "main"]), "", "no merge commit on main");
    let message = t.git(&["log", "-1", "--format=%B", &commit]);
    assert!(message.contains("Ratchet-Candidate: ") && message.contains("Ratchet-Strategy: sweep"), "{message}");
    for doc in ["constitution.md", "ethos.md", "cadence.md"] {
        let line = format!("Ratchet-Governance: {doc} {}", sha256(&t, doc));
        assert!(message.contains(&line), "the commit carries the approved {doc}: {message}");
    }
    assert!(t.show("main", "params.toml").contains("delay_ms = 100"));
    // The user's checkout of main moved with its files.
    assert!(t.read("params.toml").contains("delay_ms = 100"));
    assert_eq!(t.git(&["status", "--porcelain", "--untracked-files=no"]), "");

    let events = t.events();
    let promotions = of_type(&events, "promoted");
    assert_eq!(promotions.len(), 1, "{promotions:#?}");
    assert_eq!(promotions[0]["commit"], commit.as_str());
    assert_eq!(promotions[0]["from"], old_main.as_str());

    // `ratchet explain` shows the evidence behind the promotion, from the events.
    let out = t.ratchet(&["explain", &commit]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "explain failed: {}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "proposal",
        "delay_ms",
        "gates (executor)",
        "sh check.sh",
        "sh tests/run.sh",
        "critic",
        "pass: true",
        "verdict: PROMOTE (better)",
        "pairing: sequential, ",
        "(first look 5, cap 10, design horizon 20), stopped: Boundary",
        "rule: stopped at round ",
        "the interval excludes 0 on the better side",
        "effect: +",
        "calibrated noise: none",
        "pairs (round, first or CPUs, baseline, candidate, score; * outlier):",
        "governance in force",
    ] {
        assert!(text.contains(needle), "explain lacks {needle:?}:\n{text}");
    }
    for doc in ["constitution.md", "ethos.md", "cadence.md"] {
        assert!(text.contains(&format!("{doc} sha256 {}", sha256(&t, doc))), "explain lacks {doc}'s hash:\n{text}");
    }
    let x = t.ratchet_json(&["explain", &commit]);
    assert_eq!(x["commit"], commit.as_str());
    assert_eq!(x["on_main"], true);
    assert_eq!(x["branch"], p["branch"]);
    assert_eq!(x["from"], old_main.as_str());
    assert_eq!(x["proposal"]["params"]["delay_ms"], 100, "{:#}", x["proposal"]);
    let gates = x["execution"]["gates"].as_array().expect("gate results");
    assert_eq!(gates.len(), 2, "{gates:#?}");
    assert!(gates.iter().all(|g| g["result"] == "ok"), "{gates:#?}");
    assert_eq!(x["critique"]["pass"], true, "{:#}", x["critique"]);
    assert!(x["critique"]["findings"].is_array(), "{:#}", x["critique"]);
    assert_eq!(x["evaluation"]["verdict"], "PROMOTE");
    assert_eq!(x["evaluation"]["outcome"], "better");
    // Every pair, its order, values and score; the rule that stopped; the effect's interval.
    let sampling = &x["evaluation"]["sampling"];
    let pairs = sampling["pairs"].as_array().expect("pairs");
    // Decided at the first look (5 rounds) unless the loaded machine stalled a sleep.
    assert_eq!(pairs.len() as u64, sampling["rounds"].as_u64().unwrap(), "{sampling:#}");
    assert!(pairs.len() >= 5 && sampling["stopping"] == "boundary", "{sampling:#}");
    let mut scores = vec![];
    for pair in pairs {
        assert!(pair["baseline"].as_f64().is_some() && pair["candidate"].as_f64().is_some(), "{pair}");
        assert!(pair["first"] == "baseline" || pair["first"] == "candidate", "{pair}");
        scores.push(pair["score"].as_f64().expect("a score"));
    }
    scores.sort_by(f64::total_cmp);
    assert!(scores[scores.len() / 2] > 0.9, "300 ms -> 100 ms is a log ratio of 1.1: {scores:?}");
    assert!(sampling["effect"]["lo"].as_f64().is_some_and(|lo| lo > 0.5), "{sampling:#}");
    assert_eq!(x["evaluation"]["stats"]["rounds"], sampling["rounds"]);
    assert_eq!(x["governance"]["ethos.md"], sha256(&t, "ethos.md").as_str());

    // A candidate that was never promoted: explain says so and shows its record.
    let held_branch = find(&held, "label=tuned")["branch"].as_str().expect("branch").to_string();
    let held_commit = t.git(&["rev-parse", &format!("refs/heads/{held_branch}")]);
    let out = t.ratchet(&["explain", &held_commit]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "explain of a held candidate: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("is not on main and was never promoted by Ratchet"), "{text}");
    assert!(text.contains(&format!("candidate {held_branch} (run ")) && text.contains("was judged HOLD"), "{text}");
    assert!(text.contains("HOLD: no change that matters"), "the evaluator's reasons: {text}");
    // A commit that no candidate made is refused, with a clear message.
    let stray = t.git(&["commit-tree", "HEAD^{tree}", "-m", "made by hand"]);
    let out = t.ratchet(&["explain", &stray]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "explain of a commit no candidate made must fail");
    assert!(err.contains("is not on main and was never promoted by Ratchet"), "{err}");
    let out = t.ratchet(&["explain", &old_main]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "explain of the initial commit must fail");
    assert!(err.contains("is on main but no Ratchet promotion event names it"), "{err}");

    // The same evidence as web pages, served by the coordinator.
    let coordinator = ratchet_tests::spawn_agent("coordinator", t.path(), &[]);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let fetch = |path: &str, headers: &[(&str, &str)]| {
        ratchet_tests::rt().block_on(async {
            let mut req = http.get(format!("{}{path}", coordinator.url));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let r = req.send().await.expect("GET reaches the coordinator");
            let cookie = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), cookie, r.text().await.unwrap_or_default())
        })
    };
    // The pages need the swarm token: as a header, or `?token=` once, which sets a cookie.
    let bearer = format!("Bearer {}", ratchet_tests::TEST_TOKEN);
    let get = |path: &str| {
        let (status, _, text) = fetch(path, &[("authorization", &bearer)]);
        (status, text)
    };
    assert_eq!(fetch("ui", &[]).0, 401, "the web pages are not public");
    assert_eq!(fetch("ui?token=wrong", &[]).0, 401);
    let (status, cookie, _) = fetch(&format!("ui?token={}", ratchet_tests::TEST_TOKEN), &[]);
    let cookie = cookie.expect("?token= sets a cookie");
    assert_eq!(status, 303);
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(fetch("ui", &[("cookie", &pair)]).0, 200, "the cookie opens the pages");
    let branch = p["branch"].as_str().expect("branch");
    let (status, index) = get("ui");
    assert_eq!(status, 200);
    assert!(index.contains(branch) && index.contains("PROMOTE") && index.contains("HOLD"), "{index}");
    let (status, page) = get(&format!("ui/branch/{branch}"));
    assert_eq!(status, 200);
    assert!(page.contains("evaluate/evaluation.json") && page.contains("execute/gate-1.log"), "{page}");
    let (status, log) = get(&format!("ui/branch/{branch}/artifact/execute/gate-1.log"));
    assert_eq!(status, 200);
    assert!(log.contains("sh check.sh"), "{log}");
    let (status, _) = get("ui/branch/..%2F..%2Fetc");
    assert_eq!(status, 400, "a traversing branch name is refused");
    let (status, _) = get(&format!("ui/branch/{branch}/artifact/..%2F..%2Fmeta.json/x"));
    assert_eq!(status, 400, "a traversing artefact path is refused");
}

/// The candidate (in loop.json) whose proposal summary starts with `summary_prefix`.
fn candidate<'a>(state: &'a Value, summary_prefix: &str) -> &'a Value {
    state["finished"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["candidates"].as_array().into_iter().flatten())
        .find(|c| c["proposal"]["summary"].as_str().is_some_and(|s| s.starts_with(summary_prefix)))
        .unwrap_or_else(|| panic!("no candidate whose summary starts with {summary_prefix:?} in {state:#}"))
}

fn reasons(item: &Value) -> String {
    item["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

#[test]
fn a_regression_is_rejected_and_main_stays() {
    let t =
        Target::new(Spec { delay_ms: 100, proposer: Proposer::sweep("delay_ms", &["100", "300"]), ..Spec::default() });
    let old_main = t.main();
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    assert!(run.list("promoted").is_empty(), "{s:#}");
    let rejected = run.list("rejected");
    let r = find(&rejected, "delay_ms=300");
    assert_eq!(r["verdict"], "REJECT", "{s:#}");
    let why = reasons(r);
    assert!(why.contains("REJECT") && why.contains("worse"), "the reasons say it is worse: {why}");
    assert!(r["effect"].as_f64().is_some_and(|e| e < -0.5), "300 ms against 100 ms: {r}");
    assert_eq!(t.main(), old_main, "main did not move");
    assert!(of_type(&t.events(), "promoted").is_empty());
    let evaluated = of_type(&t.events(), "evaluated").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(evaluated.len(), 1, "{evaluated:#?}");
    assert_eq!(evaluated[0]["verdict"], "REJECT");
    // The failed approach is hard-banned; nothing is left to try, and the loop says so.
    let state = t.loop_state();
    assert!(state["banned"].as_array().expect("banned").iter().any(|b| b == "delay_ms=300"), "{state:#}");
    assert_eq!(run.stop_reason(), "exhausted", "{s:#}");
}

#[test]
fn a_noise_only_change_is_held_not_promoted() {
    let t = Target::new(Spec {
        delay_ms: 100,
        proposer: Proposer::sweep("label", &["\"baseline\"", "\"tuned\""]),
        ..Spec::default()
    });
    let old_main = t.main();
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    assert!(run.list("promoted").is_empty(), "{s:#}");
    assert!(run.list("rejected").is_empty(), "{s:#}");
    let h = find(&run.list("held"), "label=tuned").clone();
    assert_eq!(h["verdict"], "HOLD", "{s:#}");
    let why = reasons(&h);
    assert!(why.contains("HOLD: no change that matters"), "held because it changes nothing that matters: {why}");
    // Decided at the first look (5 rounds) unless the machine stalled a run of the sleeping
    // benchmark; either way it names what it found and the rounds it took.
    assert_eq!(h["outcome"].as_str(), Some("no-change"), "{h:#}");
    assert!(h["rounds"].as_u64().is_some_and(|r| r >= 5), "{h:#}");
    assert_eq!(t.main(), old_main);
    let evaluated = t.events().into_iter().filter(|e| e["type"] == "evaluated").collect::<Vec<_>>();
    assert_eq!(evaluated.len(), 1);
    assert_eq!(evaluated[0]["verdict"], "HOLD");
    // Held is not failed: it is not hard-banned.
    assert!(!t.loop_state()["banned"].as_array().expect("banned").iter().any(|b| b == "label=tuned"));
}

#[test]
fn candidates_touching_the_benchmark_or_a_governance_doc_are_rejected_by_the_critic() {
    let t = Target::new(Spec {
        candidates: 2,
        proposer: Proposer::Calls(vec![
            // "Improves" the metric by grading itself: the benchmark reports 1 ms.
            declare(&["bench/bench.sh"], &[], "a faster benchmark")
                + "printf '#!/bin/sh\\necho \"{\\\"ms\\\": 1}\"\\n' > bench/bench.sh\necho 'make the benchmark instant'",
            declare(&["ethos.md"], &[], "looser rules")
                + "printf '\\nA candidate may edit the benchmark.\\n' >> ethos.md\necho 'relax the ethos'",
        ]),
        ..Spec::default()
    });
    let old_main = t.main();
    let run = t.up_once(&["--max-cycles", "1"], RUN);
    let s = &run.summary;
    assert!(run.list("promoted").is_empty(), "{s:#}");
    assert_eq!(t.main(), old_main);
    let state = t.loop_state();
    for (summary, file) in [("make the benchmark instant", "bench/bench.sh"), ("relax the ethos", "ethos.md")] {
        let c = candidate(&state, summary);
        assert_eq!(c["verdict"], "REJECT", "{c:#}");
        let why = reasons(c);
        assert!(
            why.contains("critic: [protected-path]") && why.contains(file),
            "the critic cites the protected path {file}: {why}"
        );
        assert!(c["eval"].is_null(), "a candidate the critic rejects is never benchmarked: {c:#}");
        let branch = c["branch"].as_str().expect("branch");
        let events = t.branch_events(branch);
        let critiqued = of_type(&events, "critiqued");
        let critiqued = critiqued.last().unwrap_or_else(|| panic!("no critiqued event for {branch}"));
        assert_eq!(critiqued["pass"], false);
        let findings = critiqued["findings"].as_array().expect("findings");
        assert!(
            findings.iter().any(|f| f["rail"] == "protected-path" && f["file"] == file && f["line"].as_u64().is_some()),
            "a protected-path finding with file and line: {findings:#?}"
        );
        assert!(of_type(&events, "evaluated").is_empty());
        assert!(of_type(&events, "promoted").is_empty());
    }
    assert_eq!(run.list("rejected").len(), 2, "{s:#}");
}

#[test]
fn a_non_biting_test_is_rejected_and_a_biting_one_passes_the_critic() {
    let t = Target::new(Spec {
        candidates: 2,
        proposer: Proposer::Calls(vec![
            // Passes on the parent as well: it tests nothing the candidate changed.
            declare(&["tests/test_label.sh"], &["tests/test_label.sh"], "test the label")
                + "printf 'grep -q \"^label = \" params.toml\\n' > tests/test_label.sh\necho 'test the label'",
            // Fails on the parent (no src/double.sh there), passes with the change.
            declare(&["src/double.sh"], &["tests/test_double.sh"], "a double function")
                + "mkdir -p src\nprintf 'echo $(( $1 * 2 ))\\n' > src/double.sh\n\
             printf '[ \"$(sh src/double.sh 21)\" = 42 ]\\n' > tests/test_double.sh\necho 'add double with its test'",
        ]),
        ..Spec::default()
    });
    let run = t.up_once(&["--max-cycles", "1"], RUN);
    let s = &run.summary;
    let state = t.loop_state();

    let weak = candidate(&state, "test the label");
    assert_eq!(weak["verdict"], "REJECT", "{weak:#}");
    let why = reasons(weak);
    assert!(
        why.contains("critic: [bite]") && why.contains("non-biting") && why.contains("tests/test_label.sh"),
        "{why}"
    );
    assert!(weak["eval"].is_null(), "{weak:#}");

    let strong = candidate(&state, "add double with its test");
    assert_eq!(strong["critique"]["pass"], true, "the biting test passes the critic: {strong:#}");
    let summary = strong["critique"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("bite"), "the bite check ran: {summary}");
    assert!(!reasons(strong).contains("critic:"), "{strong:#}");
    // It went on to be measured (no faster, so held).
    assert_eq!(strong["verdict"], "HOLD", "{strong:#}");
    assert!(strong["eval"].is_object());
    assert!(run.list("promoted").is_empty(), "{s:#}");
}

#[test]
fn a_gate_timeout_is_retried_as_infrastructure_and_not_counted_against_the_candidate() {
    // The gate hangs past gate_timeout_s on its first run only, then passes: a marker in its own
    // checkout (the only place a sandboxed gate can write; ignored, and kept by the retry, which
    // finds the candidate already committed) remembers it.
    let check = "#!/bin/sh\n\
        if [ ! -e .hung-once ]; then touch .hung-once; sleep 120; fi\n\
        grep -Eq '^delay_ms = [0-9]+$' params.toml\n";
    let t = Target::new(Spec {
        gate_timeout_s: 3,
        proposer: Proposer::sweep("delay_ms", &["300", "100"]),
        files: vec![("check.sh".into(), check.into()), (".gitignore".into(), "worktrees/\n.hung-once\n".into())],
        ..Spec::default()
    });
    let old_main = t.main();
    // Without the pre-loop check: on the baseline this gate hangs too (its first run there), which
    // `ratchet check` would rightly call a configuration error.
    let run = t.up_once(&["--max-cycles", "1", "--no-check"], RUN);
    let s = &run.summary;

    // The candidate was still evaluated and promoted.
    let promoted = run.list("promoted");
    assert_eq!(promoted.len(), 1, "the timeout is not held against the candidate: {s:#}");
    assert_ne!(t.main(), old_main);
    let branch = promoted[0]["branch"].as_str().expect("branch").to_string();
    let marker = t.path().join("worktrees").join(&branch).join("tree/.hung-once");
    assert!(marker.exists(), "the gate never hung: the test did not test anything");
    let state = t.loop_state();
    let c = candidate(&state, "");
    assert_eq!(c["verdict"], "PROMOTE", "{c:#}");
    assert!(!reasons(c).contains("infrastructure"), "{c:#}");

    // The task's history: attempt 1 failed as infrastructure (the gate timed out), attempt 2,
    // under a new fencing token, succeeded.
    let inspect = t.ratchet_json(&["inspect", &branch]);
    let tasks = inspect["tasks"].as_array().expect("tasks");
    let exec = tasks.iter().find(|t| t["id"] == "execute").unwrap_or_else(|| panic!("no execute task: {inspect:#}"));
    assert_eq!(exec["state"], "done", "{exec:#}");
    assert_eq!(exec["attempt"], 2, "{exec:#}");
    assert_eq!(exec["token"], 2, "{exec:#}");
    let history = exec["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{exec:#}");
    assert_eq!((&history[0]["attempt"], &history[0]["outcome"]), (&Value::from(1), &Value::from("infra-failure")));
    assert_eq!((&history[1]["attempt"], &history[1]["outcome"]), (&Value::from(2), &Value::from("success")));
    let events = t.branch_events(&branch);
    let infra = events
        .iter()
        .find(|e| e["type"] == "result_accepted" && e["task"] == "execute" && e["outcome"] == "infra-failure")
        .unwrap_or_else(|| panic!("no infra-failure result for execute: {events:#?}"));
    assert_eq!(infra["token"], 1);
    assert!(infra["summary"].as_str().unwrap_or_default().contains("timed out"), "{infra}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "task_queued" && e["task"] == "execute" && e["attempt"] == 2 && e["token"] == 2),
        "the retry was queued as attempt 2 under token 2: {events:#?}"
    );
    // Nothing about it counts against the candidate or the proposer.
    assert_eq!(state["proposal_failures"], 0);
    let tried = state["tried"].as_array().expect("tried");
    assert_eq!(tried.len(), 1, "{tried:#?}");
    assert_eq!((&tried[0]["key"], &tried[0]["verdict"]), (&Value::from("delay_ms=100"), &Value::from("PROMOTED")));
    assert!(state["banned"].as_array().expect("banned").is_empty(), "{state:#}");
}

#[test]
fn the_stall_invariant_stops_the_loop() {
    let t = Target::new(Spec {
        delay_ms: 200,
        stall_limit: 2,
        proposer: Proposer::sweep("label", &["\"baseline\"", "\"tuned\"", "\"final\"", "\"other\"", "\"last\""]),
        ..Spec::default()
    });
    let old_main = t.main();
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    assert_eq!(run.stop_reason(), "stalled", "{s:#}");
    let detail = s["stop_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("2 consecutive cycles moved nothing") && detail.contains("stall_limit 2"), "{detail}");
    assert_eq!(s["cycles"], 2, "it stopped as soon as the limit was reached, with values left to try: {s:#}");
    assert_eq!(run.list("held").len(), 2, "{s:#}");
    assert!(run.list("promoted").is_empty());
    assert_eq!(t.main(), old_main);
    let stops = of_type(&t.events(), "loop_stopped").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(stops.len(), 1, "{stops:#?}");
    assert_eq!(stops[0]["reason"], "stalled");
    assert_eq!(t.loop_state()["stopped"]["reason"], "stalled");
}

#[test]
fn the_circuit_breaker_stops_the_loop() {
    let t = Target::new(Spec {
        breaker_limit: 2,
        proposer: Proposer::Command("echo 'no idea' >&2; exit 1".into()),
        ..Spec::default()
    });
    let old_main = t.main();
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    assert_eq!(run.stop_reason(), "circuit-breaker", "{s:#}");
    let detail = s["stop_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("2 consecutive proposal failures") && detail.contains("breaker_limit 2"), "{detail}");
    assert_eq!(s["cycles"], 2, "{s:#}");
    let failures = of_type(&t.events(), "proposal_failed").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(failures.len(), 2, "{failures:#?}");
    for f in &failures {
        let why = f["reason"].as_str().unwrap_or_default();
        assert!(why.contains("no idea"), "the proposer's failure is recorded with its output: {why}");
    }
    assert!(of_type(&t.events(), "proposed").is_empty());
    assert_eq!(t.main(), old_main);
    assert_eq!(t.loop_state()["stopped"]["reason"], "circuit-breaker");
}

#[test]
fn gc_after_a_run_leaves_no_worktree_no_orphan_and_loses_no_commit() {
    let t = Target::new(Spec {
        delay_ms: 200,
        candidates: 4,
        proposer: Proposer::Calls(vec![
            declare(&["params.toml"], &[], "less delay")
                + "sed -i 's/^delay_ms = .*/delay_ms = 100/' params.toml\necho 'faster'",
            declare(&["params.toml"], &[], "a new label")
                + "sed -i 's/^label = .*/label = \"tuned\"/' params.toml\necho 'relabel'",
            declare(&["params.toml"], &[], "more delay")
                + "sed -i 's/^delay_ms = .*/delay_ms = 400/' params.toml\necho 'slower'",
            declare(&["bench/bench.sh"], &[], "a cheat")
                + "echo '# cheat' >> bench/bench.sh\necho 'touch the benchmark'",
        ]),
        ..Spec::default()
    });
    let run = t.up_once(&["--max-cycles", "1"], RUN);
    let s = &run.summary;
    assert_eq!(run.list("promoted").len(), 1, "{s:#}");
    assert_eq!(run.list("held").len(), 1, "{s:#}");
    assert_eq!(run.list("rejected").len(), 2, "{s:#}");
    let state = t.loop_state();
    let candidates: Vec<(String, String)> = state["finished"][0]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| {
            let branch = c["branch"].as_str().expect("branch").to_string();
            let commit =
                c["exec"]["commit"].as_str().unwrap_or_else(|| panic!("{branch} was never committed")).to_string();
            (branch, commit)
        })
        .collect();
    assert_eq!(candidates.len(), 4);
    let promoted_commit = run.list("promoted")[0]["commit"].as_str().expect("commit").to_string();

    // The proposer removed its scratch checkout itself after its task; one a proposer that died in a
    // task would leave is removed by `ratchet gc` (through `proposer --gc`).
    let agents = kit::layout::Layout::new(t.path()).agents_dir();
    let scratches: Vec<_> = std::fs::read_dir(&agents)
        .expect("read the agents' state directories")
        .flatten()
        .map(|e| e.path().join("scratch"))
        .filter(|p| p.exists())
        .collect();
    assert!(scratches.is_empty(), "the proposer left its scratch checkout: {scratches:?}");
    let leftover = agents.join("proposer").join("scratch");
    std::fs::create_dir_all(leftover.join(".git")).expect("plant a leftover scratch checkout");

    let gc = t.ratchet_json(&["gc"]);
    assert_eq!(gc["helper_gc_failed"], serde_json::json!([]), "{gc:#}");
    assert!(!leftover.exists(), "ratchet gc left a dead proposer's scratch checkout: {gc:#}");
    assert_eq!(gc["kept_branches"], serde_json::json!([]), "{gc:#}");
    assert_eq!(gc["orphans_reported"], serde_json::json!([]), "gc understands everything the swarm left: {gc:#}");

    // No worktree registration is left except main's own checkout ...
    let listed = t.git(&["worktree", "list", "--porcelain"]);
    let registered: Vec<&str> = listed.lines().filter_map(|l| l.strip_prefix("worktree ")).collect();
    assert_eq!(
        registered,
        [t.path().to_str().expect("utf-8 path")],
        "after gc only main's checkout may be registered (candidate checkouts, the evaluator's baseline \
         checkouts and the proposer's scratch checkouts all removed):\n{listed}"
    );
    // ... and no checkout directory git does not know about (an orphan) is left under worktrees/.
    let mut checkouts = vec![];
    let mut stack = vec![kit::layout::Layout::new(t.path()).worktrees()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read worktrees/").flatten() {
            let path = e.path();
            if e.file_name() == ".git" {
                checkouts.push(dir.clone());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    assert!(checkouts.is_empty(), "checkout directories left under worktrees/: {checkouts:?}");

    // No commit is lost: every candidate commit is on main or under refs/ratchet/archive/.
    let archives = t.git(&["for-each-ref", "--format=%(refname)", "refs/ratchet/archive/"]);
    for (branch, commit) in &candidates {
        let reachable = std::iter::once("refs/heads/main").chain(archives.lines()).any(|r| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(t.path())
                .args(["merge-base", "--is-ancestor", commit, r])
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .status()
                .expect("git runs");
            out.success()
        });
        assert!(reachable, "{branch}'s commit {commit} is neither on main nor archived:\n{archives}");
        // Finished branches are gone; their records are not.
        assert_eq!(t.git(&["branch", "--list", branch.as_str()]), "", "{branch} should have been deleted");
        let x = t.ratchet_json(&["inspect", branch]);
        assert_eq!(x["meta"]["checkout_removed"], true, "{branch}: {:#}", x["meta"]);
        assert!(!kit::layout::Layout::new(t.path()).branch_dir(branch).join("tree").exists());
        let events = x["events"].as_array().expect("events");
        assert!(events.iter().any(|e| e["type"] == "executed"), "{branch}: events still readable: {events:#?}");
        assert!(events.iter().any(|e| e["type"] == "worktree_removed"), "{branch}: {events:#?}");
        let tasks = x["tasks"].as_array().expect("tasks");
        assert!(tasks.iter().any(|t| t["id"] == "execute" && t["result"].is_object()), "{branch}: {tasks:#?}");
        let artifacts = x["artifacts"].as_array().expect("artifacts");
        assert!(
            artifacts.iter().any(|a| a["path"] == "proposal.json" && a["bytes"].as_u64() > Some(0)),
            "{branch}: artefacts still there: {artifacts:#?}"
        );
    }
    assert_eq!(archives.lines().count(), 3, "the three unpromoted candidates are archived: {archives}");
    // The promotion is still explained after gc.
    let x = t.ratchet_json(&["explain", &promoted_commit]);
    assert_eq!(x["evaluation"]["verdict"], "PROMOTE");
    // A second gc has nothing left to do.
    let again = t.ratchet_json(&["gc"]);
    assert_eq!(again["removed_checkouts"], serde_json::json!([]), "{again:#}");
    assert_eq!(again["deleted_branches"], serde_json::json!([]), "{again:#}");
}

#[test]
fn the_wall_budget_is_counted_once_and_each_branch_log_starts_with_its_proposal() {
    // Each cycle sleeps at least 5 rounds x 2 sides x 100 ms in the benchmark: over a 1 s budget.
    let t = Target::new(Spec {
        delay_ms: 100,
        candidates: 2,
        max_wall_s: 1,
        proposer: Proposer::sweep("label", &["\"baseline\"", "\"a\"", "\"b\"", "\"c\"", "\"d\""]),
        ..Spec::default()
    });
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    assert_eq!(run.stop_reason(), "budget-wall", "{s:#}");
    assert_eq!(s["cycles"], 1, "{s:#}");
    // The time spent is the cycles' time, counted once (not also the time since the start).
    let state = t.loop_state();
    let cycles: u64 =
        state["finished"].as_array().expect("finished").iter().map(|c| c["wall_ms"].as_u64().expect("wall_ms")).sum();
    assert_eq!(state["wall_ms"].as_u64(), Some(cycles), "{state:#}");
    let detail = s["stop_detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(&format!("spent {cycles} ms in 1 cycles")), "{detail}");
    assert!(cycles >= 1000, "{detail}");

    // Every proposed branch's own log holds its proposal, right after the branch was made.
    let candidates = state["finished"][0]["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 2, "{state:#}");
    for c in candidates {
        let branch = c["branch"].as_str().expect("branch");
        let log = t.branch_events(branch);
        let types: Vec<&str> = log.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
        assert_eq!(types[..2], ["worktree_added", "proposed"], "{branch}: {log:#?}");
        assert_eq!(log[1]["candidate"], c["proposal"]["id"], "{branch}: {log:#?}");
        assert_eq!(types.iter().filter(|t| **t == "proposed").count(), 1, "{branch}: {log:#?}");
    }
    let coordinator_log =
        std::fs::read_to_string(t.path().join("worktrees/.swarm/logs/coordinator.log")).expect("the coordinator's log");
    assert!(!coordinator_log.contains("opening event log"), "{coordinator_log}");
}
