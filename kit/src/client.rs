//! The A2A client, both generations: card discovery (a card of either generation, read into its
//! 1.0 form), typed JSON-RPC calls, SSE streams (parsed by `eventsource-stream`, which takes
//! `\n`, `\r\n` and `\r` line ends alike, as servers built on sse-starlette send `\r\n`).
//!
//! Which generation a client speaks is chosen from the card ([`A2aClient::for_card`]: the first
//! JSON-RPC interface it lists in a version this client speaks, §8.3.2); the calls the swarm
//! makes ([`A2aClient::send`], [`A2aClient::send_streaming`], [`A2aClient::get_task`],
//! [`A2aClient::cancel`]) take and return the 0.3 model the agents run on, whichever version is
//! on the wire.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use protocol::a2a_v1::{self as v1, Version};
use protocol::jsonrpc::{ErrorObject, Request, Response};
use protocol::{Message, MessageSendConfiguration, MessageSendParams, Method, Part, Role, StreamEvent, Task};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{url}: {0}", url = .1)]
    Rpc(ErrorObject, String),
    #[error("{url} sent an unexpected reply: {problem}")]
    Decode { url: String, problem: String },
}

/// One item of a stream: the SSE event id (when the server sends one) and the event.
pub type StreamItem = Result<(Option<u64>, StreamEvent), ClientError>;

#[derive(Clone)]
pub struct A2aClient {
    /// Where JSON-RPC calls go.
    pub url: String,
    http: reqwest::Client,
    token: Option<String>,
    version: Version,
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') { url.to_string() } else { format!("{url}/") }
}

impl A2aClient {
    /// A client of the agent at `url` (its base URL, with or without a trailing slash),
    /// speaking 0.3 until told otherwise ([`A2aClient::for_card`], [`A2aClient::with_version`]).
    pub fn new(url: &str) -> A2aClient {
        // Idle pooled connections are dropped before an agent's server would close them (30 s
        // header timeout, see `kit::http`), so a request never races the server's close.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(15))
            .build()
            .expect("reqwest client builds");
        A2aClient { url: with_slash(url), http, token: None, version: Version::V0_3 }
    }

    pub fn with_token(mut self, token: Option<String>) -> A2aClient {
        self.token = token;
        self
    }

    pub fn with_version(mut self, version: Version) -> A2aClient {
        self.version = version;
        self
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// This client aimed at the JSON-RPC interface the card prefers among those in a version it
    /// speaks (1.0 or 0.3), in that interface's version; an error naming what the card offers
    /// when there is none.
    pub fn for_card(&self, card: &v1::AgentCard) -> Result<A2aClient, ClientError> {
        let Some((iface, version)) = card.jsonrpc_interface() else {
            let offered: Vec<String> = card
                .supported_interfaces
                .iter()
                .map(|i| format!("{} {} at {}", i.protocol_binding, i.protocol_version, i.url))
                .collect();
            return Err(ClientError::Decode {
                url: self.url.clone(),
                problem: format!(
                    "the card of {:?} offers no JSON-RPC interface in A2A 0.3 or 1.0 (it offers: {})",
                    card.name,
                    offered.join("; ")
                ),
            });
        };
        let mut c = self.clone();
        c.url = if iface.url.trim_start_matches("http://").trim_start_matches("https://").contains('/') {
            iface.url.clone()
        } else {
            with_slash(&iface.url)
        };
        c.version = version;
        Ok(c)
    }

    /// GET the Agent Card (`/.well-known/agent-card.json`, else the older `agent.json`) beside
    /// this client's URL, in its 1.0 form whichever generation wrote it.
    pub async fn card(&self) -> Result<v1::AgentCard, ClientError> {
        let mut last = None;
        for path in [".well-known/agent-card.json", ".well-known/agent.json"] {
            let url = format!("{}{path}", self.url);
            let resp = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_err(|source| ClientError::Http { url: url.clone(), source })?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                last = Some(ClientError::Status { url, status: 404, body: String::new() });
                continue;
            }
            if !resp.status().is_success() {
                return Err(ClientError::Status { url, status: resp.status().as_u16(), body: String::new() });
            }
            let bytes = resp.bytes().await.map_err(|source| ClientError::Http { url: url.clone(), source })?;
            return v1::parse_card(&bytes).map_err(|e| ClientError::Decode { url, problem: e.to_string() });
        }
        Err(last.expect("two paths were tried"))
    }

    fn post(&self, body: &Request, version: Version) -> reqwest::RequestBuilder {
        let mut req = self.http.post(&self.url).json(body);
        if version == Version::V1_0 {
            req = req.header(v1::VERSION_HEADER, v1::PROTOCOL_VERSION);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn call_raw<R: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: impl serde::Serialize,
        version: Version,
    ) -> Result<R, ClientError> {
        let req = Request::new(1, method, params);
        let resp = self
            .post(&req, version)
            .send()
            .await
            .map_err(|source| ClientError::Http { url: self.url.clone(), source })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| ClientError::Http { url: self.url.clone(), source })?;
        let rpc: Response = serde_json::from_str(&text).map_err(|e| {
            if status.is_success() {
                ClientError::Decode { url: self.url.clone(), problem: e.to_string() }
            } else {
                ClientError::Status {
                    url: self.url.clone(),
                    status: status.as_u16(),
                    body: text.chars().take(300).collect(),
                }
            }
        })?;
        let value = rpc.into_result().map_err(|e| ClientError::Rpc(e, self.url.clone()))?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode { url: self.url.clone(), problem: e.to_string() })
    }

    /// Call 0.3 method `M` (no `A2A-Version` header: 0.3, §3.6.2).
    pub async fn call<M: Method>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        self.call_raw(M::METHOD, params, Version::V0_3).await
    }

    /// Call 1.0 method `M` (with `A2A-Version: 1.0`).
    pub async fn call_v1<M: v1::Method>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        self.call_raw(M::METHOD, params, Version::V1_0).await
    }

    fn expected_task(&self, what: &str) -> ClientError {
        ClientError::Decode { url: self.url.clone(), problem: format!("expected a task, got {what}") }
    }

    /// Send a message (starting a task, or continuing the one its `taskId` names); with
    /// `blocking` the agent answers when the task is terminal or waits for input.
    pub async fn send(&self, message: Message, blocking: bool) -> Result<Task, ClientError> {
        match self.version {
            Version::V0_3 => {
                let params = MessageSendParams {
                    message,
                    configuration: Some(MessageSendConfiguration { blocking: Some(blocking), ..Default::default() }),
                    metadata: None,
                };
                match self.call::<protocol::SendMessage>(&params).await? {
                    protocol::SendResult::Task(t) => Ok(t),
                    protocol::SendResult::Message(m) => Err(self.expected_task(&format!("a message: {}", m.text()))),
                }
            }
            Version::V1_0 => {
                let req = v1::SendMessageRequest {
                    tenant: None,
                    message: v1::Message::from(&message),
                    configuration: Some(v1::SendMessageConfiguration {
                        return_immediately: !blocking,
                        ..Default::default()
                    }),
                    metadata: None,
                };
                match self.call_v1::<v1::SendMessage>(&req).await? {
                    v1::SendMessageResponse::Task(t) => Ok(t.into()),
                    v1::SendMessageResponse::Message(m) => {
                        Err(self.expected_task(&format!("a message {}", m.message_id)))
                    }
                }
            }
        }
    }

    pub async fn get_task(&self, id: &str) -> Result<Task, ClientError> {
        match self.version {
            Version::V0_3 => {
                let q = protocol::TaskQueryParams { id: id.to_string(), history_length: None, metadata: None };
                self.call::<protocol::GetTask>(&q).await
            }
            Version::V1_0 => {
                let q = v1::GetTaskRequest { tenant: None, id: id.to_string(), history_length: None };
                Ok(self.call_v1::<v1::GetTask>(&q).await?.into())
            }
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<Task, ClientError> {
        match self.version {
            Version::V0_3 => {
                let q = protocol::TaskIdParams { id: id.to_string(), metadata: None };
                self.call::<protocol::CancelTask>(&q).await
            }
            Version::V1_0 => {
                let q = v1::CancelTaskRequest { tenant: None, id: id.to_string(), metadata: None };
                Ok(self.call_v1::<v1::CancelTask>(&q).await?.into())
            }
        }
    }

    /// Send a message and stream the task's events (`message/stream` or
    /// `SendStreamingMessage`), as 0.3 events either way.
    pub async fn send_streaming(
        &self,
        message: Message,
    ) -> Result<impl Stream<Item = StreamItem> + use<>, ClientError> {
        let (method, params) = match self.version {
            Version::V0_3 => (
                protocol::SendStreamingMessage::METHOD,
                serde_json::to_value(MessageSendParams { message, configuration: None, metadata: None }),
            ),
            Version::V1_0 => (
                <v1::SendStreamingMessage as v1::Method>::METHOD,
                serde_json::to_value(v1::SendMessageRequest {
                    tenant: None,
                    message: v1::Message::from(&message),
                    configuration: None,
                    metadata: None,
                }),
            ),
        };
        self.open(method, params.expect("requests serialize"), None, self.version).await
    }

    /// Open a 0.3 SSE stream (`message/stream` or `tasks/resubscribe`), resuming after
    /// `last_event_id` when given.
    pub async fn stream(
        &self,
        method: &str,
        params: Value,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = StreamItem> + use<>, ClientError> {
        self.open(method, params, last_event_id, Version::V0_3).await
    }

    async fn open(
        &self,
        method: &str,
        params: Value,
        last_event_id: Option<u64>,
        version: Version,
    ) -> Result<impl Stream<Item = StreamItem> + use<>, ClientError> {
        let req = Request::new(1, method, params);
        let mut builder = self.post(&req, version).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id.to_string());
        }
        let resp = builder.send().await.map_err(|source| ClientError::Http { url: self.url.clone(), source })?;
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let url = self.url.clone();
        if !is_sse {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let err = serde_json::from_str::<Response>(&text)
                .ok()
                .and_then(|r| r.error)
                .map(|e| ClientError::Rpc(e, url.clone()))
                .unwrap_or(ClientError::Status { url, status, body: text.chars().take(300).collect() });
            return Err(err);
        }
        Ok(sse_events(resp.bytes_stream(), url, version))
    }
}

/// The events of an SSE body: each `data` a JSON-RPC response whose result is a stream event of
/// `version`'s form (an error response ends the stream with that error).
fn sse_events<S>(bytes: S, url: String, version: Version) -> impl Stream<Item = StreamItem>
where
    S: Stream<Item = reqwest::Result<bytes::Bytes>>,
{
    bytes.eventsource().filter_map(move |item| {
        let url = url.clone();
        async move {
            let ev = match item {
                Ok(ev) => ev,
                Err(eventsource_stream::EventStreamError::Transport(source)) => {
                    return Some(Err(ClientError::Http { url, source }));
                }
                Err(e) => return Some(Err(ClientError::Decode { url, problem: e.to_string() })),
            };
            if ev.data.is_empty() {
                return None; // a comment or keep-alive
            }
            let id = ev.id.trim().parse().ok();
            let result = serde_json::from_str::<Response>(&ev.data)
                .map_err(|e| ClientError::Decode { url: url.clone(), problem: e.to_string() })
                .and_then(|r| r.into_result().map_err(|e| ClientError::Rpc(e, url.clone())));
            let event = result.and_then(|v| match version {
                Version::V0_3 => serde_json::from_value::<StreamEvent>(v)
                    .map_err(|e| ClientError::Decode { url: url.clone(), problem: e.to_string() }),
                Version::V1_0 => serde_json::from_value::<v1::StreamResponse>(v)
                    .map(v1::StreamResponse::into_v03)
                    .map_err(|e| ClientError::Decode { url: url.clone(), problem: e.to_string() }),
            });
            Some(event.map(|ev| (id, ev)))
        }
    })
}

/// A user message asking for `skill` with structured input.
pub fn skill_message(skill: &str, mut input: Value) -> Message {
    if let Value::Object(m) = &mut input {
        m.insert("skill".into(), Value::String(skill.into()));
    }
    Message::new(Role::User, crate::server::new_id(), vec![Part::text(format!("run skill {skill}")), Part::data(input)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same events framed with `\n` (axum) and `\r\n` (sse-starlette) line ends.
    #[test]
    fn sse_with_either_line_end() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let ev = r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"t","contextId":"c","kind":"status-update","status":{"state":"completed"},"final":true}}"#;
        for nl in ["\n", "\r\n"] {
            let body = format!(": ping{nl}{nl}id: 4{nl}data: {ev}{nl}{nl}");
            // Split mid-line, as a network would.
            let (a, b) = body.split_at(body.len() / 2);
            let chunks: Vec<reqwest::Result<bytes::Bytes>> =
                vec![Ok(bytes::Bytes::from(a.to_string())), Ok(bytes::Bytes::from(b.to_string()))];
            let got: Vec<_> =
                rt.block_on(sse_events(futures_util::stream::iter(chunks), "u".into(), Version::V0_3).collect());
            assert_eq!(got.len(), 1, "{nl:?}: {got:?}");
            let (id, event) = got.into_iter().next().expect("one").expect("parses");
            assert_eq!(id, Some(4));
            assert!(event.is_final());
        }
        // A 1.0 stream reads into the same 0.3 events.
        let body = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"statusUpdate\":{\"taskId\":\"t\",\"contextId\":\"c\",\"status\":{\"state\":\"TASK_STATE_INPUT_REQUIRED\"}}}}\r\n\r\n";
        let chunks: Vec<reqwest::Result<bytes::Bytes>> = vec![Ok(bytes::Bytes::from(body))];
        let got: Vec<_> =
            rt.block_on(sse_events(futures_util::stream::iter(chunks), "u".into(), Version::V1_0).collect());
        let (_, event) = got.into_iter().next().expect("one").expect("parses");
        assert!(event.is_final(), "input-required ends a 1.0 exchange: {event:?}");
    }
}
