//! The A2A 1.0 wire beside 0.3, against the real agent binaries over real loopback HTTP:
//! version negotiation, the 1.0 JSON-RPC methods, the HTTP+JSON binding, the one card both
//! generations read, ListTasks, SubscribeToTask, 1.0 push notifications, and the client choosing
//! its version from the card.

use std::time::Duration;

use futures_util::StreamExt;
use kit::client::A2aClient;
use protocol::a2a_v1::{self as v1, Version};
use protocol::{Message, Part, Role, StreamEvent, TaskState};
use ratchet_tests::{TEST_TOKEN, TestHome, rt, spawn_agent};
use serde_json::{Value, json};

/// One HTTP request with the test token; returns (status, headers, body as JSON or as text).
fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    rt().block_on(async {
        let mut req = reqwest::Client::new().request(method.parse().unwrap(), url).bearer_auth(TEST_TOKEN);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req.send().await.expect("the agent answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    })
}

const V1: (&str, &str) = ("A2A-Version", "1.0");

fn rpc1(url: &str, method: &str, params: Value) -> Value {
    let (status, _, v) =
        call("POST", url, &[V1], Some(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})));
    assert_eq!(status, 200, "{v}");
    v
}

fn text(t: &str) -> Value {
    json!({"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": t}]})
}

/// The `google.rpc.ErrorInfo` reason of a 1.0 JSON-RPC error.
fn reason(v: &Value) -> &str {
    let data = &v["error"]["data"][0];
    assert_eq!(data["@type"], "type.googleapis.com/google.rpc.ErrorInfo", "{v}");
    assert_eq!(data["domain"], "a2a-protocol.org", "{v}");
    data["reason"].as_str().unwrap()
}

#[test]
fn version_negotiation_picks_the_method_set() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let url = agent.url.as_str();
    let send = |headers: &[(&str, &str)], url: &str, method: &str, params: Value| {
        call("POST", url, headers, Some(json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))).2
    };
    // 1.0 by header, by query parameter, with a patch number: the 1.0 form of a task.
    for (headers, at) in [
        (vec![V1], url.to_string()),
        (vec![], format!("{url}?A2A-Version=1.0")),
        (vec![("A2A-Version", "1.0.1")], url.to_string()),
    ] {
        let v = send(&headers, &at, "SendMessage", json!({"message": text("status")}));
        assert_eq!(v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{headers:?} {at}: {v}");
        assert!(v["result"]["task"].get("kind").is_none(), "no 0.3 kind in 1.0: {v}");
    }
    // No header means 0.3 (§3.6.2): the 1.0 method is refused, the 0.3 one served.
    let v = send(&[], url, "SendMessage", json!({"message": text("status")}));
    assert_eq!(v["error"]["code"], -32009, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("A2A-Version: 1.0"), "{v}");
    let v = send(&[V1], url, "message/send", json!({}));
    assert_eq!((v["error"]["code"].as_i64(), reason(&v)), (Some(-32009), "VERSION_NOT_SUPPORTED"), "{v}");
    // A version this agent does not speak: VersionNotSupportedError with ErrorInfo.
    let v = send(&[("A2A-Version", "99.0")], url, "SendMessage", json!({"message": text("status")}));
    assert_eq!((v["error"]["code"].as_i64(), reason(&v)), (Some(-32009), "VERSION_NOT_SUPPORTED"), "{v}");
    assert_eq!(v["id"], 7);
    // Unknown 1.0 method: -32601 naming the 1.0 methods.
    let v = send(&[V1], url, "tasks/teleport", json!({}));
    assert_eq!(v["error"]["code"], -32601);
    assert!(v["error"]["message"].as_str().unwrap().contains("SendMessage"), "{v}");
    // Bad params: -32602; 1.0 params accept the proto's snake_case names too.
    let v = send(&[V1], url, "SendMessage", json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{}]}}));
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let v = send(
        &[V1],
        url,
        "SendMessage",
        json!({"message": {"message_id": "m", "role": "ROLE_USER", "parts": [{"text": "status"}]},
               "configuration": {"history_length": 0}}),
    );
    assert_eq!(v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    assert!(v["result"]["task"].get("history").is_none(), "historyLength 0 leaves the history out: {v}");
}

#[test]
fn the_1_0_methods_over_json_rpc() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let url = agent.url.as_str();
    // A message naming no skill: the task waits for input (a blocking send returns there).
    let asked = rpc1(url, "SendMessage", json!({"message": text("hello")}));
    let task = &asked["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{asked}");
    assert_eq!(task["status"]["message"]["role"], "ROLE_AGENT");
    let id = task["id"].as_str().unwrap().to_string();
    let ctx = task["contextId"].as_str().unwrap().to_string();
    // GetTask with historyLength.
    let got = rpc1(url, "GetTask", json!({"id": id, "historyLength": 1}));
    assert_eq!(got["result"]["history"].as_array().unwrap().len(), 1, "{got}");
    // A follow-up with only the taskId (the context is inferred) runs the skill it names.
    let mut follow = text("status");
    follow["taskId"] = json!(id);
    let done = rpc1(url, "SendMessage", json!({"message": follow}));
    assert_eq!(done["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{done}");
    assert_eq!(done["result"]["task"]["contextId"], ctx.as_str());
    // A terminal task: follow-ups refused (UnsupportedOperation), cancel refused
    // (TaskNotCancelable), subscribe refused (UnsupportedOperation, §3.1.6).
    let mut late = text("status");
    late["taskId"] = json!(id);
    let v = rpc1(url, "SendMessage", json!({"message": late}));
    assert_eq!((v["error"]["code"].as_i64(), reason(&v)), (Some(-32004), "UNSUPPORTED_OPERATION"));
    let v = rpc1(url, "CancelTask", json!({"id": id}));
    assert_eq!((v["error"]["code"].as_i64(), reason(&v)), (Some(-32002), "TASK_NOT_CANCELABLE"));
    assert_eq!(v["error"]["data"][0]["metadata"]["taskId"], id.as_str(), "{v}");
    let v = rpc1(url, "SubscribeToTask", json!({"id": id}));
    assert_eq!((v["error"]["code"].as_i64(), reason(&v)), (Some(-32004), "UNSUPPORTED_OPERATION"), "{v}");
    // Unknown task.
    let v = rpc1(url, "GetTask", json!({"id": "nope"}));
    assert_eq!((v["error"]["code"].as_i64(), reason(&v)), (Some(-32001), "TASK_NOT_FOUND"));
    // Non-blocking (returnImmediately) then cancel while it waits.
    let open = rpc1(url, "SendMessage", json!({"message": text("hi"), "configuration": {"returnImmediately": true}}));
    let open_id = open["result"]["task"]["id"].as_str().unwrap().to_string();
    let c = rpc1(url, "CancelTask", json!({"id": open_id}));
    assert_eq!(c["result"]["status"]["state"], "TASK_STATE_CANCELED", "{c}");
    // No extended card (§3.3.4: UnsupportedOperationError).
    let v = rpc1(url, "GetExtendedAgentCard", json!({}));
    assert_eq!((v["error"]["code"].as_i64(), reason(&v)), (Some(-32004), "UNSUPPORTED_OPERATION"));
    // Push configs: create, get, list, delete (idempotent), on a 1.0 config.
    let waiting = rpc1(url, "SendMessage", json!({"message": text("hi")}))["result"]["task"]["id"].clone();
    let cfg = json!({"taskId": waiting, "id": "p1", "url": "http://127.0.0.1:9/hook",
                     "authentication": {"scheme": "Bearer", "credentials": "c"}});
    let created = rpc1(url, "CreateTaskPushNotificationConfig", cfg);
    assert_eq!(created["result"]["authentication"]["scheme"], "Bearer", "{created}");
    let got = rpc1(url, "GetTaskPushNotificationConfig", json!({"taskId": waiting, "id": "p1"}));
    assert_eq!(got["result"]["url"], "http://127.0.0.1:9/hook", "{got}");
    let list = rpc1(url, "ListTaskPushNotificationConfigs", json!({"task_id": waiting}));
    assert_eq!(list["result"]["configs"].as_array().unwrap().len(), 1, "{list}");
    for _ in 0..2 {
        let del = rpc1(url, "DeleteTaskPushNotificationConfig", json!({"taskId": waiting, "id": "p1"}));
        assert_eq!(del["result"], json!({}), "{del}");
    }
    let v = rpc1(url, "GetTaskPushNotificationConfig", json!({"taskId": waiting, "id": "p1"}));
    assert_eq!(reason(&v), "TASK_NOT_FOUND", "a config that does not exist (§3.1.8)");
}

#[test]
fn the_http_json_binding() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let base = agent.url.trim_end_matches('/');
    let (s, h, v) = call("POST", &format!("{base}/message:send"), &[V1], Some(json!({"message": text("status")})));
    assert_eq!(s, 200, "{v}");
    assert!(h["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(v["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    let done = v["task"]["id"].as_str().unwrap().to_string();
    let (s, _, v) = call("GET", &format!("{base}/tasks/{done}?historyLength=1"), &[V1], None);
    assert_eq!((s, v["history"].as_array().map(Vec::len)), (200, Some(1)), "{v}");
    // Errors: google.rpc.Status with ErrorInfo, and the HTTP status of A2A 1.0.0 §5.4.
    let (s, _, v) = call("GET", &format!("{base}/tasks/nope"), &[V1], None);
    assert_eq!((s, v["error"]["status"].as_str()), (404, Some("NOT_FOUND")), "{v}");
    assert_eq!(v["error"]["details"][0]["reason"], "TASK_NOT_FOUND");
    let (s, _, v) = call("POST", &format!("{base}/tasks/{done}:cancel"), &[V1], None);
    assert_eq!((s, v["error"]["details"][0]["reason"].as_str()), (409, Some("TASK_NOT_CANCELABLE")), "{v}");
    let (s, _, v) = call("POST", &format!("{base}/message:send"), &[("A2A-Version", "99.0")], Some(json!({})));
    assert_eq!((s, v["error"]["details"][0]["reason"].as_str()), (400, Some("VERSION_NOT_SUPPORTED")), "{v}");
    let (s, _, v) = call("POST", &format!("{base}/message:send"), &[], Some(json!({"message": text("status")})));
    assert_eq!(s, 400, "the HTTP+JSON binding is 1.0: no header (0.3) is refused: {v}");
    let (s, _, v) = rt().block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/message:send"))
            .bearer_auth(TEST_TOKEN)
            .header("A2A-Version", "1.0")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), (), r.json::<Value>().await.unwrap())
    });
    assert_eq!((s, v["error"]["details"][0]["reason"].as_str()), (415, Some("CONTENT_TYPE_NOT_SUPPORTED")), "{v}");
    let (s, _, v) = call("GET", &format!("{base}/extendedAgentCard"), &[V1], None);
    assert_eq!((s, v["error"]["details"][0]["reason"].as_str()), (400, Some("UNSUPPORTED_OPERATION")), "{v}");
    // Without the token: 401 in the binding's own format.
    let (s, _) = rt().block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{base}/tasks/{done}"))
            .header("A2A-Version", "1.0")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    });
    assert_eq!(s, 401, "REST routes need the token too");
    // A waiting task: cancel works; push configs over REST.
    let (_, _, v) = call("POST", &format!("{base}/message:send"), &[V1], Some(json!({"message": text("hi")})));
    let waiting = v["task"]["id"].as_str().unwrap().to_string();
    let (s, _, v) = call(
        "POST",
        &format!("{base}/tasks/{waiting}/pushNotificationConfigs"),
        &[V1],
        Some(json!({"id": "r1", "url": "http://127.0.0.1:9/h"})),
    );
    assert_eq!((s, v["taskId"].as_str()), (200, Some(waiting.as_str())), "{v}");
    let (s, _, v) = call("GET", &format!("{base}/tasks/{waiting}/pushNotificationConfigs/r1"), &[V1], None);
    assert_eq!((s, v["id"].as_str()), (200, Some("r1")), "{v}");
    let (_, _, v) = call("GET", &format!("{base}/tasks/{waiting}/pushNotificationConfigs"), &[V1], None);
    assert_eq!(v["configs"].as_array().unwrap().len(), 1, "{v}");
    let (s, _, _) = call("DELETE", &format!("{base}/tasks/{waiting}/pushNotificationConfigs/r1"), &[V1], None);
    assert_eq!(s, 200);
    let (s, _, v) = call("POST", &format!("{base}/tasks/{waiting}:cancel"), &[V1], None);
    assert_eq!((s, v["status"]["state"].as_str()), (200, Some("TASK_STATE_CANCELED")), "{v}");
    // ListTasks over REST, query parameters in camelCase.
    let (s, _, v) = call("GET", &format!("{base}/tasks?status=TASK_STATE_CANCELED&pageSize=10"), &[V1], None);
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [waiting.as_str()], "{v}");
    let (s, _, _) = call("GET", &format!("{base}/tasks?pageSize=150"), &[V1], None);
    assert_eq!(s, 400, "pageSize is 1..=100");
}

/// ListTasks (§3.1.4): most recently updated first, cursor pages, filters, artifacts only when
/// asked, and the same answers after a restart (the index rebuilt from the log).
#[test]
fn list_tasks_pages_filters_and_survives_a_restart() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let url = agent.url.clone();
    let send = |t: &str, ctx: &str| {
        let mut m = text(t);
        m["contextId"] = json!(ctx);
        rpc1(&url, "SendMessage", json!({"message": m}))["result"]["task"]["id"].as_str().unwrap().to_string()
    };
    let a = send("status", "ctx-a");
    let b = send("hello", "ctx-a");
    let c = send("status", "ctx-b");
    let d = send("status", "ctx-a");
    let list = |url: &str, params: Value| rpc1(url, "ListTasks", params)["result"].clone();
    let ids = |v: &Value| -> Vec<String> {
        v["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
    };
    let check = |url: &str| {
        let all = list(url, json!({}));
        assert_eq!(ids(&all), [d.as_str(), &c, &b, &a], "most recently updated first: {all}");
        assert_eq!((all["totalSize"].as_i64(), all["nextPageToken"].as_str()), (Some(4), Some("")));
        let ctx_a = list(url, json!({"contextId": "ctx-a", "pageSize": 2}));
        assert_eq!(ids(&ctx_a), [d.as_str(), &b]);
        assert_eq!(ctx_a["totalSize"], 3);
        let token = ctx_a["nextPageToken"].as_str().unwrap().to_string();
        assert!(!token.is_empty());
        let next = list(url, json!({"contextId": "ctx-a", "pageSize": 2, "pageToken": token}));
        assert_eq!(ids(&next), [a.as_str()]);
        assert_eq!(next["nextPageToken"], "", "the last page");
        let waiting = list(url, json!({"status": "TASK_STATE_INPUT_REQUIRED"}));
        assert_eq!(ids(&waiting), [b.as_str()]);
        assert!(all["tasks"][0].get("artifacts").is_none(), "artifacts left out unless asked");
        let v = rpc1(url, "ListTasks", json!({"pageToken": "garbage"}));
        assert_eq!(v["error"]["code"], -32602, "{v}");
    };
    check(&url);
    // Complete b, so it becomes the most recent.
    let mut follow = text("status");
    follow["taskId"] = json!(b);
    rpc1(&url, "SendMessage", json!({"message": follow}));
    let all = list(&url, json!({}));
    assert_eq!(ids(&all)[0], b, "an update moves a task to the front: {all}");
    let state_dir = agent.state_dir.clone();
    drop(agent);
    let agent = spawn_agent("critic", home.path(), &[("RATCHET_STATE_DIR", state_dir.to_str().unwrap())]);
    let all = list(&agent.url, json!({}));
    assert_eq!(ids(&all), [b.as_str(), &d, &c, &a], "after a restart, the same order: {all}");
    let done = list(&agent.url, json!({"status": "TASK_STATE_COMPLETED", "contextId": "ctx-a"}));
    assert_eq!(ids(&done), [b.as_str(), &d, &a], "{done}");
}

/// SubscribeToTask (§3.1.6): the task first, then its events; an `input-required` task keeps its
/// subscribers until it ends. SendStreamingMessage: `StreamResponse` events. Both over JSON-RPC
/// and HTTP+JSON.
#[test]
fn streams_in_1_0() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let base = agent.url.trim_end_matches('/').to_string();
    let client = agent.client().with_version(Version::V1_0);
    rt().block_on(async {
        // SendStreamingMessage through the client (1.0 on the wire, 0.3 events out).
        let events: Vec<_> = client
            .send_streaming(Message::new(Role::User, "s1", vec![Part::text("status")]))
            .await
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect()
            .await;
        assert!(matches!(events[0], StreamEvent::Task(_)), "{events:?}");
        assert!(matches!(events.last(), Some(StreamEvent::Status(s)) if s.status.state == TaskState::Completed));
        // A waiting task: subscribe, then complete it with a follow-up; the stream sees it end.
        let waiting = client.send(Message::new(Role::User, "w", vec![Part::text("hello")]), true).await.unwrap();
        assert_eq!(waiting.status.state, TaskState::InputRequired);
        let http = reqwest::Client::new();
        for rest in [false, true] {
            let resp = if rest {
                http.post(format!("{base}/tasks/{}:subscribe", waiting.id))
            } else {
                http.post(format!("{base}/")).json(&json!({"jsonrpc": "2.0", "id": 3, "method": "SubscribeToTask",
                                                           "params": {"id": waiting.id}}))
            }
            .bearer_auth(TEST_TOKEN)
            .header("A2A-Version", "1.0")
            .send()
            .await
            .unwrap();
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
            let mut body = resp.bytes_stream();
            let mut seen = String::new();
            while !seen.contains("\n\n") {
                seen.push_str(&String::from_utf8_lossy(&body.next().await.unwrap().unwrap()));
            }
            assert!(seen.contains("TASK_STATE_INPUT_REQUIRED") && seen.contains("\"task\""), "the task first: {seen}");
            if rest {
                // Complete it; the stream carries the rest and closes.
                let mut follow = Message::new(Role::User, "f", vec![Part::text("status")]);
                follow.task_id = Some(waiting.id.clone());
                let done = client.send(follow, true).await.unwrap();
                assert_eq!(done.status.state, TaskState::Completed);
                while let Some(chunk) = body.next().await {
                    seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                }
                assert!(seen.contains("TASK_STATE_COMPLETED") && seen.contains("statusUpdate"), "{seen}");
                assert!(!seen.contains("\"jsonrpc\""), "REST events are bare StreamResponses: {seen}");
            } else {
                // A second stream on the same task waits too (dropped here: that ends only it).
                let extra = tokio::time::timeout(Duration::from_millis(300), body.next()).await;
                assert!(
                    extra.is_err() || extra.unwrap().is_some_and(|c| c.unwrap().starts_with(b":")),
                    "the stream stays open"
                );
            }
        }
    });
}

#[test]
fn one_card_for_both_generations() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let card_url = format!("{}.well-known/agent-card.json", agent.url);
    let (_, h, merged) = call("GET", &card_url, &[], None);
    assert_eq!(h["vary"], "A2A-Version");
    // A 0.3 reader: its own members. A 1.0 reader: supportedInterfaces, preferred first.
    let old: protocol::AgentCard = serde_json::from_value(merged.clone()).expect("a 0.3 card");
    assert_eq!((old.protocol_version.as_str(), old.url.as_str()), ("0.3.0", agent.url.as_str()));
    assert_eq!(old.security_schemes.unwrap()["bearer"]["type"], "http");
    let new: v1::AgentCard = serde_json::from_value(merged.clone()).expect("a 1.0 card");
    let ifaces: Vec<(String, String)> =
        new.supported_interfaces.iter().map(|i| (i.protocol_binding.clone(), i.protocol_version.clone())).collect();
    assert_eq!(
        ifaces,
        [("JSONRPC".into(), "1.0".into()), ("HTTP+JSON".into(), "1.0".into()), ("JSONRPC".into(), "0.3".into())]
    );
    assert_eq!(new.security_schemes["bearer"]["httpAuthSecurityScheme"]["scheme"], "Bearer");
    assert_eq!(new.ratchet_role().as_deref(), Some("critic"));
    // Asking for 1.0 gets the plain 1.0 card: no 0.3 member, its own ETag.
    let (_, h1, plain) = call("GET", &format!("{card_url}?A2A-Version=1.0"), &[], None);
    for gone in ["url", "protocolVersion", "preferredTransport", "security"] {
        assert!(plain.get(gone).is_none(), "{gone} in {plain}");
    }
    assert!(plain["securitySchemes"]["bearer"].get("type").is_none());
    assert_ne!(h["etag"], h1["etag"]);
    let (_, _, by_header) = call("GET", &card_url, &[V1], None);
    assert_eq!(by_header, plain);
    // The client reads the card and picks 1.0 JSON-RPC.
    let client = rt().block_on(async {
        let base = agent.client();
        let card = base.card().await.unwrap();
        base.for_card(&card).unwrap()
    });
    assert_eq!(client.version(), Version::V1_0);
    let t = rt().block_on(client.send(Message::new(Role::User, "c", vec![Part::text("status")]), true)).unwrap();
    assert_eq!(t.status.state, TaskState::Completed);
    assert_eq!(rt().block_on(client.get_task(&t.id)).unwrap().id, t.id);
}

/// A 1.0 push config gets each event as a StreamResponse with its Authorization header.
#[test]
fn push_notifications_in_1_0() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut requests = vec![];
        // The task's events: submitted, input-required, working (follow-up), completed.
        for _ in 0..4 {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let n = sock.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= head_end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            requests.push(String::from_utf8_lossy(&got).to_string());
        }
        requests
    });
    let url = agent.url.as_str();
    let cfg = json!({"url": hook, "authentication": {"scheme": "Bearer", "credentials": "hook-secret"}});
    let v = rpc1(
        url,
        "SendMessage",
        json!({"message": text("hello"), "configuration": {"taskPushNotificationConfig": cfg}}),
    );
    let id = v["result"]["task"]["id"].as_str().unwrap().to_string();
    let mut follow = text("status");
    follow["taskId"] = json!(id);
    rpc1(url, "SendMessage", json!({"message": follow}));
    let requests = receiver.join().unwrap();
    for r in &requests {
        assert!(r.to_ascii_lowercase().contains("authorization: bearer hook-secret"), "{r}");
    }
    let bodies: Vec<Value> =
        requests.iter().map(|r| serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap()).collect();
    assert!(bodies[0]["task"]["id"] == id.as_str(), "{bodies:?}");
    let states: Vec<&str> =
        bodies[1..].iter().map(|b| b["statusUpdate"]["status"]["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["TASK_STATE_INPUT_REQUIRED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"], "in order");
}

/// 0.3 `tasks/resubscribe` and `message/stream` answer errors on the event stream (0.3 §7.2).
#[test]
fn errors_of_0_3_streams_come_as_events() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[]);
    let client = A2aClient::new(&agent.url).with_token(Some(TEST_TOKEN.into()));
    rt().block_on(async {
        let stream = client.stream("tasks/resubscribe", json!({"id": "no-such-task"}), None).await.unwrap();
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 1);
        let err = items.into_iter().next().unwrap().unwrap_err();
        assert!(err.to_string().contains("-32001"), "{err}");
    });
    let (s, h, body) = call(
        "POST",
        &agent.url,
        &[],
        Some(json!({"jsonrpc": "2.0", "id": 5, "method": "message/stream", "params": {"message": {}}})),
    );
    assert_eq!(s, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(body.as_str().unwrap().contains("-32602"), "{body}");
}
