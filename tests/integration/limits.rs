//! Connection limits of every agent's HTTP server, over raw loopback TCP against the real agent
//! binaries: a declared body over the limit is refused before it is read, partial headers and
//! idle keep-alive connections are closed, a client that stops reading is dropped, connections
//! over the cap wait for a free slot; SSE streams stay open through all of it.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures_util::StreamExt;
use ratchet_tests::{TEST_TOKEN, TestHome, rt, spawn_agent};
use serde_json::{Value, json};

/// Long enough never to fire before the server's own limits in these tests.
const READ_DEADLINE: Duration = Duration::from_secs(30);

/// A raw connection to the agent at `url` (`http://127.0.0.1:<port>/`).
pub fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(READ_DEADLINE)).expect("read timeout");
    s
}

/// How a read to the end finished.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing within the deadline: the server kept the connection open.
    StillOpen,
}

/// Read until the server closes the connection or `deadline` passes with nothing new.
pub fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> (Vec<u8>, End) {
    s.set_read_timeout(Some(deadline)).expect("read timeout");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, End::Closed),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (out, End::StillOpen),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, End::Closed),
            Err(e) => panic!("reading: {e}"),
        }
    }
}

/// One HTTP/1.1 response (head and a body with Content-Length) from `s`.
pub fn read_response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    read_response_unless_closed(s).expect("a response, not a connection closed before its first byte")
}

/// [`read_response`], or `None` when the server closed the connection before the response's
/// first byte: what a keep-alive connection left idle longer than the header timeout meets.
pub fn read_response_unless_closed(s: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            Ok(0) if raw.is_empty() => return None,
            Err(e) if raw.is_empty() && e.kind() == ErrorKind::ConnectionReset => return None,
            other => panic!("the response head ended early ({other:?}): {:?}", String::from_utf8_lossy(&raw)),
        }
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("the response body");
    Some((status, body))
}

pub fn card_request() -> &'static [u8] {
    b"GET /.well-known/agent-card.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
}

/// The head of a JSON-RPC POST (with the test token) declaring a body of `len` bytes.
pub fn rpc_head(len: u64) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEST_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

/// A JSON-RPC POST as raw bytes.
pub fn rpc_request(body: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(body).expect("json");
    let mut req = rpc_head(body.len() as u64);
    req.extend_from_slice(&body);
    req
}

/// A declared body of ~93 GiB is answered 413 at once (the body timeout is a minute here, so
/// only a check of Content-Length before reading can answer before the read deadline), with the
/// JSON-RPC error naming the limit; the agent serves on.
#[test]
fn a_huge_declared_body_is_refused_before_it_is_read() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[("RATCHET_HEADER_TIMEOUT_MS", "60000")]);
    let mut s = connect(&agent.url);
    let mut head = rpc_head(99_999_999_999);
    head.extend_from_slice(b"{\"jsonrpc\"");
    s.write_all(&head).expect("write");
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("a JSON-RPC error");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("1048576 byte limit") && msg.contains("RATCHET_MAX_BODY"), "{v}");
    let mut c = connect(&agent.url);
    c.write_all(card_request()).expect("write");
    assert_eq!(read_response(&mut c).0, 200);
}

/// A body without a declared length (chunked) is cut at the limit as it is read: one over it is
/// answered 413 with the error naming the limit; one under it, in several chunks, is served.
#[test]
fn a_chunked_body_over_the_limit_is_refused_as_it_is_read() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[("RATCHET_MAX_BODY", "4096")]);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEST_TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunk = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    // Two chunks of 3000 bytes: the second takes it over 4096.
    let mut s = connect(&agent.url);
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(&chunk(&[b' '; 3000])).expect("write");
    s.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(100));
    let _ = s.write_all(&chunk(&[b' '; 3000]));
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("a JSON-RPC error");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("4096 byte limit") && msg.contains("RATCHET_MAX_BODY"), "{v}");
    // A send in three chunks, a pause between them, under the limit: served.
    let send = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message":
        {"kind": "message", "role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "status"}]}}}))
    .expect("json");
    let mut s = connect(&agent.url);
    s.write_all(head.as_bytes()).expect("write");
    for piece in send.chunks(send.len() / 3 + 1) {
        s.write_all(&chunk(piece)).expect("write");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.write_all(b"0\r\n\r\n").expect("write");
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("a JSON-RPC answer");
    assert_eq!(v["result"]["status"]["state"], "completed", "{v}");
}

/// A body that stops arriving is answered with an error once the body timeout (1 s here) passes
/// with nothing new, rather than holding the request (and its connection slot) for ever; a
/// body that arrives in pieces, each in time, is served.
#[test]
fn a_body_that_stops_arriving_is_refused_after_the_body_timeout() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[("RATCHET_HEADER_TIMEOUT_MS", "1000")]);
    let send = rpc_request(&json!({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message":
        {"kind": "message", "role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "status"}]}}}));
    let head_len = send.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    // The head and part of the body, then silence.
    let mut s = connect(&agent.url);
    s.write_all(&send[..head_len + 10]).expect("write");
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("a JSON-RPC error");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("RATCHET_HEADER_TIMEOUT_MS"), "{v}");
    // In pieces, each well within the timeout: served.
    let mut s = connect(&agent.url);
    s.write_all(&send[..head_len + 10]).expect("write");
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(&send[head_len + 10..]).expect("write");
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).expect("a JSON-RPC answer");
    assert_eq!(v["result"]["status"]["state"], "completed", "{v}");
}

/// Partial headers, a connection that sends nothing, and an idle keep-alive connection are all
/// closed by the server after the header timeout (1 s here); an SSE stream that is quiet for
/// longer than that (and than the write stall limit) stays open and delivers its final event.
#[test]
fn slow_headers_and_idle_connections_are_closed_but_quiet_streams_are_not() {
    let home = TestHome::new();
    let scratch = tempfile::tempdir().expect("temp dir");
    let started = scratch.path().join("started");
    super::wire::queue_execute(&home, &format!("touch {}; sleep 60", started.display()));
    let agent = spawn_agent(
        "executor",
        home.path(),
        &[("RATCHET_WATCH", "0"), ("RATCHET_HEADER_TIMEOUT_MS", "1000"), ("RATCHET_WRITE_STALL_MS", "1000")],
    );
    let mut slow = connect(&agent.url);
    slow.write_all(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty").expect("write");
    let mut silent = connect(&agent.url);
    let mut idle = connect(&agent.url);
    idle.write_all(card_request()).expect("write");
    assert_eq!(read_response(&mut idle).0, 200);

    rt().block_on(async {
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": "message/stream",
                         "params": {"message": super::wire::execute_message()}});
        let resp = reqwest::Client::new()
            .post(&agent.url)
            .bearer_auth(TEST_TOKEN)
            .json(&req)
            .send()
            .await
            .expect("stream starts");
        assert_eq!(resp.status(), 200);
        let mut events = Box::pin(resp.bytes_stream());
        // The task id, from the stream's first event (the task).
        let mut first = String::new();
        while !first.contains("\n\n") {
            let chunk = events.next().await.expect("a first event").expect("stream bytes");
            first.push_str(&String::from_utf8_lossy(&chunk));
        }
        let data = first.lines().find_map(|l| l.strip_prefix("data:")).expect("a data line");
        let v: Value = serde_json::from_str(data.trim()).expect("event json");
        let id = v["result"]["id"].as_str().expect("the task's id").to_string();
        ratchet_tests::wait_for("the gate to start", Duration::from_secs(30), || started.exists().then_some(()));

        for (name, conn) in [("partial headers", &mut slow), ("silent", &mut silent), ("idle keep-alive", &mut idle)] {
            let (_, end) = read_until_closed(conn, READ_DEADLINE);
            assert_eq!(end, End::Closed, "the {name} connection was closed by the server");
        }
        // By now the stream has been quiet for over 1 s (the header and write stall limits);
        // 1.5 s more, then the task ends and the stream must deliver that.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let cancel = json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/cancel", "params": {"id": id}});
        let mut c = connect(&agent.url);
        c.write_all(&rpc_request(&cancel)).expect("write");
        assert_eq!(read_response(&mut c).0, 200);
        let mut rest = String::new();
        while let Some(chunk) = events.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk.expect("the stream is not cut")));
        }
        assert!(
            rest.contains("\"canceled\"") && rest.contains("\"final\":true"),
            "the stream ended with its final event: {rest}"
        );
    });
}

/// A client that pipelines requests for a large task and never reads the answers: once the
/// socket buffers are full, the server's writes stall, and after the stall limit (1 s here) the
/// connection is closed instead of being held (with the task) for ever.
#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let home = TestHome::new();
    let agent = spawn_agent("critic", home.path(), &[("RATCHET_WRITE_STALL_MS", "1000")]);
    let text = "z".repeat(900_000);
    let send = json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
                      "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}],
                                             "messageId": "m", "kind": "message"},
                                 "configuration": {"blocking": true}}});
    let mut c = connect(&agent.url);
    c.write_all(&rpc_request(&send)).expect("write");
    let (status, body) = read_response(&mut c);
    assert_eq!(status, 200);
    let id = serde_json::from_slice::<Value>(&body).expect("json")["result"]["id"].as_str().expect("id").to_string();

    const ASKED: usize = 64; // ~58 MB of answers: far more than loopback socket buffers hold
    let get = rpc_request(&json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": id}}));
    let mut s = connect(&agent.url);
    for _ in 0..ASKED {
        s.write_all(&get).expect("write");
    }
    std::thread::sleep(Duration::from_secs(4)); // not reading: the server's writes stall
    let (got, end) = read_until_closed(&mut s, READ_DEADLINE);
    assert_eq!(end, End::Closed);
    assert!(got.len() < ASKED * text.len(), "{} bytes: the server stopped before answering all {ASKED}", got.len());
    c.write_all(card_request()).expect("write");
    assert_eq!(read_response(&mut c).0, 200, "the agent serves on");
}

/// With a cap of 2 connections, a third waits until one of the first two is closed (by the
/// header timeout), then is served.
#[test]
fn connections_over_the_cap_wait_for_a_free_slot() {
    let home = TestHome::new();
    let agent =
        spawn_agent("critic", home.path(), &[("RATCHET_MAX_CONNECTIONS", "2"), ("RATCHET_HEADER_TIMEOUT_MS", "1500")]);
    // The agent has no connection open now (spawn_agent only read its stdout).
    let mut first = connect(&agent.url);
    let mut second = connect(&agent.url);
    let mut third = connect(&agent.url);
    third.write_all(card_request()).expect("write");
    assert_eq!(read_response(&mut third).0, 200);
    // Served only once a slot was free: one of the first two is closed already.
    let closed = [&mut first, &mut second].into_iter().any(|s| {
        s.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(0)) || matches!(s.read(&mut b), Err(e) if e.kind() == ErrorKind::ConnectionReset)
    });
    assert!(closed, "the third connection was served while both slots were taken");
}
