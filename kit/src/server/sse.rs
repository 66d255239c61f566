//! Server-Sent Event streams of a task's events, in the form each binding sends them:
//! 0.3 JSON-RPC (`{"jsonrpc", "id", "result": <event>}`), 1.0 JSON-RPC (`result` a
//! `StreamResponse`) and 1.0 HTTP+JSON (the bare `StreamResponse`, §11.7). Each log event carries
//! its index as the SSE `id`, so a 0.3 client resumes with `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use protocol::a2a_v1 as v1;
use protocol::jsonrpc::{Fault, RequestId};
use protocol::{StreamEvent, Task};
use tokio::sync::watch;

use crate::store::Entry;

/// How events are framed.
#[derive(Debug, Clone)]
pub(crate) enum Wire {
    RpcV03(RequestId),
    RpcV1(RequestId),
    Rest,
}

impl Wire {
    fn data(&self, ev: &StreamEvent) -> String {
        let rpc = |id: &RequestId, result: String| {
            let id = serde_json::to_string(id).expect("request ids serialize");
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
        };
        match self {
            Wire::RpcV03(id) => rpc(id, String::from_utf8(protocol::json::to_vec(ev)).expect("JSON is UTF-8")),
            Wire::RpcV1(id) => rpc(id, serde_json::to_string(&v1::StreamResponse::from(ev)).expect("events serialize")),
            Wire::Rest => serde_json::to_string(&v1::StreamResponse::from(ev)).expect("events serialize"),
        }
    }
}

/// When a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// After the first event that ends the exchange: a terminal or interrupted state (0.3's
    /// `final`), or a message (`message/stream`, `SendStreamingMessage`; 1.0 §3.1.2, §11.7).
    Final,
    /// After a final event that is the task's latest: a replay up to now, then live events
    /// until the exchange ends (0.3 `tasks/resubscribe`).
    CaughtUp,
    /// At a terminal state only: an `input-required` task keeps its subscribers (1.0
    /// `SubscribeToTask`, §3.1.6: "The stream MUST terminate when the task reaches a terminal
    /// state").
    Terminal,
}

fn ends(ev: &StreamEvent, stop: Stop, latest: bool) -> bool {
    match stop {
        Stop::Final => ev.is_final(),
        Stop::CaughtUp => ev.is_final() && latest,
        Stop::Terminal => match ev {
            StreamEvent::Status(s) => s.status.state.is_terminal(),
            StreamEvent::Task(t) => t.status.state.is_terminal(),
            _ => false,
        },
    }
}

/// A stream of `entry`'s events from index `from`, after `first` (a snapshot of the task, when
/// the stream does not start at the task's first event), framed by `wire`, ending per `stop`.
pub(crate) fn stream(entry: Arc<Entry>, first: Option<Task>, from: usize, stop: Stop, wire: Wire) -> Response {
    struct St {
        wire: Wire,
        entry: Arc<Entry>,
        rx: watch::Receiver<u64>,
        first: Option<Task>,
        next: usize,
        pending: std::collections::VecDeque<StreamEvent>,
        stop: Stop,
        done: bool,
    }
    let rx = entry.subscribe();
    let st = St { wire, entry, rx, first, next: from, pending: Default::default(), stop, done: false };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(task) = st.first.take() {
                let ev = StreamEvent::Task(task);
                st.done = ends(&ev, st.stop, true);
                let event = SseEvent::default().data(st.wire.data(&ev));
                return Some((Ok::<_, Infallible>(event), st));
            }
            if let Some(ev) = st.pending.pop_front() {
                let idx = st.next;
                st.next += 1;
                let latest = st.pending.is_empty() && st.entry.snapshot().1 == st.next;
                st.done = ends(&ev, st.stop, latest);
                let event = SseEvent::default().id(idx.to_string()).data(st.wire.data(&ev));
                return Some((Ok(event), st));
            }
            st.rx.borrow_and_update();
            let fresh = st.entry.events_from(st.next);
            if fresh.is_empty() {
                // A task that is over (or, for a replay, waiting on its client) and fully sent.
                let state = st.entry.task_state();
                let over = match st.stop {
                    Stop::Terminal | Stop::Final => state.is_terminal(),
                    Stop::CaughtUp => state.is_interrupted(),
                };
                if over && st.next > 0 {
                    return None;
                }
                if st.rx.changed().await.is_err() {
                    return None;
                }
                continue;
            }
            st.pending.extend(fresh);
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(super::KEEP_ALIVE)).into_response()
}

/// A stream of one event (a direct answer to a streaming send).
pub(crate) fn one(wire: &Wire, ev: &StreamEvent) -> Response {
    let one = futures_util::stream::iter([Ok::<_, Infallible>(SseEvent::default().data(wire.data(ev)))]);
    Sse::new(one).into_response()
}

/// A stream of one JSON-RPC error: how the 0.3 streaming methods answer an error, since their
/// response is an event stream whose items are JSON-RPC responses, success or error (0.3 §7.2,
/// `SendStreamingMessageResponse`).
pub(crate) fn error(id: RequestId, fault: &Fault) -> Response {
    let body = serde_json::to_string(&protocol::jsonrpc::Response::err(id, fault.to_jsonrpc(false)))
        .expect("responses serialize");
    let one = futures_util::stream::iter([Ok::<_, Infallible>(SseEvent::default().data(body))]);
    Sse::new(one).into_response()
}
