//! The approved state, kept in the repository on the ref `refs/ratchet/governance`.
//!
//! Each commit on that ref holds a flat tree:
//! - `lock.json`: `{"v": 1, "docs": {doc: {sha256, blob, approved_by, approved_at, previous_sha256, proposal}}}`,
//!   the approved version of each document;
//! - `history.jsonl`: one line per approval ever made (append-only across commits);
//! - `constitution.md`, `ethos.md`, `cadence.md`: the approved texts themselves.
//!
//! It is written with git plumbing only (`hash-object -w`, `mktree`, `commit-tree`, then
//! `update-ref <ref> <new> <old>` as a compare-and-swap), so an approval never moves `main` (which
//! would make every candidate in flight stale) and never touches the index or the checkout. The
//! ref travels with the repository: `git push origin refs/ratchet/governance` and
//! `git fetch origin refs/ratchet/governance:refs/ratchet/governance` (a plain clone does not
//! fetch refs outside `refs/heads` and `refs/tags`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use kit::git::Git;

pub use kit::governance::{
    Approval, GOVERNANCE_REF, HISTORY_JSONL, HistoryEntry, LOCK_JSON, LOCK_VERSION, Lock, Snapshot,
};

/// Git plumbing on one repository (through `kit::git`).
#[derive(Debug, Clone)]
pub struct Store {
    git: Git,
}

impl Store {
    pub fn new(home: &Path) -> Store {
        Store { git: Git::new(home) }
    }

    /// The same store with an extra environment variable for every git call (tests use it for
    /// a hermetic configuration).
    pub fn with_env(mut self, key: &str, value: &str) -> Store {
        self.git = self.git.env(key, value);
        self
    }

    pub fn home(&self) -> &Path {
        self.git.dir()
    }

    /// `git -C <home> <args>` with hooks off; stdin fed when given; extra variables for this
    /// call; stdout returned.
    pub fn git(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
        let git = env.iter().fold(self.git.clone(), |g, (k, v)| g.env(k, v));
        Ok(match stdin {
            Some(input) => git.run_input(args, input)?,
            None => git.run_bytes(args)?,
        })
    }

    fn git_text(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> anyhow::Result<String> {
        let out = self.git(args, stdin, env)?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Whether `home` is inside a git work tree.
    pub fn is_repository(&self) -> bool {
        self.git(&["rev-parse", "--is-inside-work-tree"], None, &[]).is_ok_and(|o| o.starts_with(b"true"))
    }

    /// The read side, shared with every agent: `kit::governance`.
    pub fn reader(&self) -> kit::governance::Approved {
        kit::governance::Approved::new(self.git.clone())
    }

    /// The commit the governance ref points at, if it exists.
    pub fn head(&self) -> anyhow::Result<Option<String>> {
        Ok(self.reader().head()?)
    }

    /// The bytes of a blob (`oid`, or `commit:path`).
    pub fn blob(&self, spec: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.reader().blob(spec)?)
    }

    /// The approved state at `commit`.
    pub fn snapshot_at(&self, commit: &str) -> anyhow::Result<Snapshot> {
        Ok(self.reader().snapshot_at(commit)?)
    }

    /// The approved state now (None: nothing was ever approved here).
    pub fn snapshot(&self) -> anyhow::Result<Option<Snapshot>> {
        Ok(self.reader().snapshot()?)
    }

    /// The approved text of `doc` in `snap`.
    pub fn approved_text(&self, snap: &Snapshot, doc: &str) -> anyhow::Result<Option<String>> {
        Ok(self.reader().approved_text(snap, doc)?)
    }

    /// Every approval ever recorded, oldest first.
    pub fn history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        Ok(self.reader().history()?)
    }

    /// The object id `bytes` would have as a blob (nothing is written).
    pub fn git_blob_id(&self, bytes: &[u8]) -> anyhow::Result<String> {
        self.git_text(&["hash-object", "--stdin"], Some(bytes), &[])
    }

    /// Write `bytes` as a blob; returns its object id.
    pub fn write_blob(&self, bytes: &[u8]) -> anyhow::Result<String> {
        self.git_text(&["hash-object", "-w", "--stdin"], Some(bytes), &[])
    }

    /// Prepare (but do not publish) a commit on top of `base` that records `approvals` (doc,
    /// approved text, approval). Returns the new commit id.
    pub fn prepare(
        &self,
        base: Option<&Snapshot>,
        approvals: &[(String, String, Approval)],
        message: &str,
        identity_env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut lock = base.map(|b| b.lock.clone()).unwrap_or(Lock { v: LOCK_VERSION, docs: BTreeMap::new() });
        lock.v = LOCK_VERSION;
        let mut history = match base {
            Some(b) => self.blob(&format!("{}:{HISTORY_JSONL}", b.commit))?,
            None => Vec::new(),
        };
        for (doc, text, approval) in approvals {
            let blob = self.write_blob(text.as_bytes())?;
            if blob != approval.blob {
                bail!("git stored {doc} as {blob}, expected {}; fix: check the repository (git fsck)", approval.blob);
            }
            lock.docs.insert(doc.clone(), approval.clone());
            let line = serde_json::to_vec(&HistoryEntry { doc: doc.clone(), approval: approval.clone() })
                .expect("history entries serialize");
            history.extend_from_slice(&line);
            history.push(b'\n');
        }
        let lock_bytes = serde_json::to_vec_pretty(&lock).expect("lock serializes");
        let lock_blob = self.write_blob(&lock_bytes)?;
        let history_blob = self.write_blob(&history)?;
        let mut tree = format!("100644 blob {lock_blob}\t{LOCK_JSON}\n100644 blob {history_blob}\t{HISTORY_JSONL}\n");
        for (doc, a) in &lock.docs {
            tree.push_str(&format!("100644 blob {}\t{doc}\n", a.blob));
        }
        let tree_id = self.git_text(&["mktree"], Some(tree.as_bytes()), &[])?;
        let mut args = vec!["commit-tree", tree_id.as_str()];
        if let Some(b) = base {
            args.extend(["-p", b.commit.as_str()]);
        }
        self.git_text(&args, Some(message.as_bytes()), identity_env)
    }

    /// Move the governance ref from `old` to `new`, only if it still points at `old` (None: only
    /// if it does not exist yet).
    pub fn publish(&self, new: &str, old: Option<&str>, message: &str) -> anyhow::Result<()> {
        let old = old.unwrap_or("");
        self.git(&["update-ref", "-m", message, GOVERNANCE_REF, new, old], None, &[]).map(|_| ()).map_err(|e| {
            e.context(format!(
                "{GOVERNANCE_REF} moved while this approval was prepared (another approval landed); nothing was recorded; fix: run the approval again"
            ))
        })
    }

    /// The identity git would use for a commit here: `Name <email>`, if one is configured.
    pub fn identity(&self) -> Option<String> {
        let ident = self.git_text(&["var", "GIT_COMMITTER_IDENT"], None, &[]).ok()?;
        // "Name <email> 1700000000 +0000"
        let mut parts = ident.rsplitn(3, ' ');
        let (_tz, _time) = (parts.next()?, parts.next()?);
        let who = parts.next()?.trim().to_string();
        (!who.is_empty()).then_some(who)
    }
}
