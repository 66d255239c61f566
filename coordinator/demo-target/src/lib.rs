//! sortbench: sort a slice of `u64` with a configurable algorithm.
//!
//! The code under improvement is [`sort`]; the benchmark driver (bench/main.rs) reads
//! `params.toml`, builds a [`sort::Config`] and times [`sort::sort`].

pub mod sort;
