//! The critic agent binary: reviews candidates with deterministic rails.

use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("critic", |env| {
        let worker = Arc::new(
            kit::worker::Worker::new(env.home.clone(), &env.name, "critic").skill("critique", critic::work::critique),
        );
        let skill = worker.a2a_skill(
            "critique",
            "Critique a candidate",
            "Review a candidate commit with deterministic rails: protected paths, size limits, scope guard, and the bite check (new tests must fail on the parent)",
        );
        if env.watch {
            tokio::spawn(worker.watch_loop());
        }
        Ok(kit::server::AgentSpec {
            name: env.name.clone(),
            role: "critic".into(),
            description: "Reviews a candidate with deterministic rails: protected paths, size, scope, bite check"
                .into(),
            skills: vec![skill],
            push_notifications: true,
            routes: None,
        })
    })
}
