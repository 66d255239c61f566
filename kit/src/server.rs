//! The A2A 0.3 JSON-RPC server every Ratchet agent runs: Agent Card, `message/send`,
//! `message/stream`, `tasks/get`, `tasks/cancel`, `tasks/resubscribe` and push-notification config.
//!
//! An agent is an [`AgentSpec`]: a name, a role and skills, each skill an async function of a
//! [`TaskCtx`]. Everything else (validation, persistence, streaming, errors) is here, once.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use protocol::jsonrpc::{ErrorCode, ErrorObject, Request, RequestId, Response as RpcResponse};
use protocol::{
    AgentCapabilities, AgentCard, AgentExtension, AgentSkill, Artifact, Message, MessageSendParams, Method, Part, Role,
    StreamEvent, Task, TaskState,
};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::store::{Entry, StoreError, TaskStore};

/// Default request body limit (1 MiB); `RATCHET_MAX_BODY` overrides it.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
pub type SkillFn = Arc<dyn Fn(TaskCtx) -> BoxFuture<TaskEnd> + Send + Sync>;

/// How a skill's run ended.
#[derive(Debug, Clone)]
pub enum TaskEnd {
    /// Done: a human-readable summary and optional structured result (sent as a data part).
    Completed { text: String, data: Option<Value> },
    /// The work failed.
    Failed(String),
    /// The agent will not do this work (unknown skill, bad input).
    Rejected(String),
}

impl TaskEnd {
    pub fn done(text: impl Into<String>, data: Value) -> TaskEnd {
        TaskEnd::Completed { text: text.into(), data: Some(data) }
    }
}

/// One skill on the card, and the code that runs it.
#[derive(Clone)]
pub struct Skill {
    pub card: AgentSkill,
    pub run: SkillFn,
}

impl Skill {
    pub fn new<F, Fut>(id: &str, name: &str, description: &str, run: F) -> Skill
    where
        F: Fn(TaskCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskEnd> + Send + 'static,
    {
        Skill {
            card: AgentSkill {
                id: id.into(),
                name: name.into(),
                description: description.into(),
                tags: vec![],
                examples: vec![],
                input_modes: None,
                output_modes: None,
            },
            run: Arc::new(move |ctx| Box::pin(run(ctx))),
        }
    }
}

/// What an agent is: the card's content and its skills.
#[derive(Clone)]
pub struct AgentSpec {
    pub name: String,
    pub role: String,
    pub description: String,
    pub skills: Vec<Skill>,
    pub push_notifications: bool,
    /// Extra HTTP routes beside the A2A ones (the coordinator's web pages).
    pub routes: Option<Router>,
}

/// Everything a running skill can do with its task.
pub struct TaskCtx {
    pub task_id: String,
    pub context_id: String,
    pub skill: String,
    pub message: Message,
    pub server: Arc<Server>,
    entry: Arc<Entry>,
    cancel: watch::Receiver<bool>,
}

impl TaskCtx {
    /// The message's first data part (the skill's structured input), or an empty map.
    pub fn input(&self) -> Map<String, Value> {
        self.message.data().cloned().unwrap_or_default()
    }

    /// A non-final `working` status with a progress note.
    pub fn progress(&self, text: &str) {
        if let Err(e) = self.entry.status(TaskState::Working, Some(agent_text(text)), false) {
            tracing::warn!("task {}: {e}", self.task_id);
        }
    }

    /// Publish an artefact (streamed to subscribers, kept in the task).
    pub fn artifact(&self, name: &str, parts: Vec<Part>) {
        let artifact = Artifact {
            artifact_id: format!("{}-{name}", self.task_id),
            name: Some(name.to_string()),
            description: None,
            parts,
            metadata: None,
        };
        if let Err(e) = self.entry.artifact(artifact) {
            tracing::warn!("task {}: {e}", self.task_id);
        }
    }

    /// Resolves when the task is canceled (or otherwise ended).
    pub async fn canceled(&mut self) {
        while !*self.cancel.borrow_and_update() {
            if self.cancel.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_canceled(&self) -> bool {
        *self.cancel.borrow()
    }
}

/// An agent message with one text part.
pub fn agent_text(text: &str) -> Message {
    Message::new(Role::Agent, new_id(), vec![Part::text(text)])
}

/// A fresh, unguessable-enough id (time, pid, counter, hashed): also a valid file name.
pub fn new_id() -> String {
    use sha2::{Digest, Sha256};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = format!("{nanos}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let d = Sha256::digest(seed.as_bytes());
    d[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// A running agent's shared state.
pub struct Server {
    pub spec: AgentSpec,
    pub store: TaskStore,
    card_json: Bytes,
    etag: String,
    pub url: String,
    token: Option<String>,
    max_body: usize,
    http: reqwest::Client,
    pub started: Instant,
}

impl Server {
    /// `url` is the address clients POST to (the card's `url`); `token`, when set, is required
    /// as `Authorization: Bearer` on every JSON-RPC call and declared in the card.
    pub fn new(
        spec: AgentSpec,
        state_dir: PathBuf,
        url: String,
        token: Option<String>,
        max_body: usize,
    ) -> Result<Arc<Server>, StoreError> {
        let store = TaskStore::open(&state_dir)?;
        let card = build_card(&spec, &url, token.is_some());
        let card_json = Bytes::from(serde_json::to_vec_pretty(&card).expect("cards serialize"));
        let etag = {
            use sha2::{Digest, Sha256};
            let d = Sha256::digest(&card_json);
            format!("\"{}\"", d[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
        };
        Ok(Arc::new(Server {
            spec,
            store,
            card_json,
            etag,
            url,
            token,
            max_body,
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("reqwest client builds"),
            started: Instant::now(),
        }))
    }

    pub fn card(&self) -> AgentCard {
        serde_json::from_slice(&self.card_json).expect("card round-trips")
    }
}

fn build_card(spec: &AgentSpec, url: &str, secured: bool) -> AgentCard {
    let mut skills: Vec<AgentSkill> = spec.skills.iter().map(|s| s.card.clone()).collect();
    for s in &mut skills {
        let tag = format!("ratchet:role:{}", spec.role);
        if !s.tags.contains(&tag) {
            s.tags.push(tag);
        }
    }
    let mut params = Map::new();
    params.insert("role".into(), Value::String(spec.role.clone()));
    let (security_schemes, security) = if secured {
        let mut schemes = Map::new();
        schemes.insert("bearer".into(), serde_json::json!({"type": "http", "scheme": "bearer"}));
        let mut req = Map::new();
        req.insert("bearer".into(), Value::Array(vec![]));
        (Some(schemes), Some(vec![req]))
    } else {
        (None, None)
    };
    AgentCard {
        protocol_version: protocol::PROTOCOL_VERSION.into(),
        name: spec.name.clone(),
        description: spec.description.clone(),
        url: url.to_string(),
        preferred_transport: "JSONRPC".into(),
        additional_interfaces: vec![],
        provider: Some(protocol::AgentProvider {
            organization: "Ratchet".into(),
            url: "https://github.com/ratchet-swarm/ratchet".into(),
        }),
        version: env!("CARGO_PKG_VERSION").into(),
        documentation_url: None,
        capabilities: AgentCapabilities {
            streaming: Some(true),
            push_notifications: Some(spec.push_notifications),
            state_transition_history: Some(true),
            extensions: vec![AgentExtension {
                uri: protocol::RATCHET_ROLE_EXTENSION.into(),
                description: Some("The Ratchet swarm role of this agent".into()),
                required: Some(false),
                params: Some(params),
            }],
        },
        security_schemes,
        security,
        default_input_modes: vec!["text/plain".into(), "application/json".into()],
        default_output_modes: vec!["text/plain".into(), "application/json".into()],
        skills,
        supports_authenticated_extended_card: None,
    }
}

/// The agent's HTTP application. Every route but the Agent Card requires the token (when the
/// agent has one, i.e. always unless it runs in the open mode).
pub fn app(server: Arc<Server>) -> Router {
    let limit = server.max_body;
    let extra = server.spec.routes.clone().unwrap_or_default();
    let guarded = Router::new()
        .route("/", axum::routing::post(rpc))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(server.clone())
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(server.clone(), require_token));
    // The card stays public: a client discovers the required scheme from the card's
    // securitySchemes, then obtains the credential out of band and sends it on every request
    // (A2A specification, 7.3 "Client Authentication Process"; 14.3: the well-known card
    // carries no credentials).
    Router::new()
        .route("/.well-known/agent.json", get(card))
        .route("/.well-known/agent-card.json", get(card))
        .with_state(server)
        .merge(guarded)
}

/// The token check in front of every route but the card: 401 with a JSON-RPC error body for
/// calls, a short page for the web pages; `?token=` on a page sets the cookie (see
/// [`crate::auth::check`]).
async fn require_token(
    State(s): State<Arc<Server>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(expected) = &s.token else { return next.run(req).await };
    let port = req.uri().port_u16().or_else(|| s.url.rsplit(':').next()?.trim_end_matches('/').parse().ok());
    match crate::auth::check(expected, req.method(), req.uri(), req.headers(), port.unwrap_or(0)) {
        crate::auth::Access::Granted => next.run(req).await,
        crate::auth::Access::GrantAndSetCookie { location, cookie } => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location), (header::SET_COOKIE, cookie), (header::CACHE_CONTROL, "no-store".into())],
        )
            .into_response(),
        crate::auth::Access::Denied if req.method() == axum::http::Method::POST => {
            let mut r = rpc_error(
                StatusCode::UNAUTHORIZED,
                RequestId::Null,
                ErrorCode::InvalidRequest.with(
                    "missing or wrong bearer token: every call needs Authorization: Bearer <token>, as the card's securitySchemes says; \
                     fix: swarm members get it from `ratchet up` as RATCHET_TOKEN, a local client reads it from worktrees/.swarm/token",
                ),
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        crate::auth::Access::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer"), (header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "this page needs the swarm token: open the address `ratchet up` printed (.../ui?token=...), \
             or send Authorization: Bearer <the token in worktrees/.swarm/token>\n",
        )
            .into_response(),
    }
}

async fn card(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(s.etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, s.etag.clone())]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ETAG, HeaderValue::from_str(&s.etag).expect("etag is ascii")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60")),
        ],
        s.card_json.clone(),
    )
        .into_response()
}

fn rpc_error(status: StatusCode, id: RequestId, err: ErrorObject) -> Response {
    let body = serde_json::to_vec(&RpcResponse::err(id, err)).expect("responses serialize");
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// A success response around an already serialized result (no `Value` round trip).
fn rpc_ok(id: RequestId, result: Vec<u8>) -> Response {
    let id = serde_json::to_vec(&id).expect("request ids serialize");
    let mut body = Vec::with_capacity(result.len() + id.len() + 32);
    body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    body.extend_from_slice(&id);
    body.extend_from_slice(br#","result":"#);
    body.extend_from_slice(&result);
    body.push(b'}');
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn too_large(s: &Server) -> Response {
    let msg = format!(
        "request body is over the {} byte limit; send a smaller request or raise RATCHET_MAX_BODY on the agent",
        s.max_body
    );
    rpc_error(StatusCode::PAYLOAD_TOO_LARGE, RequestId::Null, ErrorCode::InvalidRequest.with(msg))
}

/// Refuses a request whose `Content-Length` is over the body limit before a byte of the body is
/// read (a body without a length is cut at the limit as it is read).
struct DeclaredLengthFits;

impl axum::extract::FromRequestParts<Arc<Server>> for DeclaredLengthFits {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, s: &Arc<Server>) -> Result<Self, Response> {
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        match declared.map(|v| v.trim().parse::<u64>()) {
            Some(Ok(n)) if n > s.max_body as u64 => Err(too_large(s)),
            _ => Ok(DeclaredLengthFits),
        }
    }
}

async fn rpc(
    State(s): State<Arc<Server>>,
    _fits: DeclaredLengthFits,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large(&s),
        Err(rej) => {
            let msg = format!("could not read the request body: {rej}");
            return rpc_error(rej.status(), RequestId::Null, ErrorCode::InvalidRequest.with(msg));
        }
    };
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestId::Null,
            ErrorCode::ContentTypeNotSupported
                .with(format!("Content-Type {ctype:?} is not supported; send Content-Type: application/json")),
        );
    }
    let req = match decode_request(&body) {
        Ok(r) => r,
        Err((id, e)) => return rpc_error(StatusCode::OK, id, e),
    };
    let id = req.id.clone();
    match dispatch(&s, &req.method, req.params, id.clone(), &headers).await {
        Ok(Reply::Json(v)) => rpc_ok(id, v),
        Ok(Reply::Stream(stream)) => stream,
        Err(e) => rpc_error(StatusCode::OK, id, e),
    }
}

/// Decode a request body into its envelope, or the precise JSON-RPC error for it (-32700 when
/// it is not JSON, -32600 when it is not a request), with the request id when one can be read.
pub(crate) fn decode_request(body: &[u8]) -> Result<WireRequest<'_>, (RequestId, ErrorObject)> {
    // Fast path: a well-formed request decodes in one pass, its params kept as raw text that the
    // method decodes straight into its own type (no `Value` tree in between).
    let req: WireRequest<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return Err(classify_bad_request(body)),
    };
    if req.jsonrpc != "2.0" {
        return Err((req.id, ErrorCode::InvalidRequest.with("jsonrpc must be \"2.0\"")));
    }
    if matches!(req.id, RequestId::Null) {
        return Err((req.id, ErrorCode::InvalidRequest.with("id is required (a string or a number)")));
    }
    Ok(req)
}

/// A body that is not a valid request: the precise error (-32700 or -32600), with the request id
/// echoed when one can be read.
fn classify_bad_request(body: &[u8]) -> (RequestId, ErrorObject) {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                RequestId::Null,
                ErrorCode::ParseError
                    .with(format!("the body is not valid JSON ({e}); send one JSON-RPC 2.0 request object")),
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
        Err(e) => e.to_string(),
        Ok(_) => "unreadable request".to_string(),
    };
    (
        id,
        ErrorCode::InvalidRequest.with(format!(
            "not a JSON-RPC 2.0 request: {what}; send {{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"message/send\",\"params\":{{...}}}}"
        )),
    )
}

enum Reply {
    /// The serialized `result`.
    Json(Vec<u8>),
    Stream(Response),
}

/// The JSON-RPC envelope as it arrives: params stay raw text until the method is known.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WireRequest<'a> {
    pub(crate) jsonrpc: std::borrow::Cow<'a, str>,
    pub(crate) id: RequestId,
    pub(crate) method: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub(crate) params: Option<&'a serde_json::value::RawValue>,
}

fn params<M: Method>(raw: Option<&serde_json::value::RawValue>) -> Result<M::Params, ErrorObject> {
    serde_json::from_str(raw.map_or("null", |r| r.get())).map_err(|e| {
        ErrorCode::InvalidParams.with(format!("invalid params for {}: {e}; see the A2A 0.3 specification", M::METHOD))
    })
}

fn to_json(v: impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(&v).expect("A2A results serialize")
}

fn not_found(id: &str) -> ErrorObject {
    ErrorCode::TaskNotFound.with(format!("task {id:?} not found; use an id returned by message/send"))
}

async fn lookup(s: &Server, id: &str) -> Result<Arc<Entry>, ErrorObject> {
    s.store.get(id).await.map_err(|e| match e {
        StoreError::NotFound(_) => not_found(id),
        other => ErrorCode::InternalError.with(other.to_string()),
    })
}

fn trim_history(mut task: Task, n: Option<i64>) -> Task {
    if let Some(n) = n {
        let n = n as usize;
        let len = task.history.len();
        if n < len {
            task.history.drain(..len - n);
        }
    }
    task
}

fn check_history_length(n: Option<i64>) -> Result<(), ErrorObject> {
    match n {
        Some(n) if n < 0 => Err(ErrorCode::InvalidParams.with(format!("historyLength {n} is negative; use 0 or more"))),
        _ => Ok(()),
    }
}

fn push_unsupported() -> ErrorObject {
    ErrorCode::PushNotificationNotSupported
        .with("this agent does not support push notifications (see capabilities.pushNotifications in its card)")
}

async fn dispatch(
    s: &Arc<Server>,
    method: &str,
    raw: Option<&serde_json::value::RawValue>,
    id: RequestId,
    headers: &HeaderMap,
) -> Result<Reply, ErrorObject> {
    use protocol::*;
    match method {
        SendMessage::METHOD => {
            let p = params::<SendMessage>(raw)?;
            let cfg = p.configuration.clone().unwrap_or_default();
            check_history_length(cfg.history_length)?;
            let entry = start_task(s, p).await?;
            if cfg.blocking == Some(true) {
                let mut rx = entry.subscribe();
                loop {
                    if entry.task_state().is_interrupted() {
                        break;
                    }
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            }
            Ok(Reply::Json(to_json(SendResult::Task(trim_history(entry.task(), cfg.history_length)))))
        }
        SendStreamingMessage::METHOD => {
            let p = params::<SendStreamingMessage>(raw)?;
            check_history_length(p.configuration.as_ref().and_then(|c| c.history_length))?;
            let entry = start_task(s, p).await?;
            Ok(Reply::Stream(sse(id, entry, 0)))
        }
        GetTask::METHOD => {
            let p: TaskQueryParams = params::<GetTask>(raw)?;
            check_history_length(p.history_length)?;
            let entry = lookup(s, &p.id).await?;
            Ok(Reply::Json(to_json(trim_history(entry.task(), p.history_length))))
        }
        CancelTask::METHOD => {
            let p: TaskIdParams = params::<CancelTask>(raw)?;
            let entry = lookup(s, &p.id).await?;
            let msg = agent_text("canceled at the client's request");
            let changed = entry.status(TaskState::Canceled, Some(msg), true).map_err(internal)?;
            if !changed {
                let state = entry.task().status.state;
                return Err(ErrorCode::TaskNotCancelable
                    .with(format!("task {:?} is already {state:?} and cannot be canceled", p.id).to_lowercase()));
            }
            notify_push(s, &entry);
            Ok(Reply::Json(to_json(entry.task())))
        }
        Resubscribe::METHOD => {
            let p: TaskIdParams = params::<Resubscribe>(raw)?;
            let entry = lookup(s, &p.id).await?;
            // Last-Event-ID: the index of the last event the client saw; replay what follows.
            let from = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok())
                .map(|n| n + 1)
                .unwrap_or(0);
            Ok(Reply::Stream(sse(id, entry, from)))
        }
        SetPushConfig::METHOD => {
            if !s.spec.push_notifications {
                return Err(push_unsupported());
            }
            let mut p: TaskPushNotificationConfig = params::<SetPushConfig>(raw)?;
            let entry = lookup(s, &p.task_id).await?;
            if !(p.push_notification_config.url.starts_with("http://")
                || p.push_notification_config.url.starts_with("https://"))
            {
                return Err(ErrorCode::InvalidParams.with("pushNotificationConfig.url must be an http(s) URL"));
            }
            if p.push_notification_config.id.is_none() {
                p.push_notification_config.id = Some(p.task_id.clone());
            }
            entry.set_push(p.push_notification_config.clone());
            Ok(Reply::Json(to_json(p)))
        }
        GetPushConfig::METHOD => {
            if !s.spec.push_notifications {
                return Err(push_unsupported());
            }
            let p: GetTaskPushNotificationConfigParams = params::<GetPushConfig>(raw)?;
            let entry = lookup(s, &p.id).await?;
            let want = p.push_notification_config_id.clone().unwrap_or_else(|| p.id.clone());
            let cfg =
                entry.push_configs().into_iter().find(|c| c.id.as_deref() == Some(want.as_str())).ok_or_else(|| {
                    ErrorCode::InvalidParams
                        .with(format!("task {:?} has no push notification config {want:?}; set one first", p.id))
                })?;
            Ok(Reply::Json(to_json(TaskPushNotificationConfig { task_id: p.id, push_notification_config: cfg })))
        }
        ListPushConfig::METHOD => {
            if !s.spec.push_notifications {
                return Err(push_unsupported());
            }
            let p: TaskIdParams = params::<ListPushConfig>(raw)?;
            let entry = lookup(s, &p.id).await?;
            let list: Vec<TaskPushNotificationConfig> = entry
                .push_configs()
                .into_iter()
                .map(|c| TaskPushNotificationConfig { task_id: p.id.clone(), push_notification_config: c })
                .collect();
            Ok(Reply::Json(to_json(list)))
        }
        DeletePushConfig::METHOD => {
            if !s.spec.push_notifications {
                return Err(push_unsupported());
            }
            let p = params::<DeletePushConfig>(raw)?;
            let entry = lookup(s, &p.id).await?;
            if !entry.delete_push(&p.push_notification_config_id) {
                return Err(ErrorCode::InvalidParams.with(format!(
                    "task {:?} has no push notification config {:?}",
                    p.id, p.push_notification_config_id
                )));
            }
            Ok(Reply::Json(b"null".to_vec()))
        }
        other => Err(ErrorCode::MethodNotFound
            .with(format!("unknown method {other:?}; this agent speaks {}", protocol::METHODS.join(", ")))),
    }
}

fn internal(e: StoreError) -> ErrorObject {
    ErrorCode::InternalError.with(e.to_string())
}

/// The skill a message asks for: `skill` in its data part or metadata, else the default.
fn requested_skill(m: &Message) -> Option<String> {
    let from_data = m.data().and_then(|d| d.get("skill")).and_then(|v| v.as_str());
    let from_meta = m.metadata.as_ref().and_then(|d| d.get("skill")).and_then(|v| v.as_str());
    from_data.or(from_meta).map(String::from)
}

async fn start_task(s: &Arc<Server>, p: MessageSendParams) -> Result<Arc<Entry>, ErrorObject> {
    let msg = p.message;
    if msg.parts.is_empty() {
        return Err(ErrorCode::InvalidParams.with("message.parts is empty; send at least one text or data part"));
    }
    if msg.role != Role::User {
        return Err(ErrorCode::InvalidParams.with("message.role must be \"user\" for a request"));
    }
    if let Some(tid) = &msg.task_id {
        let entry = lookup(s, tid).await?;
        let state = entry.task().status.state;
        return Err(ErrorCode::UnsupportedOperation.with(format!(
            "task {tid:?} is {state:?}; this agent does not take follow-up messages on a task: omit taskId to start a new one"
        ).to_lowercase()));
    }
    let id = new_id();
    let context_id = msg.context_id.clone().unwrap_or_else(new_id);
    let entry = s.store.create(&id, &context_id, msg.clone()).map_err(internal)?;
    if let Some(mut cfg) = p.configuration.and_then(|c| c.push_notification_config)
        && s.spec.push_notifications
    {
        cfg.id.get_or_insert_with(|| id.clone());
        entry.set_push(cfg);
    }
    let skill_name = requested_skill(&msg).unwrap_or_else(|| "status".into());
    let skill = s.spec.skills.iter().find(|k| k.card.id == skill_name).cloned();
    let server = s.clone();
    let e2 = entry.clone();
    // Decoupled from the connection: the handler runs to its end whatever the client does.
    tokio::spawn(async move {
        let end = match skill {
            None if skill_name == "status" => TaskEnd::done(
                format!("{} ({}) is up", server.spec.name, server.spec.role),
                serde_json::json!({
                    "name": server.spec.name,
                    "role": server.spec.role,
                    "uptime_ms": server.started.elapsed().as_millis() as u64,
                    "skills": server.spec.skills.iter().map(|k| k.card.id.clone()).collect::<Vec<_>>(),
                }),
            ),
            None => TaskEnd::Rejected(format!(
                "skill {skill_name:?} is not available on agent {} (role {}); available: status{}",
                server.spec.name,
                server.spec.role,
                server.spec.skills.iter().map(|k| format!(", {}", k.card.id)).collect::<String>()
            )),
            Some(skill) => {
                let _ = e2.status(TaskState::Working, None, false);
                notify_push(&server, &e2);
                let ctx = TaskCtx {
                    task_id: id.clone(),
                    context_id: context_id.clone(),
                    skill: skill_name.clone(),
                    message: msg,
                    server: server.clone(),
                    entry: e2.clone(),
                    cancel: e2.cancel_signal(),
                };
                let run = (skill.run)(ctx);
                // A panicking skill must not take the agent down or leave the task hanging.
                match tokio::spawn(run).await {
                    Ok(end) => end,
                    Err(e) => TaskEnd::Failed(format!("skill {skill_name:?} crashed: {e}")),
                }
            }
        };
        let (state, message) = match end {
            TaskEnd::Completed { text, data } => {
                let mut parts = vec![Part::text(text)];
                if let Some(d) = data {
                    parts.push(Part::data(d));
                }
                (TaskState::Completed, Message::new(Role::Agent, new_id(), parts))
            }
            TaskEnd::Failed(t) => (TaskState::Failed, agent_text(&t)),
            TaskEnd::Rejected(t) => (TaskState::Rejected, agent_text(&t)),
        };
        if let Err(e) = e2.status(state, Some(message), true) {
            tracing::error!("task {id}: {e}");
        }
        notify_push(&server, &e2);
    });
    Ok(entry)
}

/// POST the task to every push-notification URL configured for it (best effort, logged).
fn notify_push(s: &Arc<Server>, entry: &Arc<Entry>) {
    let configs = entry.push_configs();
    if configs.is_empty() {
        return;
    }
    let task = entry.task();
    for cfg in configs {
        let http = s.http.clone();
        let task = task.clone();
        tokio::spawn(async move {
            let mut req = http.post(&cfg.url).json(&task);
            if let Some(t) = &cfg.token {
                req = req.header("X-A2A-Notification-Token", t);
            }
            if let Err(e) = req.send().await {
                tracing::warn!("push notification to {} failed: {e}", cfg.url);
            }
        });
    }
}

/// An SSE response streaming the task's events from index `from`, ending after the final one.
fn sse(id: RequestId, entry: Arc<Entry>, from: usize) -> Response {
    struct St {
        id: RequestId,
        entry: Arc<Entry>,
        rx: watch::Receiver<u64>,
        next: usize,
        pending: std::collections::VecDeque<StreamEvent>,
        done: bool,
    }
    let rx = entry.subscribe();
    let st = St { id, entry, rx, next: from, pending: Default::default(), done: false };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(ev) = st.pending.pop_front() {
                let idx = st.next;
                st.next += 1;
                st.done = ev.is_final();
                let body = serde_json::to_string(&RpcResponse::ok(st.id.clone(), &ev)).expect("events serialize");
                let event = SseEvent::default().id(idx.to_string()).data(body);
                return Some((Ok::<_, Infallible>(event), st));
            }
            st.rx.borrow_and_update();
            let fresh = st.entry.events_from(st.next);
            if fresh.is_empty() {
                // A task that is already over and fully replayed: nothing more will come.
                if st.entry.task().status.state.is_terminal() && st.next > 0 {
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
    sse_response(stream)
}

fn sse_response<S>(stream: S) -> Response
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}
