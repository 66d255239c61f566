//! The coordinator's web pages. `/ui` is the live dashboard (`crate::dashboard` builds its data):
//! the metric over the cycles, the current cycle, leases, the progress, `main`'s lineage,
//! governance and the promotions waiting for approval, updated over SSE (`/ui/events`), with the
//! styles, the script and the chart (SVG drawn by the script) served inline: nothing external.
//! One branch (its record: declaration, gates, every finding with its evidence, tampering by
//! class, decision; tasks, lease holders, artefacts, events, diff stat) at `/ui/branch/<branch>`, and
//! each artefact at `/ui/branch/<branch>/artifact/<task>/<name>`.
//!
//! Every page needs the swarm token (the server's middleware: a cookie set by `?token=` once);
//! the pages only read. The two actions, `POST /ui/approve/<branch>` and `POST
//! /ui/reject/<branch>`, need the token itself as a bearer header (a cookie is refused for a
//! POST), which the page asks for. Every name is validated before it touches the file system.

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use kit::substrate::{Home, inspect, render_text};
use tokio::sync::broadcast;

/// The loop's progress lines, as the coordinator says them, for the pages that listen.
pub type Feed = broadcast::Sender<String>;

/// What the pages need: the swarm's home, the progress feed and its last lines.
#[derive(Clone)]
pub struct Web {
    home: PathBuf,
    feed: Feed,
    recent: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

/// Progress lines a page gets when it opens (the rest comes live).
const RECENT_LINES: usize = 300;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
         pre{{background:#f6f6f6;padding:1em;overflow:auto}}.PROMOTE,.PROMOTED{{color:#070}}.REJECT,.FAILED{{color:#a00}}.HOLD{{color:#a60}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

/// The dashboard: the page with the current snapshot inside, the styles and the script inline
/// (nothing else is fetched but `/ui/events`).
async fn index(State(w): State<Web>) -> Response {
    let home = w.home.clone();
    let snap = match tokio::task::spawn_blocking(move || crate::dashboard::snapshot(&home)).await {
        Ok(s) => s,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let json = serde_json::to_string(&snap).unwrap_or_else(|_| "null".into()).replace("</", "<\\/");
    let page = DASHBOARD_HTML
        .replace("/*CSS*/", DASHBOARD_CSS)
        .replace("/*HOME*/", &esc(&w.home.display().to_string()))
        .replace("/*JS*/", DASHBOARD_JS)
        .replace("/*SNAPSHOT*/", &json);
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");

/// `GET /ui/state`: the snapshot as JSON.
async fn state(State(w): State<Web>) -> Response {
    let home = w.home.clone();
    match tokio::task::spawn_blocking(move || crate::dashboard::snapshot(&home)).await {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /ui/events`: a `snapshot` event whenever what the page shows changed (files under the
/// swarm's `.swarm/`, the branches' leases, `main` and the governance ref, the governance
/// documents on disk; at least every [`SAFETY_NET`]), and a `line` event per progress line of
/// the loop. Only sent while a page listens: nothing runs for it otherwise.
async fn events(State(w): State<Web>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    tokio::spawn(feed_page(w, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Recompute the snapshot at least this often while a page listens (a change no watch saw).
const SAFETY_NET: Duration = Duration::from_secs(5);
/// Changes closer together than this make one snapshot.
const SETTLE: Duration = Duration::from_millis(200);

async fn feed_page(w: Web, tx: tokio::sync::mpsc::Sender<SseEvent>) {
    let (fs_tx, mut fs_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _watches = watch_swarm(&w.home, fs_tx);
    let mut lines = w.feed.subscribe();
    let recent: Vec<String> = w.recent.lock().expect("recent lines lock").iter().cloned().collect();
    if tx.send(SseEvent::default().event("log-reset").data("")).await.is_err() {
        return;
    }
    for l in recent {
        if tx.send(SseEvent::default().event("line").data(l)).await.is_err() {
            return;
        }
    }
    let mut last = String::new();
    loop {
        let home = w.home.clone();
        let Ok(snap) = tokio::task::spawn_blocking(move || crate::dashboard::snapshot(&home)).await else { return };
        // Unchanged but for the clock: nothing to send.
        let key = serde_json::to_string(&crate::dashboard::Snapshot { at: String::new(), at_ms: 0, ..snap.clone() })
            .unwrap_or_default();
        if key != last {
            last = key;
            let data = serde_json::to_string(&snap).unwrap_or_default();
            if tx.send(SseEvent::default().event("snapshot").data(data)).await.is_err() {
                return;
            }
        }
        let wake = tokio::time::sleep(SAFETY_NET);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = tx.closed() => return,
                line = lines.recv() => match line {
                    Ok(l) => {
                        if tx.send(SseEvent::default().event("line").data(l)).await.is_err() {
                            return;
                        }
                        break;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                Some(()) = fs_rx.recv() => break,
                () = &mut wake => break,
            }
        }
        tokio::time::sleep(SETTLE).await;
        while fs_rx.try_recv().is_ok() {}
        while let Ok(l) = lines.try_recv() {
            if tx.send(SseEvent::default().event("line").data(l)).await.is_err() {
                return;
            }
        }
    }
}

/// Watches (no polling) on what the page shows: `worktrees/.swarm/` (the loop state, events,
/// approvals), every branch's `leases/`, the repository's refs (`main`, the governance ref)
/// and its root (the governance documents on disk). Dropped with the page's stream.
fn watch_swarm(
    home: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Vec<Box<dyn std::any::Any + Send>> {
    use notify::Watcher;
    let layout = kit::layout::Layout::new(home);
    let mut out: Vec<Box<dyn std::any::Any + Send>> = vec![];
    let tx2 = tx.clone();
    if let Ok(mut w) = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if r.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx2.send(());
        }
    }) {
        let git = home.join(".git");
        for dir in [
            home.to_path_buf(),
            layout.swarm(),
            layout.approvals_dir(),
            git.clone(),
            git.join("refs/heads"),
            git.join("refs/ratchet"),
        ] {
            if dir.is_dir() {
                let _ = w.watch(&dir, notify::RecursiveMode::NonRecursive);
            }
        }
        out.push(Box::new(w));
    }
    if let Ok(t) = kit::substrate::TaskWatcher::for_dirs(&layout.worktrees(), &["leases"], move || {
        let _ = tx.send(());
    }) {
        out.push(Box::new(t));
    }
    out
}

/// `POST /ui/approve/<branch>` (bearer token only: a page's cookie is not enough to act):
/// promote a candidate waiting for approval, as `ratchet approve <branch>` does.
async fn approve(State(w): State<Web>, UrlPath(branch): UrlPath<String>) -> Response {
    decide(w, branch, true).await
}

/// `POST /ui/reject/<branch>`: discard a promotion waiting for approval.
async fn reject(State(w): State<Web>, UrlPath(branch): UrlPath<String>) -> Response {
    decide(w, branch, false).await
}

async fn decide(w: Web, branch: String, approve: bool) -> Response {
    if let Err(e) = protocol::names::check_branch(&branch) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let home = w.home.clone();
    let done = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let who = crate::govern::approve::approver_of(&home, None).unwrap_or_else(|_| "a person".into());
        let who = format!("{who} (web page)");
        if approve {
            let r = crate::approvals::approve(&home, &branch, &who)?;
            Ok(format!("promoted {branch}: main {} -> {} (approved by {who})", &r.from[..12], &r.commit[..12]))
        } else {
            crate::approvals::reject(&home, &branch, &who)?;
            Ok(format!("rejected the promotion of {branch} (by {who}): main does not move"))
        }
    })
    .await;
    match done {
        Ok(Ok(text)) => (StatusCode::OK, text).into_response(),
        Ok(Err(e)) => (StatusCode::CONFLICT, format!("{e:#}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn branch(State(w): State<Web>, UrlPath(name): UrlPath<String>) -> Response {
    let home = w.home;
    if let Err(e) = protocol::names::check_branch(&name) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let report = match Home::open(&home).and_then(|h| inspect(&h, &name)) {
        Ok(r) => r,
        Err(e) => return (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    let mut b = String::from("<p><a href=\"/ui\">the dashboard</a></p><h2>artefacts</h2><ul>");
    for a in &report.artifacts {
        b.push_str(&format!(
            "<li><a href=\"/ui/branch/{}/artifact/{p}\">{p}</a> ({} bytes)</li>",
            esc(&name),
            a.bytes,
            p = esc(&a.path)
        ));
    }
    b.push_str("</ul>");
    // The record from the events: the declaration, gates, every finding with its evidence,
    // tampering named with its class, the decision.
    if let Ok(Some(r)) = crate::record::find(&home, &name) {
        b.push_str(&format!("<h2>record</h2><pre>{}</pre>", esc(&crate::record::render(&r))));
    }
    b.push_str(&format!("<h2>inspect</h2><pre>{}</pre>", esc(&render_text(&report))));
    page(&format!("Ratchet: {name}"), &b).into_response()
}

async fn artifact(State(w): State<Web>, UrlPath((name, task, file)): UrlPath<(String, String, String)>) -> Response {
    let home = w.home;
    for (what, n) in [("branch", &name), ("task", &task), ("artefact", &file)] {
        if let Err(e) = protocol::names::check_component(what, n) {
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    }
    let path = kit::layout::Layout::new(&home).branch_dir(&name).join("artifacts").join(&task).join(&file);
    match std::fs::read(&path) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, format!("no artefact {task}/{file} on branch {name}")).into_response(),
    }
}

/// The `/ui` routes for the swarm at `home`; `feed` carries the loop's progress lines.
pub fn routes(home: PathBuf, feed: Feed) -> Router {
    let recent = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let (mut rx, keep) = (feed.subscribe(), recent.clone());
        rt.spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(l) => {
                        let mut k = keep.lock().expect("recent lines lock");
                        if k.len() >= RECENT_LINES {
                            k.pop_front();
                        }
                        k.push_back(l);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    Router::new()
        .route("/ui", get(index))
        .route("/ui/state", get(state))
        .route("/ui/events", get(events))
        .route("/ui/approve/{name}", post(approve))
        .route("/ui/reject/{name}", post(reject))
        .route("/ui/branch/{name}", get(branch))
        .route("/ui/branch/{name}/artifact/{task}/{file}", get(artifact))
        .with_state(Web { home, feed, recent })
}
