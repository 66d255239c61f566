//! The executor agent binary: applies candidates in their worktrees, commits, runs the fast gate.

use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    kit::agent::main_with("executor", |env| {
        let worker = Arc::new(
            kit::worker::Worker::new(env.home.clone(), &env.name, "executor").skill("execute", executor::execute),
        );
        let skill = worker.a2a_skill(
            "execute",
            "Execute a candidate",
            "Apply a candidate in its worktree, commit it with its provenance, and run the fast gate (build, tests) in a sandbox",
        );
        if env.watch {
            tokio::spawn(worker.watch_loop());
        }
        Ok(kit::server::AgentSpec {
            name: env.name.clone(),
            role: "executor".into(),
            description: "Applies a candidate in its worktree, commits it and runs the fast gate in a sandbox".into(),
            skills: vec![skill],
            push_notifications: true,
            routes: None,
        })
    })
}
