//! The evaluator agent's domain logic.
