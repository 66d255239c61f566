//! Interop: the official Python `a2a-sdk` clients (0.3.26 over A2A 0.3, and the current 1.x over
//! A2A 1.0, each picking its protocol from the same card) discover every real agent, hold a
//! two-turn conversation on one task and stream a message against each. `tests/run` builds the virtualenvs and sets
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
        assert_eq!(line["asked_state"], "input-required", "{name}: a message naming no skill is asked which: {line}");
        assert_eq!(line["send_state"], "completed", "{name}: the follow-up saying `status`: {line}");
        assert_eq!(line["same_task"], true, "{name}: the follow-up continued the task: {line}");
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
fn python_a2a_sdk_1_speaks_1_0_to_every_agent() {
    // The 1.x client picks the 1.0 JSON-RPC interface our cards list first.
    check("RATCHET_A2A_PY1", "1", "JsonRpcTransport");
}

/// A running Python echo agent (tests/interop/echo_agent.py on a2a-sdk 0.3, or
/// echo_agent_v1.py on a2a-sdk 1.x, A2A 1.0 only), its URL, and the auth verdicts it prints.
struct Echo {
    _proc: ratchet_tests::ProcGuard,
    url: String,
    auth: std::sync::mpsc::Receiver<String>,
}

fn start_echo(python: &Path, script: &str, scratch: &Path, token: Option<&str>) -> Echo {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let mut cmd = Command::new(python);
    hermetic(&mut cmd, scratch);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("interop").join(script)).stdout(std::process::Stdio::piped());
    if let Some(t) = token {
        cmd.args(["--token-env", "ECHO_TOKEN"]).env("ECHO_TOKEN", t);
    }
    let mut proc = ratchet_tests::ProcGuard::spawn(cmd);
    let mut lines = BufReader::new(proc.child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let line = lines.next().expect("the echo agent printed its URL").unwrap();
        if let Some(u) = line.strip_prefix("A2A_LISTENING ") {
            break u.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the echo agent did not start");
    };
    let (auth_tx, auth) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.starts_with("A2A_AUTH") && auth_tx.send(line).is_err() {
                break;
            }
        }
    });
    Echo { _proc: proc, url, auth }
}

/// A third-party A2A agent (an official Python SDK echo agent, listed by URL in agents.toml with a
/// custom role) is a swarm member: it reviews each candidate's diff over plain A2A, in the
/// protocol version its card declares, and its answer is recorded as evidence.
fn third_party_member(sdk_var: &str, script: &str) {
    use std::time::Duration;

    use ratchet_tests::fixture::{Proposer, Spec, Target, builtin_agents_toml, of_type};
    let Some(python) = venv_python(sdk_var) else { return };
    let scratch = tempfile::tempdir().unwrap();
    // The third-party agent has its own token; agents.toml names it by reference (token_env),
    // and the coordinator sends it (never the swarm's own token).
    let echo_token = "echo-agent-own-token";
    let echo = start_echo(&python, script, scratch.path(), Some(echo_token));
    let url = echo.url.clone();
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
    let mut auth: Vec<String> = echo.auth.recv_timeout(Duration::from_secs(10)).into_iter().collect();
    auth.extend(echo.auth.try_iter());
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

#[test]
fn a_third_party_0_3_agent_is_a_swarm_member() {
    third_party_member("RATCHET_A2A_PY03", "echo_agent.py");
}

/// An agent on a2a-sdk 1.x that speaks only A2A 1.0 (its card declares no 0.3 interface, and it
/// refuses 0.3 requests) reviews candidates in a real loop like any member.
#[test]
fn a_third_party_1_0_only_agent_is_a_swarm_member() {
    third_party_member("RATCHET_A2A_PY1", "echo_agent_v1.py");
}

/// Ratchet's client against the official Python servers (sse-starlette, `\r\n` line ends): it
/// reads each card, picks the version the card declares, sends, and streams every event.
#[test]
fn our_client_streams_from_python_agents_of_both_versions() {
    use futures_util::StreamExt;
    use kit::client::A2aClient;
    use protocol::a2a_v1::Version;
    use protocol::{Message, Part, Role, StreamEvent, TaskState};
    for (var, script, want) in
        [("RATCHET_A2A_PY03", "echo_agent.py", Version::V0_3), ("RATCHET_A2A_PY1", "echo_agent_v1.py", Version::V1_0)]
    {
        let Some(python) = venv_python(var) else { return };
        let scratch = tempfile::tempdir().unwrap();
        let echo = start_echo(&python, script, scratch.path(), None);
        ratchet_tests::rt().block_on(async {
            let base = A2aClient::new(&echo.url);
            let card = base.card().await.unwrap_or_else(|e| panic!("{script}: {e}"));
            let client = base.for_card(&card).unwrap();
            assert_eq!(client.version(), want, "{script}: the version its card declares");
            let t = client.send(Message::new(Role::User, "m1", vec![Part::text("ping pong")]), true).await.unwrap();
            assert_eq!(t.status.state, TaskState::Completed, "{script}: {t:?}");
            assert!(t.status.message.map(|m| m.text()).unwrap_or_default().contains("ping pong"), "{script}");
            let got = client.get_task(&t.id).await.unwrap();
            assert_eq!(got.id, t.id);
            let events: Vec<StreamEvent> = client
                .send_streaming(Message::new(Role::User, "m2", vec![Part::text("stream me")]))
                .await
                .unwrap()
                .map(|r| r.unwrap_or_else(|e| panic!("{script}: {e}")).1)
                .collect()
                .await;
            assert!(events.len() >= 2, "{script}: every event arrives: {events:?}");
            assert!(
                matches!(events.last(), Some(StreamEvent::Status(s)) if s.status.state == TaskState::Completed),
                "{script}: the stream ends completed: {events:?}"
            );
            if want == Version::V1_0 {
                assert!(events.iter().any(|e| matches!(e, StreamEvent::Artifact(_))), "{script}: {events:?}");
            }
        });
    }
}
