//! The HTTP+JSON (REST) binding of A2A 1.0 (§11), on the same operations as JSON-RPC:
//!
//! | operation | route |
//! | --- | --- |
//! | SendMessage | `POST /message:send` |
//! | SendStreamingMessage | `POST /message:stream` (SSE) |
//! | GetTask | `GET /tasks/{id}?historyLength=` |
//! | ListTasks | `GET /tasks?contextId=&status=&pageSize=&pageToken=&historyLength=&statusTimestampAfter=&includeArtifacts=` |
//! | CancelTask | `POST /tasks/{id}:cancel` |
//! | SubscribeToTask | `POST /tasks/{id}:subscribe` (SSE; `GET` too, as the proto maps it) |
//! | push configs | `POST`/`GET /tasks/{id}/pushNotificationConfigs`, `GET`/`DELETE /tasks/{id}/pushNotificationConfigs/{configId}` |
//! | GetExtendedAgentCard | `GET /extendedAgentCard` |
//!
//! Errors are `google.rpc.Status` bodies with the A2A `ErrorInfo` in `details` and the HTTP
//! status of §5.4 (see [`protocol::jsonrpc::Fault::to_rest`]). This binding is 1.0 only: a
//! request must say `A2A-Version: 1.0` (header or query); without it a request means 0.3
//! (§3.6.2), which this agent speaks over JSON-RPC only, and gets `VersionNotSupportedError`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use protocol::a2a_v1::{self as v1, Version};
use protocol::jsonrpc::{ErrorCode, Fault};
use serde::Deserialize;

use super::jsonrpc::{create_push_v1, get_v1, into_v03, list_push_v1, list_v1, send_stream, send_v1, subscribe_v1};
use super::sse::Wire;
use super::{DeclaredLengthFits, Server, is_json, json_response, ops, requested_version};

pub(crate) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/message:send", post(send))
        .route("/message:stream", post(stream))
        .route("/tasks", get(list))
        .route("/tasks/{id}", get(task_get).post(task_post))
        .route("/tasks/{id}/pushNotificationConfigs", post(push_create).get(push_list))
        .route("/tasks/{id}/pushNotificationConfigs/{config}", get(push_get).delete(push_delete))
        .route("/extendedAgentCard", get(extended_card))
}

/// Whether a path belongs to this binding (for errors in its format before routing).
pub(crate) fn is_rest_path(path: &str) -> bool {
    matches!(path, "/message:send" | "/message:stream" | "/tasks" | "/extendedAgentCard") || path.starts_with("/tasks/")
}

/// A fault in this binding's format: a `google.rpc.Status` body with the HTTP status of §5.4.
struct RestFault(Fault);

impl From<Fault> for RestFault {
    fn from(f: Fault) -> RestFault {
        RestFault(f)
    }
}

impl IntoResponse for RestFault {
    fn into_response(self) -> Response {
        let (status, body) = self.0.to_rest();
        json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            serde_json::to_vec(&body).expect("json"),
        )
    }
}

/// What every handler of this binding returns.
type Reply = Result<Response, RestFault>;

fn ok(v: impl serde::Serialize) -> Reply {
    Ok(json_response(StatusCode::OK, serde_json::to_vec(&v).expect("A2A results serialize")))
}

/// The request speaks 1.0 (an extractor in front of every handler of this binding, before its
/// body is read).
struct V1;

impl FromRequestParts<Arc<Server>> for V1 {
    type Rejection = RestFault;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &Arc<Server>) -> Result<V1, RestFault> {
        match v1::negotiate(requested_version(&parts.headers, &parts.uri)) {
            Ok(Version::V1_0) => Ok(V1),
            Ok(Version::V0_3) => Err(ErrorCode::VersionNotSupported
                .fault(
                    "the HTTP+JSON binding of this agent is A2A 1.0: send the header A2A-Version: 1.0 \
                     (a request without it means 0.3, which this agent speaks over JSON-RPC at POST /)",
                )
                .meta("requestedVersion", "0.3")
                .into()),
            Err(e) => {
                Err(ErrorCode::VersionNotSupported.fault(e.to_string()).meta("requestedVersion", e.requested).into())
            }
        }
    }
}

/// A JSON body of type `T` (a bad or missing one is `InvalidParams`; another media type
/// `ContentTypeNotSupported`; one that could not be read `InvalidRequest`).
fn body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, bytes: Body, what: &str) -> Result<T, Fault> {
    let bytes =
        bytes.map_err(|rej| ErrorCode::InvalidRequest.fault(format!("could not read the request body: {rej}")))?;
    if !is_json(headers) {
        return Err(ErrorCode::ContentTypeNotSupported
            .fault("send the request body as Content-Type: application/json (or application/a2a+json)"));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ErrorCode::InvalidParams
            .fault(format!("the body is not a valid {what}: {e}; see the A2A 1.0 specification §11.4"))
    })
}

/// The query parameters of operation `what`, as `T` (bad ones are `InvalidParams`).
fn query<T: serde::de::DeserializeOwned>(uri: &Uri, what: &str) -> Result<T, Fault> {
    Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ErrorCode::InvalidParams.fault(format!("bad {what} query parameters: {}", e.body_text())))
}

type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

async fn send(State(s): State<Arc<Server>>, _fits: DeclaredLengthFits, _: V1, headers: HeaderMap, b: Body) -> Reply {
    let req: v1::SendMessageRequest = body(&headers, b, "SendMessageRequest")?;
    Ok(json_response(StatusCode::OK, send_v1(&s, req, None).await?))
}

async fn stream(State(s): State<Arc<Server>>, _fits: DeclaredLengthFits, _: V1, headers: HeaderMap, b: Body) -> Reply {
    let req: v1::SendMessageRequest = body(&headers, b, "SendMessageRequest")?;
    let sent = ops::send(&s, into_v03(req)?, true).await?;
    Ok(send_stream(sent, Wire::Rest))
}

async fn list(State(s): State<Arc<Server>>, _: V1, uri: Uri) -> Reply {
    ok(list_v1(&s, query(&uri, "ListTasks")?).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryQuery {
    history_length: Option<i64>,
}

/// `GET /tasks/{id}`, and `GET /tasks/{id}:subscribe`.
async fn task_get(State(s): State<Arc<Server>>, _: V1, Path(id): Path<String>, uri: Uri) -> Reply {
    if let Some(task) = id.strip_suffix(":subscribe") {
        return Ok(subscribe_v1(&s, task, Wire::Rest).await?);
    }
    let q: HistoryQuery = query(&uri, "GetTask")?;
    ok(get_v1(&s, &id, q.history_length).await?)
}

/// `POST /tasks/{id}:cancel`, `POST /tasks/{id}:subscribe`.
async fn task_post(State(s): State<Arc<Server>>, _: V1, Path(path): Path<String>, uri: Uri) -> Reply {
    if let Some(id) = path.strip_suffix(":cancel") {
        return ok(v1::Task::from(&ops::cancel(&s, id).await?));
    }
    if let Some(id) = path.strip_suffix(":subscribe") {
        return Ok(subscribe_v1(&s, id, Wire::Rest).await?);
    }
    Err(not_a_route(&Method::POST, uri.path()).into())
}

fn not_a_route(method: &Method, path: &str) -> Fault {
    ErrorCode::MethodNotFound.fault(format!(
        "{method} {path} is not an A2A 1.0 HTTP+JSON route; use POST /tasks/{{id}}:cancel or POST /tasks/{{id}}:subscribe (§11.3)"
    ))
}

async fn push_create(
    State(s): State<Arc<Server>>,
    Path(task): Path<String>,
    _fits: DeclaredLengthFits,
    _: V1,
    headers: HeaderMap,
    b: Body,
) -> Reply {
    let mut cfg: v1::TaskPushNotificationConfig = body(&headers, b, "TaskPushNotificationConfig")?;
    cfg.task_id = Some(task);
    ok(create_push_v1(&s, cfg).await?)
}

async fn push_list(State(s): State<Arc<Server>>, _: V1, Path(task): Path<String>) -> Reply {
    ok(list_push_v1(&s, &task).await?)
}

async fn push_get(State(s): State<Arc<Server>>, _: V1, Path((task, config)): Path<(String, String)>) -> Reply {
    let cfg = ops::get_push(&s, &task, Some(&config)).await?;
    ok(v1::TaskPushNotificationConfig::from_v03(&task, &cfg))
}

async fn push_delete(State(s): State<Arc<Server>>, _: V1, Path((task, config)): Path<(String, String)>) -> Reply {
    ops::delete_push(&s, &task, &config).await?;
    ok(v1::Empty {})
}

async fn extended_card(_: V1) -> RestFault {
    ops::extended_card().into()
}
