//! Agents propose, never impose: repeated failures distilled into proposed constitution rules.
//!
//! After each cycle the coordinator calls [`distil`] with the finished cycles. When the same
//! blocking critic finding (same rail, same file: a protected path touched again and again, a
//! scope violation on the same file, tests shrunk under an append-only path; from candidates
//! that failed their gates too, since the static rails run for every candidate) appears in at
//! least [`THRESHOLD`] candidates, it writes
//! `worktrees/.swarm/governance/proposals/<id>.json`: the constitution with one more
//! `[[constitution.rules]]` entry forbidding that file, and the evidence (branch, finding). The
//! id is derived from the pattern, so each pattern is proposed once, whatever happens to the
//! proposal. Nothing here writes a governance document: only `ratchet approve <id>` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use protocol::governance::{CONSTITUTION, Governance, Rule, glob_match, hash, parse_constitution, settings_block};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{governance_dir, write_atomic};
use crate::loop_state::CycleState;

/// Candidates that must show the same finding before a rule is proposed.
pub const THRESHOLD: usize = 3;
pub const PROPOSAL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposalStatus {
    Pending,
    Approved,
    Rejected,
}

impl ProposalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalStatus::Pending => "pending",
            ProposalStatus::Approved => "approved",
            ProposalStatus::Rejected => "rejected",
        }
    }
}

/// The repeated finding a proposal is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pattern {
    pub rail: String,
    pub file: String,
}

/// A cadence.md setting to change, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingEdit {
    /// The key in `[cadence]`, e.g. `warmup`.
    pub key: String,
    pub from: u32,
    pub to: u32,
    /// The diagnosis that recommends it.
    pub reason: String,
}

/// One candidate that showed the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub branch: String,
    pub cycle: u64,
    pub candidate: String,
    /// The critic's finding, as `[rail] file:line: message`.
    pub finding: String,
}

/// `worktrees/.swarm/governance/proposals/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub v: u32,
    pub id: String,
    /// constitution.md (a rule) or cadence.md (a model switch).
    pub doc: String,
    pub summary: String,
    /// A distilled rule: the repeated finding and the rule forbidding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// A model switch (`ratchet models compare` decided PROMOTE): the declared model cadence.md's
    /// `[proposer]` would use, and the compare's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Value>,
    /// A setting the loop's diagnosis recommends (cadence.md `[cadence] <key> = <value>`), which
    /// the loop did not apply itself: no approved bound allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<SettingEdit>,
    /// sha256 of the approved text `new_text` was made from.
    pub base_sha256: String,
    /// The whole document with the rule added.
    pub new_text: String,
    pub evidence: Vec<Evidence>,
    pub created_at: String,
    pub status: ProposalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

pub fn proposals_dir(home: &Path) -> PathBuf {
    governance_dir(home).join("proposals")
}

/// Proposal ids are `p-` and 12 hex digits; anything else is not one (and never reaches a path).
fn is_id(id: &str) -> bool {
    id.strip_prefix("p-").is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn path_of(home: &Path, id: &str) -> anyhow::Result<PathBuf> {
    if !is_id(id) {
        bail!("{id:?} is not a proposal id (p- and 12 hex digits); fix: `ratchet governance` lists the proposals");
    }
    Ok(proposals_dir(home).join(format!("{id}.json")))
}

pub fn pattern_id(p: &Pattern) -> String {
    format!("p-{}", &hash(&format!("{}\0{}", p.rail, p.file))[..12])
}

pub fn exists(home: &Path, id: &str) -> bool {
    path_of(home, id).is_ok_and(|p| p.is_file())
}

pub fn read(home: &Path, id: &str) -> anyhow::Result<Proposal> {
    let path = path_of(home, id)?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading proposal {}", path.display()))?;
    protocol::format::parse_versioned(text.as_bytes(), "governance proposal", PROPOSAL_VERSION).with_context(|| {
        format!(
            "{}: not a governance proposal; fix: delete it (the coordinator proposes again if the pattern recurs)",
            path.display()
        )
    })
}

pub fn write(home: &Path, p: &Proposal) -> anyhow::Result<()> {
    write_atomic(&path_of(home, &p.id)?, &serde_json::to_vec_pretty(p).expect("proposals serialize"))
}

/// Every proposal, oldest first (unreadable files are skipped with a warning).
pub fn list(home: &Path) -> Vec<Proposal> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(proposals_dir(home)) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else { continue };
        if !is_id(id) {
            continue;
        }
        match read(home, id) {
            Ok(p) => out.push(p),
            Err(err) => tracing::warn!("{err:#}"),
        }
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    out
}

/// `constitution` with `rule` added as a `[[constitution.rules]]` entry at the end of its
/// settings block; the result is validated.
pub fn with_rule(constitution: &str, rule: &Rule, proposal: &str) -> anyhow::Result<String> {
    let (_, body) = settings_block(CONSTITUTION, constitution)?;
    let end = body.as_ptr() as usize - constitution.as_ptr() as usize + body.len();
    // A JSON string is a valid TOML basic string (same escapes, \uXXXX for control characters).
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let paths: Vec<String> = rule.forbid_paths.iter().map(|p| q(p)).collect();
    let mut entry = String::new();
    if !body.is_empty() && !body.ends_with('\n') {
        entry.push('\n');
    }
    entry.push_str(&format!(
        "\n# Distilled by the coordinator from repeated critic findings (proposal {proposal}).\n\
         [[constitution.rules]]\nid = {}\ntext = {}\nforbid_paths = [{}]\n",
        q(&rule.id),
        q(&rule.text),
        paths.join(", ")
    ));
    let mut out = String::with_capacity(constitution.len() + entry.len());
    out.push_str(&constitution[..end]);
    out.push_str(&entry);
    out.push_str(&constitution[end..]);
    let parsed = parse_constitution(&out).map_err(|e| anyhow::anyhow!("the constitution with the new rule: {e}"))?;
    if !parsed.rules.iter().any(|r| r == rule) {
        bail!(
            "the new rule {} did not survive parsing the constitution; its settings block may hold `rules` inline",
            rule.id
        );
    }
    Ok(out)
}

/// Look at the finished cycles for a finding repeated across [`THRESHOLD`] candidates and write
/// a proposal for each new pattern. Returns the proposals written now (the caller emits a
/// `governance_proposed` event for each). Errors are logged, never fatal to the loop.
pub fn distil(home: &Path, finished: &[CycleState], gov: &Governance) -> Vec<Proposal> {
    let mut seen: BTreeMap<Pattern, Vec<Evidence>> = BTreeMap::new();
    let mut classes: BTreeMap<Pattern, String> = BTreeMap::new();
    for cy in finished {
        for c in &cy.candidates {
            let Some(crit) = &c.critique else { continue };
            for f in crit.findings.iter().filter(|f| f.blocks()) {
                let Some(file) = f.file.clone() else { continue };
                let finding = f.line_for_people();
                let pattern = Pattern { rail: f.rail.clone(), file };
                if let Some(class) = f.class {
                    classes.insert(pattern.clone(), class.to_string());
                }
                let ev = seen.entry(pattern).or_default();
                if !ev.iter().any(|e| e.branch == c.branch) {
                    ev.push(Evidence {
                        branch: c.branch.clone(),
                        cycle: cy.cycle,
                        candidate: c.proposal.id.clone(),
                        finding,
                    });
                }
            }
        }
    }
    let mut out = vec![];
    for (pattern, evidence) in seen {
        if evidence.len() < THRESHOLD {
            continue;
        }
        let id = pattern_id(&pattern);
        if exists(home, &id) {
            continue; // proposed once per pattern, whatever became of it
        }
        let covered = gov
            .constitution
            .rules
            .iter()
            .any(|r| r.forbid_paths.iter().any(|p| p == &pattern.file || glob_match(p, &pattern.file)));
        if covered {
            continue;
        }
        match propose(home, &id, &pattern, classes.get(&pattern).map(String::as_str), evidence, gov) {
            Ok(p) => out.push(p),
            Err(e) => tracing::warn!("proposing a rule for {} on {}: {e:#}", pattern.rail, pattern.file),
        }
    }
    out
}

/// A proposal for `pattern`; `class` names the kind of path when the finding was tampering
/// (a protected or append-only path: governance, benchmark, ci, tests), so that the rule's text,
/// which every proposer reads in the constitution, says what the candidates kept tampering with.
fn propose(
    home: &Path,
    id: &str,
    pattern: &Pattern,
    class: Option<&str>,
    evidence: Vec<Evidence>,
    gov: &Governance,
) -> anyhow::Result<Proposal> {
    let base = gov.texts.get(CONSTITUTION).context("the governance in force has no constitution text")?;
    let branches: Vec<&str> = evidence.iter().map(|e| e.branch.as_str()).collect();
    let what = match class {
        Some(c) => format!("{} ({c})", pattern.file),
        None => pattern.file.clone(),
    };
    let rule = Rule {
        id: format!("distilled-{}", &id[2..]),
        text: format!(
            "Do not change {what}: the critic's {} rail rejected {} candidates for it ({}).",
            pattern.rail,
            evidence.len(),
            branches.join(", ")
        ),
        forbid_paths: vec![pattern.file.clone()],
    };
    let new_text = with_rule(base, &rule, id)?;
    let summary = format!(
        "forbid {}: {} candidates were rejected by the {} rail for it{}",
        pattern.file,
        evidence.len(),
        pattern.rail,
        class.map(|c| format!(" (tampering with {c})")).unwrap_or_default()
    );
    let p = Proposal {
        pattern: Some(pattern.clone()),
        rule: Some(rule),
        evidence,
        ..pending(id.to_string(), CONSTITUTION, summary, base, new_text)
    };
    write(home, &p)?;
    Ok(p)
}

/// cadence.md with `[proposer] strategy = "openai"` and `model = "<model>"` (the rest of the
/// `[proposer]` table and of the document as they were).
pub fn with_model(cadence: &str, model: &str) -> anyhow::Result<String> {
    let (first_line, body) = settings_block(protocol::governance::CADENCE, cadence)?;
    let mut out: Vec<String> = vec![];
    let mut in_proposer = false;
    let mut seen_proposer = false;
    let set = |out: &mut Vec<String>| {
        out.push("strategy = \"openai\"".into());
        out.push(format!("model = {model:?}"));
    };
    for line in body.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_proposer {
                in_proposer = false;
            }
            if t == "[proposer]" {
                in_proposer = true;
                seen_proposer = true;
                out.push(line.to_string());
                set(&mut out);
                continue;
            }
        }
        let key = t.split_once('=').map(|(k, _)| k.trim());
        if in_proposer && matches!(key, Some("strategy" | "model")) {
            continue;
        }
        out.push(line.to_string());
    }
    if !seen_proposer {
        out.push(String::new());
        out.push("[proposer]".into());
        set(&mut out);
    }
    let mut new_body = out.join("\n");
    new_body.push('\n');
    let start: usize = cadence.split_inclusive('\n').take(first_line - 1).map(str::len).sum();
    Ok(format!("{}{new_body}{}", &cadence[..start], &cadence[start + body.len()..]))
}

/// cadence.md with `[cadence] <key> = <value>` (the rest as it was; the key added at the end of
/// the `[cadence]` table when it was not there).
pub fn with_setting(cadence: &str, key: &str, value: u32) -> anyhow::Result<String> {
    let (first_line, body) = settings_block(protocol::governance::CADENCE, cadence)?;
    let mut out: Vec<String> = vec![];
    let (mut in_cadence, mut done) = (false, false);
    for line in body.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_cadence && !done {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            in_cadence = t == "[cadence]";
        }
        if in_cadence && t.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            out.push(format!("{key} = {value}"));
            done = true;
            continue;
        }
        out.push(line.to_string());
    }
    if in_cadence && !done {
        out.push(format!("{key} = {value}"));
        done = true;
    }
    if !done {
        bail!("cadence.md has no [cadence] table to hold {key}");
    }
    let mut new_body = out.join("\n");
    new_body.push('\n');
    let start: usize = cadence.split_inclusive('\n').take(first_line - 1).map(str::len).sum();
    Ok(format!("{}{new_body}{}", &cadence[..start], &cadence[start + body.len()..]))
}

/// Propose a cadence.md setting the loop's diagnosis recommends and no approved bound lets it
/// apply itself. Each (key, value) is proposed once against an approved text; `Ok(None)` when it
/// already was. Nothing changes until `ratchet approve <id>`.
pub fn propose_setting(home: &Path, gov: &Governance, edit: SettingEdit) -> anyhow::Result<Option<Proposal>> {
    let cadence = protocol::governance::CADENCE;
    let base = gov.texts.get(cadence).context("the governance in force has no cadence text")?;
    let id = format!("p-{}", &hash(&format!("setting\0{}\0{}\0{}", edit.key, edit.to, hash(base)))[..12]);
    if exists(home, &id) {
        return Ok(None);
    }
    let new_text = with_setting(base, &edit.key, edit.to)?;
    let summary = format!("{} {} -> {} (the loop's diagnosis: {})", edit.key, edit.from, edit.to, edit.reason);
    let p = Proposal { setting: Some(edit), ..pending(id.clone(), cadence, summary, base, new_text) };
    write(home, &p)?;
    Ok(Some(p))
}

/// Propose switching the proposer to the declared model `model`, with the compare's evidence
/// (`ratchet models compare` decided PROMOTE). Nothing changes until `ratchet approve <id>`.
pub fn propose_model_switch(home: &Path, gov: &Governance, model: &str, compare: Value) -> anyhow::Result<Proposal> {
    let cadence = protocol::governance::CADENCE;
    let base = gov.texts.get(cadence).context("the governance in force has no cadence text")?;
    let new_text = with_model(base, model)?;
    let id = format!("p-{}", &hash(&format!("model\0{model}\0{}", hash(base)))[..12]);
    let summary = format!("switch the proposer to model {model}: `ratchet models compare` decided PROMOTE");
    let p = Proposal {
        model: Some(model.to_string()),
        compare: Some(compare),
        ..pending(id.clone(), cadence, summary, base, new_text)
    };
    write(home, &p)?;
    Ok(p)
}

/// A pending proposal to replace `doc`'s approved text `base` by `new_text`, made now; the
/// callers add what it is about (a rule, a setting, a model).
fn pending(id: String, doc: &str, summary: String, base: &str, new_text: String) -> Proposal {
    Proposal {
        v: PROPOSAL_VERSION,
        id,
        doc: doc.into(),
        summary,
        pattern: None,
        rule: None,
        model: None,
        compare: None,
        setting: None,
        base_sha256: hash(base),
        new_text,
        evidence: vec![],
        created_at: protocol::timestamp(std::time::SystemTime::now()),
        status: ProposalStatus::Pending,
        decided_at: None,
        decided_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Constitution\n\nProse.\n\n```toml ratchet\n[constitution]\nprotected_paths = [\"bench/**\"]\n\
                       max_diff_lines = 10\nmax_files_changed = 2\n```\n\nMore prose.\n";

    #[test]
    fn a_model_switch_edits_only_the_proposer_table() {
        let doc = "# Cadence\n\n```toml ratchet\n[cadence]\ncandidates = 1\nwarmup = 0\nstall_limit = 1\n\
                   breaker_limit = 1\nlease_ttl_s = 1\nmax_attempts = 1\npromotion = \"auto\"\nmax_cycles = 0\nmax_wall_s = 0\n\n\
                   [proposer]\nstrategy = \"openai\"\nmodel = \"old\"\ntimeout_s = 30\n```\n\nProse after.\n";
        let out = with_model(doc, "new").unwrap();
        assert!(out.ends_with("```\n\nProse after.\n") && out.starts_with("# Cadence\n"), "{out}");
        let (c, p) = protocol::governance::parse_cadence(&out).unwrap();
        assert_eq!(
            (p.strategy.as_str(), p.model.as_deref(), p.timeout_s, c.candidates),
            ("openai", Some("new"), 30, 1)
        );
        assert_eq!(out.matches("model =").count(), 1, "{out}");
        // From another strategy, and with no [proposer] table at all.
        let sweep =
            doc.replace("strategy = \"openai\"\nmodel = \"old\"\n", "strategy = \"command\"\ncommand = \"x\"\n");
        let (_, p) = protocol::governance::parse_cadence(&with_model(&sweep, "m").unwrap()).unwrap();
        assert_eq!((p.strategy.as_str(), p.model.as_deref(), p.command.as_deref()), ("openai", Some("m"), Some("x")));
        let bare = doc.replace("\n[proposer]\nstrategy = \"openai\"\nmodel = \"old\"\ntimeout_s = 30\n", "");
        let (_, p) = protocol::governance::parse_cadence(&with_model(&bare, "m").unwrap()).unwrap();
        assert_eq!(p.model.as_deref(), Some("m"));
    }

    #[test]
    fn a_rule_lands_inside_the_settings_block() {
        let rule =
            Rule { id: "r1".into(), text: "Do not \"touch\" it".into(), forbid_paths: vec!["src/a b.rs".into()] };
        let out = with_rule(DOC, &rule, "p-000000000000").unwrap();
        assert!(out.ends_with("```\n\nMore prose.\n"), "{out}");
        let c = parse_constitution(&out).unwrap();
        assert_eq!(c.rules, vec![rule.clone()]);
        let again = with_rule(&out, &Rule { id: "r2".into(), ..rule }, "p-000000000001").unwrap();
        assert_eq!(parse_constitution(&again).unwrap().rules.len(), 2);
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_path() {
        assert!(is_id(&pattern_id(&Pattern { rail: "scope".into(), file: "x".into() })));
        assert!(!is_id("p-../../etc"));
        assert!(path_of(Path::new("/h"), "../x").is_err());
    }
}
