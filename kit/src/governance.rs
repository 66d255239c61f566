//! The read side of approved governance: the texts recorded on `refs/ratchet/governance`, turned
//! into [`Governance`]. One reader for every process: the coordinator loads what is in force
//! before each cycle, the proposer loads its own settings (never from a message), and leased
//! workers check that a task's settings are those of approved versions.
//!
//! Each commit on the ref holds a flat tree:
//! - `lock.json`: `{"v": 1, "docs": {doc: {sha256, blob, approved_by, approved_at, previous_sha256, proposal}}}`,
//!   the approved version of each document;
//! - `history.jsonl`: one line per approval ever made (append-only across commits);
//! - `constitution.md`, `ethos.md`, `cadence.md`: the approved texts themselves.
//!
//! The write side (approve, reject, init) is the coordinator's (`coordinator::govern`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use protocol::governance::{DOCS, Governance, GovernanceError};
use serde::{Deserialize, Serialize};

use crate::git::{Git, GitError};

/// The ref whose commits hold the approved state.
pub const GOVERNANCE_REF: &str = "refs/ratchet/governance";
pub const LOCK_JSON: &str = "lock.json";
pub const HISTORY_JSONL: &str = "history.jsonl";
pub const LOCK_VERSION: u32 = 1;

/// One document's approved version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// sha256 hex of the approved text (the hash every event and promotion carries).
    pub sha256: String,
    /// git object id of the approved text (a blob on the governance ref).
    pub blob: String,
    /// `--by`, or the git identity (`Name <email>`) of whoever approved it.
    pub approved_by: String,
    /// RFC 3339.
    pub approved_at: String,
    /// The hash this approval replaced (none for a first approval).
    #[serde(default)]
    pub previous_sha256: Option<String>,
    /// The agent proposal this approval applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

/// `lock.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub v: u32,
    pub docs: BTreeMap<String, Approval>,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub doc: String,
    #[serde(flatten)]
    pub approval: Approval,
}

/// The approved state at one commit of the governance ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub commit: String,
    pub lock: Lock,
}

/// Why approved governance could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{home} is not a git repository; fix: run ratchet in the repository root (or pass --repo PATH)")]
    NotRepository { home: PathBuf },
    #[error(
        "{GOVERNANCE_REF}:{LOCK_JSON} at {commit} is not a governance lock file ({problem}); fix: reset the ref to a good commit \
         (git log {GOVERNANCE_REF}; git update-ref {GOVERNANCE_REF} <commit>)"
    )]
    BadLock { commit: String, problem: String },
    #[error(
        "{GOVERNANCE_REF}:{LOCK_JSON} has version {version}, this ratchet reads version {LOCK_VERSION}; fix: use the ratchet that wrote it"
    )]
    LockVersion { version: u32 },
    #[error("{GOVERNANCE_REF}:{HISTORY_JSONL}: a bad line ({problem}): {line}")]
    BadHistory { line: String, problem: String },
    #[error(
        "approved {doc}: blob {blob} {problem}; the governance ref is damaged; fix: reset it to a good commit (git log {GOVERNANCE_REF})"
    )]
    Damaged { doc: String, blob: String, problem: String },
    #[error(
        "{home}: no governance document was ever approved here; the swarm runs only under approved documents; \
         fix: run `ratchet init` (writes and approves templates) or review constitution.md, ethos.md and cadence.md \
         and run `ratchet approve constitution.md ethos.md cadence.md`"
    )]
    NothingApproved { home: PathBuf },
    #[error("{doc} was never approved in {home}; fix: review it and run `ratchet approve {doc}`")]
    NeverApproved { doc: String, home: PathBuf },
    #[error(
        "{doc} sha256 {sha256} is not an approved version (not in {GOVERNANCE_REF}:{HISTORY_JSONL}); \
         what runs comes only from approved governance; fix: approve the document (`ratchet approve {doc}`) and let the coordinator write the task"
    )]
    NotApproved { doc: String, sha256: String },
    #[error(
        "the approved {0}; (this ratchet is stricter than the one that approved it) fix the file, then `ratchet approve {file}`",
        file = .0.file
    )]
    Invalid(GovernanceError),
}

/// Reads the approved state of one repository (any checkout of it: git finds the common ref).
#[derive(Debug, Clone)]
pub struct Approved {
    git: Git,
}

impl Approved {
    pub fn new(git: Git) -> Approved {
        Approved { git }
    }

    /// The reader for the repository at `home`.
    pub fn at(home: &Path) -> Approved {
        Approved::new(Git::new(home))
    }

    pub fn home(&self) -> &Path {
        self.git.dir()
    }

    /// The commit the governance ref points at, if it exists.
    pub fn head(&self) -> Result<Option<String>, ReadError> {
        if let Some(c) = self.git.resolve_commit(GOVERNANCE_REF)? {
            return Ok(Some(c));
        }
        if self.git.succeeds(["rev-parse", "--git-dir"])? {
            Ok(None)
        } else {
            Err(ReadError::NotRepository { home: self.home().to_path_buf() })
        }
    }

    /// The bytes of a blob (`oid`, or `commit:path`).
    pub fn blob(&self, spec: &str) -> Result<Vec<u8>, ReadError> {
        Ok(self.git.run_bytes(["cat-file", "blob", spec])?)
    }

    /// The approved state at `commit`.
    pub fn snapshot_at(&self, commit: &str) -> Result<Snapshot, ReadError> {
        let raw = self.blob(&format!("{commit}:{LOCK_JSON}"))?;
        let lock: Lock = serde_json::from_slice(&raw)
            .map_err(|e| ReadError::BadLock { commit: commit.to_string(), problem: e.to_string() })?;
        if lock.v != LOCK_VERSION {
            return Err(ReadError::LockVersion { version: lock.v });
        }
        Ok(Snapshot { commit: commit.to_string(), lock })
    }

    /// The approved state now (None: nothing was ever approved here).
    pub fn snapshot(&self) -> Result<Option<Snapshot>, ReadError> {
        match self.head()? {
            Some(c) => Ok(Some(self.snapshot_at(&c)?)),
            None => Ok(None),
        }
    }

    /// The text of blob `blob`, checked to hash to `sha256`.
    fn checked_text(&self, doc: &str, blob: &str, sha256: &str) -> Result<String, ReadError> {
        let damaged = |problem: String| ReadError::Damaged { doc: doc.into(), blob: blob.into(), problem };
        let text = String::from_utf8(self.blob(blob)?).map_err(|_| damaged("is not UTF-8".into()))?;
        let got = protocol::governance::hash(&text);
        if got != sha256 {
            return Err(damaged(format!("hashes to {got}, the ref says {sha256}")));
        }
        Ok(text)
    }

    /// The approved text of `doc` in `snap`.
    pub fn approved_text(&self, snap: &Snapshot, doc: &str) -> Result<Option<String>, ReadError> {
        let Some(a) = snap.lock.docs.get(doc) else { return Ok(None) };
        self.checked_text(doc, &a.blob, &a.sha256).map(Some)
    }

    /// Every approval ever recorded, oldest first.
    pub fn history(&self) -> Result<Vec<HistoryEntry>, ReadError> {
        let Some(head) = self.head()? else { return Ok(vec![]) };
        let raw = self.blob(&format!("{head}:{HISTORY_JSONL}"))?;
        let text = String::from_utf8_lossy(&raw);
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| ReadError::BadHistory { line: l.to_string(), problem: e.to_string() })
            })
            .collect()
    }

    /// The approved governance in force: the texts at the ref's head, parsed. Cached per ref
    /// commit, so reloading it before every cycle (or every proposal) costs one `git rev-parse`.
    pub fn load(&self) -> Result<Governance, ReadError> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, (String, Governance)>>> = OnceLock::new();
        let home = self.home().to_path_buf();
        let Some(head) = self.head()? else { return Err(ReadError::NothingApproved { home }) };
        let cache = CACHE.get_or_init(Default::default);
        if let Some((c, g)) = cache.lock().expect("governance cache lock").get(&home)
            && *c == head
        {
            return Ok(g.clone());
        }
        let snap = self.snapshot_at(&head)?;
        let mut texts = BTreeMap::new();
        for doc in DOCS {
            match self.approved_text(&snap, doc)? {
                Some(t) => texts.insert(doc.to_string(), t),
                None => return Err(ReadError::NeverApproved { doc: doc.into(), home }),
            };
        }
        let g = Governance::from_texts(texts).map_err(ReadError::Invalid)?;
        cache.lock().expect("governance cache lock").insert(home, (head, g.clone()));
        Ok(g)
    }

    /// The governance made of the approved versions with these hashes (doc -> sha256), each of
    /// which must be in the ref's history (approved at some time, not necessarily in force
    /// now): what a task written under those hashes may run. Cached per set of hashes (an
    /// approved version never changes).
    pub fn load_at(&self, hashes: &BTreeMap<String, String>) -> Result<Governance, ReadError> {
        type Key = (PathBuf, BTreeMap<String, String>);
        static CACHE: OnceLock<Mutex<HashMap<Key, Governance>>> = OnceLock::new();
        let key = (self.home().to_path_buf(), hashes.clone());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(g) = cache.lock().expect("governance cache lock").get(&key) {
            return Ok(g.clone());
        }
        let history = self.history()?;
        let mut texts = BTreeMap::new();
        for doc in DOCS {
            let Some(sha256) = hashes.get(doc) else {
                return Err(ReadError::NotApproved { doc: doc.into(), sha256: "(none given)".into() });
            };
            let Some(entry) = history.iter().find(|e| e.doc == doc && e.approval.sha256 == *sha256) else {
                return Err(ReadError::NotApproved { doc: doc.into(), sha256: sha256.clone() });
            };
            texts.insert(doc.to_string(), self.checked_text(doc, &entry.approval.blob, sha256)?);
        }
        let g = Governance::from_texts(texts).map_err(ReadError::Invalid)?;
        cache.lock().expect("governance cache lock").insert(key, g.clone());
        Ok(g)
    }
}

/// The approved governance in force for the swarm at `home` (see [`Approved::load`]).
pub fn load(home: &Path) -> Result<Governance, ReadError> {
    Approved::at(home).load()
}
