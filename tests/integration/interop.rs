//! Interop: the official Python `a2a-sdk` clients (0.3.26, and the current 1.x through its 0.3
//! compatibility transport) discover every real agent and complete one message/send and one
//! message/stream against each. `tests/run` builds the virtualenvs and sets
//! `RATCHET_A2A_PY03` / `RATCHET_A2A_PY1` to their pythons; without them the test says so and
//! returns (a developer running plain `cargo test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use ratchet_tests::{TestHome, hermetic, spawn_agent};
use serde_json::Value;

const AGENTS: [&str; 5] = ["proposer", "executor", "critic", "evaluator", "coordinator"];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop").join("client.py")
}

/// The python of the virtualenv named by `var`, or None (with a note) when it is unset.
fn venv_python(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.exists(), "{var}={} does not exist; run tests/run to build the virtualenvs", p.display());
            Some(p)
        }
        None => {
            eprintln!("interop: skipped: {var} is unset; run tests/run (it installs a2a-sdk and sets it)");
            None
        }
    }
}

/// Run the SDK client against every URL; returns one parsed JSON line per agent.
fn run_client(python: &Path, home: &Path, urls: &[String]) -> Vec<Value> {
    let mut cmd = Command::new(python);
    hermetic(&mut cmd, home);
    let out = cmd
        .arg(script())
        .args(["--token", ratchet_tests::TEST_TOKEN])
        .args(urls)
        .output()
        .expect("running the interop client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{stdout}\n{stderr}",
        python.display(),
        script().display(),
        out.status
    );
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"))).collect()
}

fn check(sdk_var: &str, want_api: &str, want_transport: &str) {
    let Some(python) = venv_python(sdk_var) else { return };
    let home = TestHome::new();
    let agents: Vec<_> = AGENTS.iter().map(|name| spawn_agent(name, home.path(), &[])).collect();
    let urls: Vec<String> = agents.iter().map(|a| a.url.clone()).collect();
    let lines = run_client(&python, home.path(), &urls);
    assert_eq!(lines.len(), AGENTS.len(), "one line per agent: {lines:?}");
    for ((name, url), line) in AGENTS.iter().zip(&urls).zip(&lines) {
        assert_eq!(line["api"], want_api, "{sdk_var} runs the wrong a2a-sdk generation: {line}");
        assert_eq!(line["url"], url.as_str(), "{line}");
        assert!(line["error"].is_null(), "{name}: {line}");
        assert_eq!(line["name"], *name, "{name}: the SDK discovered the card: {line}");
        assert_eq!(line["transport"], want_transport, "{name}: {line}");
        assert_eq!(line["send_state"], "completed", "{name}: message/send: {line}");
        assert_eq!(line["stream_state"], "completed", "{name}: message/stream: {line}");
        let events = line["stream_events"].as_u64().unwrap_or(0);
        assert!(events >= 2, "{name}: the stream carries the task then its final status: {line}");
    }
}

#[test]
fn python_a2a_sdk_0_3_discovers_and_talks_to_every_agent() {
    check("RATCHET_A2A_PY03", "0.3", "JsonRpcTransport");
}

#[test]
fn python_a2a_sdk_1_falls_back_to_0_3_for_every_agent() {
    // The 1.x client must pick its 0.3 compatibility transport from our cards' protocolVersion.
    check("RATCHET_A2A_PY1", "1", "CompatJsonRpcTransport");
}

/// A third-party A2A agent (the official Python SDK's echo agent, listed by URL in agents.toml
/// with a custom role) is a swarm member: it reviews each candidate's diff over plain A2A and its
/// answer is recorded as evidence.
#[test]
fn a_third_party_agent_is_a_swarm_member() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    use ratchet_tests::fixture::{Proposer, Spec, Target, builtin_agents_toml, of_type};
    let Some(python) = venv_python("RATCHET_A2A_PY03") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&python);
    hermetic(&mut cmd, scratch.path());
    // The third-party agent has its own token; agents.toml names it by reference (token_env),
    // and the coordinator sends it (never the swarm's own token).
    let echo_token = "echo-agent-own-token";
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("interop").join("echo_agent.py"))
        .args(["--token-env", "ECHO_TOKEN"])
        .env("ECHO_TOKEN", echo_token)
        .stdout(std::process::Stdio::piped());
    let mut echo = ratchet_tests::ProcGuard::spawn(cmd);
    let mut lines = BufReader::new(echo.child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let line = lines.next().expect("the echo agent printed its URL").unwrap();
        if let Some(u) = line.strip_prefix("A2A_LISTENING ") {
            break u.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the echo agent did not start");
    };
    let (auth_tx, auth_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.starts_with("A2A_AUTH") && auth_tx.send(line).is_err() {
                break;
            }
        }
    });
    let agents = format!(
        "{}\n[[agent]]\nname = \"echo-reviewer\"\nrole = \"security\"\nurl = \"{url}\"\nrequired = false\ntoken_env = \"ECHO_TOKEN\"\n",
        builtin_agents_toml()
    );
    let t = Target::new(Spec {
        delay_ms: 300,
        candidates: 1,
        proposer: Proposer::Sweep(vec![("delay_ms".into(), vec!["300".into(), "100".into()])]),
        agents_toml: Some(agents),
        ..Spec::default()
    });
    let mut up = t.command(&ratchet_tests::bin("ratchet"));
    up.args(["up", "--once", "--json", "--max-cycles", "1", "--repo"]).arg(t.path()).env("ECHO_TOKEN", echo_token);
    let run = ratchet_tests::fixture::UpRun::spawn_cmd(up, t.path()).finish(Duration::from_secs(180));
    assert!(run.status.success(), "ratchet up --once: {}\n{}", run.stderr, t.agent_logs());
    let mut auth: Vec<String> = auth_rx.recv_timeout(Duration::from_secs(10)).into_iter().collect();
    auth.extend(auth_rx.try_iter());
    assert!(!auth.is_empty() && auth.iter().all(|l| l == "A2A_AUTH ok"), "the member's own token arrived: {auth:?}");
    let events = t.events();
    let reviews = of_type(&events, "advisory_review");
    assert_eq!(reviews.len(), 1, "one review by the third-party agent: {reviews:#?}");
    let r = &reviews[0];
    assert_eq!(r["reviewer"], "echo-reviewer");
    assert_eq!(r["agent"], "echo-reviewer");
    assert_eq!(r["state"], "completed", "{r}");
    assert_eq!(r["blocks"], false);
    assert!(r["text"].as_str().unwrap_or_default().contains("delay_ms"), "the reviewer saw the diff: {r}");
    assert_eq!(run.list("promoted").len(), 1, "an advisory review does not block: {:#}", run.summary);
}
