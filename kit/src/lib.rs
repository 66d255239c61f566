//! Scaffolding shared by every Ratchet process, so each agent binary stays thin:
//! the A2A server ([`server`], [`store`], [`agent`], [`http`]) and client ([`client`]), the coordination
//! substrate ([`substrate`], [`git`]) and sandboxed command execution ([`exec`]).
//!
//! Architecture invariant: agents never import each other; what they share is here or in
//! `protocol`.

pub use protocol;

pub mod agent;
pub mod auth;
pub mod client;
pub mod counters;
pub mod exec;
pub mod files;
pub mod git;
pub mod governance;
pub mod http;
pub mod jobs;
pub mod layout;
pub mod model;
pub mod remote;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod substrate;
pub mod worker;

#[cfg(test)]
mod proptests;
