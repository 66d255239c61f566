//! Task, lease and result files: the public file formats of the coordination substrate.
//!
//! Layout under `worktrees/<branch>/` (see ARCHITECTURE.md):
//! `tasks/<task>.json` (written only by the coordinator), `leases/<task>.lock` (created
//! atomically by the claiming agent), `results/<task>.<token>.json` (written by the holder),
//! `artifacts/<task>/...`, `jobs/<name>.json` (an engine job a holder has running),
//! `events/events.jsonl`.
//!
//! Every format carries `version`; changing a field's meaning or default is a breaking change.
//! Readers go through [`parse_lease`], [`parse_result`], [`parse_task`] and [`parse_job`],
//! which refuse a file of a newer version than this build knows (rather than misreading it)
//! with a message that says so. Version history: leases and results 1 -> 2 added `swarm`
//! (absent in version 1 files, which still read).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const TASK_FILE_VERSION: u32 = 1;
pub const LEASE_FILE_VERSION: u32 = 2;
pub const RESULT_FILE_VERSION: u32 = 2;
pub const JOB_FILE_VERSION: u32 = 1;

pub use crate::format::FormatError;
use crate::format::parse_versioned;

/// Read a `leases/<task>.lock` record.
pub fn parse_lease(bytes: &[u8]) -> Result<LeaseFile, FormatError> {
    parse_versioned(bytes, "lease file", LEASE_FILE_VERSION)
}

/// Read a `results/<task>.<token>.json` file.
pub fn parse_result(bytes: &[u8]) -> Result<ResultFile, FormatError> {
    parse_versioned(bytes, "result file", RESULT_FILE_VERSION)
}

/// Read a `jobs/<name>.json` record.
pub fn parse_job(bytes: &[u8]) -> Result<JobFile, FormatError> {
    parse_versioned(bytes, "job record", JOB_FILE_VERSION)
}

/// Read a `tasks/<task>.json` file.
pub fn parse_task(bytes: &[u8]) -> Result<TaskFile, FormatError> {
    parse_versioned(bytes, "task file", TASK_FILE_VERSION)
}

/// Where a task is in its life, as the coordinator records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskFileState {
    /// Waiting for a holder (or held: the lease file says which).
    Queued,
    /// A result under the current token was accepted.
    Done,
    /// The work itself failed (a candidate failure); not retried.
    Failed,
    /// Every attempt ended in an infrastructure failure (crash, timeout, lost lease).
    InfraFailed,
    /// Withdrawn by the coordinator (cycle abandoned, candidate dropped).
    Canceled,
}

impl TaskFileState {
    pub fn is_final(self) -> bool {
        !matches!(self, TaskFileState::Queued)
    }

    /// How a task ended, as the `executed` event says it.
    pub fn end(self) -> StageEnd {
        match self {
            TaskFileState::Done => StageEnd::Success,
            TaskFileState::Failed => StageEnd::CandidateFailure,
            TaskFileState::InfraFailed => StageEnd::InfraFailure,
            TaskFileState::Canceled => StageEnd::Canceled,
            TaskFileState::Queued => StageEnd::Queued,
        }
    }
}

/// How a stage's task ended (not `kit::server::TaskEnd`, how a skill ends), in the words of an [`Outcome`] (`executed` events): a task that is
/// still queued when the loop gives up on it says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageEnd {
    Success,
    CandidateFailure,
    InfraFailure,
    Canceled,
    Queued,
}

impl StageEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            StageEnd::Success => "success",
            StageEnd::CandidateFailure => "candidate-failure",
            StageEnd::InfraFailure => "infra-failure",
            StageEnd::Canceled => "canceled",
            StageEnd::Queued => "queued",
        }
    }
}

impl std::fmt::Display for StageEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// `tasks/<task>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFile {
    pub version: u32,
    pub id: String,
    pub branch: String,
    /// The role that may claim it.
    pub role: String,
    /// The skill (on the claiming agent's card) the task needs.
    pub skill: String,
    /// 1-based attempt number; bumped with the token when a lease is expired.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Fencing token: results must carry this exact value to be accepted.
    pub token: u64,
    pub state: TaskFileState,
    pub created_at: String,
    /// Lease time-to-live, in milliseconds, for holders of this task.
    pub ttl_ms: u64,
    /// What to do: role-specific input.
    #[serde(default)]
    pub input: Value,
    /// Hashes of the governance documents in force when the task was written.
    #[serde(default)]
    pub governance: BTreeMap<String, String>,
    /// What happened to earlier attempts.
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
}

impl TaskFile {
    /// A task for its first attempt, queued now: fencing token 1, 3 attempts, a 30 s lease, no
    /// governance hashes and no history (set the others with struct update syntax).
    pub fn queued(branch: &str, id: &str, role: &str, skill: &str, input: Value) -> TaskFile {
        TaskFile {
            version: TASK_FILE_VERSION,
            id: id.to_string(),
            branch: branch.to_string(),
            role: role.to_string(),
            skill: skill.to_string(),
            attempt: 1,
            max_attempts: 3,
            token: 1,
            state: TaskFileState::Queued,
            created_at: crate::timestamp(std::time::SystemTime::now()),
            ttl_ms: 30_000,
            input,
            governance: BTreeMap::new(),
            history: vec![],
        }
    }
}

/// One ended attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub token: u64,
    #[serde(default)]
    pub holder: Option<String>,
    pub outcome: AttemptOutcome,
    pub at: String,
}

/// How an attempt ended: a result was accepted under its token (`"success"`,
/// `"candidate-failure"`, `"infra-failure"`), or the reaper expired its lease
/// (`"expired: <why>"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum AttemptOutcome {
    Result(Outcome),
    Expired(String),
}

impl AttemptOutcome {
    /// The result accepted for this attempt, if one was.
    pub fn result(&self) -> Option<Outcome> {
        match self {
            AttemptOutcome::Result(o) => Some(*o),
            AttemptOutcome::Expired(_) => None,
        }
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptOutcome::Result(o) => f.write_str(o.as_str()),
            AttemptOutcome::Expired(why) => write!(f, "expired: {why}"),
        }
    }
}

impl From<AttemptOutcome> for String {
    fn from(o: AttemptOutcome) -> String {
        o.to_string()
    }
}

impl TryFrom<String> for AttemptOutcome {
    type Error = String;

    fn try_from(s: String) -> Result<AttemptOutcome, String> {
        if let Some(why) = s.strip_prefix("expired") {
            return Ok(AttemptOutcome::Expired(why.trim_start_matches(':').trim_start().to_string()));
        }
        [Outcome::Success, Outcome::CandidateFailure, Outcome::InfraFailure]
            .into_iter()
            .find(|o| o.as_str() == s)
            .map(AttemptOutcome::Result)
            .ok_or_else(|| {
                format!("unknown attempt outcome {s:?}: expected success, candidate-failure, infra-failure or expired: <why>")
            })
    }
}

/// `leases/<task>.lock`. While the holder lives on this host it also holds an exclusive
/// `flock` on the file, which the kernel drops when the process dies. The live heartbeat is
/// the file's mtime (the holder touches it); `heartbeat_at` is the heartbeat at claim time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseFile {
    pub version: u32,
    pub task_id: String,
    pub agent_id: String,
    pub pid: u32,
    pub host: String,
    pub claimed_at: String,
    pub heartbeat_at: String,
    pub ttl_ms: u64,
    pub token: u64,
    /// The swarm instance of the holder (`RATCHET_SWARM_ID`, set by `ratchet up` for its
    /// members); absent for a process started without one (by hand, by a test). The reaper
    /// expires at once a lease of another swarm instance (since version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
}

/// `jobs/<name>.json`: a job a holder submitted to an engine (`kit::jobs`), recorded (temp +
/// rename) *before* it is submitted, under the job's unique name, and removed once the job ended.
/// A record that outlives its job's holder (the holder died, or lost its lease) names an
/// orphan: the coordinator's reaper, or the holder's successor at its start, cancels the job if
/// the engine still runs it, removes the record and says so (`job_orphaned`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    pub version: u32,
    /// The job's name on the engine (`ratchet-<pid>-<instance>-<n>`), unique to one process.
    pub name: String,
    pub engine: crate::governance::JobEngine,
    /// The holder: agent, process and its instance (the `<instance>` of the name), host.
    pub agent: String,
    pub pid: u32,
    pub instance: String,
    pub host: String,
    /// The leased task and the token it ran under.
    pub task: String,
    pub token: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
    /// The cluster (`SLURM_CONF`) the job went to, when the holder named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_conf: Option<String>,
    pub submitted_at: String,
}

/// How a holder's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The work ran and produced its result (which may itself be a negative verdict).
    Success,
    /// The candidate is at fault (gate failed, patch does not apply): not retried.
    CandidateFailure,
    /// The harness is at fault (timeout, spawn error, signal, OOM): retried, never counted
    /// against the candidate.
    InfraFailure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::CandidateFailure => "candidate-failure",
            Outcome::InfraFailure => "infra-failure",
        }
    }
}

/// `results/<task>.<token>.json`, written by the holder with write-temp-then-rename.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultFile {
    pub version: u32,
    pub task_id: String,
    pub token: u64,
    pub agent_id: String,
    pub outcome: Outcome,
    pub summary: String,
    #[serde(default)]
    pub data: Value,
    pub finished_at: String,
    /// The swarm instance of the writer, as in [`LeaseFile::swarm`]: a result of another swarm
    /// instance is refused (since version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn lease_shape() {
        let l = LeaseFile {
            version: LEASE_FILE_VERSION,
            task_id: "t1".into(),
            agent_id: "executor".into(),
            pid: 42,
            host: "h".into(),
            claimed_at: "2026-01-01T00:00:00.000Z".into(),
            heartbeat_at: "2026-01-01T00:00:00.000Z".into(),
            ttl_ms: 30000,
            token: 3,
            swarm: Some("up-1-2".into()),
        };
        expect![[r#"{"version":2,"task_id":"t1","agent_id":"executor","pid":42,"host":"h","claimed_at":"2026-01-01T00:00:00.000Z","heartbeat_at":"2026-01-01T00:00:00.000Z","ttl_ms":30000,"token":3,"swarm":"up-1-2"}"#]]
            .assert_eq(&serde_json::to_string(&l).unwrap());
        expect![[r#""infra-failure""#]].assert_eq(&serde_json::to_string(&Outcome::InfraFailure).unwrap());
        assert_eq!(parse_lease(serde_json::to_string(&l).unwrap().as_bytes()).unwrap(), l);
    }

    #[test]
    fn attempt_outcomes_keep_their_strings() {
        let expired = AttemptRecord {
            attempt: 1,
            token: 1,
            holder: Some("w1".into()),
            outcome: AttemptOutcome::Expired("holder died".into()),
            at: "a".into(),
        };
        expect![[r#"{"attempt":1,"token":1,"holder":"w1","outcome":"expired: holder died","at":"a"}"#]]
            .assert_eq(&serde_json::to_string(&expired).unwrap());
        for (text, outcome) in [
            ("\"expired: holder died\"", AttemptOutcome::Expired("holder died".into())),
            ("\"candidate-failure\"", AttemptOutcome::Result(Outcome::CandidateFailure)),
            ("\"success\"", AttemptOutcome::Result(Outcome::Success)),
        ] {
            assert_eq!(serde_json::from_str::<AttemptOutcome>(text).unwrap(), outcome);
            assert_eq!(serde_json::to_string(&outcome).unwrap(), text);
        }
        assert_eq!(AttemptOutcome::Result(Outcome::InfraFailure).result(), Some(Outcome::InfraFailure));
        assert_eq!(AttemptOutcome::Expired(String::new()).result(), None);
        let e = serde_json::from_str::<AttemptOutcome>("\"lost\"").unwrap_err().to_string();
        assert!(e.starts_with("unknown attempt outcome \"lost\""), "{e}");
    }

    #[test]
    fn version_1_files_still_read_and_newer_ones_are_refused() {
        let v1 = br#"{"version":1,"task_id":"t1","agent_id":"executor","pid":42,"host":"h","claimed_at":"a","heartbeat_at":"a","ttl_ms":30000,"token":3}"#;
        let l = parse_lease(v1).unwrap();
        assert_eq!((l.token, l.swarm), (3, None));
        let v9 = br#"{"version":9,"task_id":"t1","whatever":"a field of the future"}"#;
        let e = parse_lease(v9).unwrap_err().to_string();
        assert!(e.starts_with("lease file version 9 is newer than this build of Ratchet reads (up to 2)"), "{e}");
        assert!(e.contains("fix: run one Ratchet build"), "{e}");
        let e = parse_result(br#"{"version":3}"#).unwrap_err().to_string();
        assert!(e.starts_with("result file version 3 is newer"), "{e}");
        let e = parse_task(br#"{"version":2}"#).unwrap_err().to_string();
        assert!(e.starts_with("task file version 2 is newer"), "{e}");
        let e = parse_result(b"{\"version\":2,").unwrap_err().to_string();
        assert!(e.starts_with("not a valid result file:"), "{e}");
    }
}
