//! `ratchet approve` and `ratchet reject`: the only ways the approved state changes.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, bail};
use protocol::events::{Event, EventKind};
use protocol::governance::{DOCS, hash};
use serde::Serialize;

use super::proposals::{self, ProposalStatus};
use super::store::{Approval, Snapshot, Store};
use super::{doc_name, lock_path, validate, write_atomic};

/// What `ratchet approve` did for one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApproveOutcome {
    pub doc: String,
    pub sha256: String,
    pub previous_sha256: Option<String>,
    /// False when this exact text was already the approved one (nothing recorded).
    pub recorded: bool,
    pub approved_by: String,
    /// The governance ref's commit after the approval.
    pub commit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

/// What `ratchet reject` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectOutcome {
    pub target: String,
    /// The approved hash written back (a document), or none (a proposal, or nothing to undo).
    pub restored: Option<String>,
    pub changed: bool,
}

/// The governance lock, held until dropped (closing the file releases it).
pub(crate) struct Held {
    _file: File,
}

/// Take the governance lock (blocking until another approval finishes).
pub(crate) fn hold(home: &Path) -> anyhow::Result<Held> {
    let path = lock_path(home);
    let dir = path.parent().expect("the lock has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.lock().with_context(|| format!("locking {}", path.display()))?;
    Ok(Held { _file: file })
}

/// Who approves: `--by`, else the git identity.
fn approver(store: &Store, by: Option<&str>) -> anyhow::Result<String> {
    if let Some(b) = by.map(str::trim).filter(|b| !b.is_empty()) {
        return Ok(b.to_string());
    }
    store.identity().context(
        "who approves? no git identity is configured; fix: pass --by NAME or set one (git config user.name ...; git config user.email ...)",
    )
}

/// Who is approving, for callers outside governance (branch approvals): `--by`, else the git
/// identity of the repository at `home`.
pub fn approver_of(home: &Path, by: Option<&str>) -> anyhow::Result<String> {
    approver(&Store::new(home), by)
}

/// Environment for `commit-tree` when git has no identity of its own.
fn identity_env(store: &Store, by: &str) -> Vec<(&'static str, String)> {
    if store.identity().is_some() {
        return vec![];
    }
    let name = by.to_string();
    let email = "governance@ratchet.invalid".to_string();
    vec![
        ("GIT_AUTHOR_NAME", name.clone()),
        ("GIT_AUTHOR_EMAIL", email.clone()),
        ("GIT_COMMITTER_NAME", name),
        ("GIT_COMMITTER_EMAIL", email),
    ]
}

/// Read a document for approval: its exact text, or an error that says what to do.
fn read_doc(home: &Path, doc: &str) -> anyhow::Result<String> {
    let path = home.join(doc);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot approve {doc}: {} does not exist; the approved version stays in force; \
             fix: restore it (`ratchet reject {doc}` writes the approved text back) or `ratchet init`",
            path.display()
        ),
        Err(e) => bail!("cannot approve {doc}: reading {}: {e}; the approved version stays in force", path.display()),
    };
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "cannot approve {doc}: {} is not UTF-8 text; the approved version stays in force; fix: save it as UTF-8",
            path.display()
        )
    })
}

/// A hook run after the approval is prepared and before it is re-checked and published (tests
/// use it to change a file mid-approval).
pub(crate) type Hook<'a> = &'a dyn Fn();

/// Approve the documents' current texts on disk. `targets` are document names (`ethos.md` or
/// `ethos`) or proposal ids. Everything is validated first; all documents land in one commit of
/// the governance ref, or none does.
pub fn approve(home: &Path, targets: &[String], by: Option<&str>) -> anyhow::Result<Vec<ApproveOutcome>> {
    approve_in(&Store::new(home), targets, by, &|| {})
}

pub(crate) fn approve_in(
    store: &Store,
    targets: &[String],
    by: Option<&str>,
    hook: Hook,
) -> anyhow::Result<Vec<ApproveOutcome>> {
    let home = store.home();
    if targets.is_empty() {
        bail!("nothing to approve; fix: name a document (constitution.md, ethos.md, cadence.md) or a proposal id");
    }
    let mut docs = vec![];
    let mut props = vec![];
    for t in targets {
        match doc_name(t) {
            Some(d) => {
                if !docs.contains(&d) {
                    docs.push(d)
                }
            }
            None if proposals::exists(home, t) => props.push(t.clone()),
            None => bail!(
                "{t:?} is neither a governance document (constitution.md, ethos.md, cadence.md) nor a proposal id; \
                 fix: `ratchet governance` lists the pending edits and proposals"
            ),
        }
    }
    if !props.is_empty() && (!docs.is_empty() || props.len() > 1) {
        bail!("approve one proposal at a time, on its own; fix: `ratchet approve {}`", props[0]);
    }
    let _held = hold(home)?;
    if let Some(id) = props.first() {
        return approve_proposal_locked(home, store, id, by, hook).map(|o| vec![o]);
    }
    let texts = docs.iter().map(|d| Ok((d.to_string(), read_doc(home, d)?))).collect::<anyhow::Result<Vec<_>>>()?;
    record_locked(home, store, texts, by, None, hook)
}

/// Validate and record `texts` (doc, exact text) as approved; the caller holds the lock.
fn record_locked(
    home: &Path,
    store: &Store,
    texts: Vec<(String, String)>,
    by: Option<&str>,
    proposal: Option<&str>,
    hook: Hook,
) -> anyhow::Result<Vec<ApproveOutcome>> {
    for (doc, text) in &texts {
        validate(doc, text).map_err(|e| {
            anyhow::anyhow!("cannot approve {doc}: {e}; the approved version stays in force; nothing was recorded")
        })?;
    }
    let by = approver(store, by)?;
    let snap = store.snapshot()?;
    let now = protocol::timestamp(std::time::SystemTime::now());
    let mut outcomes = vec![];
    let mut changes = vec![];
    for (doc, text) in &texts {
        let sha = hash(text);
        let prev = snap.as_ref().and_then(|s| s.lock.docs.get(doc.as_str()));
        if prev.is_some_and(|p| p.sha256 == sha) {
            let p = prev.expect("checked");
            outcomes.push(ApproveOutcome {
                doc: doc.clone(),
                sha256: sha,
                previous_sha256: p.previous_sha256.clone(),
                recorded: false,
                approved_by: p.approved_by.clone(),
                commit: snap.as_ref().map(|s| s.commit.clone()).unwrap_or_default(),
                proposal: None,
            });
            continue;
        }
        let blob = store.git_blob_id(text.as_bytes())?;
        let approval = Approval {
            sha256: sha.clone(),
            blob,
            approved_by: by.clone(),
            approved_at: now.clone(),
            previous_sha256: prev.map(|p| p.sha256.clone()),
            proposal: proposal.map(String::from),
        };
        changes.push((doc.clone(), text.clone(), approval));
    }
    if changes.is_empty() {
        return Ok(outcomes);
    }
    let names: Vec<&str> = changes.iter().map(|(d, _, _)| d.as_str()).collect();
    let message = match proposal {
        Some(id) => format!("governance: approve {} (proposal {id}) by {by}\n", names.join(", ")),
        None => format!("governance: approve {} by {by}\n", names.join(", ")),
    };
    let env = identity_env(store, &by);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let commit = store.prepare(snap.as_ref(), &changes, &message, &env)?;
    hook();
    // The approval is of the exact bytes validated and hashed: a file changed meanwhile refuses it.
    for (doc, text, a) in &changes {
        let now_text = std::fs::read(home.join(doc)).unwrap_or_default();
        if now_text != text.as_bytes() {
            bail!(
                "{doc} changed while it was being approved (sha256 {} when read, {} now); nothing was recorded; \
                 fix: check the new text (`ratchet governance`) and approve again",
                short(&a.sha256),
                short(&hash(&String::from_utf8_lossy(&now_text)))
            );
        }
    }
    store.publish(&commit, snap.as_ref().map(|s| s.commit.as_str()), message.trim_end())?;
    for (doc, _, a) in changes {
        outcomes.push(ApproveOutcome {
            doc,
            sha256: a.sha256,
            previous_sha256: a.previous_sha256,
            recorded: true,
            approved_by: a.approved_by,
            commit: commit.clone(),
            proposal: a.proposal,
        });
    }
    outcomes.sort_by_key(|o| DOCS.iter().position(|d| *d == o.doc));
    Ok(outcomes)
}

fn short(h: &str) -> &str {
    &h[..12.min(h.len())]
}

/// Apply an agent proposal to constitution.md and approve it; the caller holds the lock.
fn approve_proposal_locked(
    home: &Path,
    store: &Store,
    id: &str,
    by: Option<&str>,
    hook: Hook,
) -> anyhow::Result<ApproveOutcome> {
    let mut p = proposals::read(home, id)?;
    if p.status != ProposalStatus::Pending {
        bail!("proposal {id} is already {}; nothing to do", p.status.as_str());
    }
    let snap = store.snapshot()?;
    let approved = match &snap {
        Some(s) => store.approved_text(s, &p.doc)?,
        None => None,
    };
    let Some(approved) = approved else {
        bail!("{} was never approved; fix: approve it first (`ratchet approve {}`), then the proposal", p.doc, p.doc);
    };
    let on_disk = std::fs::read(home.join(&p.doc)).ok();
    if on_disk.as_deref() != Some(approved.as_bytes()) {
        bail!(
            "{} on disk differs from its approved version (a pending edit); proposal {id} applies to the approved text; \
             fix: approve (`ratchet approve {}`) or reject (`ratchet reject {}`) that edit first",
            p.doc,
            p.doc,
            p.doc
        );
    }
    // The proposal was written against some approved text; re-apply its rule if that moved since.
    let new_text = if hash(&approved) == p.base_sha256 {
        p.new_text.clone()
    } else {
        match (&p.rule, &p.model, &p.setting) {
            (Some(rule), _, _) => proposals::with_rule(&approved, rule, &p.id),
            (None, Some(model), _) => proposals::with_model(&approved, model),
            (None, None, Some(s)) => proposals::with_setting(&approved, &s.key, s.to),
            (None, None, None) => Err(anyhow::anyhow!("it names neither a rule, a model nor a setting")),
        }
        .with_context(|| format!("proposal {id} no longer applies to the approved {}", p.doc))?
    };
    validate(&p.doc, &new_text).map_err(|e| anyhow::anyhow!("cannot approve proposal {id}: {e}"))?;
    write_atomic(&home.join(&p.doc), new_text.as_bytes())?;
    let out = record_locked(home, store, vec![(p.doc.clone(), new_text)], by, Some(id), hook);
    let out = match out {
        Ok(mut o) => o.remove(0),
        Err(e) => {
            // Leave nothing half-applied on disk: the approved text goes back.
            let _ = write_atomic(&home.join(&p.doc), approved.as_bytes());
            return Err(e);
        }
    };
    p.status = ProposalStatus::Approved;
    p.decided_at = Some(protocol::timestamp(std::time::SystemTime::now()));
    p.decided_by = Some(out.approved_by.clone());
    proposals::write(home, &p)?;
    Ok(out)
}

/// Record first approvals: every document not approved yet is approved as it is on disk (a
/// document already approved keeps its approval, so a pending edit stays pending). Used by
/// `ratchet init` and by `ratchet demo`'s target.
pub fn approve_all_initial(home: &Path, by: &str) -> anyhow::Result<Vec<ApproveOutcome>> {
    approve_all_initial_in(&Store::new(home), by)
}

pub(crate) fn approve_all_initial_in(store: &Store, by: &str) -> anyhow::Result<Vec<ApproveOutcome>> {
    let home = store.home();
    let _held = hold(home)?;
    let snap = store.snapshot()?;
    let mut texts = vec![];
    for doc in DOCS {
        if snap.as_ref().is_some_and(|s| s.lock.docs.contains_key(doc)) {
            continue;
        }
        texts.push((doc.to_string(), read_doc(home, doc)?));
    }
    if texts.is_empty() {
        return Ok(vec![]);
    }
    record_locked(home, store, texts, Some(by), None, &|| {})
}

/// Approve exactly these texts (init with --force); documents already approved with the same
/// text are left alone.
pub(crate) fn approve_texts(home: &Path, docs: &[&str], by: &str) -> anyhow::Result<Vec<ApproveOutcome>> {
    let _held = hold(home)?;
    let store = Store::new(home);
    let texts = docs.iter().map(|d| Ok((d.to_string(), read_doc(home, d)?))).collect::<anyhow::Result<Vec<_>>>()?;
    record_locked(home, &store, texts, Some(by), None, &|| {})
}

/// `ratchet reject <doc>`: write the approved text back over the file on disk and record a
/// `governance_rejected` event. `ratchet reject <proposal-id>`: mark the proposal rejected.
pub fn reject(home: &Path, target: &str, by: Option<&str>) -> anyhow::Result<RejectOutcome> {
    reject_in(&Store::new(home), target, by)
}

pub(crate) fn reject_in(store: &Store, target: &str, by: Option<&str>) -> anyhow::Result<RejectOutcome> {
    let home = store.home();
    let _held = hold(home)?;
    let Some(doc) = doc_name(target) else {
        if proposals::exists(home, target) {
            let mut p = proposals::read(home, target)?;
            if p.status != ProposalStatus::Pending {
                bail!("proposal {target} is already {}; nothing to do", p.status.as_str());
            }
            p.status = ProposalStatus::Rejected;
            p.decided_at = Some(protocol::timestamp(std::time::SystemTime::now()));
            p.decided_by = by.map(String::from).or_else(|| store.identity());
            proposals::write(home, &p)?;
            return Ok(RejectOutcome { target: target.into(), restored: None, changed: true });
        }
        bail!(
            "{target:?} is neither a governance document (constitution.md, ethos.md, cadence.md) nor a proposal id; \
             fix: `ratchet governance` lists the pending edits and proposals"
        );
    };
    let snap = store.snapshot()?;
    let text = match &snap {
        Some(s) => store.approved_text(s, doc)?,
        None => None,
    };
    let Some(text) = text else {
        bail!("{doc} was never approved, so there is nothing to restore; fix: review it and `ratchet approve {doc}`");
    };
    let path = home.join(doc);
    let sha = hash(&text);
    if std::fs::read(&path).ok().as_deref() == Some(text.as_bytes()) {
        return Ok(RejectOutcome { target: doc.into(), restored: Some(sha), changed: false });
    }
    write_atomic(&path, text.as_bytes())?;
    emit(home, snap.as_ref(), EventKind::GovernanceRejected { doc: doc.into(), restored: sha.clone() });
    Ok(RejectOutcome { target: doc.into(), restored: Some(sha), changed: true })
}

/// Append a governance event to the swarm's log, stamped with the approved hashes.
pub(crate) fn emit(home: &Path, snap: Option<&Snapshot>, kind: EventKind) {
    let run_id =
        crate::loop_state::read_state(home).ok().flatten().map(|s| s.run_id).unwrap_or_else(|| "governance".into());
    let mut e = Event::new(run_id, kind);
    if let Some(s) = snap {
        e.governance = s.lock.docs.iter().map(|(d, a)| (d.clone(), a.sha256.clone())).collect();
    }
    e.agent = Some("ratchet".into());
    let layout = kit::layout::Layout::new(home);
    let _ = std::fs::create_dir_all(layout.swarm());
    if let Err(err) = kit::substrate::append_event(&layout.events_file(), &e) {
        tracing::warn!("appending a governance event: {err}");
    }
}
