//! Everything the Ratchet processes share: wire types (A2A 0.3 and 1.0 over JSON-RPC 2.0 and HTTP+JSON), file formats
//! (agents.toml, task, lease and result files, events) and governance settings.
//!
//! Architecture invariant: this crate knows nothing about tokio, axum, HTTP or git. It is types,
//! parsing and pure functions, so every process reads the same bytes the same way.

pub mod a2a;
pub mod a2a_v1;
pub mod config;
pub mod evaluation;
pub mod events;
pub mod format;
pub mod governance;
pub mod json;
pub mod jsonrpc;
pub mod jsonrpc_decode;
pub mod lease;
pub mod models;
pub mod names;
pub mod rails;
pub mod remote;
pub mod work;

#[cfg(test)]
mod proptests;

pub use a2a::*;
