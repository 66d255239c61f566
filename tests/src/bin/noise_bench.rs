//! A fixture benchmark whose output comes from the seeded noise model of this project's machines
//! (`evaluator::noise`): the integration tests and `evaluator-bench` run the real evaluator on it.
//!
//! ```text
//! noise-bench --seed N --state DIR [--pairing sequential|duet] [--quiet]
//! ```
//!
//! - The true effect is `effect = X` in `params.toml` of the directory it runs in (the
//!   candidate's checkout or the baseline's): the candidate's throughput is `(1 + X)` times the
//!   baseline's.
//! - Each run takes the next time slot from a counter in `DIR/slots` (under a lock). Duet
//!   pairing starts runs two at a time, so there a slot is two runs.
//! - A run pinned to one CPU (as duet pairing pins it) draws that CPU's noise; an unpinned run
//!   draws the CPU the model's scheduler gives it.
//!
//! Prints `{"ops_per_s": v}` (higher is better).

use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use evaluator::noise::{Machine, NoiseParams};

fn main() -> anyhow::Result<()> {
    let mut seed: Option<u64> = None;
    let mut state: Option<PathBuf> = None;
    let mut duet = false;
    let mut params = NoiseParams::MACHINE;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => seed = Some(args.next().context("--seed needs a number")?.parse()?),
            "--state" => state = Some(args.next().context("--state needs a directory")?.into()),
            "--pairing" => duet = args.next().as_deref() == Some("duet"),
            "--quiet" => params = NoiseParams::QUIET,
            other => bail!(
                "unknown argument {other:?}; usage: noise-bench --seed N --state DIR [--pairing sequential|duet] [--quiet]"
            ),
        }
    }
    let (seed, state) = (seed.context("--seed is required")?, state.context("--state is required")?);
    let params_toml = std::fs::read_to_string("params.toml").unwrap_or_default();
    let effect: f64 = params_toml
        .lines()
        .find_map(|l| {
            l.strip_prefix("effect").and_then(|r| r.trim_start().strip_prefix('=')).map(|v| v.trim().to_string())
        })
        .map(|v| v.parse().context("params.toml: effect is not a number"))
        .transpose()?
        .unwrap_or(0.0);
    std::fs::create_dir_all(&state)?;
    let mut counter =
        std::fs::File::options().read(true).write(true).create(true).truncate(false).open(state.join("slots"))?;
    counter.lock()?;
    let mut text = String::new();
    counter.read_to_string(&mut text)?;
    let n: u64 = text.trim().parse().unwrap_or(0);
    counter.set_len(0)?;
    counter.rewind()?;
    write!(counter, "{}", n + 1)?;
    counter.unlock()?;
    let slot = if duet { n / 2 } else { n };
    let allowed = kit::exec::available_cpus();
    let cpu = match allowed.as_slice() {
        [one] => Some((*one % params.cpus as usize) as u32),
        _ => None,
    };
    let v = Machine::new(seed, params).run(slot, cpu, effect);
    println!("noise-bench: slot {slot} cpu {cpu:?} effect {effect}");
    println!("{{\"ops_per_s\": {v:.1}}}");
    Ok(())
}
