//! The critic agent's domain logic.
