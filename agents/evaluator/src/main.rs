//! The evaluator agent binary: benchmarks baseline and candidate interleaved and judges.

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("evaluator", |env| {
        let agent = kit::worker::LeasedAgent {
            role: "evaluator",
            skill: "evaluate",
            skill_name: "Evaluate a candidate",
            skill_description: "Run the benchmark from ethos.md on baseline and candidate interleaved (from the baseline's trusted copy of the benchmark) and give PROMOTE, HOLD or REJECT with every reason and a diagnosis",
            description: "Benchmarks baseline and candidate interleaved and gives a PROMOTE, HOLD or REJECT verdict",
        };
        Ok(agent.spec(env, evaluator::work::evaluate_task))
    })
}
