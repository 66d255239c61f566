//! `ratchet governance`: the approved state, the pending edits on disk (with a unified diff and
//! whether they would validate) and the pending agent proposals.

use std::path::Path;

use protocol::governance::{DOCS, hash};
use serde::Serialize;

use super::proposals::{self, Evidence, ProposalStatus};
use super::store::{Approval, GOVERNANCE_REF, Store};
use super::validate;

/// One document: approved version, and the file on disk against it.
#[derive(Debug, Clone, Serialize)]
pub struct DocStatus {
    pub doc: String,
    pub approved: Option<Approval>,
    /// `in-force` (the file is the approved text), `modified` (a pending edit), `missing`,
    /// `unreadable`, or `unapproved` (never approved).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_sha256: Option<String>,
    /// Unified diff, approved -> on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Whether the text on disk would pass validation (absent when there is no text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DocStatus {
    pub fn pending(&self) -> bool {
        self.state != "in-force"
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProposalSummary {
    pub id: String,
    pub doc: String,
    pub summary: String,
    pub status: String,
    pub created_at: String,
    pub evidence: Vec<Evidence>,
    /// Unified diff, approved document -> the proposal's text.
    pub diff: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GovernanceReport {
    pub home: String,
    pub governance_ref: String,
    /// The ref's commit (none: nothing approved yet).
    pub commit: Option<String>,
    pub docs: Vec<DocStatus>,
    pub pending_edits: usize,
    /// Proposals still waiting for a decision.
    pub proposals: Vec<ProposalSummary>,
    /// Approvals recorded so far.
    pub approvals: usize,
    /// The hashes the swarm runs under now (what the coordinator loads), or why it cannot run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_force: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_force_error: Option<String>,
    /// Promotions the loop judged PROMOTE that wait for a person (cadence.md `promotion =
    /// "approval"`): `ratchet approve <branch>` or `ratchet reject <branch>`.
    pub awaiting_approval: Vec<crate::approvals::Waiting>,
}

fn diff(doc: &str, approved_sha: &str, from: &str, to: &str, to_label: &str) -> String {
    similar::TextDiff::from_lines(from, to)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{doc} (approved {})", &approved_sha[..12.min(approved_sha.len())]),
            &format!("{doc} ({to_label})"),
        )
        .to_string()
}

/// The governance of the swarm at `home`, approved and pending.
pub fn report(home: &Path) -> anyhow::Result<GovernanceReport> {
    let store = Store::new(home);
    let snap = store.snapshot()?;
    let mut docs = vec![];
    for doc in DOCS {
        let approval = snap.as_ref().and_then(|s| s.lock.docs.get(doc)).cloned();
        let approved_text = match &snap {
            Some(s) => store.approved_text(s, doc)?,
            None => None,
        };
        let path = home.join(doc);
        let mut st = DocStatus {
            doc: doc.into(),
            approved: approval.clone(),
            state: String::new(),
            disk_sha256: None,
            diff: None,
            valid: None,
            error: None,
        };
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                st.state = "missing".into();
                st.error = Some(match &approval {
                    Some(_) => format!(
                        "{} does not exist; `ratchet reject {doc}` writes the approved text back",
                        path.display()
                    ),
                    None => format!("{} does not exist; `ratchet init` writes a template", path.display()),
                });
            }
            Err(e) => {
                st.state = "unreadable".into();
                st.error = Some(format!("reading {}: {e}", path.display()));
            }
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(_) => {
                    st.state = "unreadable".into();
                    st.error = Some(format!("{} is not UTF-8 text", path.display()));
                }
                Ok(text) => {
                    let sha = hash(&text);
                    match (&approval, &approved_text) {
                        (Some(a), _) if a.sha256 == sha => st.state = "in-force".into(),
                        (Some(a), Some(old)) => {
                            st.state = "modified".into();
                            st.diff = Some(diff(doc, &a.sha256, old, &text, "on disk"));
                        }
                        _ => st.state = "unapproved".into(),
                    }
                    if st.state != "in-force" {
                        let v = validate(doc, &text);
                        st.valid = Some(v.is_ok());
                        st.error = v.err().map(|e| e.to_string());
                    }
                    st.disk_sha256 = Some(sha);
                }
            },
        }
        docs.push(st);
    }
    let mut props = vec![];
    for p in proposals::list(home).into_iter().filter(|p| p.status == ProposalStatus::Pending) {
        let (sha, base) = match docs.iter().find(|d| d.doc == p.doc).and_then(|d| d.approved.clone()) {
            Some(a) => {
                let text = snap.as_ref().map(|s| store.approved_text(s, &p.doc)).transpose()?.flatten();
                (a.sha256, text.unwrap_or_default())
            }
            None => (String::new(), String::new()),
        };
        props.push(ProposalSummary {
            diff: diff(&p.doc, &sha, &base, &p.new_text, &format!("proposal {}", p.id)),
            id: p.id,
            doc: p.doc,
            summary: p.summary,
            status: p.status.as_str().into(),
            created_at: p.created_at,
            evidence: p.evidence,
        });
    }
    let (in_force, in_force_error) = match super::load(home) {
        Ok(g) => (Some(g.hashes), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Ok(GovernanceReport {
        awaiting_approval: crate::approvals::waiting(home).unwrap_or_default(),
        in_force,
        in_force_error,
        home: home.display().to_string(),
        governance_ref: GOVERNANCE_REF.into(),
        commit: snap.map(|s| s.commit),
        pending_edits: docs.iter().filter(|d| d.pending()).count(),
        docs,
        proposals: props,
        approvals: store.history()?.len(),
    })
}

/// The human rendering of a report.
pub fn render(r: &GovernanceReport) -> String {
    let mut o = String::new();
    match &r.commit {
        Some(c) => o.push_str(&format!("governance of {} ({GOVERNANCE_REF} at {})\n", r.home, &c[..12.min(c.len())])),
        None => o.push_str(&format!(
            "governance of {}: nothing approved yet; the swarm will not run; fix: `ratchet init` or `ratchet approve constitution.md ethos.md cadence.md`\n",
            r.home
        )),
    }
    for d in &r.docs {
        o.push('\n');
        match &d.approved {
            Some(a) => o.push_str(&format!(
                "{}: approved {} by {} at {}\n",
                d.doc,
                &a.sha256[..12.min(a.sha256.len())],
                a.approved_by,
                a.approved_at
            )),
            None => o.push_str(&format!("{}: never approved\n", d.doc)),
        }
        match d.state.as_str() {
            "in-force" => o.push_str("  on disk: the approved text\n"),
            "modified" => o.push_str(&format!(
                "  on disk: PENDING EDIT (not in force until `ratchet approve {}`; `ratchet reject {}` restores the approved text)\n",
                d.doc, d.doc
            )),
            "unapproved" => o.push_str(&format!("  on disk: not approved (`ratchet approve {}`)\n", d.doc)),
            other => o.push_str(&format!("  on disk: {other}; the approved version stays in force\n")),
        }
        match (d.valid, &d.error) {
            (Some(true), _) => o.push_str("  validates: yes\n"),
            (Some(false), Some(e)) => {
                o.push_str(&format!("  validates: NO: {e}\n  (it cannot be approved as it is)\n"))
            }
            (_, Some(e)) => o.push_str(&format!("  {e}\n")),
            _ => {}
        }
        if let Some(diff) = &d.diff {
            for line in diff.lines() {
                o.push_str(&format!("  {line}\n"));
            }
        }
    }
    o.push('\n');
    if r.awaiting_approval.is_empty() {
        o.push_str("promotions awaiting approval: none\n");
    }
    for w in &r.awaiting_approval {
        o.push_str(&format!("promotion awaiting approval (cycle {}): {}\n", w.cycle, w.line.trim()));
        o.push_str(&format!("  promote: ratchet approve {}    discard: ratchet reject {}\n", w.branch, w.branch));
    }
    if r.proposals.is_empty() {
        o.push_str("proposals: none pending\n");
    }
    for p in &r.proposals {
        o.push_str(&format!("proposal {} ({}): {}\n", p.id, p.doc, p.summary));
        o.push_str(&format!("  apply: ratchet approve {}    drop: ratchet reject {}\n  evidence:\n", p.id, p.id));
        for e in &p.evidence {
            o.push_str(&format!("    {} (cycle {}): {}\n", e.branch, e.cycle, e.finding));
        }
        for line in p.diff.lines() {
            o.push_str(&format!("  {line}\n"));
        }
    }
    o
}

/// The one line `ratchet status` shows, e.g. `governance: 1 pending edit(s) (ethos.md), 0 proposal(s)`.
pub fn pending_line(home: &Path) -> String {
    match report(home) {
        Ok(r) if r.commit.is_none() => {
            "governance: nothing approved yet (ratchet init, or ratchet approve <doc>)".into()
        }
        Ok(r) => {
            let docs: Vec<&str> = r.docs.iter().filter(|d| d.pending()).map(|d| d.doc.as_str()).collect();
            let which = if docs.is_empty() { String::new() } else { format!(" ({})", docs.join(", ")) };
            let hint = if docs.is_empty() && r.proposals.is_empty() { "" } else { "; see `ratchet governance`" };
            format!(
                "governance: {} pending edit(s){which}, {} proposal(s) awaiting approval{hint}",
                r.pending_edits,
                r.proposals.len()
            )
        }
        Err(e) => format!("governance: cannot read the approved state: {e:#}"),
    }
}
