//! The A2A 0.3 wire, against the real agent binaries over real loopback HTTP (the 1.0 wire and
//! the HTTP+JSON binding are in `wire_v1.rs`).

use std::time::Duration;

use futures_util::StreamExt;
use kit::client::{A2aClient, skill_message};
use protocol::{Message, Part, Role, StreamEvent, TaskState};
use ratchet_tests::{TEST_TOKEN, TestHome, rt, spawn_agent};
use serde_json::{Value, json};

/// POST with the test token (see `ratchet_tests::spawn_agent`).
fn post_raw(url: &str, ctype: &str, body: Vec<u8>) -> (u16, Value) {
    post_with_token(url, ctype, body, Some(TEST_TOKEN))
}

fn post_with_token(url: &str, ctype: &str, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
    rt().block_on(async {
        let mut req = reqwest::Client::new().post(url).header("content-type", ctype).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("POST reaches the agent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    })
}

fn rpc(url: &str, body: Value) -> Value {
    let (status, v) = post_raw(url, "application/json", serde_json::to_vec(&body).unwrap());
    assert_eq!(status, 200, "{v}");
    v
}

fn err_code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected an error, got {v}"))
}

fn text_message(text: &str) -> Value {
    json!({"role": "user", "parts": [{"kind": "text", "text": text}], "messageId": "m-1", "kind": "message"})
}

/// A message that names the built-in `status` skill (a message naming none gets asked which).
fn status_message() -> Value {
    text_message("status")
}

#[test]
fn card_is_served_on_both_paths_with_cache_headers() {
    let home = TestHome::new();
    for name in ["proposer", "executor", "critic", "evaluator", "coordinator"] {
        let agent = spawn_agent(name, home.path(), &[]);
        rt().block_on(async {
            let http = reqwest::Client::new();
            let a = http.get(format!("{}.well-known/agent.json", agent.url)).send().await.unwrap();
            assert_eq!(a.status(), 200);
            let etag = a.headers()["etag"].to_str().unwrap().to_string();
            assert!(a.headers()["cache-control"].to_str().unwrap().contains("max-age"));
            let a = a.bytes().await.unwrap();
            let b = http.get(format!("{}.well-known/agent-card.json", agent.url)).send().await.unwrap();
            assert_eq!(b.bytes().await.unwrap(), a, "both card paths serve the same bytes");
            let not_modified = http
                .get(format!("{}.well-known/agent.json", agent.url))
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            assert_eq!(not_modified.status(), 304);
            let card: Value = serde_json::from_slice(&a).unwrap();
            for field in [
                "protocolVersion",
                "name",
                "description",
                "url",
                "preferredTransport",
                "version",
                "capabilities",
                "defaultInputModes",
                "defaultOutputModes",
                "skills",
            ] {
                assert!(card.get(field).is_some(), "{name}: card lacks {field}");
            }
            assert_eq!(card["protocolVersion"], "0.3.0");
            assert_eq!(card["preferredTransport"], "JSONRPC");
            assert_eq!(card["url"], agent.url.as_str(), "card url is the real address");
            let typed: protocol::AgentCard = serde_json::from_value(card).unwrap();
            assert_eq!(typed.ratchet_role().as_deref(), Some(name));
        });
    }
}

#[test]
fn send_blocking_and_non_blocking_and_missing_skill() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let client = agent.client();
    rt().block_on(async {
        let done = client.send(Message::new(Role::User, "m1", vec![Part::text("status")]), true).await.unwrap();
        assert_eq!(done.status.state, TaskState::Completed);
        assert!(done.status.message.unwrap().text().contains("critic (critic) is up"));

        let early = client.send(skill_message("status", json!({})), false).await.unwrap();
        assert!(matches!(early.status.state, TaskState::Submitted | TaskState::Working | TaskState::Completed));
        let id = early.id.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let later = loop {
            let q = protocol::TaskQueryParams { id: id.clone(), history_length: None, metadata: None };
            let t = client.call::<protocol::GetTask>(&q).await.unwrap();
            if t.status.state == TaskState::Completed {
                break t;
            }
            assert!(std::time::Instant::now() < deadline, "task never completed: {t:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(later.history.len(), 2, "user message then the agent's answer");

        // A skill the agent does not have: rejected, naming the skill. Never a fake success.
        let t = client.send(skill_message("teleport", json!({})), true).await.unwrap();
        assert_eq!(t.status.state, TaskState::Rejected);
        let why = t.status.message.unwrap().text();
        assert!(why.contains("\"teleport\"") && why.contains("available"), "{why}");
    });
}

/// A message that names no skill: the task waits for input, asking which skill; follow-ups on
/// the task (its taskId) continue it until one names a skill, which then runs in the same task.
/// A terminal task takes no more messages; a wrong contextId or an unknown task is refused.
#[test]
fn a_task_asks_which_skill_and_follow_ups_continue_it() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let url = agent.url.as_str();
    let send = |msg: Value| {
        rpc(
            url,
            json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
                        "params": {"message": msg, "configuration": {"blocking": true}}}),
        )
    };
    let first = send(text_message("hello"));
    let task = &first["result"];
    assert_eq!(task["status"]["state"], "input-required", "{first}");
    let question = task["status"]["message"]["parts"][0]["text"].as_str().unwrap();
    assert!(
        question.contains("Which one?") && question.contains("status") && question.contains("critique"),
        "{question}"
    );
    let (id, ctx) = (task["id"].as_str().unwrap().to_string(), task["contextId"].as_str().unwrap().to_string());
    // A follow-up that names no skill: asked again, the task still open.
    let mut again = text_message("what can you do?");
    again["taskId"] = json!(id);
    assert_eq!(send(again)["result"]["status"]["state"], "input-required");
    // A follow-up naming an unknown skill: asked again, naming it.
    let mut unknown = text_message("x");
    unknown["taskId"] = json!(id);
    unknown["parts"] = json!([{"kind": "data", "data": {"skill": "teleport"}}]);
    let v = send(unknown);
    assert_eq!(v["result"]["status"]["state"], "input-required");
    assert!(v["result"]["status"]["message"]["parts"][0]["text"].as_str().unwrap().contains("\"teleport\""), "{v}");
    // A wrong contextId on the task: refused.
    let mut wrong = text_message("status");
    wrong["taskId"] = json!(id);
    wrong["contextId"] = json!("another-context");
    assert_eq!(err_code(&send(wrong)), -32602);
    // Naming a skill runs it in this task, with the conversation in its history.
    let mut pick = text_message("status");
    pick["taskId"] = json!(id);
    pick["contextId"] = json!(ctx);
    let done = send(pick)["result"].clone();
    assert_eq!(done["status"]["state"], "completed", "{done}");
    assert_eq!(done["id"], id.as_str());
    let history: Vec<(String, String)> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["parts"][0]["text"].as_str().unwrap_or("").to_string()))
        .collect();
    let roles: Vec<&str> = history.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "agent", "user", "agent", "user", "agent", "user", "agent"], "{history:?}");
    assert!(history[7].1.contains("is up"), "{history:?}");
    // Done: no more messages (-32004), and an unknown task is not found (-32001).
    let mut late = text_message("status");
    late["taskId"] = json!(id);
    let v = send(late);
    assert_eq!(err_code(&v), -32004);
    assert!(v["error"]["message"].as_str().unwrap().contains("completed"), "{v}");
    let mut nowhere = text_message("status");
    nowhere["taskId"] = json!("no-such-task");
    assert_eq!(err_code(&send(nowhere)), -32001);
    // Canceling a task that waits for input works (it is not terminal).
    let waiting = send(text_message("hello"))["result"]["id"].clone();
    let v = rpc(url, json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/cancel", "params": {"id": waiting}}));
    assert_eq!(v["result"]["status"]["state"], "canceled", "{v}");
}

/// The A2A face of a leased skill asks for the task to run when the message does not name one
/// (input-required), and runs it once a follow-up does.
#[test]
fn a_leased_skill_asks_for_its_task() {
    let home = TestHome::new();
    queue_execute(&home, "true");
    let agent = spawn_agent("executor", home.path(), &[("RATCHET_WATCH", "0")]);
    let url = agent.url.as_str();
    let send = |msg: Value| {
        rpc(
            url,
            json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
                        "params": {"message": msg, "configuration": {"blocking": true}}}),
        )
    };
    let asked = send(json!({"role": "user", "messageId": "m", "kind": "message",
                            "parts": [{"kind": "data", "data": {"skill": "execute"}}]}));
    assert_eq!(asked["result"]["status"]["state"], "input-required", "{asked}");
    assert!(asked["result"]["status"]["message"]["parts"][0]["text"].as_str().unwrap().contains("task_id"), "{asked}");
    let mut answer = execute_message();
    answer["taskId"] = asked["result"]["id"].clone();
    answer["parts"] = json!([{"kind": "data", "data": {"branch": "c1", "task_id": "execute"}}]);
    let done = send(answer);
    assert_eq!(done["result"]["status"]["state"], "completed", "{done}");
    assert_eq!(done["result"]["status"]["message"]["parts"][1]["data"]["task_id"], "execute", "{done}");
}

#[test]
fn every_error_code_the_spec_names() {
    let home = TestHome::new();
    let agent = spawn_agent("evaluator", home.path(), &[]);
    let url = agent.url.as_str();
    // -32700: not JSON.
    let (s, v) = post_raw(url, "application/json", b"{not json".to_vec());
    assert_eq!((s, err_code(&v)), (200, -32700));
    assert!(v["id"].is_null());
    // -32600: JSON but not a request (missing jsonrpc, wrong version, batch, non-object, bad id).
    for body in [
        json!({"id": 1, "method": "tasks/get"}),
        json!({"jsonrpc": "1.0", "id": 1, "method": "tasks/get"}),
        json!([{"jsonrpc": "2.0", "id": 1, "method": "tasks/get"}]),
        json!("hello"),
        json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
        json!({"jsonrpc": "2.0", "id": [1], "method": "tasks/get"}),
    ] {
        assert_eq!(err_code(&rpc(url, body.clone())), -32600, "{body}");
    }
    // A request without an id gets its method's answer (as the A2A TCK expects), with id null.
    let v = rpc(url, json!({"jsonrpc": "2.0", "method": "tasks/teleport", "params": {}}));
    assert_eq!((err_code(&v), v["id"].clone()), (-32601, Value::Null));
    let v = rpc(url, json!({"jsonrpc": "2.0", "method": "tasks/get", "params": {"nope": 1}}));
    assert_eq!(err_code(&v), -32602);
    // The id is echoed when it can be read.
    let v = rpc(url, json!({"jsonrpc": "1.0", "id": "abc", "method": "tasks/get"}));
    assert_eq!(v["id"], "abc");
    // -32601: unknown method, naming the known ones.
    let v = rpc(url, json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/teleport", "params": {}}));
    assert_eq!(err_code(&v), -32601);
    assert!(v["error"]["message"].as_str().unwrap().contains("message/send"));
    // -32602: bad params.
    for params in [
        json!({"message": {"role": "user", "parts": [], "messageId": "m", "kind": "message"}}),
        json!({"message": {"role": "user", "parts": [{"kind": "text", "text": "x"}], "messageId": "m", "kind": "message"},
               "configuration": {"historyLength": -1}}),
        json!({}),
        json!({"message": {"role": "user", "parts": [{"kind": "hologram"}], "messageId": "m", "kind": "message"}}),
    ] {
        let v = rpc(url, json!({"jsonrpc": "2.0", "id": 2, "method": "message/send", "params": params}));
        assert_eq!(err_code(&v), -32602, "{v}");
    }
    let v =
        rpc(url, json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": "x", "historyLength": -3}}));
    assert_eq!(err_code(&v), -32602);
    // -32001: unknown task, including path-traversing ids (nothing on disk is touched).
    for id in ["nope", "../../etc/passwd", "/etc/passwd", "a\u{0}b"] {
        for method in ["tasks/get", "tasks/cancel", "tasks/resubscribe"] {
            let v = rpc(url, json!({"jsonrpc": "2.0", "id": 3, "method": method, "params": {"id": id}}));
            // tasks/resubscribe answers on its event stream (0.3 §7.2): one error event.
            let v = match v.as_str().and_then(|sse| sse.strip_prefix("data: ")) {
                Some(data) => serde_json::from_str(data.trim()).unwrap(),
                None => v,
            };
            assert_eq!(err_code(&v), -32001, "{method} {id:?}: {v}");
        }
    }
    // -32002: cancel a finished task.
    let done = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 4, "method": "message/send",
               "params": {"message": status_message(), "configuration": {"blocking": true}}}),
    );
    let id = done["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(done["result"]["status"]["state"], "completed");
    let v = rpc(url, json!({"jsonrpc": "2.0", "id": 5, "method": "tasks/cancel", "params": {"id": id}}));
    assert_eq!(err_code(&v), -32002);
    // -32004: follow-up on a finished task.
    let mut follow = text_message("more");
    follow["taskId"] = json!(id);
    let v = rpc(url, json!({"jsonrpc": "2.0", "id": 6, "method": "message/send", "params": {"message": follow}}));
    assert_eq!(err_code(&v), -32004);
    // -32005 with HTTP 415: wrong content type.
    let (s, v) = post_raw(url, "text/plain", b"{}".to_vec());
    assert_eq!((s, err_code(&v)), (415, -32005));
    // HTTP 413: a body over the 1 MiB limit, with a message naming the limit and the fix.
    let (s, v) = post_raw(url, "application/json", vec![b' '; (1 << 20) + 10]);
    assert_eq!(s, 413);
    assert!(v["error"]["message"].as_str().unwrap().contains("RATCHET_MAX_BODY"));
    // After all that, the agent still serves.
    let v = rpc(url, json!({"jsonrpc": "2.0", "id": 7, "method": "tasks/get", "params": {"id": id}}));
    assert_eq!(v["result"]["id"], id.as_str());
}

#[test]
fn history_length_trims_history() {
    let home = TestHome::new();
    let agent = spawn_agent("proposer", home.path(), &[]);
    let done = rpc(
        &agent.url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
               "params": {"message": status_message(), "configuration": {"blocking": true, "historyLength": 1}}}),
    );
    assert_eq!(done["result"]["history"].as_array().unwrap().len(), 1);
    let id = done["result"]["id"].clone();
    for (n, want) in [(0, 0), (1, 1), (5, 2)] {
        let v = rpc(
            &agent.url,
            json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": id, "historyLength": n}}),
        );
        let got = v["result"].get("history").and_then(Value::as_array).map_or(0, Vec::len);
        assert_eq!(got, want, "historyLength {n}");
    }
}

#[test]
fn stream_then_resubscribe_replays_what_was_missed_even_after_restart() {
    let home = TestHome::new();
    let agent = spawn_agent("executor", home.path(), &[]);
    let client = agent.client();
    let params = json!({"message": status_message()});
    let (task_id, all) = rt().block_on(async {
        let stream = client.stream("message/stream", params, None).await.unwrap();
        let events: Vec<(Option<u64>, StreamEvent)> = stream.map(|r| r.unwrap()).collect().await;
        let first = match &events[0].1 {
            StreamEvent::Task(t) => t.id.clone(),
            other => panic!("first streamed event must be the task, got {other:?}"),
        };
        (first, events)
    });
    assert!(all.len() >= 2);
    assert!(all.last().unwrap().1.is_final(), "the last event is final");
    assert_eq!(all.iter().filter(|(_, e)| e.is_final()).count(), 1, "exactly one final event");
    let ids: Vec<u64> = all.iter().map(|(i, _)| i.unwrap()).collect();
    assert_eq!(ids, (0..all.len() as u64).collect::<Vec<_>>(), "event ids count up from 0");

    let resub = |client: &A2aClient, last: Option<u64>| {
        rt().block_on(async {
            let s = client.stream("tasks/resubscribe", json!({"id": task_id}), last).await.unwrap();
            s.map(|r| r.unwrap()).collect::<Vec<_>>().await
        })
    };
    // A client that saw event 0 and dropped gets exactly the rest.
    assert_eq!(resub(&client, Some(0)), all[1..].to_vec());
    // Without Last-Event-ID: the full history.
    assert_eq!(resub(&client, None), all);

    // Kill the agent hard and start it again on the same state: the task is still there.
    let state_dir = agent.state_dir.clone();
    drop(agent);
    let agent = spawn_agent("executor", home.path(), &[("RATCHET_STATE_DIR", state_dir.to_str().unwrap())]);
    let client = agent.client();
    let t = rt()
        .block_on(client.call::<protocol::GetTask>(&protocol::TaskQueryParams {
            id: task_id.clone(),
            history_length: None,
            metadata: None,
        }))
        .unwrap();
    assert_eq!(t.status.state, TaskState::Completed);
    assert_eq!(resub(&client, Some(0)), all[1..].to_vec());
}

#[test]
fn push_notification_config_and_delivery() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let url = agent.url.as_str();
    // A receiver for the webhook: a plain TCP listener reading one HTTP request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\"kind\":\"task\"") {
            let n = sock.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        String::from_utf8_lossy(&got).to_string()
    });
    let v = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
               "params": {"message": status_message(),
                          "configuration": {"blocking": true, "pushNotificationConfig": {"url": hook, "token": "tok-1"}}}}),
    );
    let id = v["result"]["id"].as_str().unwrap().to_string();
    let request = receiver.join().unwrap();
    assert!(request.to_ascii_lowercase().contains("x-a2a-notification-token: tok-1"), "{request}");
    assert!(request.contains(&id));

    let set = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/pushNotificationConfig/set",
               "params": {"taskId": id, "pushNotificationConfig": {"id": "second", "url": "http://127.0.0.1:9/x"}}}),
    );
    assert_eq!(set["result"]["pushNotificationConfig"]["id"], "second");
    let got = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/pushNotificationConfig/get",
               "params": {"id": id, "pushNotificationConfigId": "second"}}),
    );
    assert_eq!(got["result"]["pushNotificationConfig"]["url"], "http://127.0.0.1:9/x");
    // Without a config id: the task's first config (0.3 makes pushNotificationConfigId optional).
    let first = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/pushNotificationConfig/get", "params": {"id": id}}),
    );
    assert_eq!(first["result"]["pushNotificationConfig"]["url"], hook.as_str(), "{first}");
    let missing = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/pushNotificationConfig/get",
               "params": {"id": id, "pushNotificationConfigId": "nope"}}),
    );
    assert_eq!(err_code(&missing), -32001, "a config that does not exist (1.0 §3.1.8)");
    let list = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 4, "method": "tasks/pushNotificationConfig/list", "params": {"id": id}}),
    );
    assert_eq!(list["result"].as_array().unwrap().len(), 2);
    let del = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tasks/pushNotificationConfig/delete",
               "params": {"id": id, "pushNotificationConfigId": "second"}}),
    );
    assert!(del.get("error").is_none(), "{del}");
    let list = rpc(
        url,
        json!({"jsonrpc": "2.0", "id": 6, "method": "tasks/pushNotificationConfig/list", "params": {"id": id}}),
    );
    assert_eq!(list["result"].as_array().unwrap().len(), 1);

    // An agent whose card says no push notifications answers -32003.
    let off = spawn_agent("evaluator", home.path(), &[("RATCHET_PUSH", "0")]);
    let card: Value = rt().block_on(async {
        reqwest::get(format!("{}.well-known/agent.json", off.url)).await.unwrap().json().await.unwrap()
    });
    assert_eq!(card["capabilities"]["pushNotifications"], false);
    for method in ["set", "get", "list", "delete"] {
        let v = rpc(
            &off.url,
            json!({"jsonrpc": "2.0", "id": 7, "method": format!("tasks/pushNotificationConfig/{method}"),
                   "params": {"id": "x", "taskId": "x", "pushNotificationConfigId": "y", "pushNotificationConfig": {"url": "http://127.0.0.1:9/"}}}),
        );
        assert_eq!(err_code(&v), -32003, "{method}");
    }
}

#[test]
fn bearer_token_is_declared_and_enforced() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[("RATCHET_TOKEN", "s3cret")]);
    let card: Value = rt().block_on(async {
        reqwest::get(format!("{}.well-known/agent.json", agent.url)).await.unwrap().json().await.unwrap()
    });
    assert_eq!(card["securitySchemes"]["bearer"]["scheme"], "bearer");
    let body =
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "x"}})).unwrap();
    for token in [None, Some("wrong"), Some(TEST_TOKEN)] {
        let (s, v) = post_with_token(&agent.url, "application/json", body.clone(), token);
        assert_eq!(s, 401, "{token:?}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("Authorization: Bearer") && msg.contains("fix:"), "{v}");
    }
    let client = A2aClient::new(&agent.url).with_token(Some("s3cret".into()));
    let err = rt()
        .block_on(client.call::<protocol::GetTask>(&protocol::TaskQueryParams {
            id: "x".into(),
            history_length: None,
            metadata: None,
        }))
        .unwrap_err();
    assert!(err.to_string().contains("-32001"), "authorized call reaches the method: {err}");
}

/// No token, no agent: even on loopback an agent refuses to start without one, unless the open
/// mode is asked for explicitly (loopback only; its card then declares no scheme).
#[test]
fn no_token_means_no_agent_unless_the_open_mode_is_asked_for() {
    let home = TestHome::new();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(ratchet_tests::bin("critic"));
        ratchet_tests::hermetic(&mut cmd, home.path());
        cmd.env("RATCHET_LISTEN", "127.0.0.1:0").env("RATCHET_HOME", home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[]);
    assert!(err.contains("RATCHET_TOKEN is unset") && err.contains("RATCHET_OPEN=1"), "{err}");
    let err = run(&[("RATCHET_OPEN", "1"), ("RATCHET_LISTEN", "0.0.0.0:0")]);
    assert!(err.contains("loopback only"), "{err}");
    let err = run(&[("RATCHET_OPEN", "1"), ("RATCHET_TOKEN", "x")]);
    assert!(err.contains("both RATCHET_TOKEN and RATCHET_OPEN=1"), "{err}");

    let open = spawn_agent("critic", home.path(), &[("RATCHET_OPEN", "1")]);
    let card: Value = rt().block_on(async {
        reqwest::get(format!("{}.well-known/agent.json", open.url)).await.unwrap().json().await.unwrap()
    });
    assert!(card.get("securitySchemes").is_none() && card.get("security").is_none(), "{card}");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "x"}});
    let (s, v) = post_with_token(&open.url, "application/json", serde_json::to_vec(&body).unwrap(), None);
    assert_eq!((s, err_code(&v)), (200, -32001), "the open mode serves without a token");
}

#[test]
fn non_loopback_without_token_is_refused_at_start() {
    let home = TestHome::new();
    let mut cmd = std::process::Command::new(ratchet_tests::bin("critic"));
    ratchet_tests::hermetic(&mut cmd, home.path());
    let out = cmd.env("RATCHET_LISTEN", "0.0.0.0:0").env("RATCHET_HOME", home.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RATCHET_TOKEN"), "{err}");
}

/// A candidate branch `c1` with a queued `execute` task whose one gate is `gate`.
pub(crate) fn queue_execute(home: &TestHome, gate: &str) {
    use kit::substrate::{Home, add_worktree, queue_task};
    use protocol::lease::TaskFile;
    use protocol::work::{ExecuteInput, FileEdit, Proposal, SandboxSettings};
    // The executor runs a task only under approved governance: approve documents whose one
    // gate is `gate`, and write the task as the coordinator would (see security_wire.rs for a
    // forged one).
    let gov = approve_gates(home, &[gate]);
    let base = home.git(&["rev-parse", "HEAD"]);
    let h = Home::open(home.path()).unwrap();
    let bd = add_worktree(&h, "c1", &base).unwrap();
    let input = ExecuteInput {
        proposal: Proposal {
            id: "c1".into(),
            strategy: "command".into(),
            summary: "touch a file".into(),
            files: vec!["a.txt".into()],
            params: json!({}),
            patch: None,
            edits: vec![FileEdit { path: "a.txt".into(), content: "a\n".into() }],
            model: None,
            declaration: None,
        },
        base,
        gates: gov.ethos.gates.clone(),
        gate_timeout_s: gov.ethos.gate_timeout_s,
        sandbox: SandboxSettings::from(&gov.constitution),
        trusted_tests: vec![],
        test_command: String::new(),
    };
    let task = TaskFile {
        governance: gov.hashes.clone(),
        ..TaskFile::queued("c1", "execute", "executor", "execute", json!(input))
    };
    queue_task(&bd, &task).unwrap();
}

/// Write and approve governance documents (the fixture's, plain sandbox) whose gates are
/// `gates`; returns what is now in force.
pub(crate) fn approve_gates(home: &TestHome, gates: &[&str]) -> protocol::governance::Governance {
    let spec = ratchet_tests::fixture::Spec {
        gates: gates.iter().map(|g| g.to_string()).collect(),
        sandbox: "plain".into(),
        weak_sandbox: "allow".into(),
        gate_timeout_s: 120,
        ..Default::default()
    };
    for (doc, text) in
        [("constitution.md", spec.constitution_md()), ("ethos.md", spec.ethos_md()), ("cadence.md", spec.cadence_md())]
    {
        std::fs::write(home.path().join(doc), text).unwrap();
    }
    home.git(&["add", "-A"]);
    home.git(&["commit", "-q", "-m", "governance"]);
    let out = ratchet_tests::ratchet_cmd(
        home.path(),
        &["approve", "constitution.md", "ethos.md", "cadence.md", "--by", "test"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "ratchet approve: {}", String::from_utf8_lossy(&out.stderr));
    kit::governance::load(home.path()).expect("approved governance loads")
}

pub(crate) fn execute_message() -> Value {
    json!({"role": "user", "messageId": "m", "kind": "message",
           "parts": [{"kind": "data", "data": {"skill": "execute", "branch": "c1", "task_id": "execute"}}]})
}

#[test]
fn cancel_a_running_task_kills_its_work() {
    let home = TestHome::new();
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("gate.pid");
    queue_execute(&home, &format!("echo $$ > {}; sleep 60", pid_file.display()));
    // This executor takes work only over A2A, so the test decides who runs the task.
    let agent = spawn_agent("executor", home.path(), &[("RATCHET_WATCH", "0")]);
    let v = rpc(
        &agent.url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": execute_message()}}),
    );
    let id = v["result"]["id"].as_str().unwrap().to_string();
    // The gate is running once it wrote its pid.
    let pid: i32 = ratchet_tests::wait_for("the gate to start", Duration::from_secs(30), || {
        std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok())
    });
    let working = rpc(&agent.url, json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": id}}));
    assert_eq!(working["result"]["status"]["state"], "working");
    let canceled = rpc(&agent.url, json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/cancel", "params": {"id": id}}));
    assert_eq!(canceled["result"]["status"]["state"], "canceled", "{canceled}");
    // The gate's whole process group is killed, not left running.
    // (A killed child may linger as a zombie until its parent reaps it: that counts as gone.)
    ratchet_tests::wait_for("the gate process to be killed", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("");
        (stat.is_empty() || state == "Z").then_some(())
    });
    let again = rpc(&agent.url, json!({"jsonrpc": "2.0", "id": 4, "method": "tasks/cancel", "params": {"id": id}}));
    assert_eq!(err_code(&again), -32002);
    let later = rpc(&agent.url, json!({"jsonrpc": "2.0", "id": 5, "method": "tasks/get", "params": {"id": id}}));
    assert_eq!(later["result"]["status"]["state"], "canceled", "a canceled task stays canceled");
}

/// An idle agent sleeps: no thread may spin (a watcher reacting to its own directory reads once
/// did, costing most of a core per agent). Measured as CPU ticks, not wall time.
#[test]
fn an_idle_agent_uses_no_cpu() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.proc.pid())).unwrap();
        // Fields after the command name: state, ppid, ..., utime (14th of the line), stime (15th).
        let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    std::thread::sleep(Duration::from_millis(500)); // let start-up work finish
    let before = ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = ticks() - before;
    // 2 s at 100 ticks/s: a spinning thread shows ~170; a sleeping agent 0-2.
    assert!(used < 20, "an idle agent used {used} CPU ticks in 2 s");
}

#[test]
fn a_client_disconnect_never_cancels_a_task() {
    let home = TestHome::new();
    let scratch = tempfile::tempdir().unwrap();
    let started = scratch.path().join("started");
    queue_execute(&home, &format!("touch {}; sleep 2", started.display()));
    let agent = spawn_agent("executor", home.path(), &[("RATCHET_WATCH", "0")]);
    let client = agent.client();
    let task_id = rt().block_on(async {
        let stream = client.stream("message/stream", json!({"message": execute_message()}), None).await.unwrap();
        let mut stream = std::pin::pin!(stream);
        let (_, first) = stream.next().await.unwrap().unwrap();
        let StreamEvent::Task(t) = first else { panic!("the first event is the task") };
        t.id
        // The stream (and its connection) is dropped here, mid-task.
    });
    ratchet_tests::wait_for("the gate to start", Duration::from_secs(30), || started.exists().then_some(()));
    let done = ratchet_tests::wait_for("the task to finish without its client", Duration::from_secs(60), || {
        let v = rpc(&agent.url, json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": task_id}}));
        let state = v["result"]["status"]["state"].as_str().unwrap_or_default().to_string();
        (state != "working" && state != "submitted").then_some(v)
    });
    assert_eq!(done["result"]["status"]["state"], "completed", "{done}");
}
