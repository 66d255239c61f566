//! Task files: `tasks/<task>.json`, written only by the coordinator (under the branch's
//! coordinator lock, temp + rename), read by everyone.

use std::path::PathBuf;

use protocol::events::EventKind;
use protocol::lease::{ResultFile, TaskFile, TaskFileState, parse_result, parse_task};
use protocol::names;

use super::fsutil::{list_files, read_versioned, write_json_atomic};
use super::home::BranchDir;
use super::{Result, SubstrateError};

/// Writes (creates or replaces) a task file. Coordinator side only.
pub fn write_task(bd: &BranchDir, task: &TaskFile) -> Result<()> {
    check_task(bd, task)?;
    if !bd.exists() {
        return Err(SubstrateError::NoSuchBranch { path: bd.dir.clone() });
    }
    let _guard = bd.lock_coord()?;
    write_task_locked(bd, task)
}

/// Writes a task file and records `TaskQueued`. Coordinator side only.
pub fn queue_task(bd: &BranchDir, task: &TaskFile) -> Result<()> {
    write_task(bd, task)?;
    let kind = EventKind::TaskQueued {
        role: task.role.clone(),
        skill: task.skill.clone(),
        attempt: task.attempt,
        token: task.token,
    };
    bd.emit(&bd.event(Some(&task.id), kind))
}

fn check_task(bd: &BranchDir, task: &TaskFile) -> Result<()> {
    names::check_task_id(&task.id)?;
    if task.branch != bd.branch {
        return Err(SubstrateError::TaskBranchMismatch {
            task: task.id.clone(),
            expected: bd.branch.clone(),
            found: task.branch.clone(),
        });
    }
    Ok(())
}

/// The caller holds the coordinator lock.
pub(crate) fn write_task_locked(bd: &BranchDir, task: &TaskFile) -> Result<()> {
    check_task(bd, task)?;
    write_json_atomic(&bd.task_path(&task.id)?, task)
}

/// Reads `tasks/<task>.json`.
pub fn read_task(bd: &BranchDir, task: &str) -> Result<TaskFile> {
    let path = bd.task_path(task)?;
    read_task_file(&path)?.ok_or_else(|| SubstrateError::NoSuchTask { task: task.to_string(), path })
}

/// Reads a task file (`None` when it does not exist), refusing a newer format version.
fn read_task_file(path: &std::path::Path) -> Result<Option<TaskFile>> {
    read_versioned(path, parse_task)
}

/// The result accepted for `task` (`results/accepted/<task>.<token>.json`, the token of its
/// last accepted attempt), if there is one and it reads (a newer format version does not).
pub fn accepted_result(bd: &BranchDir, task: &TaskFile) -> Option<ResultFile> {
    let token = task.history.iter().rev().find(|h| h.outcome.result().is_some()).map(|h| h.token)?;
    let path = bd.results_dir().join("accepted").join(format!("{}.{token}.json", task.id));
    read_versioned(&path, parse_result).ok().flatten()
}

/// Every readable task of the branch, by id; corrupt files are skipped (the reaper quarantines
/// them).
pub fn list_tasks(bd: &BranchDir) -> Result<Vec<TaskFile>> {
    Ok(scan_tasks(bd)?.0)
}

/// Tasks that parse, and the paths (with the error) of those that do not.
/// A task file that did not parse, and why.
pub(crate) type Unreadable = (PathBuf, SubstrateError);

pub(crate) fn scan_tasks(bd: &BranchDir) -> Result<(Vec<TaskFile>, Vec<Unreadable>)> {
    let dir = bd.tasks_dir();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for name in list_files(&dir)? {
        let Some(id) = name.strip_suffix(".json") else { continue };
        if names::check_task_id(id).is_err() {
            continue;
        }
        let path = dir.join(&name);
        match read_task_file(&path) {
            Ok(Some(t)) if t.id == id => ok.push(t),
            Ok(Some(t)) => {
                let problem = format!("file {name} holds task id {:?}", t.id);
                bad.push((
                    path.clone(),
                    SubstrateError::Corrupt {
                        what: "task file",
                        path,
                        source: <serde_json::Error as serde::de::Error>::custom(problem),
                    },
                ))
            }
            Ok(None) => {}
            // Written by a newer build: not corrupt, so not quarantined; this build leaves it alone.
            Err(e @ SubstrateError::Format { .. }) => tracing::warn!("{e}"),
            Err(e) => bad.push((path, e)),
        }
    }
    Ok((ok, bad))
}

/// Whether an agent of `role` may try to claim this task now (judged from the task file alone).
pub(crate) fn claimable(task: &TaskFile, role: &str) -> bool {
    task.state == TaskFileState::Queued && task.role == role
}
