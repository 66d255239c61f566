//! Push notifications: one forwarder per task that has push configs, POSTing each of the task's
//! events, in order, to every configured URL (A2A 1.0 §4.3.3: "Agents MUST attempt delivery at
//! least once for each configured webhook"). The payload is that of the generation the config
//! came in: 1.0 configs get each event as a `StreamResponse` with
//! `Authorization: <scheme> <credentials>` from the config's `authentication`; 0.3 configs get
//! the task itself on each status change, with `X-A2A-Notification-Token` (0.3 §9.5). Delivery
//! is best effort: one attempt with [`TIMEOUT`], a failure logged.

use std::sync::Arc;
use std::time::Duration;

use protocol::StreamEvent;
use protocol::a2a_v1 as v1;

use super::Server;
use crate::store::{Entry, PushTarget};

/// How long one webhook call may take (§4.3.3 recommends 10-30 seconds).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// Follow `entry` from event `from` on and notify its push configs of each event, until the task
/// is terminal and every event is delivered. Runs on its own tokio task.
pub(crate) fn forward(s: Arc<Server>, entry: Arc<Entry>, from: usize) {
    tokio::spawn(async move {
        let mut rx = entry.subscribe();
        let mut next = from;
        loop {
            rx.borrow_and_update();
            let events = entry.events_from(next);
            for ev in &events {
                next += 1;
                for target in entry.push_configs() {
                    deliver(&s, &entry, &target, ev).await;
                }
            }
            if events.is_empty() {
                if entry.task_state().is_terminal() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    });
}

async fn deliver(s: &Server, entry: &Entry, target: &PushTarget, ev: &StreamEvent) {
    let cfg = &target.config;
    let mut req = s.http.post(&cfg.url);
    if target.v1 {
        req = req
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&v1::StreamResponse::from(ev)).expect("stream events serialize"));
        if let Some(auth) = cfg.authentication.as_ref().and_then(authorization) {
            req = req.header("authorization", auth);
        }
    } else {
        // 0.3 notifies with the task, on its status changes.
        if matches!(ev, StreamEvent::Artifact(_)) {
            return;
        }
        req = req.json(&entry.task());
        if let Some(auth) = cfg.authentication.as_ref().and_then(authorization) {
            req = req.header("authorization", auth);
        }
    }
    if let Some(t) = &cfg.token {
        req = req.header("X-A2A-Notification-Token", t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!("push notification to {} answered HTTP {}", cfg.url, r.status()),
        Err(e) => tracing::warn!("push notification to {} failed: {e}", cfg.url),
    }
}

/// The `Authorization` value of a stored config's authentication (`{schemes: [s], credentials}`):
/// `"<scheme> <credentials>"`.
fn authorization(auth: &serde_json::Value) -> Option<String> {
    let scheme = auth.get("schemes")?.as_array()?.first()?.as_str()?;
    let credentials = auth.get("credentials")?.as_str()?;
    Some(format!("{scheme} {credentials}"))
}
