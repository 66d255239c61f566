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
//!
//! The report is here; what the swarm's files say in [`swarm`], the proposer's configuration in
//! [`proposer`], the commands run on the baseline in [`baseline`].

mod baseline;
mod proposer;
mod swarm;

use std::path::Path;

use serde::Serialize;

pub use baseline::{benchmark, judge, noise_item};
pub use proposer::required_vars;

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
    let agents = swarm::agents_items(home, &mut items);
    let Some(gov) = gov else { return finish(home, items) };
    if let Err(why) = gov.check_reviewer_differs() {
        let (why, fix) = why.split_once("; fix: ").unwrap_or((why.as_str(), "see the message"));
        items.push(Item::error("reviewer", why, "ethos.md [ethos.review] model", fix));
    }
    let sandbox = swarm::sandbox_item(&gov, &mut items);
    proposer::proposer_items(home, &gov, agents.as_ref(), &mut items).await;
    if opts.run_commands && sandbox.is_some() {
        baseline::commands_items(home, &gov, &mut items).await;
        items.extend(benchmark(home, &gov, opts.noise).await);
        // The scratch checkout served its purpose: nothing of it stays under worktrees/.
        let _ = std::fs::remove_dir_all(kit::layout::Layout::new(home).check_dir());
    }
    finish(home, items)
}

fn finish(home: &Path, items: Vec<Item>) -> Report {
    Report { home: home.display().to_string(), ok: !items.iter().any(|i| i.status == Status::Error), items }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() > n { format!("{}...", s.chars().take(n).collect::<String>()) } else { s.to_string() }
}
