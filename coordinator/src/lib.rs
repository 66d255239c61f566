//! The coordinator agent (the loop, routing, lease expiry, promotion) and the `ratchet`
//! supervisor command. The supervisor is only a process manager; the coordinator is an agent
//! like the others, reached over A2A.

pub mod agent;
pub mod approvals;
pub mod calibrate;
pub mod check;
pub mod dashboard;
pub mod demo;
pub mod demo_target;
pub mod engine;
pub mod explain;
pub mod export;
pub mod gitserve;
pub mod govern;
pub mod housekeeping;
pub mod loop_state;
pub mod models;
pub mod peers;
pub mod record;
pub mod remote;
pub mod supervisor;
pub mod verdict;
pub mod web;
