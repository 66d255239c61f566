//! The supervisor's members: starting one, what its runner's notices change (the state file,
//! the events, the terminal lines), replacing one (start before stop) and rolling a failed
//! replacement back, the table once every member is settled, and the shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::config::AgentEntry;
use protocol::events::EventKind;
use tokio::sync::watch;

use super::{Member, ReadySwarm, Slot, Supervisor, on_swarm_ready};
use crate::supervisor::SupervisorError;
use crate::supervisor::child::signal_group;
use crate::supervisor::runner::{Notice, Runner, Update};
use crate::supervisor::state::{AgentRecord, AgentState, SwarmPhase, write_state};
use crate::supervisor::ui;

impl Supervisor {
    pub(super) fn new_member(&mut self, entry: &AgentEntry) -> Member {
        self.generation += 1;
        let (stop_tx, stop_rx) = watch::channel(false);
        let record = AgentRecord {
            name: entry.name.clone(),
            role: entry.role.clone(),
            url: entry.url.clone(),
            pid: None,
            identity: None,
            state: AgentState::Starting,
            restarts: 0,
            skills: entry.skills.clone(),
            required: entry.is_required(),
            remote: entry.url.is_some(),
            reason: None,
        };
        Runner {
            entry: entry.clone(),
            generation: self.generation,
            paths: self.paths.clone(),
            policy: self.policy.clone(),
            client: self.client.clone(),
            notices: self.notices_tx.clone(),
            stop: stop_rx,
            swarm: self.swarm.clone(),
        }
        .spawn();
        Member { generation: self.generation, stop: stop_tx, record, running: true }
    }

    /// Start `entry` in a new slot. `live`: started by a live edit (a trial, see [`Slot::trial`]),
    /// with the entry it replaces, if any.
    pub(super) fn start_slot(&mut self, entry: AgentEntry, live: Option<Option<AgentEntry>>) {
        let current = self.new_member(&entry);
        let trial = live.is_some();
        let fallback = live.flatten();
        let slot = Slot { entry, current, retiring: None, fallback, trial, next: None, removing: false };
        self.slots.insert(slot.entry.name.clone(), slot);
    }

    /// Ask a member's runner to stop; returns whether a `Stopped` notice will follow.
    pub(super) fn request_stop(member: &mut Member) -> bool {
        if !member.running {
            return false;
        }
        let _ = member.stop.send(true);
        member.record.state = AgentState::Stopping;
        true
    }

    pub(super) fn apply(&mut self, notice: Notice) -> Result<(), SupervisorError> {
        let Some(slot) = self.slots.get_mut(&notice.name) else { return Ok(()) };
        if slot.current.generation != notice.generation {
            if slot.retiring.as_ref().is_some_and(|(_, m)| m.generation == notice.generation) {
                self.apply_retiring(notice);
            }
            return Ok(());
        }
        let name = notice.name;
        let rec = &mut slot.current.record;
        let mut failure = None;
        let mut line;
        let mut coordinator_url = None;
        let mut roll_back = None;
        match notice.update {
            Update::Spawned { pid, identity } => {
                rec.pid = Some(pid);
                rec.identity = identity;
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Starting;
                }
                line = format!("{name}: started (pid {pid})");
            }
            Update::Ready { url, skills, identity } => {
                rec.url = Some(url.clone());
                rec.skills = skills;
                if identity.is_some() {
                    rec.identity = identity;
                }
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Ready;
                    coordinator_url = Some(Some(url.clone()));
                }
                line = match rec.pid {
                    Some(pid) => format!("{name}: ready at {url} (pid {pid})"),
                    None => format!("{name}: ready at {url} (remote)"),
                };
                let kind = EventKind::AgentStarted { name: name.clone(), role: rec.role.clone(), url, pid: rec.pid };
                self.events.emit(Some(&name), kind);
                slot.trial = false;
                slot.fallback = None;
                // Start before stop: the replaced member goes now that its successor serves.
                if let Some((_, old)) = &mut slot.retiring {
                    let old_pid = old.record.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                    if Self::request_stop(old) {
                        line.push_str(&format!("; stopping the member it replaces{old_pid}"));
                    }
                }
            }
            Update::Exited { status } => {
                line = format!("{name}: exited ({status})");
                rec.pid = None;
                rec.identity = None;
                rec.url = slot.entry.url.clone();
                coordinator_url = Some(None);
                self.events.emit(Some(&name), EventKind::AgentExited { name: name.clone(), status });
            }
            Update::Restarting { restarts, backoff } => {
                rec.restarts = restarts;
                if rec.state != AgentState::Stopping {
                    rec.state = AgentState::Restarting;
                }
                line = format!("{name}: restarting in {} (restart {restarts})", ui::seconds(backoff));
                let backoff_ms = backoff.as_millis().try_into().unwrap_or(u64::MAX);
                self.events.emit(Some(&name), EventKind::AgentRestarted { name: name.clone(), restarts, backoff_ms });
            }
            Update::GaveUp { reason } => {
                slot.current.running = false;
                rec.state = AgentState::GaveUp;
                rec.pid = None;
                rec.identity = None;
                rec.reason = Some(reason.clone());
                coordinator_url = Some(None);
                line = format!("{name}: gave up: {reason}");
                self.events.emit(Some(&name), EventKind::AgentGaveUp { name: name.clone(), reason: reason.clone() });
                if rec.required && !self.stopping && slot.next.is_none() && !slot.removing && !slot.trial {
                    failure = Some(SupervisorError::RequiredGaveUp {
                        name: name.clone(),
                        role: rec.role.clone(),
                        reason: reason.clone(),
                        log: self.paths.log_file(&name),
                    });
                }
                if slot.trial && !self.stopping {
                    roll_back = Some(reason);
                } else {
                    self.after_runner_ended(&name);
                }
            }
            Update::Stopped => {
                slot.current.running = false;
                rec.state = AgentState::Stopped;
                rec.pid = None;
                rec.identity = None;
                coordinator_url = Some(None);
                line = format!("{name}: stopped");
                self.events.emit(Some(&name), EventKind::AgentStopped { name: name.clone() });
                self.after_runner_ended(&name);
            }
        }
        if let Some(url) = coordinator_url {
            self.publish_coordinator(&name, url);
        }
        // State first, then the line: whoever reads the line and then the state file sees the change.
        self.write_state();
        ui::say(&line);
        if let Some(reason) = roll_back {
            self.roll_back(&name, &reason);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        self.check_ready();
        Ok(())
    }

    /// A notice from a member being replaced: it only ever ends.
    fn apply_retiring(&mut self, notice: Notice) {
        let name = notice.name;
        let Some(slot) = self.slots.get_mut(&name) else { return };
        let Some((_, old)) = &mut slot.retiring else { return };
        let line = match notice.update {
            Update::Stopped | Update::GaveUp { .. } => {
                let pid = old.record.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                slot.retiring = None;
                self.events.emit(Some(&name), EventKind::AgentStopped { name: name.clone() });
                format!("{name}: stopped the replaced member{pid}")
            }
            Update::Exited { status } => {
                old.record.pid = None;
                old.record.identity = None;
                format!("{name}: the replaced member exited ({status})")
            }
            Update::Spawned { pid, identity } => {
                old.record.pid = Some(pid);
                old.record.identity = identity;
                format!("{name}: restarted the replaced member (pid {pid})")
            }
            Update::Ready { .. } | Update::Restarting { .. } => return,
        };
        let ended = slot.retiring.is_none() && !slot.current.running;
        self.write_state();
        ui::say(&line);
        if ended {
            // The slot was waiting for this one too (removed, or changed again meanwhile).
            self.after_runner_ended(&name);
            self.write_state();
        }
        self.check_ready();
    }

    /// A member started by a live edit gave up before it was ever ready: the edit did not work
    /// out for this agent. Go back to the entry it replaced (its member may still be serving),
    /// or, for an added agent, leave it given up; either way the swarm goes on.
    pub(super) fn roll_back(&mut self, name: &str, reason: &str) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let fallback = slot.fallback.take();
        let error = format!(
            "{}: agent {name:?}: the edited entry did not come up ({reason}); {}; fix: correct it in agents.toml",
            self.paths.agents_toml().display(),
            if fallback.is_some() { "the previous entry is back in force" } else { "the swarm goes on without it" }
        );
        if let Some((entry, member)) = slot.retiring.take() {
            // Still serving: it simply stays.
            slot.entry = entry;
            slot.current = member;
            slot.trial = false;
        } else if let Some(entry) = fallback {
            let current = self.new_member(&entry);
            let slot = self.slots.get_mut(name).expect("looked up above");
            slot.entry = entry;
            slot.current = current;
            slot.trial = false;
        }
        let in_force = self.slots.get(name).map(|s| s.entry.clone());
        if let (Some(entry), Some(pos)) = (in_force, self.config.agents.iter().position(|a| a.name == name)) {
            self.config.agents[pos] = entry;
        }
        self.events.emit(None, EventKind::ConfigRefused { error: error.clone() });
        self.write_state();
        eprintln!("{error}");
        ui::say(&format!("agents.toml: {name}: the edited entry did not come up; see the reason above"));
    }

    /// Tell the loop follower where the coordinator it follows serves now.
    fn publish_coordinator(&mut self, name: &str, url: Option<String>) {
        if self.followed.as_deref() != Some(name) {
            return;
        }
        self.coordinator.send_modify(|v| {
            if url.is_some() {
                v.incarnation += 1;
            }
            v.url = url;
        });
    }

    /// A runner ended: start the changed entry waiting for it, or drop a removed slot.
    pub(super) fn after_runner_ended(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        if self.stopping {
            return;
        }
        if slot.current.running || slot.retiring.is_some() {
            return;
        }
        if let Some(next) = slot.next.take() {
            let fallback = Some(slot.entry.clone());
            self.start_slot(next, Some(fallback));
        } else if slot.removing {
            self.slots.remove(name);
            self.order.retain(|n| n != name);
        }
    }

    /// The first time every agent is settled: print the table and call the hook.
    pub(super) fn check_ready(&mut self) {
        if self.announced || self.stopping {
            return;
        }
        let settled = self.slots.values().all(|s| {
            s.next.is_none()
                && s.retiring.is_none()
                && matches!(s.current.record.state, AgentState::Ready | AgentState::GaveUp)
        });
        if !settled {
            return;
        }
        self.announced = true;
        self.state.state = SwarmPhase::Running;
        self.write_state();
        let agents = self.state.agents.clone();
        let rows: Vec<Vec<String>> = agents
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.role.clone(),
                    a.state.as_str().to_string(),
                    a.url.clone().unwrap_or_default(),
                    a.pid
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| if a.remote { "remote".into() } else { String::new() }),
                    a.skills.join(","),
                ]
            })
            .collect();
        ui::say(ui::table(&["NAME", "ROLE", "STATE", "URL", "PID", "SKILLS"], &rows).trim_end());
        ui::say(&format!(
            "ratchet: swarm up ({} agents); state in {}; Ctrl-C stops it",
            agents.len(),
            self.paths.display(&self.paths.state_file())
        ));
        if let (Some(url), Ok(token)) = (
            agents
                .iter()
                .find(|a| a.role == "coordinator" && a.state == AgentState::Ready)
                .and_then(|a| a.url.as_ref()),
            kit::auth::read_token(&self.paths.swarm_token()),
        ) {
            ui::say(&format!("ratchet: web pages at {url}ui?token={token}"));
        }
        // The loop is followed on the first ready coordinator.
        if let Some(c) = agents.iter().find(|a| a.role == "coordinator" && a.state == AgentState::Ready) {
            self.followed = Some(c.name.clone());
            self.publish_coordinator(&c.name.clone(), c.url.clone());
        }
        on_swarm_ready(
            &ReadySwarm {
                paths: (*self.paths).clone(),
                run_id: self.state.run_id.clone(),
                agents,
                shutdown: self.shutdown_tx.subscribe(),
                coordinator: self.coordinator.subscribe(),
            },
            self.loop_request.clone(),
            self.loop_tx.clone(),
        );
    }

    /// Stop every agent (SIGTERM to each process group, SIGKILL after the grace period) and mark
    /// the state file stopped.
    pub(super) async fn shutdown(&mut self) {
        self.stopping = true;
        let _ = self.shutdown_tx.send(true);
        self.state.state = SwarmPhase::Stopping;
        for slot in self.slots.values_mut() {
            slot.next = None;
            Self::request_stop(&mut slot.current);
            if let Some((_, old)) = &mut slot.retiring {
                Self::request_stop(old);
            }
        }
        self.write_state();
        // Runners SIGKILL their group after `stop_grace`; this bound only guards against a stuck runner.
        let deadline = tokio::time::Instant::now() + self.policy.stop_grace + Duration::from_millis(1500);
        let running = |slots: &BTreeMap<String, Slot>| {
            slots.values().any(|s| s.current.running || s.retiring.as_ref().is_some_and(|(_, m)| m.running))
        };
        while running(&self.slots) {
            match tokio::time::timeout_at(deadline, self.notices_rx.recv()).await {
                Ok(Some(notice)) => {
                    let _ = self.apply(notice);
                }
                Ok(None) | Err(_) => break,
            }
        }
        for slot in self.slots.values() {
            let members = std::iter::once(&slot.current).chain(slot.retiring.as_ref().map(|(_, m)| m));
            for m in members.filter(|m| m.running) {
                if let Some(pid) = m.record.pid {
                    eprintln!("warning: {}: did not stop in time, killing its process group {pid}", slot.entry.name);
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        self.slots.clear();
        self.state.state = SwarmPhase::Stopped;
        self.state.stopped_at = Some(protocol::a2a::timestamp(std::time::SystemTime::now()));
        self.write_state();
        ui::say("ratchet: swarm stopped");
    }

    pub(super) fn write_state(&mut self) {
        self.state.agents = self
            .order
            .iter()
            .filter_map(|n| self.slots.get(n))
            .flat_map(|s| std::iter::once(&s.current).chain(s.retiring.as_ref().map(|(_, m)| m)))
            .map(|m| m.record.clone())
            .collect();
        if let Err(e) = write_state(&self.paths.state_file(), &self.state) {
            eprintln!("warning: {e}");
        }
    }
}
