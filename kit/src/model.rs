//! The one client of model endpoints: OpenAI-compatible chat completions, for every agent that
//! asks a model (the proposer's `openai` strategy, the critic's model review).
//!
//! A call always yields its evidence, a [`ModelCall`] (tokens as the server reported them in
//! `usage`, with `prompt_tokens_details.cached_tokens` for the prefix cache; the latency as
//! measured here), whether or not it produced a usable answer. Nothing is estimated: a server
//! that reports no usage is recorded with zero tokens.
//!
//! The endpoint comes from approved governance only (constitution.md `[constitution.models]`);
//! its key from the environment variable the declaration names.

use std::time::{Duration, Instant};

use protocol::models::{CallOutcome, ModelCall, ModelEndpoint, ModelId, Usage, excerpt};
use serde_json::{Value, json};

/// Why a call gave no answer. Never the candidate's fault: an infrastructure failure, retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model {name}: its key variable {var} is not set in this agent's environment (constitution.md models.{name}.api_key_env); \
         fix: set {var} in `ratchet up`'s environment or in the agent's env table in agents.toml"
    )]
    MissingKey { name: String, var: String },
    #[error("model {id}: {problem}")]
    Call { id: String, problem: String },
}

/// One declared endpoint, ready to call.
#[derive(Debug, Clone)]
pub struct ModelClient {
    pub id: ModelId,
    endpoint: ModelEndpoint,
    key: Option<String>,
    http: reqwest::Client,
}

impl ModelClient {
    /// A client of the declared model `id`; reads the key from `endpoint.api_key_env`.
    pub fn new(id: ModelId, endpoint: &ModelEndpoint, timeout: Duration) -> Result<ModelClient, ModelError> {
        let key = match &endpoint.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.is_empty() => Some(k),
                _ => return Err(ModelError::MissingKey { name: id.name.clone(), var: var.clone() }),
            },
            None => None,
        };
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| ModelError::Call {
            id: id.to_string(),
            problem: format!("cannot build an HTTP client: {e}"),
        })?;
        Ok(ModelClient { id, endpoint: endpoint.clone(), key, http })
    }

    pub fn endpoint(&self) -> &ModelEndpoint {
        &self.endpoint
    }

    /// Ask for one answer: `system` first (the stable prefix a server's cache can reuse), then
    /// `user`. With `schema` (a JSON schema) and a `structured` endpoint, the request asks for
    /// output constrained to it. Returns the answer's text or the failure, with the call's
    /// evidence in both cases (the caller marks a usable-looking answer `malformed` when it
    /// fails its own checks).
    pub async fn chat(
        &self,
        stage: &str,
        system: &str,
        user: &str,
        schema: Option<&Value>,
    ) -> (Result<String, ModelError>, ModelCall) {
        let mut body = json!({
            "model": self.endpoint.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": self.endpoint.temperature,
            "max_tokens": self.endpoint.max_tokens,
            "stream": false,
        });
        if let (Some(s), true) = (schema, self.endpoint.structured) {
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "answer", "strict": true, "schema": s}});
        }
        let mut call = ModelCall {
            stage: stage.to_string(),
            model: self.id.clone(),
            started_at: protocol::timestamp(std::time::SystemTime::now()),
            outcome: CallOutcome::Error,
            response_id: None,
            usage: Usage { calls: 1, ..Usage::default() },
            detail: None,
            answer: None,
        };
        let url = format!("{}/chat/completions", self.endpoint.url.trim_end_matches('/'));
        let t0 = Instant::now();
        let result = self.post(&url, &body).await;
        call.usage.latency_ms = t0.elapsed().as_millis() as u64;
        let fail = |problem: String| ModelError::Call { id: self.id.to_string(), problem };
        let v = match result {
            Ok(v) => v,
            Err(problem) => {
                call.detail = Some(problem.clone());
                return (Err(fail(problem)), call);
            }
        };
        let usage = &v["usage"];
        let n = |x: &Value| x.as_u64().unwrap_or(0);
        call.usage.prompt_tokens = n(&usage["prompt_tokens"]);
        call.usage.completion_tokens = n(&usage["completion_tokens"]);
        call.usage.cached_prompt_tokens = n(&usage["prompt_tokens_details"]["cached_tokens"]);
        call.response_id = v["id"].as_str().map(String::from);
        let Some(text) = v["choices"][0]["message"]["content"].as_str() else {
            let problem = "answered without choices[0].message.content".to_string();
            call.detail = Some(problem.clone());
            return (Err(fail(problem)), call);
        };
        call.outcome = CallOutcome::Ok;
        call.answer = Some(excerpt(text));
        (Ok(text.to_string()), call)
    }

    async fn post(&self, url: &str, body: &Value) -> Result<Value, String> {
        let mut req = self.http.post(url).json(body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer from {url} within the timeout")
            } else {
                format!("could not reach {url}: {e}")
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{url} answered HTTP {status} and then failed: {e}"))?;
        if !status.is_success() {
            let tail: String = text.chars().take(400).collect();
            return Err(format!("{url} answered HTTP {status}: {tail}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{url} answered HTTP {status} with no JSON: {e}"))
    }
}
