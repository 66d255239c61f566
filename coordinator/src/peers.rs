//! Routing: which agent gets a piece of work. The coordinator finds its peers in the supervisor's
//! `worktrees/.swarm/state.json`, reads their Agent Cards, and picks by role and by the skills on
//! the cards (round-robin among equals).

use std::sync::atomic::{AtomicUsize, Ordering};

use kit::client::A2aClient;
use kit::layout::Layout;
use protocol::a2a_v1::AgentCard;
use protocol::config::AgentsFile;

use crate::supervisor::state::{AgentState, SwarmState};

/// A peer that answered its card, with a client speaking the A2A version its card prefers
/// (1.0 or 0.3, see [`A2aClient::for_card`]).
#[derive(Clone)]
pub struct Peer {
    pub name: String,
    pub role: String,
    pub card: AgentCard,
    pub client: A2aClient,
}

impl Peer {
    pub fn has_skill(&self, skill: &str) -> bool {
        self.card.has_skill(skill)
    }
}

#[derive(Default)]
pub struct Peers {
    peers: Vec<Peer>,
    next: AtomicUsize,
}

impl Peers {
    /// Read the swarm state and every ready agent's card (agents that do not answer are skipped).
    /// Members `ratchet up` started get the swarm's token (this process's `RATCHET_TOKEN`);
    /// members listed by `url` get their own from agents.toml (`token_env`/`token_file`), or
    /// none: the swarm's token never goes to a third party.
    pub async fn discover(paths: &Layout, exclude: &str) -> Peers {
        let Ok(text) = std::fs::read_to_string(paths.state_file()) else { return Peers::default() };
        let Ok(state) = serde_json::from_str::<SwarmState>(&text) else { return Peers::default() };
        let config = std::fs::read_to_string(paths.agents_toml())
            .ok()
            .and_then(|t| AgentsFile::parse(&t, "agents.toml").ok())
            .unwrap_or(AgentsFile { agents: vec![] });
        let swarm_token = kit::auth::token_from_env();
        let mut peers = vec![];
        for a in state.agents.iter().filter(|a| a.state == AgentState::Ready && a.name != exclude) {
            let Some(url) = &a.url else { continue };
            let token = if a.remote {
                match config.get(&a.name).map(|e| kit::auth::member_token(e, paths.home())) {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => {
                        tracing::warn!("{e}");
                        None
                    }
                    None => None,
                }
            } else {
                swarm_token.clone()
            };
            let base = A2aClient::new(url).with_token(token);
            let Ok(card) = base.card().await else { continue };
            let client = match base.for_card(&card) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("{}: {e}", a.name);
                    continue;
                }
            };
            let role = card.ratchet_role().unwrap_or_else(|| a.role.clone());
            peers.push(Peer { name: a.name.clone(), role, card, client });
        }
        Peers { peers, next: AtomicUsize::new(0) }
    }

    /// An agent of `role` whose card lists `skill`, round-robin.
    pub fn pick(&self, role: &str, skill: &str) -> Option<&Peer> {
        let fit: Vec<&Peer> = self.peers.iter().filter(|p| p.role == role && p.has_skill(skill)).collect();
        if fit.is_empty() {
            return None;
        }
        Some(fit[self.next.fetch_add(1, Ordering::Relaxed) % fit.len()])
    }

    /// Agents with a custom role (not one of the five built-in ones): advisory reviewers.
    pub fn custom(&self) -> Vec<&Peer> {
        self.peers.iter().filter(|p| !protocol::config::BUILTIN_ROLES.contains(&p.role.as_str())).collect()
    }

    pub fn all(&self) -> &[Peer] {
        &self.peers
    }
}
