//! `ratchet-tck-agent`, the official A2A TCK's system under test, as the real binary over real
//! loopback HTTP: the card (plain 1.0, the only members the strict 1.0 schema allows), 0.3
//! refused, and each scenario the TCK drives by `messageId` prefix, over JSON-RPC, HTTP+JSON and
//! streams: direct message answers (no task), artifacts of each part kind, chunked artifacts,
//! input-required turns, rejection, the fallback.

use futures_util::StreamExt;
use ratchet_tests::{TEST_TOKEN, TestHome, rt, spawn_agent};
use serde_json::{Value, json};

const V1: (&str, &str) = ("A2A-Version", "1.0");

fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
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
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    })
}

fn message(id: &str) -> Value {
    json!({"messageId": id, "role": "ROLE_USER", "parts": [{"text": "TCK test"}]})
}

/// `SendMessage` over JSON-RPC (1.0): the result.
fn send(url: &str, msg: Value) -> Value {
    let (status, v) = call(
        "POST",
        url,
        &[V1],
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": msg}})),
    );
    assert_eq!(status, 200, "{v}");
    v["result"].clone()
}

/// The members of a 1.0 `AgentCard` (a2a.proto, v1.0): the only ones the strict schema the TCK
/// validates the card with allows (beside their snake_case spellings).
const CARD_MEMBERS: &[&str] = &[
    "name",
    "description",
    "supportedInterfaces",
    "provider",
    "version",
    "documentationUrl",
    "capabilities",
    "securitySchemes",
    "securityRequirements",
    "defaultInputModes",
    "defaultOutputModes",
    "skills",
    "signatures",
    "iconUrl",
];

#[test]
fn the_tck_agent_speaks_1_0_only_with_the_plain_card() {
    let home = TestHome::new();
    let agent = spawn_agent("ratchet-tck-agent", home.path(), &[]);
    let url = agent.url.as_str();
    // The card without A2A-Version (as the TCK fetches it) is the plain 1.0 card.
    let (_, card) = call("GET", &format!("{url}.well-known/agent-card.json"), &[], None);
    for key in card.as_object().expect("a card object").keys() {
        assert!(CARD_MEMBERS.contains(&key.as_str()), "{key} is not a 1.0 AgentCard member: {card}");
    }
    let ifaces: Vec<(&str, &str)> = card["supportedInterfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["protocolBinding"].as_str().unwrap(), i["protocolVersion"].as_str().unwrap()))
        .collect();
    assert_eq!(ifaces, [("JSONRPC", "1.0"), ("HTTP+JSON", "1.0")]);
    assert_eq!(card["skills"][0]["id"], "tck");
    let (_, asked) = call("GET", &format!("{url}.well-known/agent-card.json"), &[V1], None);
    assert_eq!(asked, card, "the same card whatever the request asks for");
    // A request without A2A-Version means 0.3 (§3.6.2), which this agent does not speak.
    let (status, v) = call(
        "POST",
        url,
        &[],
        Some(json!({"jsonrpc": "2.0", "id": 2, "method": "message/send",
                    "params": {"message": {"kind": "message", "messageId": "tck-complete-task-1", "role": "user",
                                           "parts": [{"kind": "text", "text": "hi"}]}}})),
    );
    assert_eq!((status, v["error"]["code"].as_i64()), (200, Some(-32009)), "{v}");
    assert_eq!(v["error"]["data"][0]["reason"], "VERSION_NOT_SUPPORTED", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("A2A-Version: 1.0"), "{v}");
}

#[test]
fn the_tck_agent_follows_the_scenarios() {
    let home = TestHome::new();
    let agent = spawn_agent("ratchet-tck-agent", home.path(), &[]);
    let url = agent.url.as_str();
    let base = url.trim_end_matches('/');

    // Completes at once, with the scenario's message.
    let done = send(url, message("tck-complete-task-a1"));
    assert_eq!(done["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{done}");
    assert_eq!(done["task"]["status"]["message"]["parts"][0]["text"], "Hello from TCK", "{done}");

    // A direct answer: a Message and no task, over JSON-RPC and HTTP+JSON.
    let direct = send(
        url,
        json!({"messageId": "tck-message-response-a2", "role": "ROLE_USER",
                                  "contextId": "ctx-1", "parts": [{"text": "hi"}]}),
    );
    assert!(direct.get("task").is_none(), "{direct}");
    assert_eq!(direct["message"]["role"], "ROLE_AGENT", "{direct}");
    assert_eq!(direct["message"]["parts"][0]["text"], "Direct message response", "{direct}");
    assert_eq!(direct["message"]["contextId"], "ctx-1", "the request's context: {direct}");
    assert!(direct["message"].get("taskId").is_none(), "{direct}");
    let (status, rest) = call(
        "POST",
        &format!("{base}/message:send"),
        &[V1],
        Some(json!({"message": message("tck-message-response-a3")})),
    );
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["message"]["parts"][0]["text"], "Direct message response", "{rest}");
    assert!(rest["message"]["contextId"].as_str().is_some_and(|c| !c.is_empty()), "a new context: {rest}");
    let (_, listed) = call("GET", &format!("{base}/tasks"), &[V1], None);
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "a direct answer makes no task: {listed}");

    // Artifacts of each part kind, in their 1.0 forms.
    let art = |prefix: &str| {
        let r = send(url, message(&format!("{prefix}-a4")));
        assert_eq!(r["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{r}");
        assert!(r["task"]["status"].get("message").is_none(), "the result is the artifact: {r}");
        r["task"]["artifacts"][0]["parts"][0].clone()
    };
    assert_eq!(art("tck-artifact-text"), json!({"text": "Generated text content"}));
    assert_eq!(art("tck-artifact-file"), json!({"raw": "dGNr", "filename": "output.txt", "mediaType": "text/plain"}));
    assert_eq!(
        art("tck-artifact-file-url"),
        json!({"url": "https://example.com/output.txt", "filename": "output.txt", "mediaType": "text/plain"})
    );
    assert_eq!(art("tck-artifact-data"), json!({"data": {"key": "value", "count": 42}}));

    // Input required, again on a follow-up of the same kind, then completed by the next.
    let asked = send(url, message("tck-input-required-a5"));
    assert_eq!(asked["task"]["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{asked}");
    let id = asked["task"]["id"].as_str().unwrap().to_string();
    for (prefix, state) in
        [("tck-input-required-a6", "TASK_STATE_INPUT_REQUIRED"), ("tck-complete-task-a7", "TASK_STATE_COMPLETED")]
    {
        let mut follow = message(prefix);
        follow["taskId"] = json!(id);
        let r = send(url, follow);
        assert_eq!(
            (r["task"]["id"].as_str(), r["task"]["status"]["state"].as_str()),
            (Some(id.as_str()), Some(state)),
            "{r}"
        );
    }
    let (_, got) = call("GET", &format!("{base}/tasks/{id}"), &[V1], None);
    let users: Vec<&str> = got["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "ROLE_USER")
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["tck-input-required-a5", "tck-input-required-a6", "tck-complete-task-a7"], "{got}");

    // Rejected; an unknown prefix completes, saying so.
    assert_eq!(send(url, message("tck-reject-task-a8"))["task"]["status"]["state"], "TASK_STATE_REJECTED");
    let other = send(url, message("tck-something-else"));
    assert_eq!(
        other["task"]["status"]["message"]["parts"][0]["text"], "Unhandled messageId prefix: tck-something-else",
        "{other}"
    );
}

#[test]
fn the_tck_agent_streams_chunks_and_direct_answers() {
    let home = TestHome::new();
    let agent = spawn_agent("ratchet-tck-agent", home.path(), &[]);
    let url = agent.url.clone();
    let stream = |msg: Value| -> Vec<Value> {
        rt().block_on(async {
            let resp = reqwest::Client::new()
                .post(&url)
                .bearer_auth(TEST_TOKEN)
                .header("A2A-Version", "1.0")
                .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "SendStreamingMessage", "params": {"message": msg}}))
                .send()
                .await
                .unwrap();
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
            let mut body = String::new();
            let mut chunks = resp.bytes_stream();
            while let Some(c) = chunks.next().await {
                body.push_str(&String::from_utf8_lossy(&c.unwrap()));
            }
            body.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str::<Value>(d).unwrap()["result"].clone())
                .collect()
        })
    };
    // A direct answer is the stream's one event, and the stream ends.
    let events = stream(message("tck-message-response-b1"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["message"]["parts"][0]["text"], "Direct message response");
    // A chunked artifact: the first piece, then one appended and marked last; then completed.
    let events = stream(message("tck-stream-artifact-chunked-b2"));
    let chunks: Vec<(&Value, &Value, &Value)> = events
        .iter()
        .filter_map(|e| e.get("artifactUpdate"))
        .map(|a| (&a["artifact"]["parts"][0]["text"], &a["append"], &a["lastChunk"]))
        .collect();
    assert_eq!(
        chunks,
        [(&json!("chunk-1 "), &Value::Null, &Value::Null), (&json!("chunk-2"), &json!(true), &json!(true))],
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED", "{events:?}");
    let id = last["statusUpdate"]["taskId"].as_str().unwrap();
    let (_, task) = call("GET", &format!("{}tasks/{id}", agent.url), &[V1], None);
    let parts: Vec<&str> =
        task["artifacts"][0]["parts"].as_array().unwrap().iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert_eq!(parts, ["chunk-1 ", "chunk-2"], "the pieces make one artifact: {task}");
}
