//! Models as swarm members: endpoints declared once (constitution.md
//! `[constitution.models.<name>]`), referred to by name (cadence.md `[proposer] model`, ethos.md
//! `[ethos.review] model`), named in the evidence by [`ModelId`], and accounted per call
//! ([`ModelCall`]) and per stage ([`Usage`]).
//!
//! ```toml
//! [constitution.models.local]
//! url = "http://127.0.0.1:8089/v1"   # an OpenAI-compatible API (llama.cpp server, vLLM, Ollama, ...)
//! model = "smollm2-135m-instruct"     # the model id that server serves
//! api_key_env = "RATCHET_MODEL_KEY"   # the variable holding its key (never the key itself)
//! temperature = 0.0                   # default 0: deterministic where the server is
//! max_tokens = 512                    # completion budget per call
//! structured = true                   # send response_format json_schema (grammar-constrained output)
//! ```

use std::collections::BTreeMap;
use std::fmt;

use crate::work::Verdict;
use serde::{Deserialize, Serialize};

/// One declared model endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEndpoint {
    /// Base URL of an OpenAI-compatible API (`POST <url>/chat/completions`).
    pub url: String,
    /// The model id sent in each request.
    pub model: String,
    /// The environment variable (of the agents that call it) holding the API key, if the server
    /// wants one. Never the key itself: governance documents are committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Whether the server constrains output to a JSON schema (`response_format` of type
    /// `json_schema`); the answer is validated either way.
    #[serde(default = "default_true")]
    pub structured: bool,
}

fn default_max_tokens() -> u32 {
    512
}

fn default_true() -> bool {
    true
}

impl ModelEndpoint {
    /// The endpoint's URL in a canonical form (no trailing `/`, scheme and host lower-case), so
    /// two spellings of one server compare equal.
    pub fn canonical_url(&self) -> String {
        canonical_url(&self.url)
    }

    /// Same server and same model: what the reviewer guard refuses.
    pub fn same_model_as(&self, other: &ModelEndpoint) -> bool {
        self.canonical_url() == other.canonical_url() && self.model == other.model
    }
}

/// `HTTP://Host:1/v1/` -> `http://host:1/v1`.
pub fn canonical_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, String::new()));
            format!("{}://{}{path}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase())
        }
        None => url.to_string(),
    }
}

/// A model's identity in events, commit trailers, promotions and exports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelId {
    /// The declared name (`[constitution.models.<name>]`).
    pub name: String,
    pub model: String,
    pub url: String,
}

impl ModelId {
    pub fn of(name: &str, e: &ModelEndpoint) -> ModelId {
        ModelId { name: name.to_string(), model: e.model.clone(), url: e.canonical_url() }
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} @ {}", self.name, self.model, self.url)
    }
}

/// How a model's review counts (constitution.md `model_review`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewMode {
    /// No model review.
    #[default]
    Off,
    /// Findings are recorded as warnings; never rejects.
    Advisory,
    /// A `block` verdict rejects the candidate.
    Blocking,
}

impl ReviewMode {
    pub fn is_off(&self) -> bool {
        *self == ReviewMode::Off
    }
}

/// ethos.md `[ethos.review]`: which model reviews candidates, against what rubric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// A model declared in constitution.md `[constitution.models]`.
    pub model: String,
    /// What the reviewer checks the diff against, one criterion per entry.
    pub rubric: Vec<String>,
    /// Most findings the reviewer may return.
    #[serde(default = "default_max_findings")]
    pub max_findings: u32,
    /// Most bytes of the diff shown to the reviewer (a longer diff is cut, saying so).
    #[serde(default = "default_max_diff_bytes")]
    pub max_diff_bytes: u32,
    /// Seconds one answer may take.
    #[serde(default = "default_review_timeout")]
    pub timeout_s: u64,
}

fn default_review_timeout() -> u64 {
    120
}

fn default_max_findings() -> u32 {
    5
}

fn default_max_diff_bytes() -> u32 {
    16 * 1024
}

/// Tokens and model time, summed over calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub calls: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens the server reused from its prefix cache (as the server reports them).
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Wall-clock milliseconds the calls took, as the caller measured them.
    pub latency_ms: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.calls += other.calls;
        self.prompt_tokens += other.prompt_tokens;
        self.cached_prompt_tokens += other.cached_prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.latency_ms += other.latency_ms;
    }

    /// Prompt plus completion tokens: what a token budget counts.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// The share of prompt tokens served from the prefix cache (None without prompt tokens).
    pub fn cache_share(&self) -> Option<f64> {
        (self.prompt_tokens > 0).then(|| self.cached_prompt_tokens as f64 / self.prompt_tokens as f64)
    }

    pub fn is_empty(&self) -> bool {
        self.calls == 0
    }
}

/// How a model call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallOutcome {
    /// A usable answer.
    Ok,
    /// An answer that is not what was asked: no diff, a diff that does not apply, JSON that
    /// fails validation.
    Malformed,
    /// No answer: transport, HTTP status, timeout.
    Error,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Malformed => "malformed",
            CallOutcome::Error => "error",
        }
    }
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One call to a model, as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCall {
    /// Who asked: `propose`, `review`, or `compare` (a benchmark of endpoints).
    pub stage: String,
    pub model: ModelId,
    /// RFC 3339, when the request was sent.
    pub started_at: String,
    pub outcome: CallOutcome,
    /// The server's completion id, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    pub usage: Usage,
    /// Why it is malformed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The start of the model's answer (at most [`ANSWER_EXCERPT`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Characters of an answer kept in a [`ModelCall`].
pub const ANSWER_EXCERPT: usize = 1200;

/// The first [`ANSWER_EXCERPT`] characters of `text`.
pub fn excerpt(text: &str) -> String {
    text.chars().take(ANSWER_EXCERPT).collect()
}

/// Usage per stage from a list of calls.
pub fn usage_by_stage(calls: &[ModelCall]) -> BTreeMap<String, Usage> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for c in calls {
        out.entry(c.stage.clone()).or_default().add(&c.usage);
    }
    out
}

/// Paired acceptance of two endpoints on the same proposal tasks, and what it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareStats {
    pub tasks: u32,
    pub current_accepted: u32,
    pub candidate_accepted: u32,
    /// Tasks only the candidate's answer was accepted on, and only the current's.
    pub candidate_only: u32,
    pub current_only: u32,
    /// Exact one-sided sign-test p-values on those discordant tasks: that the candidate is
    /// better, and that it is worse.
    pub p_better: f64,
    pub p_worse: f64,
    /// The significance level: 1 - ethos.md `confidence`.
    pub alpha: f64,
}

/// P(X >= k) for X ~ Binomial(n, 1/2), exactly.
fn binomial_tail(k: u32, n: u32) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let mut term = 0.5f64.powi(n as i32); // C(n, 0) / 2^n
    let mut below = 0.0;
    for i in 0..k.min(n + 1) {
        below += term;
        term = term * f64::from(n - i) / f64::from(i + 1);
    }
    (1.0 - below).clamp(0.0, 1.0)
}

/// The one decision rule of `ratchet models compare`: PROMOTE the candidate endpoint when, on
/// the same tasks, its answers were accepted (by the rails and the evaluator) significantly more
/// often than the current endpoint's (exact sign test on the tasks where exactly one was
/// accepted, at 1 - `confidence`); REJECT when significantly less often; HOLD otherwise, saying
/// why. Tokens and latency are evidence beside it, never a reason to switch on their own.
pub fn compare_decision(current: &[bool], candidate: &[bool], confidence: f64) -> (Verdict, Vec<String>, CompareStats) {
    let tasks = current.len().min(candidate.len());
    let (mut cand_only, mut cur_only) = (0u32, 0u32);
    for i in 0..tasks {
        match (current[i], candidate[i]) {
            (false, true) => cand_only += 1,
            (true, false) => cur_only += 1,
            _ => {}
        }
    }
    let n = cand_only + cur_only;
    let alpha = 1.0 - confidence;
    let stats = CompareStats {
        tasks: tasks as u32,
        current_accepted: current[..tasks].iter().filter(|a| **a).count() as u32,
        candidate_accepted: candidate[..tasks].iter().filter(|a| **a).count() as u32,
        candidate_only: cand_only,
        current_only: cur_only,
        p_better: binomial_tail(cand_only, n),
        p_worse: binomial_tail(cur_only, n),
        alpha,
    };
    let counts = format!(
        "accepted on {} of {tasks} tasks (candidate) vs {} (current); the candidate alone on {cand_only}, the current alone on {cur_only}",
        stats.candidate_accepted, stats.current_accepted
    );
    let (decision, why) = if stats.p_better < alpha {
        (
            Verdict::Promote,
            format!("the candidate's answers are accepted more often: sign test p={:.4} < {alpha:.2}", stats.p_better),
        )
    } else if stats.p_worse < alpha {
        (
            Verdict::Reject,
            format!("the candidate's answers are accepted less often: sign test p={:.4} < {alpha:.2}", stats.p_worse),
        )
    } else if n == 0 {
        (Verdict::Hold, "no task tells them apart (every task went the same way for both)".to_string())
    } else {
        (
            Verdict::Hold,
            format!(
                "no significant difference: sign test p={:.4} (better), p={:.4} (worse), both >= {alpha:.2}; more tasks may tell",
                stats.p_better, stats.p_worse
            ),
        )
    };
    (decision, vec![format!("{decision}: {why}"), counts], stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str, model: &str) -> ModelEndpoint {
        ModelEndpoint {
            url: url.into(),
            model: model.into(),
            api_key_env: None,
            temperature: 0.0,
            max_tokens: 64,
            structured: true,
        }
    }

    #[test]
    fn urls_compare_canonically() {
        assert_eq!(canonical_url("HTTP://LocalHost:8089/v1/"), "http://localhost:8089/v1");
        assert!(ep("http://127.0.0.1:1/v1/", "m").same_model_as(&ep("http://127.0.0.1:1/v1", "m")));
        assert!(!ep("http://127.0.0.1:1/v1", "m").same_model_as(&ep("http://127.0.0.1:2/v1", "m")));
        assert!(!ep("http://127.0.0.1:1/v1", "m").same_model_as(&ep("http://127.0.0.1:1/v1", "n")));
        // The path is part of the endpoint (case kept).
        assert!(!ep("http://h/V1", "m").same_model_as(&ep("http://h/v1", "m")));
    }

    #[test]
    fn usage_adds_and_shares() {
        let mut u =
            Usage { calls: 1, prompt_tokens: 100, cached_prompt_tokens: 0, completion_tokens: 10, latency_ms: 5 };
        u.add(&Usage { calls: 1, prompt_tokens: 100, cached_prompt_tokens: 90, completion_tokens: 5, latency_ms: 3 });
        assert_eq!(u.total_tokens(), 215);
        assert_eq!(u.cache_share(), Some(0.45));
        assert_eq!(Usage::default().cache_share(), None);
        let id = ModelId::of("local", &ep("http://127.0.0.1:1/v1/", "m"));
        assert_eq!(id.to_string(), "local: m @ http://127.0.0.1:1/v1");
    }

    #[test]
    fn the_compare_rule_needs_significance_both_ways() {
        assert!((binomial_tail(5, 5) - 1.0 / 32.0).abs() < 1e-12);
        assert!((binomial_tail(0, 3) - 1.0).abs() < 1e-12);
        assert!((binomial_tail(2, 3) - 0.5).abs() < 1e-12);
        let (d, r, s) = compare_decision(&[false; 6], &[true; 6], 0.95);
        assert_eq!(d, Verdict::Promote, "{r:?}");
        assert!((s.p_better - 1.0 / 64.0).abs() < 1e-12, "{s:?}");
        let (d, _, _) = compare_decision(&[true; 6], &[false; 6], 0.95);
        assert_eq!(d, Verdict::Reject);
        // 4 of 4 discordant tasks: p = 1/16 > 0.05: not enough tasks to tell.
        let (d, r, _) = compare_decision(&[false; 4], &[true; 4], 0.95);
        assert_eq!(d, Verdict::Hold);
        assert!(r[0].contains("more tasks may tell"), "{r:?}");
        let (d, r, s) = compare_decision(&[false; 3], &[false; 3], 0.95);
        assert_eq!((d.as_str(), s.candidate_accepted, s.current_accepted), ("HOLD", 0, 0));
        assert!(r[0].contains("no task tells them apart"), "{r:?}");
    }
}
