//! The executor agent's domain logic.
