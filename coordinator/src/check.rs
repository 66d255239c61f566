//! `ratchet check`: is this repository ready for the loop? Run by hand, and by `ratchet up`
//! before the first cycle of a run, so that a configuration error stops the run before any
//! candidate is made (never charged to one) with the file, the field and the fix.
//!
//! What it checks, in order (each an [`Item`]):
//! - the approved governance loads (`ratchet init` / `ratchet approve` otherwise);
//! - `agents.toml` parses, every `command` resolves, every built-in role has an agent;
//! - the model review: the reviewing model is not the producing one (same endpoint and model);
//! - the sandbox: where commands run here (`kit::sandbox::probe`) and whether the approved
//!   constitution accepts that mode;
//! - the proposer's configuration: the sweep's file exists on `main`; the `command` strategy's
//!   program and the variables its command needs are set and passed to it; the `openai`
//!   model's key variable is set and its endpoint answers;
//! - every gate and the test command, run once on the baseline (`main`) in the sandbox: a
//!   command that does not exist (exit 127), is not executable (126), fails or times out on the
//!   baseline is an error (every candidate would fail it);
//! - the benchmark, run on the baseline: its metric parses, and (with `noise`) the baseline's
//!   noise with the settings it suggests ([`crate::check::benchmark`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::exec::{RunOutcome, RunSpec, RunStatus, SandboxMode};
use protocol::governance::Governance;
use serde::Serialize;

/// How an item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but worth knowing (a weak sandbox, a slow gate).
    Warn,
    /// The loop would waste its work: it does not start.
    Error,
}

/// One thing checked.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// What was checked: `governance`, `agents.toml`, `sandbox`, `proposer`, `gate 1`, ...
    pub what: String,
    pub status: Status,
    pub detail: String,
    /// The file (and field) to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Item {
    fn ok(what: impl Into<String>, detail: impl Into<String>) -> Item {
        Item { what: what.into(), status: Status::Ok, detail: detail.into(), file: None, fix: None }
    }

    fn error(
        what: impl Into<String>,
        detail: impl Into<String>,
        file: impl Into<String>,
        fix: impl Into<String>,
    ) -> Item {
        Item {
            what: what.into(),
            status: Status::Error,
            detail: detail.into(),
            file: Some(file.into()),
            fix: Some(fix.into()),
        }
    }

    fn warn(what: impl Into<String>, detail: impl Into<String>, file: Option<String>, fix: Option<String>) -> Item {
        Item { what: what.into(), status: Status::Warn, detail: detail.into(), file, fix }
    }

    /// `error: gate 1 (ethos.md gates[0]): ...; fix: ...`
    pub fn line(&self) -> String {
        let status = match self.status {
            Status::Ok => "ok   ",
            Status::Warn => "warn ",
            Status::Error => "ERROR",
        };
        let file = self.file.as_ref().map(|f| format!(" ({f})")).unwrap_or_default();
        let fix = self.fix.as_ref().map(|f| format!("; fix: {f}")).unwrap_or_default();
        format!("{status} {}{file}: {}{fix}", self.what, self.detail)
    }
}

/// What `ratchet check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub home: String,
    /// No item is an error: the loop may start.
    pub ok: bool,
    pub items: Vec<Item>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.status == Status::Error)
    }

    /// For people: one line per item, then the verdict.
    pub fn render(&self) -> String {
        let mut o = format!("checking {}\n", self.home);
        for i in &self.items {
            o.push_str(&format!("  {}\n", i.line()));
        }
        let errors = self.errors().count();
        if errors == 0 {
            o.push_str("ready: the loop can start (`ratchet up`)\n");
        } else {
            o.push_str(&format!("{errors} configuration error(s): the loop would not get anywhere; fix them first\n"));
        }
        o
    }
}

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Run the gates, the test command and the benchmark on the baseline (not only look).
    pub run_commands: bool,
    /// Measure the baseline's noise (several benchmark rounds) and suggest settings.
    pub noise: bool,
}

/// Check the swarm home at `home` (the repository root).
pub async fn check(home: &Path, opts: Options) -> Report {
    let mut items = vec![];
    let gov = match crate::govern::load(home) {
        Ok(g) => {
            let hashes: Vec<String> = g.hashes.iter().map(|(d, h)| format!("{d} {}", &h[..12.min(h.len())])).collect();
            items.push(Item::ok("governance", format!("approved: {}", hashes.join(", "))));
            Some(g)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let (why, fix) = match msg.split_once("; fix: ") {
                Some((w, f)) => (w.to_string(), f.to_string()),
                None => (
                    msg,
                    "`ratchet init` makes a new swarm home; `ratchet approve <doc>` approves an edited one".into(),
                ),
            };
            items.push(Item::error("governance", why, "constitution.md, ethos.md, cadence.md", fix));
            None
        }
    };
    let agents = agents_items(home, &mut items);
    let Some(gov) = gov else { return finish(home, items) };
    if let Err(why) = gov.check_reviewer_differs() {
        let (why, fix) = why.split_once("; fix: ").unwrap_or((why.as_str(), "see the message"));
        items.push(Item::error("reviewer", why, "ethos.md [ethos.review] model", fix));
    }
    let sandbox = sandbox_item(&gov, &mut items);
    proposer_items(home, &gov, agents.as_ref(), &mut items).await;
    if opts.run_commands && sandbox.is_some() {
        commands_items(home, &gov, &mut items).await;
        items.extend(benchmark(home, &gov, opts.noise).await);
        // The scratch checkout served its purpose: nothing of it stays under worktrees/.
        let _ = std::fs::remove_dir_all(kit::layout::Layout::new(home).check_dir());
    }
    finish(home, items)
}

fn finish(home: &Path, items: Vec<Item>) -> Report {
    Report { home: home.display().to_string(), ok: !items.iter().any(|i| i.status == Status::Error), items }
}

/// agents.toml: it parses, its commands resolve, the built-in roles are covered. Returns the
/// proposer's environment as the swarm would give it (this process's, with the entry's `env`).
fn agents_items(home: &Path, items: &mut Vec<Item>) -> Option<BTreeMap<String, String>> {
    let path = home.join("agents.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            items.push(Item::error(
                "agents.toml",
                format!("cannot read {}: {e}", path.display()),
                "agents.toml",
                "run `ratchet init` in the repository (it writes agents.toml and the governance templates)",
            ));
            return None;
        }
    };
    let config = match protocol::config::AgentsFile::parse(&text, "agents.toml") {
        Ok(c) => c,
        Err(e) => {
            items.push(Item::error("agents.toml", e.to_string(), "agents.toml", "correct the line it names"));
            return None;
        }
    };
    let mut ok = true;
    for a in &config.agents {
        if let Some(argv) = &a.command
            && let Err(e) = crate::supervisor::resolve_program(&a.name, &argv[0], home)
        {
            ok = false;
            items.push(Item::error(
                format!("agent {}", a.name),
                e.to_string()
                    .split("; fix:")
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("agents.toml: ")
                    .to_string(),
                format!("agents.toml [[agent]] {:?} command", a.name),
                "correct the program name, build it (`cargo build --workspace --bins`), or give its absolute path",
            ));
        }
    }
    for role in ["coordinator", "proposer", "executor", "critic", "evaluator"] {
        if config.agents.iter().any(|a| a.role == role) {
            continue;
        }
        ok = false;
        let fix = format!("add an [[agent]] with role = {role:?} (`ratchet init --force` writes the default five)");
        if matches!(role, "coordinator" | "proposer") {
            items.push(Item::error(
                "agents.toml",
                format!("no agent has role {role:?}: the loop needs one"),
                "agents.toml",
                fix,
            ));
        } else {
            // A leased worker may run on another host (RATCHET_COORDINATOR_URL): the loop waits for it.
            items.push(Item::warn(
                "agents.toml",
                format!("no agent has role {role:?} here: the loop waits until one on another host takes its tasks"),
                Some("agents.toml".into()),
                Some(format!("{fix}, unless a remote {role} joins")),
            ));
        }
    }
    if ok {
        items.push(Item::ok("agents.toml", format!("{} agent(s), every command found", config.agents.len())));
    }
    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    if let Some(p) = config.agents.iter().find(|a| a.role == "proposer") {
        env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Some(env)
}

/// Where commands run here, and whether the approved constitution accepts it.
fn sandbox_item(gov: &Governance, items: &mut Vec<Item>) -> Option<SandboxMode> {
    let report = kit::sandbox::probe::probe_sandbox();
    let asked: SandboxMode = gov.constitution.sandbox;
    let d = report.decide(asked, gov.constitution.allows_weak_sandbox());
    match (&d.refused, d.weak) {
        (Some(why), _) => {
            items.push(Item::error(
                "sandbox",
                why.clone(),
                "constitution.md sandbox, weak_sandbox",
                "see `ratchet sandbox`",
            ));
            None
        }
        (None, true) => {
            items.push(Item::warn(
                "sandbox",
                format!("commands run in {}, which does not confine them (weak_sandbox = \"allow\")", d.mode),
                Some("constitution.md".into()),
                Some(
                    "install bubblewrap, or enable unprivileged user namespaces (`ratchet sandbox` says what works)"
                        .into(),
                ),
            ));
            Some(d.mode)
        }
        (None, false) => {
            items.push(Item::ok("sandbox", format!("commands run in {} (sandbox = \"{}\")", d.mode, d.asked)));
            Some(d.mode)
        }
    }
}

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

async fn proposer_items(home: &Path, gov: &Governance, env: Option<&BTreeMap<String, String>>, items: &mut Vec<Item>) {
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

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() > n { format!("{}...", s.chars().take(n).collect::<String>()) } else { s.to_string() }
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

/// A scratch checkout of `main` for running the commands once (`worktrees/.swarm/check/`).
fn checkout(home: &Path) -> anyhow::Result<(PathBuf, String)> {
    let git = kit::git::Git::new(home);
    let main = git.resolve_commit("refs/heads/main")?.ok_or_else(|| {
        anyhow::anyhow!("the repository has no main branch; fix: create it (git branch -M main) and commit")
    })?;
    let dir = kit::layout::Layout::new(home).check_dir();
    git.scratch_checkout(&dir, &main)?;
    Ok((dir, main))
}

/// A command run the way the loop runs it: in the sandbox the approved constitution says.
fn spec(home: &Path, gov: &Governance, command: &str, dir: &Path, timeout_s: u64) -> RunSpec {
    let c = &gov.constitution;
    let mut s = RunSpec::new(command, dir)
        .with_timeout(Duration::from_secs(timeout_s.max(1)))
        .with_sandbox(c.sandbox)
        .with_weak_sandbox_allowed(c.allows_weak_sandbox())
        .with_network(c.allow_network)
        .with_repository(home)
        // On the job engine the constitution names (a benchmark run as the evaluator's would).
        .with_jobs(&c.jobs, command == gov.ethos.benchmark);
    if c.command_memory_mb > 0 {
        s = s.with_memory_limit(c.command_memory_mb * 1024 * 1024);
    }
    s
}

/// The last lines of a command's output, for a message.
fn tail(o: &RunOutcome) -> String {
    let text = if o.stderr.trim().is_empty() { &o.stdout } else { &o.stderr };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let t = lines[lines.len().saturating_sub(3)..].join(" | ");
    if t.is_empty() { "no output".into() } else { clip(&t, 300) }
}

/// Judge one run of a configured command on the baseline.
pub fn judge(what: &str, field: &str, command: &str, o: &RunOutcome) -> Item {
    let file = format!("ethos.md {field}");
    match &o.status {
        RunStatus::Exited(0) => {
            Item::ok(what, format!("`{command}` passes on the baseline ({:.1} s)", o.duration.as_secs_f64()))
        }
        RunStatus::Exited(127) => Item::error(
            what,
            format!("`{command}`: command not found (exit 127: {})", tail(o)),
            file,
            "install the program, commit the script it names, or correct the command in ethos.md (then `ratchet approve ethos.md`)",
        ),
        RunStatus::Exited(126) => Item::error(
            what,
            format!("`{command}`: not executable (exit 126: {})", tail(o)),
            file,
            "make the script executable (chmod +x, then commit) or run it through its interpreter (e.g. `sh script`)",
        ),
        RunStatus::Exited(code) => Item::error(
            what,
            format!(
                "`{command}` fails on the baseline itself (exit {code}: {}): every candidate would fail it",
                tail(o)
            ),
            file,
            "make main pass it, or correct the command in ethos.md (then `ratchet approve ethos.md`)",
        ),
        RunStatus::TimedOut => Item::error(
            what,
            format!("`{command}` did not finish on the baseline within its timeout ({})", o.describe()),
            format!("ethos.md {}", if field == "benchmark" { "bench_timeout_s" } else { "gate_timeout_s" }),
            "raise the timeout in ethos.md or make the command faster",
        ),
        _ => Item::error(
            what,
            format!("`{command}` {}", o.describe()),
            "constitution.md sandbox",
            "see `ratchet sandbox`",
        ),
    }
}

async fn commands_items(home: &Path, gov: &Governance, items: &mut Vec<Item>) {
    let (dir, _) = match tokio::task::spawn_blocking({
        let h = home.to_path_buf();
        move || checkout(&h)
    })
    .await
    .expect("the checkout task runs")
    {
        Ok(x) => x,
        Err(e) => {
            items.push(Item::error("checkout", format!("{e:#}"), "the repository", "see the message"));
            return;
        }
    };
    let e = &gov.ethos;
    let mut runs: Vec<(String, String, String)> = e
        .gates
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("gate {}", i + 1), format!("gates[{i}]"), g.clone()))
        .collect();
    if !e.test_command.trim().is_empty() && !e.gates.contains(&e.test_command) {
        runs.push(("test command".into(), "test_command".into(), e.test_command.clone()));
    }
    for (what, field, command) in runs {
        let o = spec(home, gov, &command, &dir, e.gate_timeout_s).run().await;
        items.push(judge(&what, &field, &command, &o));
    }
}

/// The benchmark on the baseline: its command exists and exits 0 (one run here, so that a
/// missing command reads as one), then the evaluator's own measurement of `main` against itself
/// (`evaluator --once`, [`crate::calibrate::measure`]): its metric parses by the evaluator's
/// parser; with `noise`, ethos.md's calibration rounds measure the baseline's noise, shown with
/// the settings it suggests.
pub async fn benchmark(home: &Path, gov: &Governance, noise: bool) -> Vec<Item> {
    let h = home.to_path_buf();
    let (dir, _) = match tokio::task::spawn_blocking(move || checkout(&h)).await.expect("the checkout task runs") {
        Ok(x) => x,
        Err(e) => return vec![Item::error("benchmark", format!("{e:#}"), "the repository", "see the message")],
    };
    let e = &gov.ethos;
    let o = spec(home, gov, &e.benchmark, &dir, e.bench_timeout_s).run().await;
    let item = judge("benchmark", "benchmark", &e.benchmark, &o);
    if item.status != Status::Ok {
        return vec![item];
    }
    let (h, g) = (home.to_path_buf(), gov.clone());
    let rounds = if noise { None } else { Some(1) };
    let measured = tokio::task::spawn_blocking(move || crate::calibrate::measure(&h, &g, rounds, None))
        .await
        .expect("the measurement task runs");
    let (c, counting) = match measured {
        Ok(out) => (out.calibration, out.counting),
        Err(err) => {
            let why = format!("{err:#}");
            let why = why.trim_start_matches("calibration failed: ").trim_start_matches("the measurement failed: ");
            // The evaluator's message names its own fix when it has one.
            let (why, fix) = match why.split_once("; fix: ") {
                Some((w, f)) => (w.to_string(), format!("{f} (then `ratchet approve ethos.md`)")),
                None => (
                    why.to_string(),
                    "make the benchmark's last stdout line a JSON object holding the metric, or set metric_pattern (then `ratchet approve ethos.md`)".into(),
                ),
            };
            return vec![Item::error(
                "benchmark",
                format!("`{}` runs, but the evaluator cannot use it: {why}", e.benchmark),
                "ethos.md benchmark, metric, metric_pattern",
                fix,
            )];
        }
    };
    let mut out = vec![Item::ok(
        "benchmark",
        format!(
            "`{}` passes on the baseline and its metric `{}` parses ({:.1} s a run)",
            e.benchmark,
            e.metric,
            o.duration.as_secs_f64()
        ),
    )];
    match &counting {
        // Instruction counts: their spread beside the wall time's, instead of the metric's noise.
        Some(counting) => out.push(Item::ok("counters", counting_detail(counting, &c))),
        None => {
            if noise {
                out.push(noise_item(gov, &c));
            }
            out.push(counters_item(gov).await);
        }
    }
    out
}

/// `measure = "instructions"`: the counters, the slowdown and both spreads, on one line.
fn counting_detail(counting: &protocol::evaluation::Counting, c: &protocol::evaluation::Calibration) -> String {
    crate::calibrate::render_counting(counting, c)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `measure = "metric"`: whether instruction counts would work here (probed in the benchmark's
/// sandbox), so the other mode can be chosen with numbers.
async fn counters_item(gov: &Governance) -> Item {
    let sandbox = protocol::work::SandboxSettings::from(&gov.constitution);
    let report = kit::counters::cached(sandbox.sandbox, sandbox.allow_weak).await;
    let each: Vec<String> = report
        .tools
        .iter()
        .map(|t| format!("{}: {}", t.counter, if t.works { "works".to_string() } else { t.detail.clone() }))
        .collect();
    match report.chosen {
        Some(c) => Item::ok(
            "counters",
            format!(
                "{}; measure = \"instructions\" would count with {c} here (`ratchet calibrate --measure instructions` shows its slowdown and the spread of counts beside wall time's)",
                each.join("; ")
            ),
        ),
        None => Item::ok("counters", format!("{}; measure = \"instructions\" is not available here", each.join("; "))),
    }
}

/// The baseline's noise and the settings it suggests.
pub fn noise_item(gov: &Governance, c: &protocol::evaluation::Calibration) -> Item {
    let e = &gov.ethos;
    let mut detail = format!("{}; first look at round {}", c.describe(), c.first_look);
    let mut advice = vec![];
    if c.first_look > e.min_rounds {
        advice.push(format!(
            "min_rounds = {} (now {}): the loop raises it to that by itself after its own calibration",
            c.first_look, e.min_rounds
        ));
    }
    match c.spread {
        Some(s) if s > 0.0 && e.min_effect > 0.0 => {
            let ratio = e.min_effect / s;
            detail
                .push_str(&format!("; min_effect {:.1}% is {ratio:.1}x the noise of one round", e.min_effect * 100.0));
            if ratio < 1.0 {
                advice.push(format!(
                    "min_effect of at least {:.1}% (twice the spread), pairing = \"duet\" (both sides at once on their own CPUs), or a quieter machine: an effect of {:.1}% drowns in ±{:.1}% per round",
                    s * 200.0,
                    e.min_effect * 100.0,
                    s * 100.0
                ));
            } else if ratio < 2.0 {
                advice.push(format!(
                    "expect undecided (HOLD, too noisy) verdicts near {:.1}%: max_rounds = {} caps each measurement; raise it, or min_effect",
                    e.min_effect * 100.0,
                    e.max_rounds
                ));
            }
        }
        None => advice.push("a quieter benchmark: its spread is undefined (the runs are too few or identical)".into()),
        _ => {}
    }
    if c.outlier_share > 0.2 {
        advice.push(format!(
            "{:.0}% of the rounds were outliers (bursts hitting one side): pairing = \"duet\" runs both sides at once",
            c.outlier_share * 100.0
        ));
    }
    if advice.is_empty() {
        Item::ok("noise", format!("{detail}; the settings in ethos.md suit it"))
    } else {
        Item::warn("noise", detail, Some("ethos.md".into()), Some(format!("consider {}", advice.join("; "))))
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
