//! Agent Card probes: readiness (poll under a deadline) and `ratchet status`'s live check.

use std::time::Duration;

use protocol::a2a_v1::{self as v1, AgentCard};

/// How often readiness polls a card that does not answer yet.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: no answer before the deadline")]
    Timeout { url: String },
    #[error("GET {url}: {source}")]
    NotACard { url: String, source: v1::CardError },
}

/// A client for loopback and remote probes: never through a proxy, short timeouts.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .expect("a plain HTTP client with a timeout always builds")
}

/// Where a card may live for an agent URL: beside the URL (Ratchet agents and most A2A servers),
/// then at the URL's origin (a third-party agent whose endpoint is a sub-path).
pub fn card_urls(base: &str) -> Vec<String> {
    let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
    let mut urls = vec![format!("{base}.well-known/agent.json"), format!("{base}.well-known/agent-card.json")];
    if let Some(scheme_end) = base.find("://") {
        let rest = &base[scheme_end + 3..];
        let origin = &base[..scheme_end + 3 + rest.find('/').unwrap_or(rest.len())];
        for u in [format!("{origin}/.well-known/agent-card.json"), format!("{origin}/.well-known/agent.json")] {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
    }
    urls
}

/// An HTTP error with its causes ("error sending request" alone does not say "connection refused").
fn http_error(url: &str, e: reqwest::Error) -> ProbeError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.contains(&text) {
            reason.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    ProbeError::Http { url: url.to_string(), reason }
}

/// Fetch one card URL.
pub async fn fetch_card_at(client: &reqwest::Client, url: &str) -> Result<AgentCard, ProbeError> {
    let resp = client.get(url).send().await.map_err(|e| http_error(url, e))?;
    if !resp.status().is_success() {
        return Err(ProbeError::Status { url: url.to_string(), status: resp.status().as_u16() });
    }
    let bytes = resp.bytes().await.map_err(|e| http_error(url, e))?;
    // A card of either A2A generation, read into its 1.0 form.
    v1::parse_card(&bytes).map_err(|source| ProbeError::NotACard { url: url.to_string(), source })
}

/// Fetch the card of the agent at `base`, trying each of [`card_urls`]; the first error is
/// returned when none answers.
pub async fn fetch_card(client: &reqwest::Client, base: &str) -> Result<AgentCard, ProbeError> {
    let mut first = None;
    for url in card_urls(base) {
        match fetch_card_at(client, &url).await {
            Ok(card) => return Ok(card),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.expect("card_urls is never empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_locations() {
        assert_eq!(
            card_urls("http://127.0.0.1:5/"),
            vec!["http://127.0.0.1:5/.well-known/agent.json", "http://127.0.0.1:5/.well-known/agent-card.json",]
        );
        assert_eq!(
            card_urls("http://h:5/a2a"),
            vec![
                "http://h:5/a2a/.well-known/agent.json",
                "http://h:5/a2a/.well-known/agent-card.json",
                "http://h:5/.well-known/agent-card.json",
                "http://h:5/.well-known/agent.json",
            ]
        );
    }
}
