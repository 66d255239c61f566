//! The JSON-RPC binding at `POST /`, both generations: the version a request asks for
//! (`A2A-Version`, header or query; none means 0.3, §3.6.2) picks the method set, the params'
//! and results' forms and the error format (1.0 errors carry a `google.rpc.ErrorInfo` in
//! `data`, §9.5). A method of the other generation gets `VersionNotSupportedError`, as the
//! official SDK answers it; a version this agent does not speak too (§3.6.2).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::a2a_v1::{self as v1, Version};
use protocol::jsonrpc::{ErrorCode, Fault, Request, RequestId, Response as RpcResponse};
use protocol::jsonrpc_decode::{Envelope, Params, SendOf, decode_send};
use protocol::{Method as _, Task};
use serde_json::Value;

use super::ops::{self, Sent};
use super::sse::{self, Stop, Wire};
use super::{DeclaredLengthFits, Server, is_json, json_response, requested_version, too_large_message};
use crate::store::ListFilter;

/// An error response; `v1` adds the 1.0 error details.
pub(crate) fn error_response(status: StatusCode, id: RequestId, fault: &Fault, v1: bool) -> Response {
    let body = serde_json::to_vec(&RpcResponse::err(id, fault.to_jsonrpc(v1))).expect("responses serialize");
    json_response(status, body)
}

/// A success response around an already serialized result (no `Value` round trip).
fn ok_response(id: &RequestId, result: &[u8]) -> Response {
    // The envelope around the result is about 40 bytes: room for it, so the closing brace copies nothing.
    let mut body = Vec::with_capacity(result.len() + 64);
    rpc_head(&mut body, id);
    body.extend_from_slice(result);
    body.push(b'}');
    json_response(StatusCode::OK, body)
}

/// The start of a success response, up to its `result` (which the caller writes, then `}`).
fn rpc_head(out: &mut Vec<u8>, id: &RequestId) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    serde_json::to_writer(&mut *out, id).expect("request ids serialize");
    out.extend_from_slice(br#","result":"#);
}

/// A success response whose result `write` writes straight into the body (no copy of the
/// result; the body exactly its size, see [`super::sized`]).
fn rpc_body(id: &RequestId, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    super::sized(|body| {
        rpc_head(body, id);
        write(body);
        body.push(b'}');
    })
}

/// The JSON-RPC endpoint. It takes the request whole and reads what it needs of the head before
/// the body is read, rather than through extractors that would copy the headers and the URI.
pub(crate) async fn rpc(State(s): State<Arc<Server>>, req: axum::extract::Request) -> Response {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = req.into_parts();
    if let Err(refused) = DeclaredLengthFits::from_request_parts(&mut parts, &s).await {
        return refused;
    }
    let version = v1::negotiate(requested_version(&parts.headers, &parts.uri));
    let details = version != Ok(Version::V0_3) || s.spec.v1_only;
    let ctype = (!is_json(&parts.headers)).then(|| {
        parts.headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    });
    let last_event = last_event_id(&parts.headers);
    drop(parts);
    let body = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            let fault = ErrorCode::InvalidRequest.fault(too_large_message(&s));
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, RequestId::Null, &fault, details);
        }
        Err(BodyError::Failed(e)) => {
            // The words axum's `Bytes` extractor, which read it before, gave the same failure.
            let fault = ErrorCode::InvalidRequest
                .fault(format!("could not read the request body: Failed to buffer the request body: {e}"));
            return error_response(StatusCode::BAD_REQUEST, RequestId::Null, &fault, details);
        }
    };
    if let Some(ctype) = ctype {
        let fault = ErrorCode::ContentTypeNotSupported
            .fault(format!("Content-Type {ctype:?} is not supported; send Content-Type: application/json"));
        return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, RequestId::Null, &fault, details);
    }
    // A send (nearly every request) decodes in one pass; anything that pass does not take, the
    // general path decodes, to the same values or the precise error.
    let send_of = match version {
        Ok(Version::V0_3) if !s.spec.v1_only => SendOf::V03,
        Ok(Version::V1_0) => SendOf::V10,
        _ => SendOf::Neither,
    };
    let req = match decode_send(&body, send_of) {
        Some(envelope) => envelope,
        None => match decode_request(&body) {
            Ok(r) => Envelope { jsonrpc: r.jsonrpc, id: r.id, method: r.method, params: Params::Raw(r.params) },
            Err((id, fault)) => return error_response(StatusCode::OK, id, &fault, details),
        },
    };
    let id = req.id.clone();
    let version = match version {
        Ok(v) => v,
        Err(e) => {
            let fault = ErrorCode::VersionNotSupported.fault(e.to_string()).meta("requestedVersion", e.requested);
            return error_response(StatusCode::OK, id, &fault, true);
        }
    };
    if version == Version::V0_3 && s.spec.v1_only {
        let fault = ErrorCode::VersionNotSupported
            .fault(
                "this agent speaks A2A 1.0 only (its card declares no 0.3 interface) and a request without \
                 A2A-Version means 0.3 (§3.6.2); send the header A2A-Version: 1.0",
            )
            .meta("requestedVersion", version.as_str());
        return error_response(StatusCode::OK, id, &fault, true);
    }
    let v1 = version == Version::V1_0;
    let method = req.method.as_ref();
    let result = if protocol::METHODS.contains(&method) {
        if v1 {
            Err(wrong_generation(method, "0.3", version))
        } else {
            v03(&s, method, req.params, id.clone(), last_event).await
        }
    } else if v1::METHODS.contains(&method) {
        if v1 { v10(&s, method, req.params, id.clone()).await } else { Err(wrong_generation(method, "1.0", version)) }
    } else {
        let known = if v1 { v1::METHODS.join(", ") } else { protocol::METHODS.join(", ") };
        Err(ErrorCode::MethodNotFound
            .fault(format!("unknown method {method:?}; this agent speaks A2A {} here: {known}", version.as_str())))
    };
    match result {
        Ok(Reply::Json(v)) => ok_response(&id, &v),
        Ok(Reply::Body(body)) => json_response(StatusCode::OK, body),
        Ok(Reply::Stream(stream)) => stream,
        // 0.3 streaming methods answer errors on the stream too (0.3 §7.2).
        Err(fault) if !v1 && is_stream_method(method) => sse::error(id, &fault),
        Err(fault) => error_response(StatusCode::OK, id, &fault, v1),
    }
}

/// Why a request body could not be read.
enum BodyError {
    /// Over the limit.
    TooLarge,
    /// The body failed (it stopped arriving, the connection broke).
    Failed(axum::Error),
}

/// The request body, whole, if it is at most `limit` bytes: the one chunk it usually comes in
/// as it is (no copy), more chunks gathered. (axum's `Bytes` extractor, used before, wrapped the
/// body in a limit and a box, then gathered its chunks in a list and copied them: 3K
/// instructions of a send, see BENCHMARKS.md.)
async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    use hyper::body::Body as _;
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(BodyError::Failed)?.into_data() else { break };
        let have = first.as_ref().map_or(0, Bytes::len) + more.len();
        if have + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        match &first {
            None if more.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    more.extend_from_slice(&f);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(b) => b,
        None => Bytes::from(more),
    })
}

fn is_stream_method(method: &str) -> bool {
    method == protocol::SendStreamingMessage::METHOD || method == protocol::Resubscribe::METHOD
}

fn wrong_generation(method: &str, its: &str, asked: Version) -> Fault {
    let fix = if its == "1.0" { "send the header A2A-Version: 1.0" } else { "send no A2A-Version header (or 0.3)" };
    ErrorCode::VersionNotSupported
        .fault(format!(
            "{method} is an A2A {its} method but the request asks for A2A {} (no A2A-Version header means 0.3); {fix}",
            asked.as_str()
        ))
        .meta("requestedVersion", asked.as_str())
}

/// Decode a request body into its envelope, or the precise JSON-RPC error for it (-32700 when
/// it is not JSON, -32600 when it is not a request), with the request id when one can be read.
/// A request without an `id` is answered like one with `"id": null` (the official TCK expects
/// the method's errors, not -32600, for it).
pub(crate) fn decode_request(body: &[u8]) -> Result<WireRequest<'_>, (RequestId, Fault)> {
    // Fast path: a well-formed request decodes in one pass, its params kept as raw text that the
    // method decodes straight into its own type (no `Value` tree in between).
    let req: WireRequest<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return Err(classify_bad_request(body)),
    };
    if req.jsonrpc != "2.0" {
        return Err((req.id, ErrorCode::InvalidRequest.fault("jsonrpc must be \"2.0\"")));
    }
    Ok(req)
}

/// A body that is not a valid request: the precise error (-32700 or -32600), with the request id
/// echoed when one can be read.
fn classify_bad_request(body: &[u8]) -> (RequestId, Fault) {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                RequestId::Null,
                ErrorCode::ParseError
                    .fault(format!("the body is not valid JSON ({e}); send one JSON-RPC 2.0 request object")),
            );
        }
    };
    let id = value
        .get("id")
        .and_then(|v| serde_json::from_value::<RequestId>(v.clone()).ok())
        .filter(|id| !matches!(id, RequestId::Null))
        .unwrap_or(RequestId::Null);
    let what = match serde_json::from_value::<Request>(value.clone()) {
        _ if value.is_array() => "batch requests are not supported".to_string(),
        _ if !value.is_object() => "the body is not a JSON object".to_string(),
        Err(e) => e.to_string(),
        Ok(_) => "unreadable request".to_string(),
    };
    (
        id,
        ErrorCode::InvalidRequest.fault(format!(
            "not a JSON-RPC 2.0 request: {what}; send {{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"SendMessage\",\"params\":{{...}}}}"
        )),
    )
}

pub(crate) enum Reply {
    /// The serialized `result`.
    Json(Vec<u8>),
    /// The whole response (its result written straight into it: [`rpc_body`]).
    Body(Vec<u8>),
    Stream(Response),
}

fn null_id() -> RequestId {
    RequestId::Null
}

/// The JSON-RPC envelope as it arrives: params stay raw text until the method is known.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WireRequest<'a> {
    pub(crate) jsonrpc: std::borrow::Cow<'a, str>,
    #[serde(default = "null_id")]
    pub(crate) id: RequestId,
    pub(crate) method: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) params: Option<&'a serde_json::value::RawValue>,
}

fn params<P: serde::de::DeserializeOwned>(
    method: &str,
    version: &str,
    raw: Option<&serde_json::value::RawValue>,
) -> Result<P, Fault> {
    serde_json::from_str(raw.map_or("null", |r| r.get())).map_err(|e| {
        ErrorCode::InvalidParams.fault(format!("invalid params for {method}: {e}; see the A2A {version} specification"))
    })
}

/// The params of 0.3 method `M`.
fn p03<M: protocol::Method>(raw: Option<&serde_json::value::RawValue>) -> Result<M::Params, Fault> {
    params(M::METHOD, "0.3", raw)
}

/// The params of 1.0 method `M` (`{}` when absent: every 1.0 request is an object).
fn p10<M: v1::Method>(raw: Option<&serde_json::value::RawValue>) -> Result<M::Params, Fault> {
    match raw {
        Some(r) => params(M::METHOD, "1.0", Some(r)),
        None => serde_json::from_str("{}").map_err(|e| {
            ErrorCode::InvalidParams
                .fault(format!("invalid params for {}: {e}; see the A2A 1.0 specification", M::METHOD))
        }),
    }
}

fn to_json(v: impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(&v).expect("A2A results serialize")
}

fn last_event_id(headers: &HeaderMap) -> Option<usize> {
    // A header name made once (given as text, it is parsed at each lookup).
    static LAST_EVENT_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("last-event-id");
    headers.get(&LAST_EVENT_ID).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok())
}

/// The 0.3 methods (0.3 §7).
async fn v03(
    s: &Arc<Server>,
    method: &str,
    params: Params<'_>,
    id: RequestId,
    last_event: Option<usize>,
) -> Result<Reply, Fault> {
    use protocol::*;
    // Only a send's params come decoded (see `decode_send`).
    let raw = match &params {
        Params::Raw(r) => *r,
        Params::Send03(_) | Params::Send10(_) => None,
    };
    match method {
        SendMessage::METHOD => {
            let p: MessageSendParams = match params {
                Params::Send03(p) => p,
                _ => p03::<SendMessage>(raw)?,
            };
            let (blocking, history) = p.configuration.as_ref().map_or((None, None), |c| (c.blocking, c.history_length));
            let entry = match ops::send(s, p, false).await? {
                Sent::Task { entry, .. } => entry,
                Sent::Reply(m) => return Ok(Reply::Json(to_json(SendResult::Message(m)))),
            };
            // 0.3: blocking only when asked (`blocking: true`).
            if blocking == Some(true) {
                ops::settle(&entry).await;
            }
            // The common case (no historyLength) serializes the task in place, without a copy,
            // straight into the response.
            Ok(match history {
                None => Reply::Body(rpc_body(&id, |out| entry.write_task_json(out))),
                Some(n) => Reply::Json(json::to_vec(&ops::trim_history(entry.task(), Some(n)))),
            })
        }
        SendStreamingMessage::METHOD => {
            let sent = ops::send(s, p03::<SendStreamingMessage>(raw)?, false).await?;
            Ok(Reply::Stream(send_stream(sent, Wire::RpcV03(id))))
        }
        GetTask::METHOD => {
            let q: TaskQueryParams = p03::<GetTask>(raw)?;
            ops::check_history_length(q.history_length)?;
            let entry = ops::lookup(s, &q.id).await?;
            Ok(match q.history_length {
                None => Reply::Body(rpc_body(&id, |out| entry.write_task_json(out))),
                Some(_) => Reply::Json(json::to_vec(&ops::trim_history(entry.task(), q.history_length))),
            })
        }
        CancelTask::METHOD => {
            let q: TaskIdParams = p03::<CancelTask>(raw)?;
            Ok(Reply::Json(json::to_vec(&ops::cancel(s, &q.id).await?)))
        }
        Resubscribe::METHOD => {
            let q: TaskIdParams = p03::<Resubscribe>(raw)?;
            let entry = ops::lookup(s, &q.id).await?;
            // Last-Event-ID: the index of the last event the client saw; replay what follows.
            let from = last_event.map_or(0, |n| n + 1);
            Ok(Reply::Stream(sse::stream(entry, None, from, Stop::CaughtUp, Wire::RpcV03(id))))
        }
        SetPushConfig::METHOD => {
            let q: TaskPushNotificationConfig = p03::<SetPushConfig>(raw)?;
            let cfg = ops::set_push(s, &q.task_id, q.push_notification_config, false).await?;
            Ok(Reply::Json(to_json(TaskPushNotificationConfig { task_id: q.task_id, push_notification_config: cfg })))
        }
        GetPushConfig::METHOD => {
            let q: GetTaskPushNotificationConfigParams = p03::<GetPushConfig>(raw)?;
            let cfg = ops::get_push(s, &q.id, q.push_notification_config_id.as_deref()).await?;
            Ok(Reply::Json(to_json(TaskPushNotificationConfig { task_id: q.id, push_notification_config: cfg })))
        }
        ListPushConfig::METHOD => {
            let q: TaskIdParams = p03::<ListPushConfig>(raw)?;
            let list: Vec<TaskPushNotificationConfig> = ops::list_push(s, &q.id)
                .await?
                .into_iter()
                .map(|c| TaskPushNotificationConfig { task_id: q.id.clone(), push_notification_config: c })
                .collect();
            Ok(Reply::Json(to_json(list)))
        }
        DeletePushConfig::METHOD => {
            let q: DeleteTaskPushNotificationConfigParams = p03::<DeletePushConfig>(raw)?;
            ops::delete_push(s, &q.id, &q.push_notification_config_id).await?;
            Ok(Reply::Json(b"null".to_vec()))
        }
        other => unreachable!("{other} is in protocol::METHODS"),
    }
}

/// The stream of a send: a new task's events from its first, or, for a follow-up, the task as it
/// was taken, then what follows; a direct answer is the stream's one event.
pub(crate) fn send_stream(sent: Sent, wire: Wire) -> Response {
    match sent {
        Sent::Task { entry, resumed: None } => sse::stream(entry, None, 0, Stop::Final, wire),
        Sent::Task { entry, resumed: Some((task, from)) } => sse::stream(entry, Some(task), from, Stop::Final, wire),
        Sent::Reply(m) => sse::one(&wire, &protocol::StreamEvent::Message(m)),
    }
}

/// The 1.0 methods (§9.4), on the same operations.
async fn v10(s: &Arc<Server>, method: &str, params: Params<'_>, id: RequestId) -> Result<Reply, Fault> {
    use v1::*;
    // Only a send's params come decoded (see `decode_send`).
    let raw = match &params {
        Params::Raw(r) => *r,
        Params::Send03(_) | Params::Send10(_) => None,
    };
    match method {
        SendMessage::METHOD => {
            let req: SendMessageRequest = match params {
                Params::Send10(p) => p,
                _ => p10::<SendMessage>(raw)?,
            };
            Ok(Reply::Body(send_v1(s, req, Some(&id)).await?))
        }
        SendStreamingMessage::METHOD => {
            let req: SendMessageRequest = p10::<SendStreamingMessage>(raw)?;
            let sent = ops::send(s, into_v03(req)?, true).await?;
            Ok(Reply::Stream(send_stream(sent, Wire::RpcV1(id))))
        }
        GetTask::METHOD => {
            let q: GetTaskRequest = p10::<GetTask>(raw)?;
            Ok(Reply::Json(to_json(get_v1(s, &q.id, q.history_length).await?)))
        }
        ListTasks::METHOD => {
            let q: ListTasksRequest = p10::<ListTasks>(raw)?;
            Ok(Reply::Json(to_json(list_v1(s, q).await?)))
        }
        CancelTask::METHOD => {
            let q: CancelTaskRequest = p10::<CancelTask>(raw)?;
            Ok(Reply::Json(to_json(v1::Task::from(&ops::cancel(s, &q.id).await?))))
        }
        SubscribeToTask::METHOD => {
            let q: SubscribeToTaskRequest = p10::<SubscribeToTask>(raw)?;
            Ok(Reply::Stream(subscribe_v1(s, &q.id, Wire::RpcV1(id)).await?))
        }
        CreatePushConfig::METHOD => {
            let q: v1::TaskPushNotificationConfig = p10::<CreatePushConfig>(raw)?;
            Ok(Reply::Json(to_json(create_push_v1(s, q).await?)))
        }
        GetPushConfig::METHOD => {
            let q: GetTaskPushNotificationConfigRequest = p10::<GetPushConfig>(raw)?;
            let cfg = ops::get_push(s, &q.task_id, Some(&q.id)).await?;
            Ok(Reply::Json(to_json(v1::TaskPushNotificationConfig::from_v03(&q.task_id, &cfg))))
        }
        ListPushConfigs::METHOD => {
            let q: ListTaskPushNotificationConfigsRequest = p10::<ListPushConfigs>(raw)?;
            Ok(Reply::Json(to_json(list_push_v1(s, &q.task_id).await?)))
        }
        DeletePushConfig::METHOD => {
            let q: DeleteTaskPushNotificationConfigRequest = p10::<DeletePushConfig>(raw)?;
            ops::delete_push(s, &q.task_id, &q.id).await?;
            Ok(Reply::Json(to_json(Empty {})))
        }
        GetExtendedAgentCard::METHOD => Err(ops::extended_card()),
        other => unreachable!("{other} is in a2a_v1::METHODS"),
    }
}

// -- 1.0 operations shared by the JSON-RPC and HTTP+JSON bindings --------------------------------

pub(crate) fn into_v03(req: v1::SendMessageRequest) -> Result<protocol::MessageSendParams, Fault> {
    req.into_v03().map_err(|e| ErrorCode::InvalidParams.fault(e.to_string()))
}

/// `SendMessage`: send, wait unless `returnImmediately` (§3.2.2); the serialized
/// `SendMessageResponse`: the task (with the history length asked for), or a direct answer;
/// with `rpc_id`, the whole JSON-RPC response around it (written straight into it).
pub(crate) async fn send_v1(
    s: &Arc<Server>,
    req: v1::SendMessageRequest,
    rpc_id: Option<&RequestId>,
) -> Result<Vec<u8>, Fault> {
    let history = req.configuration.as_ref().and_then(|c| c.history_length);
    let blocking = !req.configuration.as_ref().is_some_and(|c| c.return_immediately);
    let write = |answer: &dyn Fn(&mut Vec<u8>)| match rpc_id {
        Some(id) => rpc_body(id, answer),
        None => super::sized(answer),
    };
    let entry = match ops::send(s, into_v03(req)?, true).await? {
        Sent::Task { entry, .. } => entry,
        Sent::Reply(m) => {
            let answer = v1::SendMessageResponse::Message(v1::Message::from(&m));
            return Ok(write(&|out| serde_json::to_writer(out, &answer).expect("A2A results serialize")));
        }
    };
    if blocking {
        ops::settle(&entry).await;
    }
    // The common case (no historyLength) serializes the task's 1.0 form straight from it,
    // without a copy or a converted one (the same JSON as `SendMessageResponse::Task`).
    Ok(match history {
        None => write(&|out| entry.send_response_v1(out)),
        Some(_) => {
            let answer = v1::SendMessageResponse::Task(task_v1(entry.task(), history));
            write(&|out| serde_json::to_writer(out, &answer).expect("A2A results serialize"))
        }
    })
}

pub(crate) fn task_v1(task: Task, history: Option<i64>) -> v1::Task {
    match history {
        None => v1::Task::from(&task),
        Some(_) => v1::Task::from(&ops::trim_history(task, history)),
    }
}

pub(crate) async fn get_v1(s: &Server, id: &str, history: Option<i64>) -> Result<v1::Task, Fault> {
    ops::check_history_length(history)?;
    let entry = ops::lookup(s, id).await?;
    Ok(task_v1(entry.task(), history))
}

/// `ListTasks` (§3.1.4): filtered, most recently updated first, a page at a time; artifacts only
/// with `includeArtifacts`.
pub(crate) async fn list_v1(s: &Server, q: v1::ListTasksRequest) -> Result<v1::ListTasksResponse, Fault> {
    let page_size = q.page_size.unwrap_or(v1::LIST_PAGE_DEFAULT);
    if !(1..=v1::LIST_PAGE_MAX).contains(&page_size) {
        return Err(ErrorCode::InvalidParams
            .fault(format!("pageSize must be between 1 and {} inclusive, got {page_size}", v1::LIST_PAGE_MAX)));
    }
    ops::check_history_length(q.history_length)?;
    let updated_since = match q.status_timestamp_after.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|e| {
            ErrorCode::InvalidParams.fault(format!(
                "statusTimestampAfter {t:?} is not an ISO 8601 UTC timestamp ({e}); e.g. 2026-01-01T00:00:00Z"
            ))
        })?),
    };
    let filter = ListFilter {
        context: q.context_id.filter(|c| !c.is_empty()),
        state: q.status.filter(|st| *st != v1::TaskState::Unspecified).map(Into::into),
        updated_since,
        after: q.page_token.filter(|t| !t.is_empty()),
        limit: page_size as usize,
    };
    let page = ops::list(s, &filter).await?;
    let mut tasks = Vec::with_capacity(page.tasks.len());
    for listed in &page.tasks {
        // A task that left the log between the listing and its read is skipped.
        let Ok(entry) = ops::lookup(s, &listed.id).await else { continue };
        let mut t = task_v1(entry.task(), q.history_length);
        if q.include_artifacts != Some(true) {
            t.artifacts = None;
        } else if t.artifacts.is_none() {
            t.artifacts = Some(vec![]);
        }
        tasks.push(t);
    }
    Ok(v1::ListTasksResponse {
        tasks,
        next_page_token: page.next.unwrap_or_default(),
        page_size,
        total_size: page.total as i64,
    })
}

/// `SubscribeToTask` (§3.1.6): the task as it is first, then its events until it is terminal;
/// a terminal task is refused with `UnsupportedOperationError`.
pub(crate) async fn subscribe_v1(s: &Server, id: &str, wire: Wire) -> Result<Response, Fault> {
    let entry = ops::lookup(s, id).await?;
    let (task, from) = entry.snapshot();
    if task.status.state.is_terminal() {
        return Err(ErrorCode::UnsupportedOperation
            .fault(format!(
                "task {id:?} is already in a terminal state: there is nothing to subscribe to; read it with GetTask"
            ))
            .meta("taskId", id));
    }
    Ok(sse::stream(entry, Some(task), from, Stop::Terminal, wire))
}

pub(crate) async fn create_push_v1(
    s: &Arc<Server>,
    q: v1::TaskPushNotificationConfig,
) -> Result<v1::TaskPushNotificationConfig, Fault> {
    let Some(task_id) = q.task_id.clone().filter(|t| !t.is_empty()) else {
        return Err(ErrorCode::InvalidParams.fault("taskId is required: the task the config is for"));
    };
    let cfg = ops::set_push(s, &task_id, q.into_v03(), true).await?;
    Ok(v1::TaskPushNotificationConfig::from_v03(&task_id, &cfg))
}

pub(crate) async fn list_push_v1(
    s: &Server,
    task_id: &str,
) -> Result<v1::ListTaskPushNotificationConfigsResponse, Fault> {
    let configs = ops::list_push(s, task_id).await?;
    Ok(v1::ListTaskPushNotificationConfigsResponse {
        configs: configs.iter().map(|c| v1::TaskPushNotificationConfig::from_v03(task_id, c)).collect(),
        next_page_token: String::new(),
    })
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json(v) | Reply::Body(v) => json_response(StatusCode::OK, v),
            Reply::Stream(r) => r,
        }
    }
}
