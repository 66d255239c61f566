//! Live edits of agents.toml: re-read on a change, checked before anything running is touched
//! (commands resolve, the roles of required members keep an agent, new urls answer their card,
//! off the event loop), then applied (added members started, removed ones stopped, changed ones
//! replaced), or refused with the swarm unchanged.

use std::time::Duration;

use protocol::config::{AgentEntry, AgentsFile, ConfigError};
use protocol::events::EventKind;

use super::Supervisor;
use crate::supervisor::child::resolve_program;
use crate::supervisor::state::AgentState;
use crate::supervisor::ui;

/// How long a live edit's new `url` members get to answer their card before the edit is refused.
const EDIT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of checking a live edit that needed card probes.
pub(super) struct EditChecked {
    edit: u64,
    text: String,
    config: AgentsFile,
    result: Result<(), ConfigError>,
}

/// Coordinators run the loop and judge leases: never two of one name at once.
pub(super) fn may_overlap(entry: &AgentEntry) -> bool {
    entry.role != "coordinator"
}

impl Supervisor {
    /// agents.toml may have changed: re-parse and check it; apply the difference, or refuse it.
    /// Nothing running is touched before the edit passed every check ([`Self::check_edit`]).
    pub(super) fn reload(&mut self) {
        if self.stopping {
            return;
        }
        let path = self.paths.agents_toml();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.last_text.clear();
                let error = format!("{}: cannot read: {e}; fix: restore the file", path.display());
                return self.refuse(error);
            }
        };
        if text == self.last_text {
            return;
        }
        self.last_text = text.clone();
        self.edits += 1;
        let new = match AgentsFile::parse(&text, &path.display().to_string()) {
            Ok(c) => c,
            Err(e) => return self.refuse(e.to_string()),
        };
        let probes = match self.check_edit(&new, &text) {
            Ok(p) => p,
            Err(e) => return self.refuse(e.to_string()),
        };
        if probes.is_empty() {
            return self.apply_config(new);
        }
        // Cards are probed off the event loop; the answer comes back as an `EditChecked`.
        let (edit, client, tx, file) =
            (self.edits, self.client.clone(), self.checked_tx.clone(), path.display().to_string());
        ui::say(&format!(
            "agents.toml: checking the card of {} before applying the edit",
            ui::list(&probes_names(&probes))
        ));
        tokio::spawn(async move {
            let mut result = Ok(());
            for (name, url, line) in probes {
                let deadline = tokio::time::Instant::now() + EDIT_PROBE_TIMEOUT;
                if let Err(e) = crate::supervisor::runner::poll_card(&client, &url, deadline).await {
                    result = Err(ConfigError {
                        file: file.clone(),
                        line,
                        field: "url".into(),
                        problem: format!("agent {name:?}: no Agent Card within {}s: {e}", EDIT_PROBE_TIMEOUT.as_secs()),
                        fix: format!("start the agent at {url} first, or correct its url"),
                    });
                    break;
                }
            }
            let _ = tx.send(EditChecked { edit, text, config: new, result });
        });
    }

    /// The card probes of an edit are done: apply it unless a newer edit came meanwhile.
    pub(super) fn edit_checked(&mut self, checked: EditChecked) {
        if self.stopping || checked.edit != self.edits || checked.text != self.last_text {
            return;
        }
        match checked.result {
            Ok(()) => self.apply_config(checked.config),
            Err(e) => self.refuse(e.to_string()),
        }
    }

    /// What must hold before an edit may touch a running member: every added or changed
    /// `command` resolves to an executable file, every role a required member covers now keeps
    /// an agent, and (checked after this, off the event loop) every added or changed `url`
    /// answers its card. Returns those card probes: (name, url, line).
    fn check_edit(&self, new: &AgentsFile, text: &str) -> Result<Vec<(String, String, usize)>, ConfigError> {
        let file = self.paths.agents_toml().display().to_string();
        let mut probes = Vec::new();
        for entry in &new.agents {
            if self.config.get(&entry.name) == Some(entry) {
                continue;
            }
            let line = new.line_of(text, &entry.name);
            if let Some(argv) = &entry.command
                && let Err(e) = resolve_program(&entry.name, &argv[0], self.paths.home())
            {
                let fix = if argv[0].contains('/') {
                    "correct the path (it must name an executable file)".to_string()
                } else {
                    "correct the program name, build it (`cargo build --workspace --bins`), or give its absolute path"
                        .to_string()
                };
                let problem = e.to_string();
                let problem = problem.split("; fix:").next().unwrap_or(&problem).trim_start_matches("agents.toml: ");
                return Err(ConfigError { file, line, field: "command".into(), problem: problem.to_string(), fix });
            }
            if let Some(url) = &entry.url {
                probes.push((entry.name.clone(), url.clone(), line));
            }
        }
        for old in self.config.agents.iter().filter(|a| a.is_required()) {
            if !new.agents.iter().any(|a| a.role == old.role) {
                return Err(ConfigError {
                    file,
                    line: 1,
                    field: "role".into(),
                    problem: format!(
                        "the edit leaves role {:?} without an agent ({:?}, a required member, is gone)",
                        old.role, old.name
                    ),
                    fix: format!(
                        "keep an [[agent]] with role = {:?}, or first set required = false on {:?}, then remove it",
                        old.role, old.name
                    ),
                });
            }
        }
        Ok(probes)
    }

    /// Apply a checked configuration: start added members, stop removed ones, replace changed
    /// ones (the new one first, where the role allows two at once).
    fn apply_config(&mut self, new: AgentsFile) {
        let old = std::mem::replace(&mut self.config, new.clone());
        let added: Vec<AgentEntry> = new.agents.iter().filter(|a| old.get(&a.name).is_none()).cloned().collect();
        let removed: Vec<String> =
            old.agents.iter().filter(|a| new.get(&a.name).is_none()).map(|a| a.name.clone()).collect();
        let changed: Vec<AgentEntry> =
            new.agents.iter().filter(|a| old.get(&a.name).is_some_and(|o| o != *a)).cloned().collect();

        for name in &removed {
            if let Some(slot) = self.slots.get_mut(name) {
                slot.removing = true;
                slot.next = None;
                if let Some((_, old)) = &mut slot.retiring {
                    Self::request_stop(old);
                }
                if !Self::request_stop(&mut slot.current) && slot.retiring.is_none() {
                    self.slots.remove(name);
                }
            }
        }
        for entry in changed.iter().chain(&added) {
            let overlap = may_overlap(entry);
            let Some(slot) = self.slots.get_mut(&entry.name) else {
                let fallback = old.get(&entry.name).cloned();
                self.start_slot(entry.clone(), Some(fallback));
                continue;
            };
            let serving = slot.current.running && slot.current.record.state == AgentState::Ready;
            if overlap && serving && !slot.removing && slot.retiring.is_none() && slot.next.is_none() {
                // Start before stop: the member in force keeps serving until the new one is ready.
                let member = self.new_member(entry);
                let slot = self.slots.get_mut(&entry.name).expect("looked up above");
                let previous = std::mem::replace(&mut slot.current, member);
                let previous_entry = std::mem::replace(&mut slot.entry, entry.clone());
                slot.fallback = Some(previous_entry.clone());
                slot.retiring = Some((previous_entry, previous));
                slot.trial = true;
            } else if slot.current.running || slot.retiring.is_some() {
                // Still stopping, starting, or a role that never runs twice: start when it has stopped.
                slot.removing = false;
                slot.next = Some(entry.clone());
                Self::request_stop(&mut slot.current);
                if let Some((_, old)) = &mut slot.retiring {
                    Self::request_stop(old);
                }
            } else {
                let fallback = Some(slot.entry.clone());
                self.start_slot(entry.clone(), Some(fallback));
            }
        }
        let mut order: Vec<String> = new.agents.iter().map(|a| a.name.clone()).collect();
        order.extend(self.order.iter().filter(|n| new.get(n).is_none() && self.slots.contains_key(*n)).cloned());
        self.order = order;

        let names = |v: &[AgentEntry]| v.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        let (added, changed) = (names(&added), names(&changed));
        let line = format!(
            "agents.toml: reloaded (added: {}; removed: {}; changed: {})",
            ui::list(&added),
            ui::list(&removed),
            ui::list(&changed)
        );
        self.events.emit(None, EventKind::ConfigReloaded { added, removed, changed });
        self.write_state();
        ui::say(&line);
    }

    fn refuse(&mut self, error: String) {
        eprintln!("agents.toml: refused: {error}");
        ui::say("agents.toml: edit refused, the swarm goes on unchanged");
        self.events.emit(None, EventKind::ConfigRefused { error });
    }
}

fn probes_names(probes: &[(String, String, usize)]) -> Vec<String> {
    probes.iter().map(|(n, _, _)| n.clone()).collect()
}
