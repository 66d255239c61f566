//! Property-based tests of what the kit reads from others: the JSON-RPC request decoder (and the
//! whole HTTP handler around it), and the task, lease and result files of the substrate.
//! Arbitrary bytes and structured mutations of valid inputs never panic, valid inputs
//! round-trip, and invalid ones get an error that names the problem.
//!
//! Cases per property: 64 by default (seconds in `tests/run`); `PROPTEST_CASES=5000 cargo test
//! -p ratchet-kit proptests` runs longer.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request as HttpRequest;
use proptest::prelude::*;
use protocol::events::EventKind;
use protocol::jsonrpc::RequestId;
use protocol::lease::{Outcome, TaskFile, TaskFileState};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::server::{AgentSpec, Server, app, decode_request};
use crate::substrate::{self, BranchDir, Home, SubstrateError};

/// 64 cases unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

/// JSON values without floats (whose text form need not survive a round trip).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![any::<i64>().prop_map(RequestId::Num), "\\PC{0,20}".prop_map(RequestId::Str)]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![proptest::sample::select(protocol::METHODS).prop_map(String::from), "\\PC{0,20}"]
}

/// A change to a valid request, and the error code it must get.
#[derive(Debug, Clone)]
enum Broken {
    Drop(&'static str),
    Version(String),
    Id(Value),
    Method(Value),
    Batch,
    Truncate(usize),
}

fn broken() -> impl Strategy<Value = Broken> {
    prop_oneof![
        prop_oneof![Just("jsonrpc"), Just("method")].prop_map(Broken::Drop),
        "\\PC{0,5}".prop_filter("not 2.0", |v| v != "2.0").prop_map(Broken::Version),
        prop_oneof![Just(json!(true)), Just(json!([1])), Just(json!({"a": 1})), Just(json!(1.5))].prop_map(Broken::Id),
        prop_oneof![Just(Value::Null), Just(json!(5)), Just(json!(["message/send"])), Just(json!({}))]
            .prop_map(Broken::Method),
        Just(Broken::Batch),
        any::<usize>().prop_map(Broken::Truncate),
    ]
}

fn expect_error(body: &[u8]) -> (RequestId, protocol::jsonrpc::ErrorObject) {
    match decode_request(body) {
        Ok(r) => panic!("accepted {:?} as {r:?}", String::from_utf8_lossy(body)),
        Err((id, f)) => (id, f.to_jsonrpc(false)),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_body_decodes_or_gets_a_parse_or_invalid_request_error(bytes in proptest::collection::vec(any::<u8>(), 0..300), text in "\\PC{0,200}") {
        for body in [bytes.as_slice(), text.as_bytes()] {
            if let Err((id, e)) = decode_request(body).map_err(|(id, f)| (id, f.to_jsonrpc(false))) {
                prop_assert!(e.code == -32700 || e.code == -32600, "{e:?}");
                prop_assert!(e.message.contains("send") || e.message.contains("required") || e.message.contains("jsonrpc"), "{}", e.message);
                if e.code == -32700 {
                    prop_assert_eq!(id, RequestId::Null);
                }
            }
        }
    }

    #[test]
    fn valid_requests_round_trip(id in request_id(), method in method(), params in proptest::option::of(json_value())) {
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = &params {
            req["params"] = p.clone();
        }
        let body = serde_json::to_vec(&req).expect("json");
        let got = decode_request(&body).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&got.jsonrpc, "2.0");
        prop_assert_eq!(&got.id, &id);
        prop_assert_eq!(&got.method, &method);
        // `"params": null` is no params.
        prop_assert_eq!(got.params.map(|r| r.get().to_string()), params.filter(|p| !p.is_null()).map(|p| p.to_string()));
    }

    #[test]
    fn broken_requests_get_the_error_they_deserve(id in request_id(), method in method(), params in json_value(), b in broken()) {
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let body = match &b {
            Broken::Drop(k) => { req.as_object_mut().expect("object").remove(*k); serde_json::to_vec(&req) }
            Broken::Version(v) => { req["jsonrpc"] = json!(v); serde_json::to_vec(&req) }
            Broken::Id(v) => { req["id"] = v.clone(); serde_json::to_vec(&req) }
            Broken::Method(v) => { req["method"] = v.clone(); serde_json::to_vec(&req) }
            Broken::Batch => serde_json::to_vec(&json!([req])),
            Broken::Truncate(at) => {
                let full = serde_json::to_vec(&req).expect("json");
                Ok(full[..at % full.len()].to_vec())
            }
        }.expect("json");
        let (got_id, e) = expect_error(&body);
        let want = if matches!(b, Broken::Truncate(_)) { -32700 } else { -32600 };
        prop_assert_eq!(e.code, want, "{:?}", e);
        // The id is echoed whenever the request still carries a readable one.
        let readable = matches!(b, Broken::Version(_) | Broken::Method(_) | Broken::Drop(_));
        if readable {
            prop_assert_eq!(got_id, id);
        } else {
            prop_assert!(got_id == RequestId::Null || got_id == id, "{:?}", got_id);
        }
    }

    #[test]
    fn a_request_without_an_id_is_answered_with_a_null_id(method in method(), params in json_value()) {
        // The official A2A TCK (0.3.x) sends requests without an id and expects the method's
        // answer (-32601, -32602, ...), not -32600.
        let body = serde_json::to_vec(&json!({"jsonrpc": "2.0", "method": method, "params": params})).expect("json");
        let got = decode_request(&body).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(got.id, RequestId::Null);
    }
}

// ---------------------------------------------------------------------------------------------
// The whole handler: any body, any content type

fn server() -> (tempfile::TempDir, Arc<Server>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = AgentSpec {
        name: "prop".into(),
        role: "critic".into(),
        description: "property tests".into(),
        skills: vec![],
        push_notifications: false,
        routes: None,
        ..Default::default()
    };
    let server = Server::new(spec, dir.path().to_path_buf(), "http://127.0.0.1:1/".into(), None, 4096).expect("server");
    (dir, server)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_handler_answers_every_body_with_json_rpc(
        bodies in proptest::collection::vec(prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..5000),
            json_value().prop_map(|v| serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": v})).expect("json")),
            json_value().prop_map(|v| serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": v}})).expect("json")),
        ], 1..4),
        ctype in prop_oneof![Just("application/json"), Just("application/json; charset=utf-8"), Just("text/plain"), Just("")],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (_dir, server) = server();
        rt.block_on(async {
            for body in bodies {
                let len = body.len();
                let req = HttpRequest::post("/").header("content-type", ctype).body(Body::from(body)).expect("request");
                let resp = app(server.clone()).oneshot(req).await.expect("infallible");
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
                let v: Value = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(format!("{status}: {e}: {bytes:?}")))?;
                prop_assert_eq!(&v["jsonrpc"], "2.0");
                prop_assert!(v.get("result").is_some() != v.get("error").is_some(), "{}", v);
                match status {
                    200 => {}
                    413 => prop_assert!(len > 4096, "{}", v),
                    415 => prop_assert!(!ctype.starts_with("application/json"), "{}", v),
                    other => prop_assert!(false, "HTTP {other}: {v}"),
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Task, lease and result files

/// A branch directory in a fresh temporary home.
fn branch() -> (tempfile::TempDir, BranchDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join(".git")).expect(".git");
    let home = Home::open(dir.path()).expect("home");
    let bd = home.branch_dir("b").expect("branch dir");
    std::fs::create_dir_all(bd.dir()).expect("branch dir");
    bd.create_control_dirs().expect("control dirs");
    (dir, bd)
}

fn task_file(id: &str, ttl_ms: u64, input: Value, attempt: u32) -> TaskFile {
    serde_json::from_value(json!({
        "version": 1, "id": id, "branch": "b", "role": "executor", "skill": "execute",
        "attempt": attempt, "max_attempts": attempt + 2, "token": 1, "state": "queued",
        "created_at": "2026-01-01T00:00:00.000Z", "ttl_ms": ttl_ms, "input": input,
    }))
    .expect("a valid task file")
}

/// A change to a JSON object: a key removed, or given another value.
#[derive(Debug, Clone)]
enum Edit {
    Remove(usize),
    Set(usize, Value),
    Add(String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), json_value()).prop_map(|(i, v)| Edit::Set(i, v)),
        ("[a-z_]{1,10}", json_value()).prop_map(|(k, v)| Edit::Add(k, v)),
    ]
}

/// Apply `e` to object `v`; returns the key it removed or changed.
fn apply_edit(v: &mut Value, e: &Edit) -> (Option<String>, Option<String>) {
    let obj = v.as_object_mut().expect("an object");
    let keys: Vec<String> = obj.keys().cloned().collect();
    match e {
        Edit::Remove(i) => {
            let k = keys[i % keys.len()].clone();
            obj.remove(&k);
            (Some(k), None)
        }
        Edit::Set(i, val) => {
            let k = keys[i % keys.len()].clone();
            obj.insert(k.clone(), val.clone());
            (None, Some(k))
        }
        Edit::Add(k, val) => {
            obj.insert(k.clone(), val.clone());
            (None, None)
        }
    }
}

fn quarantined(events: &[protocol::events::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FileQuarantined { problem, .. } => Some(problem.clone()),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn task_files_round_trip_and_a_bad_one_is_refused_naming_file_and_problem(
        ttl in 1u64..10_000_000, attempt in 1u32..10, input in json_value(),
        garbage in proptest::collection::vec(any::<u8>(), 0..300), e in edit(),
    ) {
        let (_dir, bd) = branch();
        let t = task_file("t", ttl, input, attempt);
        substrate::write_task(&bd, &t).expect("write");
        prop_assert_eq!(substrate::read_task(&bd, "t").expect("read"), t.clone());

        // Garbage: refused with the path and what it is; listing skips it; the reaper moves it aside.
        std::fs::write(bd.task_path("g").expect("path"), &garbage).expect("write");
        match substrate::read_task(&bd, "g") {
            Err(err @ SubstrateError::Corrupt { .. }) => {
                let msg = err.to_string();
                prop_assert!(msg.contains("tasks/g.json") && msg.contains("task file"), "{}", msg);
            }
            other => prop_assert!(false, "garbage read as {:?}", other),
        }
        prop_assert_eq!(substrate::list_tasks(&bd).expect("list"), vec![t.clone()]);
        let events = substrate::reap(&bd, "host").expect("reap");
        prop_assert_eq!(quarantined(&events).len(), 1, "{:?}", events);
        prop_assert!(!bd.task_path("g").expect("path").exists());

        // A valid task file changed by one edit: read as before, or refused naming the problem.
        let mut v = serde_json::to_value(&t).expect("json");
        let (removed, changed) = apply_edit(&mut v, &e);
        std::fs::write(bd.task_path("m").expect("path"), serde_json::to_vec(&v).expect("json")).expect("write");
        match substrate::read_task(&bd, "m") {
            Ok(_) => {
                if let Some(k) = removed {
                    prop_assert!(["input", "governance", "history"].contains(&k.as_str()), "read without `{}`", k);
                }
            }
            Err(err) => {
                let msg = err.to_string();
                prop_assert!(msg.contains("tasks/m.json"), "{}", msg);
                // The field is named, whatever serde's own message says.
                let k = removed.clone().or(changed).expect("an added key is ignored");
                let named = if removed.is_some() { format!("missing field `{k}`") } else { format!("field `{k}") };
                prop_assert!(msg.contains(&named), "{}", msg);
            }
        }
    }

    #[test]
    fn a_fresh_unreadable_lease_is_never_taken_for_a_holder_nor_expired(garbage in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (_dir, bd) = branch();
        substrate::queue_task(&bd, &task_file("t", 600_000, Value::Null, 1)).expect("queue");
        let lease = bd.lease_path("t").expect("path");
        std::fs::write(&lease, &garbage).expect("write");
        // Someone's file is there: nobody else may claim.
        prop_assert!(substrate::try_claim(&bd, "t", "agent").expect("try_claim").is_none());
        // Maybe a claimer mid-claim: the reaper leaves it alone for now.
        let events = substrate::reap(&bd, "host").expect("reap");
        prop_assert!(events.is_empty(), "{:?}", events);
        prop_assert!(lease.exists());
        prop_assert_eq!(substrate::read_task(&bd, "t").expect("read").token, 1);
    }

    #[test]
    fn leases_and_results_round_trip_and_a_bad_result_is_quarantined(
        garbage in proptest::collection::vec(any::<u8>(), 0..300), e in edit(), summary in "\\PC{0,40}", data in json_value(),
        lease_edit in edit(),
    ) {
        let (_dir, bd) = branch();
        substrate::queue_task(&bd, &task_file("t", 600_000, Value::Null, 1)).expect("queue");
        let lease = substrate::try_claim(&bd, "t", "agent").expect("claim").expect("claimable");
        // The lease the claimer wrote reads back as what it is.
        let text = std::fs::read(bd.lease_path("t").expect("path")).expect("lease");
        let record: protocol::lease::LeaseFile = serde_json::from_slice(&text).expect("a lease file");
        prop_assert_eq!((record.task_id.as_str(), record.token, record.agent_id.as_str()), ("t", 1, "agent"));

        // A held lease whose record was changed: the reaper never panics, and the task stays valid.
        let mut v: Value = serde_json::from_slice(&text).expect("json");
        let _ = apply_edit(&mut v, &lease_edit);
        std::fs::write(bd.lease_path("t").expect("path"), serde_json::to_vec(&v).expect("json")).expect("write");
        substrate::reap(&bd, "host").expect("reap");
        let token = substrate::read_task(&bd, "t").expect("read").token;
        prop_assert!(token == 1 || token == 2, "token {}", token);
        std::fs::write(bd.lease_path("t").expect("path"), &text).expect("restore");

        // Garbage where the holder's result goes: quarantined, with the problem; the task waits.
        let result = bd.result_path("t", 1).expect("path");
        std::fs::write(&result, &garbage).expect("write");
        let events = substrate::reap(&bd, "host").expect("reap");
        if token == 1 {
            let problems = quarantined(&events);
            prop_assert_eq!(problems.len(), 1, "{:?}", events);
            prop_assert!(problems[0].contains("result file") && problems[0].contains("t.1.json"), "{}", problems[0]);
            prop_assert!(!result.exists());
            prop_assert_eq!(substrate::read_task(&bd, "t").expect("read").state, TaskFileState::Queued);
        }

        // A valid result, as the holder writes it: accepted, and kept as written.
        substrate::queue_task(&bd, &task_file("v", 600_000, Value::Null, 1)).expect("queue");
        let held = substrate::try_claim(&bd, "v", "agent").expect("claim").expect("claimable");
        let path = held.finish(Outcome::Success, &summary, data.clone()).expect("finish");
        let written = std::fs::read(&path).expect("result");
        substrate::reap(&bd, "host").expect("reap");
        prop_assert_eq!(substrate::read_task(&bd, "v").expect("read").state, TaskFileState::Done);
        let kept = std::fs::read(bd.results_dir().join("accepted").join("v.1.json")).expect("accepted result");
        prop_assert_eq!(&kept, &written);
        let r: protocol::lease::ResultFile = serde_json::from_slice(&kept).expect("a result file");
        prop_assert_eq!((r.summary.as_str(), &r.data), (summary.as_str(), &data));
        drop(lease);

        // A result changed by one edit: accepted, refused or quarantined (naming a removed
        // field), never a panic.
        substrate::queue_task(&bd, &task_file("u", 600_000, Value::Null, 1)).expect("queue");
        let held = substrate::try_claim(&bd, "u", "agent").expect("claim").expect("claimable");
        let path = held.finish(Outcome::Success, &summary, data).expect("finish");
        let mut v: Value = serde_json::from_slice(&std::fs::read(&path).expect("result")).expect("json");
        let (removed, changed) = apply_edit(&mut v, &e);
        std::fs::write(&path, serde_json::to_vec(&v).expect("json")).expect("write");
        let events = substrate::reap(&bd, "host").expect("reap");
        for p in quarantined(&events) {
            if let Some(k) = &removed {
                prop_assert!(p.contains(&format!("missing field `{k}`")), "{}", p);
            }
            if let Some(k) = &changed {
                prop_assert!(p.contains(&format!("field `{k}")) || p.contains("file name says"), "{}", p);
            }
        }
    }
}
