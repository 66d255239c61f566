//! The swarm's git endpoint (smart HTTP through `git http-backend`, as CGI), so that members on
//! other hosts move code with git and share no file system with the coordinator:
//!
//! - `/git/repo/...`: the home's repository, fetch only (`git-upload-pack`; any commit may be
//!   asked for by id, so a holder fetches exactly the base and head it was given);
//! - `/git/incoming/...`: a bare repository beside it (`worktrees/.swarm/incoming.git`, objects
//!   borrowed from the home's by alternates), push only (`git-receive-pack`): remote holders
//!   push their result commits there under `refs/incoming/<branch>/<task>/<token>`, and the
//!   coordinator fetches one into the home only after checking it (`crate::remote`). Nothing a
//!   remote pushes can move a ref of the home's repository.
//!
//! Both sit behind the swarm token like every other route (`Authorization: Bearer`; git sends
//! it with `http.extraHeader`, set through `GIT_CONFIG_*` variables, never a command line).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use kit::git::Git;
use kit::layout::Layout;
use tokio::io::AsyncWriteExt;

/// The largest push or fetch request body taken (a push of a result commit is small; a fetch
/// request is a list of object ids).
const MAX_GIT_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Repo,
    Incoming,
}

pub fn routes(home: PathBuf) -> Router {
    Router::new()
        .route(
            "/git/repo/{*rest}",
            any(|s: State<PathBuf>, p: UrlPath<String>, r: Request| serve(s, p, r, Which::Repo)),
        )
        .route(
            "/git/incoming/{*rest}",
            any(|s: State<PathBuf>, p: UrlPath<String>, r: Request| serve(s, p, r, Which::Incoming)),
        )
        .with_state(home)
}

/// Creates the incoming repository when missing (bare, objects borrowed from the home's).
pub fn ensure_incoming(home: &Path) -> std::io::Result<PathBuf> {
    let dir = Layout::new(home).incoming_repo();
    if dir.join("objects").is_dir() {
        return Ok(dir);
    }
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.parent().expect("incoming.git has a parent"))?;
    Git::new(home)
        .run(["init", "-q", "--bare", &tmp.to_string_lossy()])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let objects = std::fs::canonicalize(home.join(".git").join("objects"))?;
    std::fs::write(tmp.join("objects/info/alternates"), format!("{}\n", objects.display()))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another request made it meanwhile.
        Err(_) if dir.join("objects").is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{why}\n")).into_response()
}

async fn serve(State(home): State<PathBuf>, UrlPath(rest): UrlPath<String>, req: Request, which: Which) -> Response {
    // Which git service the request is for: the URL's last part or `?service=`.
    let query = req.uri().query().unwrap_or("").to_string();
    let service = if rest.ends_with("git-receive-pack") || query.contains("service=git-receive-pack") {
        "receive-pack"
    } else if rest.ends_with("git-upload-pack") || query.contains("service=git-upload-pack") {
        "upload-pack"
    } else {
        return refuse(
            StatusCode::NOT_FOUND,
            "only the smart HTTP protocol is served here (git-upload-pack, git-receive-pack)",
        );
    };
    if rest.split('/').any(|c| c == ".." || c.is_empty()) && !rest.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "bad path");
    }
    let (root, path_info, push) = match (which, service) {
        (Which::Repo, "upload-pack") => (home.clone(), format!("/.git/{rest}"), false),
        (Which::Incoming, "receive-pack") => {
            let dir = match tokio::task::spawn_blocking({
                let home = home.clone();
                move || ensure_incoming(&home)
            })
            .await
            {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("incoming repository: {e}")),
                Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
            let parent = dir.parent().expect("incoming.git has a parent").to_path_buf();
            (parent, format!("/incoming.git/{rest}"), true)
        }
        (Which::Repo, _) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "the swarm's repository is fetch-only: push result commits to /git/incoming under refs/incoming/<branch>/<task>/<token>",
            );
        }
        (Which::Incoming, _) => return refuse(StatusCode::FORBIDDEN, "the incoming repository takes pushes only"),
    };
    let method = req.method().as_str().to_string();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_GIT_BODY).await {
        Ok(b) => b,
        Err(e) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, &format!("git request body: {e}")),
    };
    let hv = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut git = Git::new(&root)
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path_info)
        .env("REQUEST_METHOD", &method)
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", hv(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", hv(header::CONTENT_ENCODING))
        .env("GIT_CONFIG_COUNT", "3")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", if push { "true" } else { "false" })
        .env("GIT_CONFIG_KEY_1", "uploadpack.allowAnySHA1InWant")
        .env("GIT_CONFIG_VALUE_1", "true")
        .env("GIT_CONFIG_KEY_2", "receive.denyDeletes")
        .env("GIT_CONFIG_VALUE_2", "true");
    if let Some(p) = headers.get("git-protocol").and_then(|v| v.to_str().ok()) {
        git = git.env("GIT_PROTOCOL", p);
    }
    let mut cmd = git.http_backend();
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("starting git http-backend: {e}")),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("git http-backend: {e}")),
    };
    let _ = writer.await;
    if !out.stderr.is_empty() {
        tracing::debug!("git http-backend: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    cgi_response(&out.stdout)
}

/// Turns a CGI program's output (headers, a blank line, the body) into a response.
fn cgi_response(out: &[u8]) -> Response {
    let (head, body) = match find_blank(out) {
        Some((end, skip)) => (&out[..end], &out[end + skip..]),
        None => return refuse(StatusCode::BAD_GATEWAY, "git http-backend answered without headers"),
    };
    let mut resp = Response::new(Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
            *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(name), Ok(value)) = (header::HeaderName::try_from(k.trim()), HeaderValue::from_str(v)) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

fn find_blank(b: &[u8]) -> Option<(usize, usize)> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, 4));
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
