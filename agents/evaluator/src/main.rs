//! The evaluator agent binary: benchmarks baseline and candidate in paired rounds and judges.
//!
//! `evaluator --once` measures one request without serving: an `EvaluateInput` (JSON) on stdin,
//! the repository in `RATCHET_HOME` (default: the current directory), the result (JSON) on stdout.
//! `ratchet calibrate` runs it.
//!
//! `evaluator --gc` removes the evaluator's checkouts (baselines and candidate) of that repository
//! when no benchmark runs, and prints the removed paths as a JSON list. `ratchet gc` runs it.

use std::io::Read;

use anyhow::Context;
use evaluator::work::{MeasureError, Measured, measure};
use protocol::work::EvaluateInput;

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("--once") => return once(),
        Some("--gc") => return gc(),
        _ => {}
    }
    kit::agent::main_with("evaluator", |env| {
        let agent = kit::worker::LeasedAgent {
            role: "evaluator",
            skill: "evaluate",
            skill_name: "Evaluate a candidate",
            skill_description: "Run the benchmark from ethos.md on baseline and candidate in paired rounds (from the baseline's trusted copy of the benchmark), sequentially until the answer is clear, and give PROMOTE, HOLD or REJECT with every pair and reason; or calibrate the machine's noise (the baseline against itself)",
            description: "Benchmarks baseline and candidate in paired rounds and gives a PROMOTE, HOLD or REJECT verdict",
        };
        Ok(agent.spec(env, evaluator::work::evaluate_task))
    })
}

fn once() -> anyhow::Result<()> {
    kit::agent::init_logging();
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading the request on stdin")?;
    let input: EvaluateInput =
        serde_json::from_str(&text).context("stdin is not an evaluate request (EvaluateInput JSON)")?;
    let home = kit::agent::home_from_env()?;
    let artifacts = kit::layout::Layout::new(&home).agent_state_dir("evaluator").join("once");
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    match rt.block_on(measure(&input, &home, &artifacts, || false)) {
        Ok(Measured::Calibrated(out)) => println!("{}", serde_json::to_string(&out)?),
        Ok(Measured::Evaluated { output, .. }) => println!("{}", serde_json::to_string(&output)?),
        Err(MeasureError::Config(why)) => anyhow::bail!("{why}"),
        Err(MeasureError::Infra(why)) => anyhow::bail!("the measurement failed: {why}"),
    }
    Ok(())
}

fn gc() -> anyhow::Result<()> {
    let home = kit::agent::home_from_env()?;
    let removed = evaluator::work::gc(&home)
        .with_context(|| format!("removing the evaluator's checkouts in {}", home.display()))?;
    println!("{}", serde_json::to_string(&removed)?);
    Ok(())
}
