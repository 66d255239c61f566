//! Remote members: an executor, critic or evaluator on another host, with no file system shared
//! with the coordinator, takes leased work through the coordinator's `lease` skill (A2A) and
//! moves code with git (the coordinator's git endpoint, `/git/repo` to fetch and `/git/incoming`
//! to push results).
//!
//! The coordinator keeps the lease on its side (the lease file, its `flock` and its fencing
//! token are the same as a local holder's); the remote holder heartbeats through the skill, and
//! a holder that stops heartbeating is expired by the reaper after the lease's TTL, as a hung
//! local one. A result is accepted only after the coordinator has checked what it received: the
//! result commit pushed under [`incoming_ref`] is the one the result names and a child of the
//! branch head the holder was given, and every artefact's bytes hash to the SHA-256 sent with
//! them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lease::{Outcome, TaskFile};

/// The coordinator's skill remote holders call.
pub const LEASE_SKILL: &str = "lease";

/// The path of the coordinator's repository (read-only: fetch) under its URL.
pub const GIT_REPO_PATH: &str = "git/repo";
/// The path of the coordinator's incoming repository (push only results there) under its URL.
pub const GIT_INCOMING_PATH: &str = "git/incoming";

/// How long a claim may wait for work at most, in milliseconds.
pub const MAX_CLAIM_WAIT_MS: u64 = 20_000;

/// How large an artefact may be in a finish request; a larger one travels as its tail, marked.
pub const MAX_ARTIFACT_BYTES: usize = 128 * 1024;

/// A call of the `lease` skill (its data part, besides `"skill": "lease"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LeaseCall {
    /// Claim one queued task of `role` whose skill is in `skills`, waiting up to `wait_ms` for
    /// one (at most [`MAX_CLAIM_WAIT_MS`]). `branch`/`task_id` ask for that task only.
    Claim {
        agent: String,
        role: String,
        skills: Vec<String>,
        /// Where the holder runs (its host name), shown by `ratchet status` and `inspect`.
        host: String,
        /// The engine its heavy commands run on (`local`, `slurm`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        engine: Option<String>,
        #[serde(default)]
        wait_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
    },
    /// The holder is alive and still working; answered with whether the lease is still its own.
    Heartbeat { agent: String, branch: String, task_id: String, token: u64 },
    /// The work ended: the result under the lease's token, the commit pushed for it (if the work
    /// committed), the artefacts.
    Finish {
        agent: String,
        branch: String,
        task_id: String,
        token: u64,
        outcome: Outcome,
        summary: String,
        data: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        #[serde(default)]
        artifacts: Vec<ArtifactUpload>,
    },
}

/// What a claim got: the task, and the commits the holder fetches to work on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimGrant {
    pub branch: String,
    /// The task file as the coordinator holds it (token, attempt, input, governance hashes).
    pub task: TaskFile,
    /// The branch's base (meta.json).
    pub base: String,
    /// The branch's head when the lease was taken: a result commit must be its child.
    pub head: String,
    /// The lease's TTL: heartbeat well within it.
    pub ttl_ms: u64,
}

/// The answer to a claim: a grant, or nothing queued within the wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<ClaimGrant>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// False once the lease was expired (or is not this holder's): stop, the result would be
    /// refused.
    pub held: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// One artefact sent with a finish: its name (validated like every artefact name), the
/// SHA-256 of its bytes, and the bytes in standard base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactUpload {
    pub name: String,
    pub sha256: String,
    pub base64: String,
}

/// Where a remote holder pushes the commit of its result in the coordinator's incoming
/// repository.
pub fn incoming_ref(branch: &str, task_id: &str, token: u64) -> String {
    format!("refs/incoming/{branch}/{task_id}/{token}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use serde_json::json;

    #[test]
    fn lease_calls_have_a_stable_wire_shape() {
        let claim: LeaseCall = serde_json::from_value(json!({
            "op": "claim", "agent": "exec-b", "role": "executor", "skills": ["execute"], "host": "b", "wait_ms": 5000
        }))
        .expect("a claim parses");
        expect![[
            r#"{"op":"claim","agent":"exec-b","role":"executor","skills":["execute"],"host":"b","wait_ms":5000}"#
        ]]
        .assert_eq(&serde_json::to_string(&claim).expect("serializes"));
        let bad = serde_json::from_value::<LeaseCall>(json!({"op": "heartbeat", "agent": "a", "branch": "b",
            "task_id": "execute", "token": 1, "command": "rm -rf /"}));
        assert!(bad.unwrap_err().to_string().contains("unknown field `command`"));
        assert_eq!(incoming_ref("r1-c1-0", "execute", 3), "refs/incoming/r1-c1-0/execute/3");
    }
}
