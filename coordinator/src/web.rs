//! The same data as `ratchet inspect`, served by the coordinator as web pages: the loop's cycles
//! and candidates at `/ui`, one branch (tasks, lease holders, artefacts, events, diff stat) at
//! `/ui/branch/<branch>`, and each artefact at `/ui/branch/<branch>/artifact/<task>/<name>`.
//! Read-only; every name is validated before it touches the file system.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kit::substrate::{Home, inspect, render_text};

use crate::engine::read_state;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta http-equiv=\"refresh\" content=\"5\"><style>body{{font-family:system-ui,sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}\
         pre{{background:#f6f6f6;padding:1em;overflow:auto}}.PROMOTE,.PROMOTED{{color:#070}}.REJECT,.FAILED{{color:#a00}}.HOLD{{color:#a60}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

async fn index(State(home): State<PathBuf>) -> Response {
    let st = match read_state(&home) {
        Ok(Some(st)) => st,
        Ok(None) => return page("Ratchet", "<p>No loop has run here yet.</p>").into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let mut b = format!(
        "<p>run <code>{}</code>: {} cycle(s) done, {} promotion(s), stalls {}, proposal failures {}{}</p>",
        esc(&st.run_id),
        st.cycles_done,
        st.promotions.len(),
        st.stalls,
        st.proposal_failures,
        st.stopped
            .as_ref()
            .map(|s| format!("; <b>stopped: {}</b> ({})", esc(&s.reason), esc(&s.detail)))
            .unwrap_or_default()
    );
    b.push_str("<table><tr><th>cycle</th><th>baseline</th><th>candidate</th><th>approach</th><th>stage</th><th>verdict</th><th>reasons</th></tr>");
    let cycles = st.finished.iter().chain(st.current.iter());
    for cy in cycles {
        for c in &cy.candidates {
            let v = c.verdict.clone().unwrap_or_default();
            b.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td><a href=\"/ui/branch/{br}\">{br}</a></td><td>{}</td><td>{}</td><td class=\"{v}\">{v}</td><td>{}</td></tr>",
                cy.cycle,
                esc(&cy.baseline[..12.min(cy.baseline.len())]),
                esc(&c.proposal.approach_key()),
                esc(c.stage.as_str()),
                esc(&c.reasons.join("<br>")).replace("&lt;br&gt;", "<br>"),
                br = esc(&c.branch),
                v = esc(&v),
            ));
        }
    }
    b.push_str("</table><h2>promotions</h2><ul>");
    for p in &st.promotions {
        b.push_str(&format!(
            "<li>cycle {}: <a href=\"/ui/branch/{br}\">{br}</a> <code>{}</code> {:?} -&gt; {:?}</li>",
            p.cycle,
            esc(&p.commit[..12.min(p.commit.len())]),
            p.before,
            p.after,
            br = esc(&p.branch)
        ));
    }
    b.push_str("</ul>");
    page("Ratchet", &b).into_response()
}

async fn branch(State(home): State<PathBuf>, UrlPath(name): UrlPath<String>) -> Response {
    if let Err(e) = protocol::names::check_branch(&name) {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let report = match Home::open(&home).and_then(|h| inspect(&h, &name)) {
        Ok(r) => r,
        Err(e) => return (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    let mut b = String::from("<p><a href=\"/ui\">all cycles</a></p><h2>artefacts</h2><ul>");
    for a in &report.artifacts {
        b.push_str(&format!(
            "<li><a href=\"/ui/branch/{}/artifact/{p}\">{p}</a> ({} bytes)</li>",
            esc(&name),
            a.bytes,
            p = esc(&a.path)
        ));
    }
    b.push_str(&format!("</ul><h2>inspect</h2><pre>{}</pre>", esc(&render_text(&report))));
    page(&format!("Ratchet: {name}"), &b).into_response()
}

async fn artifact(
    State(home): State<PathBuf>,
    UrlPath((name, task, file)): UrlPath<(String, String, String)>,
) -> Response {
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

/// The `/ui` routes for the swarm at `home`.
pub fn routes(home: PathBuf) -> Router {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/branch/{name}", get(branch))
        .route("/ui/branch/{name}/artifact/{task}/{file}", get(artifact))
        .with_state(home)
}
