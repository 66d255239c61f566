//! `ratchet inspect <branch>`: everything the substrate knows about one branch, from its files
//! and git, as a serializable report and as text.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use protocol::events::Event;
use protocol::lease::{AttemptRecord, LeaseFile, ResultFile, TaskFileState};
use serde::Serialize;

use super::Result;
use super::events::{CorruptLine, read_events};
use super::fsutil::{age, list_files};
use super::home::{BranchMeta, Home};
use super::tasks::scan_tasks;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectReport {
    pub branch: String,
    pub dir: PathBuf,
    pub meta: Option<BranchMeta>,
    pub tasks: Vec<TaskInfo>,
    /// Task files that do not parse (the reaper will quarantine them).
    pub unreadable_tasks: Vec<String>,
    pub artifacts: Vec<ArtifactInfo>,
    pub events: Vec<Event>,
    pub corrupt_event_lines: Vec<CorruptLine>,
    /// Files the reaper moved to a `quarantine/` directory, relative to the branch directory.
    pub quarantined: Vec<String>,
    /// `git diff --stat <base> <branch>`.
    pub diff_stat: Option<String>,
    /// Why there is no diff stat (branch deleted, git failed).
    pub diff_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskInfo {
    pub id: String,
    pub role: String,
    pub skill: String,
    pub state: TaskFileState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub token: u64,
    pub history: Vec<AttemptRecord>,
    /// The current lease, if any.
    pub lease: Option<LeaseInfo>,
    /// The most recent expired lease, with why it was expired.
    pub last_expired: Option<LeaseInfo>,
    /// The accepted result, if any.
    pub result: Option<ResultFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseInfo {
    pub agent_id: String,
    pub pid: u32,
    pub host: String,
    pub token: u64,
    pub claimed_at: String,
    /// Milliseconds since the last heartbeat (the file's mtime).
    pub heartbeat_age_ms: Option<u64>,
    pub ttl_ms: u64,
    /// For an expired lease: the reason recorded in the task's history.
    pub reason: Option<String>,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactInfo {
    /// Relative to `artifacts/`.
    pub path: String,
    pub bytes: u64,
}

fn lease_info(path: &Path, lease: LeaseFile) -> LeaseInfo {
    let heartbeat_age_ms =
        fs::metadata(path).and_then(|m| m.modified()).ok().map(|t| age(t).as_millis().min(u64::MAX as u128) as u64);
    LeaseInfo {
        agent_id: lease.agent_id,
        pid: lease.pid,
        host: lease.host,
        token: lease.token,
        claimed_at: lease.claimed_at,
        heartbeat_age_ms,
        ttl_ms: lease.ttl_ms,
        reason: None,
        path: path.to_path_buf(),
    }
}

fn read_lease(path: &Path) -> Option<LeaseFile> {
    fs::read(path).ok().and_then(|b| protocol::lease::parse_lease(&b).ok())
}

/// The lease file at `path` as [`inspect`] shows it, with the task it is for; `None` when it is
/// gone or does not parse. (The web page's leases are read with it.)
pub fn read_lease_info(path: &Path) -> Option<(String, LeaseInfo)> {
    read_lease(path).map(|l| (l.task_id.clone(), lease_info(path, l)))
}

/// Reports on `branch`: tasks (state, attempts, token, history, holder or last holder and why
/// it lost the lease), artefacts with sizes, events, quarantined files, diff stat against the base.
pub fn inspect(home: &Home, branch: &str) -> Result<InspectReport> {
    let bd = home.open_branch(branch)?;
    let meta = bd.read_meta()?;
    let (task_files, bad) = scan_tasks(&bd)?;
    let expired_names = list_files(&bd.expired_dir())?;
    let mut tasks = Vec::new();
    for t in task_files {
        let lease_path = bd.lease_path(&t.id)?;
        let lease = read_lease(&lease_path).filter(|l| l.task_id == t.id).map(|l| lease_info(&lease_path, l));
        let last_expired = expired_names
            .iter()
            .filter(|n| n.starts_with(&format!("{}.", t.id)))
            .filter_map(|n| {
                let p = bd.expired_dir().join(n);
                read_lease(&p).filter(|l| l.task_id == t.id).map(|l| (p, l))
            })
            .max_by_key(|(_, l)| l.token)
            .map(|(p, l)| {
                let token = l.token;
                let mut info = lease_info(&p, l);
                info.heartbeat_age_ms = None;
                info.reason = t.history.iter().rev().find(|h| h.token == token).map(|h| h.outcome.to_string());
                info
            });
        let result = super::tasks::accepted_result(&bd, &t);
        tasks.push(TaskInfo {
            id: t.id,
            role: t.role,
            skill: t.skill,
            state: t.state,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            token: t.token,
            history: t.history,
            lease,
            last_expired,
            result,
        });
    }
    let mut artifacts = Vec::new();
    walk_files(&bd.artifacts_dir(), "", &mut artifacts);
    artifacts.sort_by(|a, b| a.path.cmp(&b.path));

    let log = read_events(&bd.events_file())?;
    let mut quarantined = Vec::new();
    for sub in ["tasks", "leases", "results"] {
        for name in list_files(&bd.dir().join(sub).join("quarantine"))? {
            quarantined.push(format!("{sub}/quarantine/{name}"));
        }
    }

    let (diff_stat, diff_error) = diff_stat(home, branch, meta.as_ref());
    Ok(InspectReport {
        branch: branch.to_string(),
        dir: bd.dir().to_path_buf(),
        meta,
        tasks,
        unreadable_tasks: bad.into_iter().map(|(p, e)| format!("{}: {e}", p.display())).collect(),
        artifacts,
        events: log.events,
        corrupt_event_lines: log.corrupt,
        quarantined,
        diff_stat,
        diff_error,
    })
}

fn diff_stat(home: &Home, branch: &str, meta: Option<&BranchMeta>) -> (Option<String>, Option<String>) {
    let Some(meta) = meta else { return (None, Some("no meta.json, so no base to compare with".into())) };
    let git = home.git();
    let candidates = [Some(format!("refs/heads/{branch}")), meta.promoted_commit.clone(), meta.archived_ref.clone()];
    let tip = candidates.into_iter().flatten().find_map(|r| git.resolve_commit(&r).ok().flatten());
    let Some(tip) = tip else {
        return (None, Some(format!("branch {branch} no longer exists and was neither promoted nor archived")));
    };
    match git.run(["diff", "--stat", meta.base.as_str(), tip.as_str()]) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

fn walk_files(dir: &Path, prefix: &str, out: &mut Vec<ArtifactInfo>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_files(&entry.path(), &rel, out),
            Ok(_) => out.push(ArtifactInfo { path: rel, bytes: entry.metadata().map(|m| m.len()).unwrap_or(0) }),
            Err(_) => {}
        }
    }
}

/// The report as text for a terminal.
pub fn render_text(r: &InspectReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "branch {}  ({})", r.branch, r.dir.display());
    match &r.meta {
        Some(m) => {
            let _ = writeln!(s, "  state {}, base {}, created {}", m.state.as_str(), m.base, m.created_at);
            if let Some(c) = &m.promoted_commit {
                let _ = writeln!(s, "  promoted to {c}");
            }
            if let Some(n) = &m.note {
                let _ = writeln!(s, "  note: {n}");
            }
            if m.checkout_removed {
                let _ = writeln!(
                    s,
                    "  checkout removed by gc{}",
                    m.archived_ref.as_ref().map(|a| format!(", commits kept under {a}")).unwrap_or_default()
                );
            }
        }
        None => {
            let _ = writeln!(s, "  no meta.json");
        }
    }
    let _ = writeln!(s, "\ntasks ({})", r.tasks.len());
    for t in &r.tasks {
        let _ = writeln!(
            s,
            "  {}  {:?}  role {} / {}  attempt {}/{}  token {}",
            t.id, t.state, t.role, t.skill, t.attempt, t.max_attempts, t.token
        );
        if let Some(l) = &t.lease {
            let hb = l.heartbeat_age_ms.map(|ms| format!("{ms} ms ago")).unwrap_or_else(|| "unknown".into());
            let _ = writeln!(
                s,
                "    held by {} (pid {} on {}), token {}, since {}, heartbeat {hb}, ttl {} ms",
                l.agent_id, l.pid, l.host, l.token, l.claimed_at, l.ttl_ms
            );
        } else if let Some(l) = &t.last_expired {
            let _ = writeln!(
                s,
                "    last holder {} (pid {} on {}), token {}: {}",
                l.agent_id,
                l.pid,
                l.host,
                l.token,
                l.reason.as_deref().unwrap_or("expired")
            );
        }
        for h in &t.history {
            let _ = writeln!(
                s,
                "    attempt {} token {} by {}: {} at {}",
                h.attempt,
                h.token,
                h.holder.as_deref().unwrap_or("-"),
                h.outcome,
                h.at
            );
        }
        if let Some(res) = &t.result {
            let _ = writeln!(s, "    result {:?} by {}: {}", res.outcome, res.agent_id, res.summary);
        }
    }
    for u in &r.unreadable_tasks {
        let _ = writeln!(s, "  unreadable: {u}");
    }
    let total: u64 = r.artifacts.iter().map(|a| a.bytes).sum();
    let _ = writeln!(s, "\nartifacts ({}, {total} bytes)", r.artifacts.len());
    for a in &r.artifacts {
        let _ = writeln!(s, "  {:>10}  {}", a.bytes, a.path);
    }
    if !r.quarantined.is_empty() {
        let _ = writeln!(s, "\nquarantined");
        for q in &r.quarantined {
            let _ = writeln!(s, "  {q}");
        }
    }
    let _ = writeln!(s, "\nevents ({})", r.events.len());
    for e in &r.events {
        let detail = serde_json::to_value(&e.kind)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .map(|mut o| {
                o.remove("type");
                serde_json::Value::Object(o).to_string()
            })
            .unwrap_or_default();
        let _ = writeln!(s, "  {}  {}  {}  {detail}", e.at, e.task.as_deref().unwrap_or("-"), e.type_name());
    }
    for c in &r.corrupt_event_lines {
        let _ = writeln!(s, "  (line {} unreadable: {})", c.line, c.error);
    }
    let _ = writeln!(s, "\ndiff against base");
    match (&r.diff_stat, &r.diff_error) {
        (Some(d), _) if d.is_empty() => {
            let _ = writeln!(s, "  (no changes)");
        }
        (Some(d), _) => {
            for line in d.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
        (None, Some(e)) => {
            let _ = writeln!(s, "  unavailable: {e}");
        }
        (None, None) => {}
    }
    s
}
