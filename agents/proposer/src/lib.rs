//! The proposer agent's domain logic.
