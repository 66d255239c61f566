//! The `agents.toml` schema: one `[[agent]]` table per swarm member.
//!
//! ```toml
//! [[agent]]
//! name = "critic"            # unique
//! role = "critic"            # proposer | executor | critic | evaluator | coordinator | any custom role
//! command = ["critic"]       # argv; a bare name is looked up beside the `ratchet` binary first
//! # url = "http://host:port/" # instead of command: an agent running elsewhere
//! # token_env = "VAR"        # a url agent's bearer token: from this environment variable,
//! # token_file = "path"      # or from this file (never inline: the file is committed)
//! env = { RUST_LOG = "info" }
//! skills = ["rails"]
//! required = true            # default: true for the five built-in roles
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The five roles Ratchet itself provides.
pub const BUILTIN_ROLES: &[&str] = &["proposer", "executor", "critic", "evaluator", "coordinator"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// A `url` member's bearer token, by reference: the environment variable (of `ratchet up`)
    /// that holds it. Members started by `command` get the swarm's own token instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// A `url` member's bearer token, by reference: a file holding it (relative to the home;
    /// keep it outside the repository, mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// Variables `ratchet up` sets itself: an `env` table may not set them.
pub const RESERVED_ENV: &[&str] = &["RATCHET_TOKEN", "RATCHET_OPEN"];

impl AgentEntry {
    /// Whether `ratchet up` must fail when this agent cannot run.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or_else(|| BUILTIN_ROLES.contains(&self.role.as_str()))
    }
}

/// A refused `agents.toml`: where, which field, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {problem}; fix: {fix}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Find the line of the `n`th `[[agent]]` header (0-based), for errors about a whole entry.
fn entry_line(text: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[agent]]"))
        .nth(n)
        .map(|(i, _)| i + 1)
        .unwrap_or(1)
}

impl AgentsFile {
    /// Parse and validate. `file` names the file in errors.
    pub fn parse(text: &str, file: &str) -> Result<AgentsFile, ConfigError> {
        let err = |line, field: &str, problem: String, fix: &str| ConfigError {
            file: file.to_string(),
            line,
            field: field.to_string(),
            problem,
            fix: fix.to_string(),
        };
        let parsed: AgentsFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let msg = e.message().to_string();
            let field = crate::governance::toml_error_field(text, &e, "agent");
            let fix = if msg.contains("unknown field `token`") {
                "never put a token inline (this file is committed): put it in an environment variable and set token_env = \"VAR\", or in a file outside the repository and set token_file = \"path\""
            } else if msg.contains("unknown field") {
                "remove it; known keys are name, role, command, url, env, skills, required, token_env, token_file"
            } else if msg.contains("missing field") {
                "add it to this [[agent]] table"
            } else {
                "correct the TOML syntax at this line"
            };
            err(line, &field, msg, fix)
        })?;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, a) in parsed.agents.iter().enumerate() {
            let line = entry_line(text, i);
            if let Err(e) = crate::names::check_component("agent name", &a.name) {
                return Err(err(line, "name", e.to_string(), "rename the agent"));
            }
            if let Some(first) = seen.insert(&a.name, line) {
                return Err(err(
                    line,
                    "name",
                    format!("duplicate agent name {:?} (first at line {first})", a.name),
                    "give every [[agent]] a unique name",
                ));
            }
            if a.role.trim().is_empty() {
                return Err(err(
                    line,
                    "role",
                    "role is empty".into(),
                    "set role to proposer, executor, critic, evaluator, coordinator or a custom role",
                ));
            }
            match (&a.command, &a.url) {
                (None, None) => {
                    return Err(err(
                        line,
                        "command",
                        format!("agent {:?} has neither command nor url", a.name),
                        "add command = [\"binary\", \"args\"...] to run it locally, or url = \"http://host:port/\" for a running agent",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(err(
                        line,
                        "url",
                        format!("agent {:?} has both command and url", a.name),
                        "keep command to run it locally, or url to use a running agent, not both",
                    ));
                }
                (Some(c), None) if c.is_empty() || c[0].trim().is_empty() => {
                    return Err(err(
                        line,
                        "command",
                        "command is empty".into(),
                        "give the program and its arguments, e.g. command = [\"critic\"]",
                    ));
                }
                (None, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                    return Err(err(
                        line,
                        "url",
                        format!("{u:?} is not an http(s) URL"),
                        "use url = \"http://host:port/\"",
                    ));
                }
                _ => {}
            }
            if let Some(k) = a.env.keys().find(|k| RESERVED_ENV.contains(&k.as_str())) {
                return Err(err(
                    line,
                    &format!("env.{k}"),
                    format!("{k} is set by `ratchet up` (the swarm's token and mode), never in agents.toml"),
                    "remove it from the env table",
                ));
            }
            if a.token_env.is_some() || a.token_file.is_some() {
                let field = if a.token_env.is_some() { "token_env" } else { "token_file" };
                if a.url.is_none() {
                    return Err(err(
                        line,
                        field,
                        format!("agent {:?} is started by command: it gets the swarm's own token", a.name),
                        "remove token_env/token_file (they are for agents listed by url)",
                    ));
                }
                if a.token_env.is_some() && a.token_file.is_some() {
                    return Err(err(
                        line,
                        "token_file",
                        format!("agent {:?} has both token_env and token_file", a.name),
                        "keep one of them",
                    ));
                }
                if a.token_env.as_deref().is_some_and(|v| v.trim().is_empty())
                    || a.token_file.as_deref().is_some_and(|v| v.trim().is_empty())
                {
                    return Err(err(line, field, "empty".into(), "name the variable or the file"));
                }
            }
        }
        Ok(parsed)
    }

    pub fn get(&self, name: &str) -> Option<&AgentEntry> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The line of agent `name`'s `[[agent]]` header in `text` (the text this was parsed from),
    /// for errors about that entry; 1 when there is no such agent.
    pub fn line_of(&self, text: &str, name: &str) -> usize {
        self.agents.iter().position(|a| a.name == name).map(|i| entry_line(text, i)).unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<AgentsFile, String> {
        AgentsFile::parse(t, "agents.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn good_file() {
        let f = parse("[[agent]]\nname='p'\nrole='proposer'\ncommand=['proposer']\n\n[[agent]]\nname='x'\nrole='security'\nurl='http://127.0.0.1:9/'\nrequired=false\n").unwrap();
        assert_eq!(f.agents.len(), 2);
        assert!(f.agents[0].is_required());
        assert!(!f.agents[1].is_required());
    }

    #[test]
    fn broken_files_name_line_field_and_fix() {
        let e = parse("[[agent]]\nname='p'\nrole='proposer'\ncommand=['p']\ncolour='red'\n").unwrap_err();
        assert!(e.starts_with("agents.toml:5: colour: unknown field"), "{e}");
        assert!(e.contains("fix: remove it"), "{e}");
        let e = parse("[[agent]]\nname='p'\ncommand=['p']\n").unwrap_err();
        assert!(e.contains("role") && e.contains("missing field"), "{e}");
        let e = parse("[[agent]]\nname='p'\nrole='critic'\n").unwrap_err();
        assert!(e.starts_with("agents.toml:1: command: agent \"p\" has neither command nor url"), "{e}");
        let e = parse(
            "[[agent]]\nname='p'\nrole='critic'\ncommand=['c']\n[[agent]]\nname='p'\nrole='critic'\ncommand=['c']\n",
        )
        .unwrap_err();
        assert!(e.starts_with("agents.toml:5: name: duplicate agent name \"p\" (first at line 1)"), "{e}");
        let e = parse("[[agent]\nname=").unwrap_err();
        assert!(e.starts_with("agents.toml:1: agent:"), "{e}");
        let e = parse("[[agent]]\nname='../x'\nrole='critic'\ncommand=['c']\n").unwrap_err();
        assert!(e.contains("name: invalid agent name"), "{e}");
    }

    #[test]
    fn tokens_only_by_reference_and_only_for_url_members() {
        let url = "[[agent]]\nname='x'\nrole='security'\nurl='http://127.0.0.1:9/'\n";
        let f = parse(&format!("{url}token_env='X_TOKEN'\n")).unwrap();
        assert_eq!(f.agents[0].token_env.as_deref(), Some("X_TOKEN"));
        parse(&format!("{url}token_file='/run/x.token'\n")).unwrap();
        let e = parse(&format!("{url}token='s3cret'\n")).unwrap_err();
        assert!(e.starts_with("agents.toml:5: token: unknown field") && e.contains("token_env"), "{e}");
        let e = parse(&format!("{url}token_env='A'\ntoken_file='b'\n")).unwrap_err();
        assert!(e.contains("both token_env and token_file"), "{e}");
        let e = parse("[[agent]]\nname='c'\nrole='critic'\ncommand=['c']\ntoken_env='A'\n").unwrap_err();
        assert!(e.contains("token_env") && e.contains("swarm's own token"), "{e}");
        let e = parse("[[agent]]\nname='c'\nrole='critic'\ncommand=['c']\nenv={RATCHET_TOKEN='x'}\n").unwrap_err();
        assert!(e.contains("env.RATCHET_TOKEN") && e.contains("set by `ratchet up`"), "{e}");
    }
}
