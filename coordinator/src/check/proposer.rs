//! The proposer's configuration: the sweep's file is on `main`; the `command` strategy's
//! program and the variables its command (and the script it names) needs are set and passed to
//! it; the `openai` model's key variable is set and its endpoint answers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use protocol::governance::Governance;

use super::{Item, clip};

/// The environment variables a shell command needs: `$VAR`, `${VAR}`, `${VAR:?...}` with an
/// upper-case name (lower-case ones are the script's own), not given a default (`${VAR:-...}`,
/// `${VAR-...}`) and not assigned by the command itself (`VAR=...`).
pub fn required_vars(command: &str) -> Vec<String> {
    let assigned = |name: &str| {
        command.match_indices(&format!("{name}=")).any(|(i, _)| {
            i == 0 || !command.as_bytes()[i - 1].is_ascii_alphanumeric() && command.as_bytes()[i - 1] != b'_'
        })
    };
    all_vars(command)
        .into_iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') && !assigned(n))
        .collect()
}

fn all_vars(command: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let b = command.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let braced = b.get(i + 1) == Some(&b'{');
            let start = i + 1 + usize::from(braced);
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            let name = &command[start..end];
            let defaulted = braced && (command[end..].starts_with(":-") || command[end..].starts_with('-'));
            let valid = !name.is_empty() && !name.as_bytes()[0].is_ascii_digit();
            if valid && !defaulted && !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The variables the `command` strategy passes to its program (see the proposer's
/// `forwarded_env`): `RATCHET_CODING_AGENT` and those named in `RATCHET_PROPOSER_ENV`.
fn forwarded(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut names = vec!["RATCHET_CODING_AGENT".to_string()];
    if let Some(list) = env.get("RATCHET_PROPOSER_ENV") {
        names.extend(list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    }
    names
}

/// Variables the sandbox itself sets for every command (never "missing").
const SANDBOX_VARS: &[&str] = &[
    "HOME",
    "PATH",
    "TMPDIR",
    "PWD",
    "RATCHET_GOAL",
    "RATCHET_BANNED",
    "RATCHET_CONTEXT_FILE",
    protocol::rails::DECLARATION_ENV,
];

pub(super) async fn proposer_items(
    home: &Path,
    gov: &Governance,
    env: Option<&BTreeMap<String, String>>,
    items: &mut Vec<Item>,
) {
    let p = &gov.proposer;
    let empty = BTreeMap::new();
    let env = env.unwrap_or(&empty);
    match p.strategy.as_str() {
        "sweep" => {
            let Some(file) = &p.file else {
                items.push(Item::error(
                    "proposer",
                    "strategy sweep names no file",
                    "cadence.md [proposer] file",
                    "name the config file the sweep changes",
                ));
                return;
            };
            match kit::git::Git::new(home).run(["cat-file", "-e", &format!("refs/heads/main:{file}")]) {
                Ok(_) => {
                    items.push(Item::ok("proposer", format!("sweep over {} parameter(s) of {file}", p.space.len())))
                }
                Err(_) => items.push(Item::error(
                    "proposer",
                    format!("the sweep's file {file} is not in main"),
                    "cadence.md [proposer] file",
                    format!("commit {file}, or name the config file the sweep changes"),
                )),
            }
        }
        "command" => {
            let Some(cmd) = &p.command else {
                items.push(Item::error(
                    "proposer",
                    "strategy command names no command",
                    "cadence.md [proposer] command",
                    "set the program to run (e.g. scripts/propose)",
                ));
                return;
            };
            let passed = forwarded(env);
            let mut needed = required_vars(cmd);
            // A script of the repository named by the command: the variables it requires too.
            if let Some(first) = cmd.split_whitespace().next()
                && let Ok(text) = kit::git::Git::new(home).run(["show", &format!("refs/heads/main:{first}")])
            {
                for v in script_requires(&text) {
                    if !needed.contains(&v) {
                        needed.push(v);
                    }
                }
            }
            let mut bad = false;
            for v in needed.iter().filter(|v| !SANDBOX_VARS.contains(&v.as_str())) {
                let set = env.get(v).is_some_and(|x| !x.trim().is_empty());
                if !passed.contains(v) {
                    bad = true;
                    items.push(Item::error(
                        "proposer",
                        format!("the command uses ${v}, which the proposer does not pass to its program (only RATCHET_CODING_AGENT and the variables RATCHET_PROPOSER_ENV lists)"),
                        "agents.toml [[agent]] proposer env",
                        format!("add RATCHET_PROPOSER_ENV = \"{v}\" to the proposer's env in agents.toml (and set {v})"),
                    ));
                } else if !set {
                    bad = true;
                    items.push(Item::error(
                        "proposer",
                        format!("the command needs ${v}, which is not set: every proposal would fail"),
                        "agents.toml [[agent]] proposer env (or the environment of `ratchet up`)",
                        format!("set {v} (e.g. {v}='claude -p', a coding-agent CLI that reads its task on stdin and edits the files in the current directory) in the proposer's env in agents.toml or export it before `ratchet up`"),
                    ));
                }
            }
            // The coding agent it hands over to must exist.
            if let Some(agent) =
                env.get("RATCHET_CODING_AGENT").filter(|_| needed.iter().any(|v| v == "RATCHET_CODING_AGENT"))
                && let Some(program) = agent.split_whitespace().next()
                && !on_path(program, env)
            {
                bad = true;
                items.push(Item::error(
                    "proposer",
                    format!("RATCHET_CODING_AGENT runs `{program}`, which is not on PATH: every proposal would fail (exit 127)"),
                    "agents.toml [[agent]] proposer env RATCHET_CODING_AGENT",
                    format!("install {program} or give its absolute path"),
                ));
            }
            if !bad {
                items.push(Item::ok("proposer", format!("command `{}`; its variables are set", clip(cmd, 80))));
            }
        }
        "openai" => {
            let Some((id, endpoint)) = gov.proposer_model() else {
                items.push(Item::error(
                    "proposer",
                    "strategy openai names no declared model",
                    "cadence.md [proposer] model",
                    "name a model of constitution.md [constitution.models]",
                ));
                return;
            };
            let key = match &endpoint.api_key_env {
                Some(var) => match env.get(var).filter(|k| !k.trim().is_empty()) {
                    Some(k) => Some(k.clone()),
                    None => {
                        items.push(Item::error(
                            "proposer",
                            format!("model {} needs its key in ${var}, which is not set", id),
                            "agents.toml [[agent]] proposer env (or the environment of `ratchet up`)",
                            format!("export {var}=<the key> before `ratchet up`, or set it in the proposer's env"),
                        ));
                        return;
                    }
                },
                None => None,
            };
            items.push(endpoint_item(&endpoint.url, key.as_deref()).await);
        }
        other => items.push(Item::error(
            "proposer",
            format!("unknown strategy {other:?}"),
            "cadence.md [proposer] strategy",
            "use sweep, command or openai",
        )),
    }
}

/// Variables a shell script cannot run without: `${VAR:?...}` and `[ -z "${VAR...` tests that
/// exit.
fn script_requires(text: &str) -> Vec<String> {
    let mut out = vec![];
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('#') {
            continue;
        }
        for part in t.split("${").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let rest = &part[name.len()..];
            let required = rest.starts_with(":?") || rest.starts_with('?') || (t.contains("-z") && t.contains("exit"));
            if required && !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    // `if [ -z "${X:-}" ]; then ... exit` spans lines: a variable tested with -z before an exit.
    let joined = text.replace('\n', " ");
    for (i, _) in joined.match_indices("-z \"${") {
        let name: String = joined[i + 6..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let after = &joined[i..(i + 300).min(joined.len())];
        if after.contains("exit") && !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn on_path(program: &str, env: &BTreeMap<String, String>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return exec(Path::new(program));
    }
    env.get("PATH").is_some_and(|path| std::env::split_paths(path).any(|d| exec(&d.join(program))))
}

/// The model endpoint answers (`GET <url>/models`, 5 s).
async fn endpoint_item(url: &str, key: Option<&str>) -> Item {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("a reqwest client builds");
    let mut req = client.get(format!("{}/models", url.trim_end_matches('/')));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Item::ok("proposer", format!("the model endpoint {url} answers")),
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED || r.status() == reqwest::StatusCode::FORBIDDEN => {
            Item::error(
                "proposer",
                format!("the model endpoint {url} refuses the key ({})", r.status()),
                "constitution.md [constitution.models] api_key_env",
                "set the variable it names to the server's key",
            )
        }
        // Some servers do not list models: an HTTP answer still says it is up.
        Ok(r) => Item::ok("proposer", format!("the model endpoint {url} answers ({})", r.status())),
        Err(e) => Item::error(
            "proposer",
            format!("the model endpoint {url} does not answer: {e}"),
            "constitution.md [constitution.models] url",
            "start the model server (e.g. scripts/model/serve), or correct the url",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_a_command_needs() {
        let t =
            "${RATCHET_CODING_AGENT:?set it} --x \"$API_KEY\" ${OPTIONAL:-none} ${B-x} $HOME $n; FOO=1; echo $FOO ${1}";
        assert_eq!(required_vars(t), ["RATCHET_CODING_AGENT", "API_KEY", "HOME"]);
        let script = "#!/bin/sh\n# ${COMMENTED:?}\nif [ -z \"${RATCHET_CODING_AGENT:-}\" ]; then\n  echo no >&2\n  exit 2\nfi\nexec sh -c \"$RATCHET_CODING_AGENT\" ${TOKEN:?need it}\n";
        assert_eq!(script_requires(script), ["TOKEN", "RATCHET_CODING_AGENT"]);
    }
}
