//! One swarm per repository: before `ratchet up` starts its members, it stops whatever is left
//! of a swarm whose supervisor died without stopping it (`kill -9`, a crash, a power-cut laptop
//! lid is not one: pids do not survive a reboot, and the boot id says so).
//!
//! Members normally exit by themselves when their supervisor dies (`kit::agent::lifeline`); this
//! is for those that cannot notice (a wrapper that redirected stdin, a third-party command, a
//! member stuck in a blocking call). Every process signalled here is checked first against the
//! identity recorded in `state.json` ([`super::identity`]): a recycled pid is never signalled.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use protocol::events::EventKind;

use super::eventlog::EventLog;
use super::identity::{ProcessIdentity, group_members, is_same};
use super::state::{SwarmPhase, SwarmState};
use super::ui;

/// After SIGKILL, how long to wait for the processes to be gone before reporting them.
const KILL_WAIT: Duration = Duration::from_secs(2);

struct Leftover {
    name: String,
    pid: u32,
    identity: ProcessIdentity,
}

impl Leftover {
    fn members(&self) -> Vec<i32> {
        group_members(self.pid, &self.identity)
    }

    /// Signal what is verifiably this leftover: its whole group when the leader is still the
    /// recorded process, else each remaining member (see [`group_members`]).
    fn signal(&self, sig: Signal) {
        if is_same(self.pid, &self.identity) {
            let _ = killpg(Pid::from_raw(self.pid as i32), sig);
        } else {
            for m in self.members() {
                let _ = kill(Pid::from_raw(m), sig);
            }
        }
    }
}

/// Stop the members of `previous` (the state a dead supervisor left) that still run: SIGTERM to
/// each verified process group, SIGKILL after `grace`. Each one stopped is announced and
/// recorded as a `leftover_stopped` event. Returns how many were stopped.
pub(super) async fn stop_leftovers(previous: &SwarmState, events: &EventLog, grace: Duration) -> usize {
    if previous.state == SwarmPhase::Stopped {
        return 0;
    }
    let mut unverifiable = Vec::new();
    let mut live: Vec<Leftover> = Vec::new();
    for a in &previous.agents {
        let Some(pid) = a.pid else { continue };
        let Some(identity) = a.identity.clone() else {
            unverifiable.push(format!("{} (pid {pid})", a.name));
            continue;
        };
        let l = Leftover { name: a.name.clone(), pid, identity };
        if !l.members().is_empty() {
            live.push(l);
        }
    }
    if !unverifiable.is_empty() {
        ui::say(&format!(
            "ratchet: warning: the dead swarm {} recorded {} without a process identity; not signalling them (check with `ps` and stop them by hand if they still run)",
            previous.run_id,
            unverifiable.join(", ")
        ));
    }
    if live.is_empty() {
        return 0;
    }
    for l in &live {
        ui::say(&format!(
            "ratchet: {} (pid {}) of swarm {} still runs, but its supervisor (pid {}) is gone: stopping it",
            l.name, l.pid, previous.run_id, previous.supervisor_pid
        ));
        l.signal(Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while live.iter().any(|l| !l.members().is_empty()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut killed = Vec::new();
    for l in &live {
        if !l.members().is_empty() {
            l.signal(Signal::SIGKILL);
            killed.push(l.pid);
        }
    }
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    while live.iter().any(|l| !l.members().is_empty()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for l in &live {
        let left = l.members();
        if !left.is_empty() {
            ui::say(&format!(
                "ratchet: warning: {} of the dead swarm (processes {left:?}) survived SIGKILL; its leases and results are refused (they carry swarm {})",
                l.name, previous.run_id
            ));
        }
        let signal = if killed.contains(&l.pid) { "SIGKILL" } else { "SIGTERM" };
        events.emit(
            Some(&l.name),
            EventKind::LeftoverStopped {
                name: l.name.clone(),
                pid: l.pid,
                swarm: previous.run_id.clone(),
                signal: signal.to_string(),
            },
        );
    }
    live.len()
}
