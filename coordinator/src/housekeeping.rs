//! gc of the swarm's own helper checkouts, beside the substrate's gc of candidate branches:
//! the evaluator's baseline and candidate checkouts (`worktrees/.swarm/baselines/*`,
//! `worktrees/.swarm/candidate`) and the proposer's scratch
//! checkouts (`worktrees/.swarm/agents/*/scratch`). Each is removed only when nobody can be
//! using it: baselines when the benchmark lock is free, scratch checkouts when no swarm runs here.

use std::fs::File;
use std::path::Path;

use kit::git::Git;

/// Whether the lock file at `path` is free (nobody holds it); a missing file is free.
fn lock_free(path: &Path) -> bool {
    match File::options().write(true).open(path) {
        Ok(f) => f.try_lock().is_ok(),
        Err(_) => true,
    }
}

/// Remove helper checkouts nobody uses; returns what was removed.
pub fn gc_helper_checkouts(home: &Path) -> Vec<String> {
    let layout = kit::layout::Layout::new(home);
    let swarm = layout.swarm();
    let git = Git::new(home);
    let mut removed = vec![];
    let mut remove = |dir: &Path| {
        let d = dir.to_string_lossy().to_string();
        let _ = git.run(["worktree", "remove", "--force", &d]);
        let _ = std::fs::remove_dir_all(dir);
        removed.push(d);
    };
    // Hold the benchmark lock while removing, so no evaluation starts on a half-removed checkout.
    let bench_lock = File::options().create(true).truncate(false).write(true).open(layout.bench_lock()).ok();
    if swarm.is_dir()
        && bench_lock.as_ref().is_some_and(|f| f.try_lock().is_ok())
        && let Ok(rd) = std::fs::read_dir(layout.baselines_dir())
    {
        for e in rd.flatten() {
            remove(&e.path());
        }
        let candidate = layout.candidate_checkout();
        if candidate.exists() {
            remove(&candidate);
        }
    }
    if lock_free(&layout.supervisor_lock())
        && let Ok(rd) = std::fs::read_dir(layout.agents_dir())
    {
        for e in rd.flatten() {
            let scratch = e.path().join("scratch");
            if scratch.exists() {
                remove(&scratch);
            }
        }
    }
    let _ = git.run(["worktree", "prune"]);
    removed
}
