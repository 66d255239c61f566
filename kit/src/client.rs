//! A small A2A 0.3 client: card discovery, typed JSON-RPC calls, SSE streams.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use protocol::jsonrpc::{ErrorObject, Request, Response};
use protocol::{
    AgentCard, Message, MessageSendConfiguration, MessageSendParams, Method, Part, Role, StreamEvent, Task,
};
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

#[derive(Clone)]
pub struct A2aClient {
    pub url: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl A2aClient {
    /// `url` is the agent's base URL (the card's `url`), with or without a trailing slash.
    pub fn new(url: &str) -> A2aClient {
        let url = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
        // Idle pooled connections are dropped before an agent's server would close them (30 s
        // header timeout, see `kit::http`), so a request never races the server's close.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(15))
            .build()
            .expect("reqwest client builds");
        A2aClient { url, http, token: None }
    }

    pub fn with_token(mut self, token: Option<String>) -> A2aClient {
        self.token = token;
        self
    }

    /// GET the Agent Card.
    pub async fn card(&self) -> Result<AgentCard, ClientError> {
        let url = format!("{}.well-known/agent.json", self.url);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|source| ClientError::Http { url: url.clone(), source })?;
        if !resp.status().is_success() {
            return Err(ClientError::Status { url, status: resp.status().as_u16(), body: String::new() });
        }
        resp.json().await.map_err(|e| ClientError::Decode { url, problem: e.to_string() })
    }

    fn post(&self, body: &Request) -> reqwest::RequestBuilder {
        let mut req = self.http.post(&self.url).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Call a method and decode its result.
    pub async fn call<M: Method>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        let req = Request::new(1, M::METHOD, params);
        let resp =
            self.post(&req).send().await.map_err(|source| ClientError::Http { url: self.url.clone(), source })?;
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

    /// `message/send`; with `blocking` the agent answers when the task is done.
    pub async fn send(&self, message: Message, blocking: bool) -> Result<Task, ClientError> {
        let params = MessageSendParams {
            message,
            configuration: Some(MessageSendConfiguration { blocking: Some(blocking), ..Default::default() }),
            metadata: None,
        };
        match self.call::<protocol::SendMessage>(&params).await? {
            protocol::SendResult::Task(t) => Ok(t),
            protocol::SendResult::Message(m) => Err(ClientError::Decode {
                url: self.url.clone(),
                problem: format!("expected a task, got a message: {}", m.text()),
            }),
        }
    }

    /// Open an SSE stream for `message/stream` or `tasks/resubscribe`.
    pub async fn stream(
        &self,
        method: &str,
        params: Value,
        last_event_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<(Option<u64>, StreamEvent), ClientError>> + use<>, ClientError> {
        let req = Request::new(1, method, params);
        let mut builder = self.post(&req).header("accept", "text/event-stream");
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
            let text = resp.text().await.unwrap_or_default();
            let err = serde_json::from_str::<Response>(&text)
                .ok()
                .and_then(|r| r.error)
                .map(|e| ClientError::Rpc(e, url.clone()))
                .unwrap_or(ClientError::Decode { url, problem: format!("not an event stream: {text}") });
            return Err(err);
        }
        Ok(sse_events(resp.bytes_stream(), url))
    }
}

/// Parse an SSE byte stream into (event id, JSON-RPC result as StreamEvent).
fn sse_events<S>(bytes: S, url: String) -> impl Stream<Item = Result<(Option<u64>, StreamEvent), ClientError>>
where
    S: Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    futures_util::stream::unfold((bytes, BytesMut::new(), url), |(mut bytes, mut buf, url)| async move {
        loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
                let block = buf.split_to(pos + 2);
                let text = String::from_utf8_lossy(&block);
                let mut id = None;
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // comment / keep-alive
                }
                let item = serde_json::from_str::<Response>(&data)
                    .map_err(|e| ClientError::Decode { url: url.clone(), problem: e.to_string() })
                    .and_then(|r| r.into_result().map_err(|e| ClientError::Rpc(e, url.clone())))
                    .and_then(|v| {
                        serde_json::from_value::<StreamEvent>(v)
                            .map_err(|e| ClientError::Decode { url: url.clone(), problem: e.to_string() })
                    })
                    .map(|ev| (id, ev));
                return Some((item, (bytes, buf, url)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    return Some((Err(ClientError::Http { url: url.clone(), source }), (bytes, buf, url)));
                }
                None => return None,
            }
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
