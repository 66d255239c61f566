//! The benchmark driver: reads `params.toml`, generates a fixed pseudo-random dataset and times
//! `sortbench::sort::sort` on it.
//!
//! Usage:
//!   sortbench              sort once; print {"ms": <ms>, "checksum": <u64>}
//!   sortbench bench [N]    sort N times (default 5) in this process; print the median as
//!                          {"ms": <median ms>, "checksum": <u64>, "reps": N}
//!
//! The JSON object is always the last line of stdout. The output is verified to be sorted and
//! to be a permutation of the input: a wrong sort exits with status 1.
//!
//! This file is the benchmark: the demo's constitution protects it, so a candidate cannot
//! change what is measured.

mod params;

use std::process::ExitCode;
use std::time::Instant;

use sortbench::sort;

/// Elements sorted per repetition.
const LEN: usize = 200_000;
/// Fixed seed: every run sorts the same data.
const SEED: u64 = 0x5eed_2024_0bad_cafe;
const DEFAULT_REPS: usize = 5;

/// splitmix64: a small, good, dependency-free generator.
fn data(len: usize, seed: u64) -> Vec<u64> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

/// Order-sensitive checksum of the output.
fn checksum(a: &[u64]) -> u64 {
    a.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = match args.first().map(String::as_str) {
        None => 1,
        Some("bench") => {
            match args.get(1).map(|n| n.parse::<usize>()) {
                None => DEFAULT_REPS,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    eprintln!("sortbench: the repetition count must be a positive integer, e.g. `bench 5`");
                    return ExitCode::from(2);
                }
            }
        }
        Some(other) => {
            eprintln!(
                "sortbench: unknown mode {other:?}; use no argument (sort once) or `bench [N]`"
            );
            return ExitCode::from(2);
        }
    };
    let params = match params::load("params.toml") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sortbench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(label) = &params.label {
        eprintln!("sortbench: run {label:?} with {:?}", params.config);
    }

    let input = data(LEN, SEED);
    let mut expected = input.clone();
    expected.sort_unstable();
    let expected_sum = checksum(&expected);

    let mut times = Vec::with_capacity(reps);
    let mut sum = 0;
    for _ in 0..reps {
        let mut work = input.clone();
        let start = Instant::now();
        sort::sort(&mut work, &params.config);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        sum = checksum(&work);
        if sum != expected_sum {
            eprintln!("sortbench: the output is not the sorted input (checksum {sum}, expected {expected_sum})");
            return ExitCode::from(1);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = if reps % 2 == 1 {
        times[reps / 2]
    } else {
        (times[reps / 2 - 1] + times[reps / 2]) / 2.0
    };
    println!("{{\"ms\": {median:.3}, \"checksum\": {sum}, \"reps\": {reps}}}");
    ExitCode::SUCCESS
}
