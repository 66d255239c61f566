//! Models in the loop, for real: the local model route (a real server process serving
//! SmolLM2-135M-Instruct through llama.cpp) as the proposer and as the reviewer of the real swarm
//! (`ratchet up --once --json`) on the fixture's targets. The checks are about shapes and
//! plumbing, never the model's wisdom: a 135M model rarely writes a useful diff.

use std::time::Duration;

use ratchet_tests::fixture::{Proposer, Spec, Target, of_type};
use ratchet_tests::model::{KEY_ENV, MODEL_ID, ModelServer};
use serde_json::Value;

const RUN: Duration = Duration::from_secs(300);

/// A proposer with no model that makes a real improvement: delay_ms 300 -> 100.
fn faster() -> Proposer {
    Proposer::sweep("delay_ms", &["100"])
}

fn key_env(server: &ModelServer) -> Vec<(String, String)> {
    vec![(KEY_ENV.to_string(), server.key.clone())]
}

fn id_of(server: &ModelServer, name: &str) -> String {
    format!("{name}: {} @ {}", server.model, server.url)
}

/// The `model_called` events, in order.
fn calls(events: &[Value]) -> Vec<&Value> {
    of_type(events, "model_called")
}

fn usage(e: &Value, key: &str) -> u64 {
    e["usage"][key].as_u64().unwrap_or_else(|| panic!("no usage.{key} in {e:#}"))
}

#[test]
fn a_real_model_proposes_and_its_malformed_answers_trip_the_circuit_breaker() {
    let server = ModelServer::start(MODEL_ID);
    let t = Target::new(Spec {
        proposer: Proposer::Model("local".into()),
        // Asked for a unified diff (no schema), 48 tokens cannot hold a summary and a whole diff:
        // every answer is malformed.
        models: vec![("local".into(), server.declaration("max_tokens = 48\nstructured = false"))],
        breaker_limit: 2,
        stall_limit: 5,
        max_cycles: 4,
        env: key_env(&server),
        ..Spec::default()
    });
    let old_main = t.main();
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    assert_eq!(run.stop_reason(), "circuit-breaker", "{s:#}\n{}", run.stderr);

    let events = t.events();
    let calls = calls(&events);
    assert_eq!(calls.len(), 2, "one model call per cycle, two cycles: {calls:#?}");
    for c in &calls {
        // A real answer of the real server: its completion id, tokens counted by the runtime,
        // text, and the model that gave it.
        assert_eq!(c["stage"], "propose", "{c:#}");
        assert_eq!(c["model"], id_of(&server, "local"), "{c:#}");
        assert_eq!(c["outcome"], "malformed", "{c:#}");
        assert!(c["response_id"].as_str().is_some_and(|i| i.starts_with("chatcmpl-")), "{c:#}");
        assert!(usage(c, "prompt_tokens") > 0 && usage(c, "completion_tokens") > 0, "{c:#}");
        assert!(usage(c, "completion_tokens") <= 48, "max_tokens from the declaration: {c:#}");
        assert!(c["answer"].as_str().is_some_and(|a| !a.trim().is_empty()), "{c:#}");
        assert!(c["detail"].as_str().is_some_and(|d| d.contains("diff")), "{c:#}");
    }
    // The same prompt twice: the second call reuses the first one's prefix from the server's cache.
    assert_eq!(usage(calls[0], "cached_prompt_tokens"), 0, "{:#}", calls[0]);
    assert!(usage(calls[1], "cached_prompt_tokens") > 0, "{:#}", calls[1]);

    // Each malformed answer is a proposal failure counted by the breaker, with its cost.
    let failures = of_type(&events, "proposal_failed");
    assert_eq!(failures.len(), 2, "{failures:#?}");
    for f in &failures {
        assert!(f["usage"]["calls"] == 1 && usage(f, "completion_tokens") > 0, "{f:#}");
    }
    // Nothing malformed reached a worktree: no candidate, no branch, main untouched.
    assert!(of_type(&events, "proposed").is_empty() && of_type(&events, "worktree_added").is_empty(), "{events:#?}");
    assert_eq!(t.git(&["branch", "--format=%(refname:short)"]), "main");
    assert_eq!(t.main(), old_main);

    // The summary: the proposer named, tokens and time per stage, the prefix-cache share.
    assert_eq!(s["models"]["proposer"], id_of(&server, "local"), "{s:#}");
    let propose = &s["stages"]["propose"];
    assert_eq!(propose["usage"]["calls"], 2, "{s:#}");
    let total = usage(calls[0], "prompt_tokens") + usage(calls[1], "prompt_tokens");
    assert_eq!(propose["usage"]["prompt_tokens"].as_u64(), Some(total), "{s:#}");
    assert!(propose["wall_ms"].as_u64().is_some_and(|ms| ms > 0), "{s:#}");
    assert_eq!(propose["token_share"], 1.0, "{s:#}");
    assert!(s["prefix_cache_share"].as_f64().is_some_and(|x| x > 0.0 && x < 1.0), "{s:#}");
    assert_eq!(s["tokens"]["calls"], 2, "{s:#}");
    // The models' answers are not the harness: nearly all this run's time was the model's.
    assert!(s["harness_share"].as_f64().is_some_and(|h| h < 0.9), "{s:#}");
}

const RUBRIC: &str =
    "rubric = [\"the change keeps params.toml valid TOML\", \"tests are not weakened\"]\nmax_findings = 2";

#[test]
fn a_model_reviews_a_real_diff_and_every_piece_of_evidence_names_it() {
    let server = ModelServer::start(MODEL_ID);
    let t = Target::new(Spec {
        // Two candidates of one cycle: 100 ms is promoted, 600 ms rejected (a preference pair).
        proposer: Proposer::sweep("delay_ms", &["100", "600"]),
        candidates: 2,
        models: vec![("reviewer".into(), server.declaration("max_tokens = 200"))],
        model_review: "advisory".into(),
        review: Some(format!("model = \"reviewer\"\n{RUBRIC}")),
        env: key_env(&server),
        ..Spec::default()
    });
    let run = t.up_once(&["--max-cycles", "1"], RUN);
    let s = &run.summary;
    let reviewer = id_of(&server, "reviewer");
    // Advisory: whatever the model said, the candidate went on to the evaluator and was promoted.
    let promoted = run.list("promoted");
    assert_eq!(promoted.len(), 1, "{s:#}\n{}", run.stderr);
    let p = &promoted[0];
    assert_eq!(p["models"]["reviewer"], reviewer.as_str(), "{p:#}");
    let (branch, commit) = (p["branch"].as_str().expect("branch"), p["commit"].as_str().expect("commit"));

    // The review: real calls to the real server, and a finding set of the fixed shape.
    let events = t.events();
    let review_calls: Vec<&Value> =
        calls(&events).into_iter().filter(|c| c["stage"] == "review" && c["branch"] == branch).collect();
    assert!(!review_calls.is_empty(), "{events:#?}");
    let last = review_calls.last().expect("a call");
    assert_eq!(last["outcome"], "ok", "{last:#}");
    assert_eq!(last["model"], reviewer.as_str(), "{last:#}");
    assert_eq!(last["branch"], branch, "{last:#}");
    assert!(usage(last, "prompt_tokens") > 0 && usage(last, "completion_tokens") > 0, "{last:#}");
    let st = t.loop_state();
    let cand = st["finished"][0]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| c["branch"] == branch)
        .expect("the promoted candidate");
    let verdict = &cand["critique"]["model_verdict"];
    assert!(verdict["verdict"] == "pass" || verdict["verdict"] == "block", "{verdict:#}");
    let findings = verdict["findings"].as_array().expect("findings");
    assert!(findings.len() <= 2, "{verdict:#}");
    for f in findings {
        assert!(f["severity"] == "block" || f["severity"] == "warn", "{f:#}");
        assert_eq!(f["file"], "params.toml", "only a file the diff changes: {f:#}");
        let m = f["message"].as_str().expect("message");
        assert!(!m.trim().is_empty() && m.chars().count() <= 160, "{f:#}");
    }
    // In the critic's findings they are advisory: warnings, never blocking.
    let critiqued: Vec<&Value> = of_type(&events, "critiqued").into_iter().filter(|e| e["branch"] == branch).collect();
    assert_eq!(critiqued.len(), 1, "{critiqued:#?}");
    assert_eq!(critiqued[0]["pass"], true, "{:#}", critiqued[0]);
    let model_findings: Vec<&Value> =
        critiqued[0]["findings"].as_array().expect("findings").iter().filter(|f| f["rail"] == "model-review").collect();
    assert_eq!(model_findings.len(), findings.len(), "{:#}", critiqued[0]);
    assert!(model_findings.iter().all(|f| f["severity"] == "warn"), "{model_findings:#?}");
    assert_eq!(critiqued[0]["models"]["reviewer"], reviewer.as_str(), "{:#}", critiqued[0]);
    assert_eq!(critiqued[0]["usage"]["calls"].as_u64(), Some(review_calls.len() as u64), "{:#}", critiqued[0]);

    // The commit trailer, the promotion event, the summary and `ratchet explain` name the reviewer.
    let message = t.git(&["log", "-1", "--format=%B", commit]);
    assert!(message.contains(&format!("Ratchet-Reviewer-Model: {reviewer}")), "{message}");
    assert!(!message.contains("Ratchet-Producer-Model"), "a script produced it, no model: {message}");
    let promo = of_type(&events, "promoted");
    assert_eq!(promo[0]["models"]["reviewer"], reviewer.as_str(), "{:#}", promo[0]);
    assert_eq!(s["models"]["reviewer"], reviewer.as_str(), "{s:#}");
    let critique = &s["stages"]["critique"];
    let all_reviews = calls(&events).into_iter().filter(|c| c["stage"] == "review").count() as u64;
    assert!(all_reviews > review_calls.len() as u64, "both candidates were reviewed: {events:#?}");
    assert_eq!(critique["usage"]["calls"].as_u64(), Some(all_reviews), "{s:#}");
    assert!(critique["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0), "{s:#}");
    for stage in ["execute", "critique", "evaluate"] {
        assert!(s["stages"][stage]["wall_ms"].as_u64().is_some_and(|ms| ms > 0), "{stage}: {s:#}");
    }
    let x = t.ratchet_json(&["explain", commit]);
    assert_eq!(x["models"]["reviewer"], reviewer.as_str(), "{:#}", x["models"]);
    assert_eq!(x["tokens"]["critique"]["calls"].as_u64(), Some(review_calls.len() as u64), "{:#}", x["tokens"]);
    let out = t.ratchet(&["explain", commit]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("reviewed by {reviewer}")), "{text}");

    // Preference pairs carry the models and the governance hashes; the trace has the model calls.
    let out = t.ratchet(&["export", "pairs"]);
    let pairs: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(pairs.len(), 1, "{pairs:#?}\n{s:#}");
    assert_eq!(pairs[0]["chosen"]["models"]["reviewer"], reviewer.as_str(), "{:#}", pairs[0]);
    assert_eq!(pairs[0]["rejected"]["models"]["reviewer"], reviewer.as_str(), "{:#}", pairs[0]);
    assert_eq!(pairs[0]["governance"], x["governance"], "{:#}", pairs[0]);
    assert_eq!(pairs[0]["governance"].as_object().map(|m| m.len()), Some(3), "{:#}", pairs[0]);
    let out = t.ratchet(&["export", "trace"]);
    let trace: Value = serde_json::from_slice(&out.stdout).expect("a JSON trace");
    let spans: Vec<&Value> =
        trace["traceEvents"].as_array().expect("events").iter().filter(|e| e["cat"] == "model").collect();
    assert_eq!(spans.len() as u64, all_reviews, "{spans:#?}");
    assert!(spans.iter().all(|e| e["args"]["completion_tokens"].as_u64().is_some_and(|n| n > 0)), "{spans:#?}");
}

#[test]
fn an_unparseable_review_is_an_infrastructure_failure_never_a_pass() {
    let server = ModelServer::start(MODEL_ID);
    let t = Target::new(Spec {
        proposer: faster(),
        // No schema constraint and a short answer: the model's prose is not the review's JSON.
        models: vec![("reviewer".into(), server.declaration("max_tokens = 24\nstructured = false"))],
        model_review: "blocking".into(),
        review: Some(format!("model = \"reviewer\"\n{RUBRIC}")),
        max_attempts: 1,
        env: key_env(&server),
        ..Spec::default()
    });
    let old_main = t.main();
    let run = t.up_once(&["--max-cycles", "1"], RUN);
    let s = &run.summary;
    assert!(run.list("promoted").is_empty(), "{s:#}");
    assert_eq!(t.main(), old_main, "never a pass: nothing promoted");
    let held = run.list("held");
    assert_eq!(held.len(), 1, "{s:#}");
    assert_eq!(held[0]["verdict"], "INFRA", "an infrastructure failure, not held against the candidate: {s:#}");
    assert!(held[0]["reasons"].to_string().contains("model review"), "{s:#}");
    let events = t.events();
    let review_calls: Vec<&Value> = calls(&events).into_iter().filter(|c| c["stage"] == "review").collect();
    assert_eq!(review_calls.len(), 2, "asked twice before giving up: {review_calls:#?}");
    for c in review_calls {
        assert_eq!(c["outcome"], "malformed", "{c:#}");
        assert!(usage(c, "completion_tokens") > 0, "a real answer: {c:#}");
        assert!(c["detail"].as_str().is_some_and(|d| d.contains("JSON shape") || d.contains("findings")), "{c:#}");
    }
    // The evaluator never ran: a review that did not succeed never lets a candidate through.
    assert!(of_type(&events, "evaluated").is_empty(), "{events:#?}");
}

#[test]
fn the_coordinator_refuses_a_reviewer_that_is_the_producer() {
    // Two names, one endpoint and model (spelled differently): the guard looks through names.
    let decl = |url: &str, model: &str| format!("url = {url:?}\nmodel = {model:?}\n");
    let spec = |reviewer_model: &str| Spec {
        proposer: Proposer::Model("writer".into()),
        models: vec![
            ("writer".into(), decl("http://127.0.0.1:9/v1", "m")),
            ("judge".into(), decl("HTTP://127.0.0.1:9/v1/", reviewer_model)),
        ],
        model_review: "blocking".into(),
        review: Some(format!("model = \"judge\"\n{RUBRIC}")),
        breaker_limit: 1,
        ..Spec::default()
    };
    let t = Target::new(spec("m"));
    let mut up = t.spawn_up(&[]);
    let run = up.finish(Duration::from_secs(60));
    assert!(!run.status.success(), "the swarm ran with a reviewer that is its producer: {:#}", run.summary);
    for needle in [
        "cadence.md [proposer] model = \"writer\"",
        "ethos.md [ethos.review] model = \"judge\"",
        "same endpoint and model",
        "constitution.md [constitution.models.writer]",
        "fix:",
    ] {
        assert!(run.stderr.contains(needle), "the refusal lacks {needle:?}:\n{}", run.stderr);
    }
    assert!(of_type(&t.events(), "cycle_started").is_empty(), "no cycle may start");

    // Another model on the same server is a different reviewer: the loop runs (and its proposer,
    // whose server is not there, trips the breaker).
    // `--no-check`: `ratchet check` would stop the run on the unanswered endpoint first.
    let t = Target::new(spec("m2"));
    let run = t.up_once(&["--no-check"], RUN);
    assert_eq!(run.stop_reason(), "circuit-breaker", "{:#}", run.summary);
    let events = t.events();
    let failed = of_type(&events, "model_called");
    assert_eq!(failed[0]["outcome"], "error", "{:#}", failed[0]);
}

#[test]
fn a_compare_run_between_two_endpoints_records_a_decision_and_promotes_nothing() {
    let server = ModelServer::start(MODEL_ID);
    // The same model at two temperatures, each asked for a schema-constrained edit.
    let t = Target::new(Spec {
        proposer: Proposer::Model("cold".into()),
        models: vec![
            ("cold".into(), server.declaration("max_tokens = 160")),
            ("warm".into(), server.declaration("max_tokens = 160\ntemperature = 1.0")),
        ],
        env: key_env(&server),
        ..Spec::default()
    });
    let old_main = t.main();
    let mut cmd = t.command(&ratchet_tests::bin("ratchet"));
    cmd.args(["up", "--no-loop", "--repo"]).arg(t.path());
    let mut swarm = ratchet_tests::Swarm::start(cmd);
    swarm.wait_for("swarm up", Duration::from_secs(60));

    // Only declared models can be compared.
    let out = t.ratchet(&["models", "compare", "cold", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"nosuch\" is not declared") && err.contains("fix:"), "{err}");

    let r = t.ratchet_json(&["models", "compare", "cold", "warm", "--tasks", "2"]);
    let decision = r["decision"].as_str().expect("a decision");
    assert!(["PROMOTE", "HOLD", "REJECT"].contains(&decision), "{r:#}");
    assert_eq!(r["current"]["model"], id_of(&server, "cold"), "{r:#}");
    assert_eq!(r["candidate"]["model"], id_of(&server, "warm"), "{r:#}");
    assert_eq!(r["stats"]["tasks"], 2, "{r:#}");
    for side in ["current", "candidate"] {
        let outcomes = r[side]["outcomes"].as_array().expect("outcomes");
        assert_eq!(outcomes.len(), 2, "{r:#}");
        assert!(r[side]["usage"]["calls"].as_u64().is_some_and(|n| n >= 2), "every task asked each model: {r:#}");
        assert!(r[side]["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0), "{r:#}");
    }
    assert!(r["reasons"].as_array().is_some_and(|v| v.len() >= 3), "{r:#}");

    // Recorded as an event with its evidence; nothing promoted, every compare branch rejected.
    let events = t.events();
    let compared = of_type(&events, "model_compared");
    assert_eq!(compared.len(), 1, "{compared:#?}");
    assert_eq!(compared[0]["decision"], decision);
    assert_eq!(compared[0]["evidence"]["stats"], r["stats"]);
    assert!(of_type(&events, "promoted").is_empty(), "{events:#?}");
    assert_eq!(t.main(), old_main);
    let asked: Vec<&Value> = calls(&events).into_iter().filter(|c| c["stage"] == "propose").collect();
    assert!(asked.iter().any(|c| c["model"] == id_of(&server, "warm").as_str()), "{asked:#?}");
    for b in of_type(&events, "proposed").iter().filter_map(|e| e["branch"].as_str()) {
        let meta = std::fs::read_to_string(t.path().join(format!("worktrees/{b}/meta.json"))).expect("meta.json");
        assert!(meta.contains("\"rejected\"") && meta.contains("never promoted"), "{b}: {meta}");
    }
    // The improvement loop's own state is untouched by a compare.
    assert!(!t.path().join("worktrees/.swarm/loop.json").exists(), "a compare writes no loop.json");
}

#[test]
fn ratchet_demo_model_runs_the_loop_with_the_real_model_as_proposer_and_reviewer() {
    let _turn = ratchet_tests::model::model_turn();
    let home = ratchet_tests::TestHome::new();
    let mut cmd = ratchet_tests::ratchet_cmd(home.path(), &["demo", "--model", "--json", "--repo"]);
    cmd.arg(home.path()).env("RATCHET_MODEL_DIR", ratchet_tests::model::model_dir());
    let mut up = ratchet_tests::fixture::UpRun::spawn_cmd(cmd, home.path());
    let run = up.finish(Duration::from_secs(600));
    assert!(run.status.success(), "ratchet demo --model failed:\n{}", run.stderr);
    let s = &run.summary;
    // Both models named, on two servers of the local route it started itself.
    let (p, r) =
        (s["models"]["proposer"].as_str().expect("proposer"), s["models"]["reviewer"].as_str().expect("reviewer"));
    assert!(p.starts_with(&format!("writer: {MODEL_ID} @ http://127.0.0.1:")), "{s:#}");
    assert!(r.starts_with(&format!("reviewer: {MODEL_ID} @ http://127.0.0.1:")), "{s:#}");
    assert_ne!(p.split('@').nth(1), r.split('@').nth(1), "two endpoints: {s:#}");
    // Tokens and time per stage; the proposer asked several times, reusing the governance prefix.
    let propose = &s["stages"]["propose"];
    assert!(propose["usage"]["calls"].as_u64().is_some_and(|n| n >= 2), "{s:#}");
    assert!(propose["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0), "{s:#}");
    assert!(propose["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0), "{s:#}");
    assert!(propose["wall_ms"].as_u64().is_some_and(|ms| ms > 0), "{s:#}");
    for stage in ["propose", "execute", "critique", "evaluate"] {
        assert!(s["stages"][stage]["time_share"].is_number() && s["stages"][stage]["token_share"].is_number(), "{s:#}");
    }
    assert!(s["prefix_cache_share"].as_f64().is_some_and(|x| x > 0.0), "{s:#}");
    assert!(s["tokens"]["calls"].as_u64() >= propose["usage"]["calls"].as_u64(), "{s:#}");
    // Whatever the model proposed, every candidate its rails let through was reviewed by the model.
    let repo = std::path::PathBuf::from(s["repo"].as_str().expect("the demo target"));
    let events = ratchet_tests::fixture::read_jsonl(&repo.join("worktrees/.swarm/events.jsonl"));
    for c in of_type(&events, "critiqued") {
        let clean = c["findings"].as_array().is_some_and(|f| f.iter().all(|f| f["rail"] == "model-review"));
        if clean {
            let reviewed =
                calls(&events).iter().any(|m| m["stage"] == "review" && m["branch"] == c["branch"] && m["model"] == r);
            assert!(reviewed, "{c:#}");
        }
    }
}

#[test]
fn a_token_budget_in_cadence_stops_the_loop() {
    let server = ModelServer::start(MODEL_ID);
    let t = Target::new(Spec {
        proposer: Proposer::Model("local".into()),
        models: vec![("local".into(), server.declaration("max_tokens = 32\nstructured = false"))],
        // One answer costs a few hundred tokens: the budget is spent after the first cycle.
        max_tokens: 100,
        breaker_limit: 5,
        stall_limit: 5,
        max_cycles: 5,
        env: key_env(&server),
        ..Spec::default()
    });
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    assert_eq!(run.stop_reason(), "budget-tokens", "{s:#}");
    assert_eq!(s["cycles"], 1, "{s:#}");
    let detail = s["stop_detail"].as_str().expect("detail");
    let used = s["tokens"]["prompt_tokens"].as_u64().unwrap() + s["tokens"]["completion_tokens"].as_u64().unwrap();
    assert!(detail.contains(&format!("used {used} model tokens")) && detail.contains("max_tokens"), "{detail}");
    let stopped = of_type(&t.events(), "loop_stopped").into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(stopped[0]["usage"]["calls"], 1, "the stop carries the run's usage: {:#}", stopped[0]);
}
