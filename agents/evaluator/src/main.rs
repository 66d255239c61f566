//! The evaluator agent binary: benchmarks baseline and candidate interleaved and judges.

use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("evaluator", |env| {
        let worker = Arc::new(
            kit::worker::Worker::new(env.home.clone(), &env.name, "evaluator")
                .skill("evaluate", evaluator::work::evaluate_task),
        );
        let skill = worker.a2a_skill(
            "evaluate",
            "Evaluate a candidate",
            "Run the benchmark from ethos.md on baseline and candidate interleaved (from the baseline's trusted copy of the benchmark) and give PROMOTE, HOLD or REJECT with every reason and a diagnosis",
        );
        if env.watch {
            tokio::spawn(worker.watch_loop());
        }
        Ok(kit::server::AgentSpec {
            name: env.name.clone(),
            role: "evaluator".into(),
            description: "Benchmarks baseline and candidate interleaved and gives a PROMOTE, HOLD or REJECT verdict"
                .into(),
            skills: vec![skill],
            push_notifications: true,
            routes: None,
        })
    })
}
