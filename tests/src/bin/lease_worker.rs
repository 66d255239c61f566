//! A test worker for the substrate: claims tasks through `kit::substrate` exactly as an agent
//! does, in one of three modes.
//!
//! `lease_worker <repo> <agent_id> race <role>`: claim every claimable task of `role` until all
//!   tasks of every branch are final; each completion writes a unique marker
//!   `artifacts/<task>/done-<pid>-<token>` and then the result.
//! `lease_worker <repo> <agent_id> block <branch> <task>`: claim the task, write a partial
//!   artefact, print `claimed <token>`, then block forever (the test kills it).
//! `lease_worker <repo> <agent_id> hold <branch> <task>`: claim the task, print `claimed <token>`,
//!   wait for a line on stdin, heartbeat (printing `lost` if the lease is gone), then write its
//!   result anyway and print `finished <path>`.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use kit::substrate::{self, Home, TaskWatcher};
use protocol::lease::Outcome;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (repo, agent, mode) = match &args[..] {
        [repo, agent, mode, ..] => (repo, agent, mode.as_str()),
        _ => bail!("usage: lease_worker <repo> <agent_id> race <role> | block <branch> <task> | hold <branch> <task>"),
    };
    let home = Home::open(repo).with_context(|| format!("opening {repo}"))?.with_run_id("lease-worker");
    match (mode, &args[3..]) {
        ("race", [role]) => race(&home, agent, role),
        ("block", [branch, task]) => block(&home, agent, branch, task),
        ("hold", [branch, task]) => hold(&home, agent, branch, task),
        _ => bail!("unknown mode or wrong arguments: {args:?}"),
    }
}

fn all_final(home: &Home) -> anyhow::Result<bool> {
    for branch in home.branches()? {
        let bd = home.open_branch(&branch)?;
        if substrate::list_tasks(&bd)?.iter().any(|t| !t.state.is_final()) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn race(home: &Home, agent: &str, role: &str) -> anyhow::Result<()> {
    let (_watcher, mut wakeups) = TaskWatcher::blocking(home.worktrees_dir(), Duration::from_millis(500))?;
    let pid = std::process::id();
    let mut done = 0usize;
    loop {
        let found = substrate::find_claimable(home, role)?;
        for (branch, task) in &found {
            let bd = home.open_branch(branch)?;
            let Some(lease) = substrate::try_claim(&bd, task, agent)? else { continue };
            let marker = format!("done-{pid}-{}", lease.token());
            let path = lease.artifact_dir()?.join(&marker);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("writing marker {}", path.display()))?;
            lease.finish(Outcome::Success, "done", json!({ "marker": marker }))?;
            done += 1;
        }
        if found.is_empty() && all_final(home)? {
            break;
        }
        if found.is_empty() {
            wakeups.wait();
        }
    }
    println!("completed {done}");
    Ok(())
}

fn claim(home: &Home, agent: &str, branch: &str, task: &str) -> anyhow::Result<substrate::Lease> {
    let bd = home.open_branch(branch)?;
    substrate::try_claim(&bd, task, agent)?.with_context(|| format!("task {task} was not claimable"))
}

fn block(home: &Home, agent: &str, branch: &str, task: &str) -> anyhow::Result<()> {
    let lease = claim(home, agent, branch, task)?;
    let partial = lease.artifact_dir()?.join(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, "half of the work\n")?;
    println!("claimed {}", lease.token());
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}

fn hold(home: &Home, agent: &str, branch: &str, task: &str) -> anyhow::Result<()> {
    let lease = claim(home, agent, branch, task)?;
    println!("claimed {}", lease.token());
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if let Err(e) = lease.heartbeat() {
        println!("lost: {e}");
    }
    let path = lease.finish(Outcome::Success, "late", json!({ "pid": std::process::id() }))?;
    println!("finished {}", path.display());
    Ok(())
}
