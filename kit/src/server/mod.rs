//! The A2A server every Ratchet agent runs, speaking A2A 1.0 and 0.3 side by side from one
//! address:
//!
//! - the Agent Card at `/.well-known/agent-card.json` and `/.well-known/agent.json`: one card
//!   both generations read (1.0 `supportedInterfaces` plus the 0.3 members, [`protocol::a2a_v1::merged_card`]);
//!   a request that asks for 1.0 (`A2A-Version: 1.0`) gets the plain 1.0 card ([`card`]);
//! - JSON-RPC at `POST /`: the 0.3 methods (`message/send`, `tasks/get`, ...) and the 1.0 ones
//!   (`SendMessage`, `ListTasks`, ...), the generation chosen by `A2A-Version` ([`jsonrpc`]);
//! - the 1.0 HTTP+JSON binding (`POST /message:send`, `GET /tasks/{id}`, ...) ([`rest`]);
//! - SSE streams for both ([`sse`]) and push notifications ([`push`]).
//!
//! What a request does is the same whichever way it comes: [`ops`] holds the operations on the
//! agent's one task model (the 0.3 types, which the task log is written in); the bindings only
//! convert. An agent is an [`AgentSpec`]: a name, a role and skills, each skill an async function
//! of a [`TaskCtx`]. Everything else (validation, persistence, multi-turn, streaming, errors) is
//! here, once.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::a2a_v1::{self as v1, Version};
use protocol::jsonrpc::{ErrorCode, RequestId};
use protocol::{AgentCapabilities, AgentCard, AgentExtension, AgentSkill, Artifact, Message, Part, Role, TaskState};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::store::{Entry, StoreError, TaskStore};

mod jsonrpc;
mod ops;
mod push;
mod rest;
mod sse;

#[cfg(test)]
pub(crate) use jsonrpc::decode_request;

/// Default request body limit (1 MiB); `RATCHET_MAX_BODY` overrides it.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
pub type SkillFn = Arc<dyn Fn(TaskCtx) -> BoxFuture<TaskEnd> + Send + Sync>;
/// A skill's direct answer to a new message: `Some(message)` answers the send with that message
/// and no task (A2A 1.0 §3.1.1: the result is "a Task or a Message"; §3.7: "Agents may send
/// Messages back to the client ... prior to initiating a task"); `None` runs the skill as a task.
pub type ReplyFn = Arc<dyn Fn(&Message) -> Option<Message> + Send + Sync>;

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
    /// Consulted first for a message that starts a conversation with this skill (never for a
    /// follow-up on a task): see [`ReplyFn`] and [`Skill::with_reply`].
    pub reply: Option<ReplyFn>,
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
            reply: None,
        }
    }

    /// Let this skill answer some messages directly, with a message instead of a task: `reply`
    /// sees each message that would start a task with this skill and returns the answer, or
    /// `None` to run the skill. The answer goes back as the send's result (0.3 `message/send`,
    /// 1.0 `SendMessage`), or as the one event of a stream; its `contextId` is the request's (a
    /// new one when the request has none).
    pub fn with_reply<F>(mut self, reply: F) -> Skill
    where
        F: Fn(&Message) -> Option<Message> + Send + Sync + 'static,
    {
        self.reply = Some(Arc::new(reply));
        self
    }
}

/// The skill every agent has: report who it is and that it is up.
pub const STATUS_SKILL: &str = "status";

/// What an agent is: the card's content and its skills.
#[derive(Clone, Default)]
pub struct AgentSpec {
    pub name: String,
    pub role: String,
    pub description: String,
    pub skills: Vec<Skill>,
    pub push_notifications: bool,
    /// Extra HTTP routes beside the A2A ones (the coordinator's web pages).
    pub routes: Option<Router>,
    /// The skill a message that names none runs. `None` (every swarm agent): the task goes
    /// `input-required`, asking which skill (the agent's intake).
    pub default_skill: Option<String>,
    /// Speak A2A 1.0 only: the card declares the 1.0 interfaces alone and is the plain 1.0 card
    /// for every request (as the official a2a-sdk 1.x serves a card without a 0.3 interface), and
    /// a 0.3 request (one without `A2A-Version`, §3.6.2) gets `VersionNotSupportedError`. False
    /// for every swarm agent, which speaks both (issue 12); true for the TCK's system under test
    /// (`ratchet-tck-agent`), whose card the 1.0 TCK checks against the strict 1.0 schema.
    pub v1_only: bool,
}

/// Everything a running skill can do with its task.
pub struct TaskCtx {
    pub task_id: String,
    pub context_id: String,
    pub skill: String,
    /// The message the skill acts on: the one that named it, then each answer to [`TaskCtx::ask`].
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
        self.artifact_chunk(name, parts, false, true);
    }

    /// Publish an artefact a piece at a time (A2A 1.0 §4.2.2): `append` adds `parts` to the
    /// artefact of this name already published (else replaces it), `last` says no more pieces
    /// follow.
    pub fn artifact_chunk(&self, name: &str, parts: Vec<Part>, append: bool, last: bool) {
        let artifact = Artifact {
            artifact_id: format!("{}-{name}", self.task_id),
            name: Some(name.to_string()),
            description: None,
            parts,
            metadata: None,
        };
        if let Err(e) = self.entry.artifact(artifact, append, last) {
            tracing::warn!("task {}: {e}", self.task_id);
        }
    }

    /// Ask the client for more input (A2A 1.0 §3.4.3, "Input Required State"): the task goes
    /// `input-required` with `question`, and this resolves with the client's next message on
    /// the task (which also becomes [`TaskCtx::message`]), or None when the task is canceled
    /// meanwhile.
    pub async fn ask(&mut self, question: &str) -> Option<Message> {
        let rx = match self.entry.ask(agent_text(question)) {
            Ok(Some(rx)) => rx,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!("task {}: {e}", self.task_id);
                return None;
            }
        };
        let answer = tokio::select! {
            m = rx => m.ok(),
            () = self.canceled() => None,
        };
        if let Some(m) = &answer {
            self.message = m.clone();
        }
        answer
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

/// A fresh, unguessable id, also a valid file name: 24 hex digits, the keyed hash (SipHash-1-3,
/// std's `RandomState`, keyed once per process from the OS's randomness) of a per-process
/// counter. Unique within a process (the counter), unpredictable without the key, and unrelated
/// across processes and restarts (a fresh key: two ids of different runs collide with
/// probability 2^-96). Cheap: two hashes of 16 bytes, no system call (SHA-256 of time, pid and
/// counter cost a tenth of a request's instructions in the wire profile, see BENCHMARKS.md).
pub fn new_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEY: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (a, b) = (key.hash_one((n, 0u8)), key.hash_one((n, 1u8)));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(24);
    for (word, nibbles) in [(a, 16), (b, 8)] {
        for i in 0..nibbles {
            out.push(HEX[((word >> (60 - 4 * i)) & 15) as usize] as char);
        }
    }
    out
}

/// Run `f` with this thread's scratch buffer, empty: for bytes that are written, used and
/// dropped (a send's log lines), without an allocation of their own. (Reentered, which nothing
/// does, `f` gets a buffer of its own.)
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// A scratch buffer that grew past this (a large task) is let go, not kept for the next.
    const KEEP: usize = 64 << 10;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let r = f(&mut scratch);
            if scratch.capacity() > KEEP {
                *scratch = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// The bytes `write` writes, in a buffer of exactly their size: written in this thread's scratch
/// buffer ([`with_scratch`]), then copied. glibc's allocator serves a request of up to 1032 bytes
/// from its per-thread cache in a few dozen instructions, a larger one from its bins in about a
/// thousand (callgrind): a buffer sized "large enough" up front (2 KiB) cost more than writing
/// twice. A send's answer and its log lines are about 1000 bytes each.
pub(crate) fn sized(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    with_scratch(|scratch| {
        write(scratch);
        scratch.to_vec()
    })
}

/// A served card: its bytes and their ETag.
struct CardBytes {
    json: Bytes,
    etag: String,
}

impl CardBytes {
    fn new(value: &Value) -> CardBytes {
        use sha2::{Digest, Sha256};
        let json = Bytes::from(serde_json::to_vec_pretty(value).expect("cards serialize"));
        let d = Sha256::digest(&json);
        let etag = format!("\"{}\"", d[..8].iter().map(|b| format!("{b:02x}")).collect::<String>());
        CardBytes { json, etag }
    }
}

/// A running agent's shared state.
pub struct Server {
    pub spec: AgentSpec,
    pub store: TaskStore,
    /// The card both generations read (the default).
    merged: CardBytes,
    /// The plain 1.0 card (for a request that asks for 1.0).
    v1_card: CardBytes,
    card: v1::AgentCard,
    pub url: String,
    /// The port of `url` (where the token check takes the port from when a request's URI has none).
    port: Option<u16>,
    token: Option<String>,
    max_body: usize,
    http: reqwest::Client,
    pub started: Instant,
}

impl Server {
    /// `url` is the address clients POST to (the card's interfaces); `token`, when set, is
    /// required as `Authorization: Bearer` on every call and declared in the card.
    pub fn new(
        spec: AgentSpec,
        state_dir: PathBuf,
        url: String,
        token: Option<String>,
        max_body: usize,
    ) -> Result<Arc<Server>, StoreError> {
        let store = TaskStore::open(&state_dir)?;
        let (card, old) = build_cards(&spec, &url, token.is_some());
        let v1_value = serde_json::to_value(&card).expect("cards serialize");
        // A 1.0-only agent's card is the plain 1.0 one for every request.
        let merged = CardBytes::new(&if spec.v1_only { v1_value.clone() } else { v1::merged_card(&card, &old) });
        let v1_card = CardBytes::new(&v1_value);
        let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok());
        Ok(Arc::new(Server {
            spec,
            store,
            merged,
            v1_card,
            card,
            port,
            url,
            token,
            max_body,
            http: reqwest::Client::builder().timeout(push::TIMEOUT).build().expect("reqwest client builds"),
            started: Instant::now(),
        }))
    }

    /// The agent's card, in its 1.0 form.
    pub fn card(&self) -> &v1::AgentCard {
        &self.card
    }
}

/// The two forms of the agent's card: 1.0 and 0.3 (merged into the one served, see
/// [`protocol::a2a_v1::merged_card`]).
fn build_cards(spec: &AgentSpec, url: &str, secured: bool) -> (v1::AgentCard, AgentCard) {
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
    let old = AgentCard {
        protocol_version: protocol::PROTOCOL_VERSION.into(),
        name: spec.name.clone(),
        description: spec.description.clone(),
        url: url.to_string(),
        preferred_transport: v1::BINDING_JSONRPC.into(),
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
            state_transition_history: None,
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
    };
    let mut card = v1::card_from_v03(&old);
    // Preferred first (§8.3.1): 1.0 JSON-RPC, 1.0 HTTP+JSON, then 0.3 JSON-RPC, all at one URL
    // ("URLs MAY be reused if multiple transports are available at the same endpoint").
    let iface = |binding: &str, version: &str| v1::AgentInterface {
        url: url.to_string(),
        protocol_binding: binding.into(),
        tenant: None,
        protocol_version: version.into(),
    };
    card.supported_interfaces =
        vec![iface(v1::BINDING_JSONRPC, v1::PROTOCOL_VERSION), iface(v1::BINDING_HTTP_JSON, v1::PROTOCOL_VERSION)];
    if !spec.v1_only {
        card.supported_interfaces.push(iface(v1::BINDING_JSONRPC, v1::DEFAULT_VERSION));
    }
    // The HTTP+JSON base URL without its trailing slash: clients append `/message:send` etc.
    card.supported_interfaces[1].url = url.trim_end_matches('/').to_string();
    if secured {
        card.security_schemes = Map::from_iter([("bearer".to_string(), v1::bearer_scheme())]);
        card.security_requirements =
            vec![v1::SecurityRequirement { schemes: [("bearer".to_string(), v1::StringList::default())].into() }];
    }
    (card, old)
}

/// The protocol version a request asked for: its `A2A-Version` header, else the `A2A-Version`
/// query parameter (§3.6.1: "Clients MAY provide the A2A-Version as a request parameter").
fn requested_version<'a>(headers: &'a HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    // `v1::VERSION_HEADER` as a header name made once (a name given as text is parsed and
    // lower-cased at each lookup).
    static VERSION: HeaderName = HeaderName::from_static("a2a-version");
    debug_assert!(VERSION.as_str().eq_ignore_ascii_case(v1::VERSION_HEADER));
    if let Some(v) = headers.get(&VERSION).and_then(|v| v.to_str().ok()) {
        return Some(v);
    }
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.eq_ignore_ascii_case(v1::VERSION_HEADER).then_some(v)
    })
}

/// The paths of the Agent Card, the one thing served without the token.
const CARD_PATHS: [&str; 2] = ["/.well-known/agent.json", "/.well-known/agent-card.json"];

/// The agent's HTTP application ([`App`]). Every path but the Agent Card's requires the token
/// (when the agent has one, i.e. always unless it runs in the open mode).
pub fn app(server: Arc<Server>) -> App {
    let limit = server.max_body;
    let extra = server.spec.routes.clone().unwrap_or_default();
    let guarded = Router::new()
        .route("/", axum::routing::post(jsonrpc::rpc))
        .merge(rest::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(server.clone())
        .merge(extra);
    // The card stays public: a client discovers the required scheme from the card's
    // securitySchemes, then obtains the credential out of band and sends it on every request
    // (A2A 1.0 §7.3 "Client Authentication Process"; §8.2: the well-known card carries no
    // credentials).
    let router = Router::new()
        .route(CARD_PATHS[0], get(card))
        .route(CARD_PATHS[1], get(card))
        .with_state(server.clone())
        .merge(guarded);
    App { server, router }
}

/// The agent's HTTP application: the token check in front of every path but the Agent Card's
/// (unknown paths included: they get 401 before 404), then `POST /`, JSON-RPC, nearly every
/// request an agent serves, straight to its handler, and everything else through the router
/// (which also routes `POST /`, the same handler, for a caller of the router alone).
///
/// Why not a middleware layer and the router for everything: axum wraps each route of a layered
/// router in boxed services that are cloned, and their futures boxed, on every request; those
/// layers made 15 allocations and about 5K instructions of a 75K-instruction send (callgrind,
/// BENCHMARKS.md).
#[derive(Clone)]
pub struct App {
    server: Arc<Server>,
    router: Router,
}

impl tower::Service<axum::extract::Request> for App {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Response, std::convert::Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let path = req.uri().path();
        if !CARD_PATHS.contains(&path) {
            if let Some(denied) = check_token(&self.server, &req) {
                return Box::pin(std::future::ready(Ok(denied)));
            }
            if path == "/" && req.method() == axum::http::Method::POST {
                let s = self.server.clone();
                return Box::pin(async move { Ok(jsonrpc::rpc(State(s), req).await) });
            }
        }
        let call = self.router.call(req);
        Box::pin(call)
    }
}

const NO_TOKEN: &str = "missing or wrong bearer token: every call needs Authorization: Bearer <token>, as the card's securitySchemes says; \
     fix: swarm members get it from `ratchet up` as RATCHET_TOKEN, a local client reads it from worktrees/.swarm/token";

/// The token check in front of every path but the card's: the answer when the request may not
/// pass (None when it may): 401 with a JSON-RPC error body for JSON-RPC calls, a `google.rpc.Status` body
/// for the HTTP+JSON binding, a short page for the web pages; `?token=` on a page sets the
/// cookie (see [`crate::auth::check`]).
fn check_token(s: &Server, req: &axum::extract::Request) -> Option<Response> {
    let Some(expected) = &s.token else { return None };
    let port = req.uri().port_u16().or(s.port);
    let mut denied = match crate::auth::check(expected, req.method(), req.uri(), req.headers(), port.unwrap_or(0)) {
        crate::auth::Access::Granted => return None,
        crate::auth::Access::GrantAndSetCookie { location, cookie } => {
            return Some(
                (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, location),
                        (header::SET_COOKIE, cookie),
                        (header::CACHE_CONTROL, "no-store".into()),
                    ],
                )
                    .into_response(),
            );
        }
        crate::auth::Access::Denied if rest::is_rest_path(req.uri().path()) => {
            let body = serde_json::json!({"error": {"code": 401, "status": "UNAUTHENTICATED", "message": NO_TOKEN}});
            json_response(StatusCode::UNAUTHORIZED, serde_json::to_vec(&body).expect("json"))
        }
        crate::auth::Access::Denied if req.method() == axum::http::Method::POST => jsonrpc::error_response(
            StatusCode::UNAUTHORIZED,
            RequestId::Null,
            &ErrorCode::InvalidRequest.fault(NO_TOKEN),
            false,
        ),
        crate::auth::Access::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "this page needs the swarm token: open the address `ratchet up` printed (.../ui?token=...), \
             or send Authorization: Bearer <the token in worktrees/.swarm/token>\n",
        )
            .into_response(),
    };
    denied.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(denied)
}

/// The Agent Card, with ETag and caching headers (§8.6). The card both generations read,
/// unless the request asks for 1.0 (`A2A-Version: 1.0`, header or query), which gets the
/// plain 1.0 card; responses vary by that header. A 1.0-only agent ([`AgentSpec::v1_only`])
/// serves the plain 1.0 card to every request.
async fn card(State(s): State<Arc<Server>>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let version = v1::negotiate(requested_version(&headers, &uri)).unwrap_or(Version::V0_3);
    let card = if version == Version::V1_0 { &s.v1_card } else { &s.merged };
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(card.etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, card.etag.clone())]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ETAG, HeaderValue::from_str(&card.etag).expect("etag is ascii")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60")),
            (header::VARY, HeaderValue::from_static("A2A-Version")),
        ],
        card.json.clone(),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn too_large_message(s: &Server) -> String {
    format!(
        "request body is over the {} byte limit; send a smaller request or raise RATCHET_MAX_BODY on the agent",
        s.max_body
    )
}

/// Refuses a request whose `Content-Length` is over the body limit before a byte of the body is
/// read (a body without a length is cut at the limit as it is read).
struct DeclaredLengthFits;

impl axum::extract::FromRequestParts<Arc<Server>> for DeclaredLengthFits {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, s: &Arc<Server>) -> Result<Self, Response> {
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        match declared.map(|v| v.trim().parse::<u64>()) {
            Some(Ok(n)) if n > s.max_body as u64 => {
                let fault = ErrorCode::InvalidRequest.fault(too_large_message(s));
                Err(if rest::is_rest_path(parts.uri.path()) {
                    let (_, mut body) = fault.to_rest();
                    body["error"]["code"] = Value::from(413);
                    json_response(StatusCode::PAYLOAD_TOO_LARGE, serde_json::to_vec(&body).expect("json"))
                } else {
                    jsonrpc::error_response(StatusCode::PAYLOAD_TOO_LARGE, RequestId::Null, &fault, false)
                })
            }
            _ => Ok(DeclaredLengthFits),
        }
    }
}

/// Whether a request body's content type is JSON (`application/json`, or the 1.0 media type
/// `application/a2a+json`, §14.1).
fn is_json(headers: &HeaderMap) -> bool {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json") || mime.eq_ignore_ascii_case("application/a2a+json")
}

/// A short wait used by streams and push delivery: how long keep-alive comments are apart.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_24_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| super::new_id()).collect();
        assert_eq!(ids.len(), 10_000, "no repeats");
        for id in &ids {
            assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
            protocol::names::check_task_id(id).expect("an id is a valid task id");
        }
        // Every digit position varies (no fixed prefix, e.g. a shift gone wrong).
        for pos in 0..24 {
            let seen: std::collections::HashSet<u8> = ids.iter().map(|id| id.as_bytes()[pos]).collect();
            assert_eq!(seen.len(), 16, "position {pos}");
        }
    }
}
