//! The swarm's bearer token: every endpoint but the Agent Card requires it, loopback included.
//!
//! `ratchet up` makes a fresh random token per swarm ([`new_token`], 32 bytes from the OS),
//! writes it to `worktrees/.swarm/token` with mode 0600 ([`write_token`]) and hands it to every
//! member it starts as `RATCHET_TOKEN` (never on a command line, never in a log). Each agent's
//! server then requires `Authorization: Bearer <token>` on every JSON-RPC call and web page
//! ([`check`]); the web pages also take `?token=` once and answer with an HttpOnly,
//! SameSite=Strict cookie, as Jupyter does. Third-party members listed by `url` get their own
//! token from agents.toml, by reference only ([`member_token`]).
//!
//! An agent started with no token refuses to start unless `RATCHET_OPEN=1` asks for the open
//! mode (loopback only; for the A2A TCK and clients that cannot send a token); `ratchet up`
//! never uses it.

use std::io::Read;
use std::path::Path;

use axum::http::{HeaderMap, Method, Uri, header};
use protocol::config::AgentEntry;

/// The variable that hands a member the swarm token.
pub const TOKEN_ENV: &str = "RATCHET_TOKEN";
/// `RATCHET_OPEN=1`: serve without a token (loopback only).
pub const OPEN_ENV: &str = "RATCHET_OPEN";

/// A fresh token: 32 bytes from the OS's random source, as 64 hex digits.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Write `token` to `path` through a temporary file created with mode 0600 (so the secret is
/// never readable by others, not even for a moment), synced, and a rename.
pub fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    crate::files::Atomic::new(path).mode(0o600).sync().write(format!("{token}\n").as_bytes())
}

/// The token in `path` (trimmed); an error when the file is missing or empty.
pub fn read_token(path: &Path) -> std::io::Result<String> {
    let t = std::fs::read_to_string(path)?.trim().to_string();
    if t.is_empty() {
        return Err(std::io::Error::other(format!("{} is empty", path.display())));
    }
    Ok(t)
}

/// The swarm token this process was handed, if any.
pub fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())
}

/// Compare a presented token with the expected one without an early exit, so the time taken
/// does not tell how much of a guess was right. (The length is not secret: swarm tokens all
/// have 64 digits.)
pub fn token_eq(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// The cookie that carries the token for the web pages of the agent on `port` (cookies are
/// per host, not per port: two swarms on one machine must not share one).
pub fn cookie_name(port: u16) -> String {
    format!("ratchet-token-{port}")
}

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// A web page opened with the right `?token=`: set the cookie and send the browser to
    /// this location (the same page without the token in its address).
    GrantAndSetCookie {
        location: String,
        cookie: String,
    },
    Denied,
}

/// Check a request against `expected`: `Authorization: Bearer` always; for GET requests (the
/// read-only web pages) also the cookie, or `?token=` once.
pub fn check(expected: &str, method: &Method, uri: &Uri, headers: &HeaderMap, port: u16) -> Access {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    if bearer.is_some_and(|t| token_eq(expected, t)) {
        return Access::Granted;
    }
    if method != Method::GET {
        return Access::Denied;
    }
    let name = cookie_name(port);
    let from_cookie = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(';').filter_map(|kv| kv.trim().split_once('=')).any(|(k, t)| k == name && token_eq(expected, t))
    });
    if from_cookie {
        return Access::Granted;
    }
    let query = uri.query().unwrap_or("");
    let mut rest = vec![];
    let mut given = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("token=") {
            Some(t) => given = Some(t),
            None => rest.push(pair),
        }
    }
    match given {
        Some(t) if token_eq(expected, t) => {
            let location =
                if rest.is_empty() { uri.path().to_string() } else { format!("{}?{}", uri.path(), rest.join("&")) };
            let cookie = format!("{name}={t}; HttpOnly; SameSite=Strict; Path=/");
            Access::GrantAndSetCookie { location, cookie }
        }
        _ => Access::Denied,
    }
}

/// The token a swarm member listed by `url` gets, from its agents.toml entry: the variable named
/// by `token_env` (in `ratchet up`'s environment) or the file named by `token_file` (relative to
/// the home). `Ok(None)` when the entry names neither: then no token is sent (the swarm's own
/// token never goes to a third party).
pub fn member_token(entry: &AgentEntry, home: &Path) -> Result<Option<String>, String> {
    if let Some(var) = &entry.token_env {
        return match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
            _ => Err(format!(
                "agents.toml: agent {:?}: token_env: {var} is unset or empty; fix: export {var}=<the agent's token> before `ratchet up`",
                entry.name
            )),
        };
    }
    if let Some(file) = &entry.token_file {
        let p = home.join(file);
        return read_token(&p).map(Some).map_err(|e| {
            format!(
                "agents.toml: agent {:?}: token_file: cannot read {}: {e}; fix: write the agent's token there (mode 0600, outside the repository)",
                entry.name,
                p.display()
            )
        });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_written_private() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/token");
        write_token(&path, &a).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_token(&path).unwrap(), a);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("token")], "no temp file is left");
    }

    #[test]
    fn a_url_member_gets_its_own_token_by_reference_only() {
        let dir = tempfile::tempdir().unwrap();
        let toml = |extra: &str| {
            let text = format!("[[agent]]\nname='x'\nrole='security'\nurl='http://127.0.0.1:9/'\n{extra}");
            protocol::config::AgentsFile::parse(&text, "agents.toml").unwrap().agents.remove(0)
        };
        assert_eq!(member_token(&toml(""), dir.path()).unwrap(), None, "no reference: no token, never the swarm's");
        std::fs::write(dir.path().join("x.token"), "member-secret\n").unwrap();
        assert_eq!(
            member_token(&toml("token_file='x.token'\n"), dir.path()).unwrap().as_deref(),
            Some("member-secret")
        );
        let e = member_token(&toml("token_file='missing.token'\n"), dir.path()).unwrap_err();
        assert!(e.contains("token_file") && e.contains("fix:"), "{e}");
        let e = member_token(&toml("token_env='RATCHET_AUTH_TEST_SURELY_UNSET'\n"), dir.path()).unwrap_err();
        assert!(e.contains("RATCHET_AUTH_TEST_SURELY_UNSET is unset") && e.contains("export"), "{e}");
    }

    #[test]
    fn checks_header_cookie_and_query() {
        let t = "abc123";
        let h = |k: header::HeaderName, v: &str| {
            let mut m = HeaderMap::new();
            m.insert(k, v.parse().unwrap());
            m
        };
        let uri: Uri = "/ui/branch/b?x=1".parse().unwrap();
        assert!(token_eq(t, "abc123") && !token_eq(t, "abc124") && !token_eq(t, "abc"));
        assert_eq!(check(t, &Method::POST, &uri, &h(header::AUTHORIZATION, "Bearer abc123"), 7), Access::Granted);
        assert_eq!(check(t, &Method::POST, &uri, &h(header::AUTHORIZATION, "Bearer abc124"), 7), Access::Denied);
        assert_eq!(check(t, &Method::POST, &uri, &HeaderMap::new(), 7), Access::Denied);
        let cookie = h(header::COOKIE, "a=b; ratchet-token-7=abc123");
        assert_eq!(check(t, &Method::GET, &uri, &cookie, 7), Access::Granted);
        assert_eq!(check(t, &Method::GET, &uri, &cookie, 8), Access::Denied, "another port's cookie");
        assert_eq!(check(t, &Method::POST, &uri, &cookie, 7), Access::Denied, "a cookie never authorizes a call");
        let q: Uri = "/ui?x=1&token=abc123".parse().unwrap();
        match check(t, &Method::GET, &q, &HeaderMap::new(), 7) {
            Access::GrantAndSetCookie { location, cookie } => {
                assert_eq!(location, "/ui?x=1");
                assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
            }
            other => panic!("{other:?}"),
        }
        let bad: Uri = "/ui?token=nope".parse().unwrap();
        assert_eq!(check(t, &Method::GET, &bad, &HeaderMap::new(), 7), Access::Denied);
    }
}
