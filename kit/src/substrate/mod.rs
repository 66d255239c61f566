//! The coordination substrate (being written).
