//! One task per agent: start it, wait for its card, watch it, restart it with backoff, give up on
//! a crash loop, and stop its whole process group when asked. It reports every change to the
//! supervisor's event loop as a [`Notice`]; it never touches the state file itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use protocol::a2a_v1::AgentCard;
use protocol::config::AgentEntry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::child::{Spawned, clear_group, describe_exit, spawn_agent, stop_child};
use super::identity::{ProcessIdentity, identify};
use super::probe;
use kit::layout::Layout;

/// How the supervisor treats crashes and stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Wait before the first restart; doubles with every crash in the window.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// This many crashes within `crash_window` and the agent is given up.
    pub max_crashes: usize,
    pub crash_window: Duration,
    /// From spawn to card answering; a child slower than this counts as crashed.
    pub ready_timeout: Duration,
    /// From SIGTERM to SIGKILL of an agent's process group.
    pub stop_grace: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_crashes: 5,
            crash_window: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(3),
        }
    }
}

impl RestartPolicy {
    /// Backoff before the restart that follows the `crashes`th crash in the window (1-based).
    pub fn backoff(&self, crashes: usize) -> Duration {
        let doublings = crashes.saturating_sub(1).min(16) as u32;
        self.first_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// What a runner reports.
#[derive(Debug)]
pub(crate) enum Update {
    Spawned {
        pid: u32,
        identity: Option<ProcessIdentity>,
    },
    Ready {
        url: String,
        skills: Vec<String>,
        /// A local member's identity, read again now that it is serving (a wrapper that
        /// `exec`s the agent has become the agent).
        identity: Option<ProcessIdentity>,
    },
    Exited {
        status: String,
    },
    Restarting {
        restarts: u32,
        backoff: Duration,
    },
    GaveUp {
        reason: String,
    },
    /// Stopped on request; the runner is finished.
    Stopped,
}

#[derive(Debug)]
pub(crate) struct Notice {
    pub name: String,
    /// Which runner of that name (a changed entry gets a new one).
    pub generation: u64,
    pub update: Update,
}

pub(crate) struct Runner {
    pub entry: AgentEntry,
    pub generation: u64,
    pub paths: Arc<Layout>,
    pub policy: Arc<RestartPolicy>,
    pub client: reqwest::Client,
    pub notices: mpsc::UnboundedSender<Notice>,
    pub stop: watch::Receiver<bool>,
    /// This swarm instance's id, handed to the member as `RATCHET_SWARM_ID`.
    pub swarm: Arc<str>,
}

impl Runner {
    pub fn spawn(self) {
        if self.entry.command.is_some() {
            tokio::spawn(self.run_local());
        } else {
            tokio::spawn(self.run_remote());
        }
    }

    fn send(&self, update: Update) {
        // The supervisor outlives its runners; a closed channel only happens while it exits.
        let _ = self.notices.send(Notice { name: self.entry.name.clone(), generation: self.generation, update });
    }

    async fn run_local(mut self) {
        let grace = self.policy.stop_grace;
        let mut crashes: VecDeque<Instant> = VecDeque::new();
        let mut restarts = 0u32;
        loop {
            let Spawned { mut child, pid, listening, lifeline } =
                match spawn_agent(&self.entry, &self.paths, &self.swarm) {
                    Ok(s) => s,
                    Err(e) => return self.send(Update::GaveUp { reason: e.to_string() }),
                };
            // Held until this iteration ends: the child's lifeline to this process.
            let _lifeline = lifeline;
            self.send(Update::Spawned { pid, identity: identify(pid) });
            let deadline = Instant::now() + self.policy.ready_timeout;
            let ended = tokio::select! {
                ready = wait_ready(&self.client, listening, deadline, &self.policy) => match ready {
                    Ok((url, card)) => {
                        let skills = card.skills.iter().map(|s| s.id.clone()).collect();
                        self.send(Update::Ready { url, skills, identity: identify(pid) });
                        tokio::select! {
                            status = child.wait() => {
                                clear_group(pid, Instant::now() + grace).await;
                                describe_exit(&status)
                            }
                            () = stopped(&mut self.stop) => {
                                stop_child(&mut child, pid, grace).await;
                                return self.send(Update::Stopped);
                            }
                        }
                    }
                    Err(NotReady::StdoutClosed) => {
                        // Usually the child is exiting: report how it ended rather than the symptom.
                        match tokio::time::timeout(grace, child.wait()).await {
                            Ok(status) => {
                                clear_group(pid, Instant::now() + grace).await;
                                format!("{} before its card answered", describe_exit(&status))
                            }
                            Err(_) => {
                                let status = stop_child(&mut child, pid, grace).await;
                                format!("not ready: {} ({status})", NotReady::StdoutClosed)
                            }
                        }
                    }
                    Err(why) => {
                        let status = stop_child(&mut child, pid, grace).await;
                        format!("not ready: {why} ({status})")
                    }
                },
                status = child.wait() => {
                    clear_group(pid, Instant::now() + grace).await;
                    format!("{} before its card answered", describe_exit(&status))
                }
                () = stopped(&mut self.stop) => {
                    stop_child(&mut child, pid, grace).await;
                    return self.send(Update::Stopped);
                }
            };
            self.send(Update::Exited { status: ended.clone() });

            let now = Instant::now();
            crashes.push_back(now);
            while crashes.front().is_some_and(|t| now.duration_since(*t) > self.policy.crash_window) {
                crashes.pop_front();
            }
            if crashes.len() >= self.policy.max_crashes {
                let reason = format!(
                    "crashed {} times within {}s, last: {ended}; see {}",
                    crashes.len(),
                    self.policy.crash_window.as_secs(),
                    self.paths.display(&self.paths.log_file(&self.entry.name)),
                );
                return self.send(Update::GaveUp { reason });
            }
            let backoff = self.policy.backoff(crashes.len());
            restarts += 1;
            self.send(Update::Restarting { restarts, backoff });
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut self.stop) => return self.send(Update::Stopped),
            }
        }
    }

    /// A `url` entry: nothing to spawn; its card must answer within the ready timeout.
    async fn run_remote(mut self) {
        let url = self.entry.url.clone().expect("run_remote is only called for url entries");
        let deadline = Instant::now() + self.policy.ready_timeout;
        tokio::select! {
            card = poll_card(&self.client, &url, deadline) => match card {
                Ok(card) => {
                    let skills = card.skills.iter().map(|s| s.id.clone()).collect();
                    self.send(Update::Ready { url, skills, identity: None });
                }
                Err(e) => {
                    let reason = format!("{e}; fix: start the agent at {url} or correct its url in agents.toml");
                    return self.send(Update::GaveUp { reason });
                }
            },
            () = stopped(&mut self.stop) => return self.send(Update::Stopped),
        }
        stopped(&mut self.stop).await;
        self.send(Update::Stopped);
    }
}

/// Resolves when a stop is requested (or the supervisor is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("stdout closed without a `RATCHET_LISTENING <url>` line")]
    StdoutClosed,
    #[error("no `RATCHET_LISTENING <url>` line on stdout within {0:.1}s")]
    NoListeningLine(f32),
    #[error("{0}")]
    Card(#[from] probe::ProbeError),
}

/// Wait for the `RATCHET_LISTENING` line, then for the card to answer, both before `deadline`.
async fn wait_ready(
    client: &reqwest::Client,
    listening: oneshot::Receiver<String>,
    deadline: Instant,
    policy: &RestartPolicy,
) -> Result<(String, AgentCard), NotReady> {
    let url = match tokio::time::timeout_at(deadline, listening).await {
        Ok(Ok(url)) => url,
        Ok(Err(_)) => return Err(NotReady::StdoutClosed),
        Err(_) => return Err(NotReady::NoListeningLine(policy.ready_timeout.as_secs_f32())),
    };
    let card = poll_card(client, &url, deadline).await?;
    Ok((url, card))
}

/// Poll an agent's card with a short interval until it answers or `deadline` passes.
pub(super) async fn poll_card(
    client: &reqwest::Client,
    base: &str,
    deadline: Instant,
) -> Result<AgentCard, probe::ProbeError> {
    loop {
        let last = match tokio::time::timeout_at(deadline, probe::fetch_card(client, base)).await {
            Ok(Ok(card)) => return Ok(card),
            Ok(Err(e)) => e,
            Err(_) => return Err(probe::ProbeError::Timeout { url: base.to_string() }),
        };
        if Instant::now() + probe::POLL_INTERVAL >= deadline {
            return Err(last);
        }
        tokio::time::sleep(probe::POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RestartPolicy::default();
        let ms: Vec<u128> = (1..=7).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(ms, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.backoff(1000), Duration::from_secs(5));
    }
}
