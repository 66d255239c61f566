//! Governance: constitution.md, ethos.md and cadence.md change only with a person's approval.
//!
//! Design (issue 5):
//! - **Approved state lives in the repository**, on the ref `refs/ratchet/governance` (see
//!   [`store`]): each commit there holds `lock.json` (per document: sha256, blob id, approved
//!   by, approved at, previous sha256), `history.jsonl` (every approval, appended) and the
//!   approved texts. Approvals are written with git plumbing and a compare-and-swap on the ref:
//!   they never move `main`, never touch the index or checkout, and travel with a push of the ref.
//! - **What runs is the approved text, never the file on disk.** [`load`] reads the texts from
//!   the ref. An edited, deleted, unreadable or broken document on disk changes nothing until
//!   `ratchet approve <doc>`; `ratchet governance` shows the pending diff and whether it would
//!   validate, `ratchet reject <doc>` writes the approved text back.
//! - **Approvals are validated and exact**: the bytes read are validated, hashed and stored as
//!   one blob; the file is re-read just before publishing, and a change meanwhile refuses the
//!   approval. Concurrent approvals serialize on `worktrees/.swarm/governance.lock` (a file
//!   lock) and, across machines or processes that bypass it, on the ref's compare-and-swap.
//! - **Agents propose, never impose** ([`proposals`]): after each cycle the coordinator looks for
//!   a critic finding (same rail, same file) repeated across at least [`proposals::THRESHOLD`]
//!   candidates, and writes a proposal (a new `[[constitution.rules]]` entry, with its evidence)
//!   under `worktrees/.swarm/governance/proposals/`. Only `ratchet approve <proposal-id>` applies
//!   it to constitution.md, through the same validated approval.
//! - **Bootstrap**: a home with no approvals refuses to run (the error says `ratchet init` or
//!   `ratchet approve`); `ratchet init` and `ratchet demo`'s target record first approvals.

pub mod approve;
pub mod init;
pub mod proposals;
pub mod report;
pub mod store;

use std::path::{Path, PathBuf};

use protocol::governance::{DOCS, Governance, GovernanceError};

pub use approve::{ApproveOutcome, RejectOutcome, approve, approve_all_initial, reject};
pub use init::{InitOutcome, init};
pub use proposals::{Proposal, distil};
pub use report::{GovernanceReport, pending_line, report};
pub use store::{Approval, GOVERNANCE_REF, Store};

/// `worktrees/.swarm/governance/`: proposals and other governance working files.
pub fn governance_dir(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).governance_dir()
}

/// `worktrees/.swarm/governance.lock`: held while an approval or rejection runs.
pub fn lock_path(home: &Path) -> PathBuf {
    kit::layout::Layout::new(home).governance_lock()
}

/// The approved governance in force for the swarm at `home`, read from the governance ref (never
/// from the files on disk) by `kit::governance`, the one reader every process uses. Cached per
/// ref commit, so reloading it before every cycle costs one `git rev-parse`.
pub fn load(home: &Path) -> anyhow::Result<Governance> {
    load_in(&Store::new(home))
}

pub(crate) fn load_in(store: &Store) -> anyhow::Result<Governance> {
    Ok(store.reader().load()?)
}

/// The documents whose hash in force differs between `old` and `new`: (doc, from, to).
pub fn switched(old: &Governance, new: &Governance) -> Vec<(String, Option<String>, String)> {
    DOCS.iter()
        .filter_map(|d| {
            let to = new.hashes.get(*d)?;
            let from = old.hashes.get(*d);
            (from != Some(to)).then(|| (d.to_string(), from.cloned(), to.clone()))
        })
        .collect()
}

/// Validate one document's text with its parser.
pub fn validate(doc: &str, text: &str) -> Result<(), GovernanceError> {
    use protocol::governance::{CADENCE, CONSTITUTION, ETHOS, parse_cadence, parse_constitution, parse_ethos};
    let r = match doc {
        CONSTITUTION => parse_constitution(text).map(|_| ()),
        ETHOS => parse_ethos(text).map(|_| ()),
        CADENCE => parse_cadence(text).map(|_| ()),
        other => Err(GovernanceError {
            file: other.into(),
            line: 0,
            field: "file".into(),
            problem: "not a governance document".into(),
            fix: "use constitution.md, ethos.md or cadence.md".into(),
        }),
    };
    r.map_err(|e| locate(e, text))
}

/// Give an error without a line (a value check after parsing) the line of its field in the
/// settings block, or the block's first line.
fn locate(mut e: GovernanceError, text: &str) -> GovernanceError {
    if e.line != 0 {
        return e;
    }
    let Ok((first, body)) = protocol::governance::settings_block(&e.file, text) else { return e };
    let key = e.field.rsplit('.').next().unwrap_or(&e.field).to_string();
    let hit = body.lines().position(|l| {
        let t = l.trim_start();
        t.strip_prefix(key.as_str()).is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    e.line = first + hit.unwrap_or(0);
    e
}

/// A command-line name for a document: `ethos.md` or `ethos`.
pub fn doc_name(arg: &str) -> Option<&'static str> {
    let a = arg.trim_start_matches("./");
    DOCS.iter().copied().find(|d| *d == a || d.strip_suffix(".md") == Some(a))
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    kit::files::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A temporary git repository with the init templates approved; removed on drop.
    struct Repo {
        dir: PathBuf,
        store: Store,
    }

    impl Drop for Repo {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn repo(approve: bool) -> Repo {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ratchet-govern-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = Store::new(&dir);
        for (k, v) in [
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_AUTHOR_NAME", "Unit Test"),
            ("GIT_AUTHOR_EMAIL", "unit@ratchet.invalid"),
            ("GIT_COMMITTER_NAME", "Unit Test"),
            ("GIT_COMMITTER_EMAIL", "unit@ratchet.invalid"),
        ] {
            store = store.with_env(k, v);
        }
        store.git(&["init", "-q", "-b", "main"], None, &[]).unwrap();
        for (name, text) in init::templates(&dir) {
            std::fs::write(dir.join(name), text).unwrap();
        }
        if approve {
            approve::approve_all_initial_in(&store, "unit test").unwrap();
        }
        Repo { dir, store }
    }

    fn edit(dir: &Path, doc: &str, from: &str, to: &str) {
        let t = std::fs::read_to_string(dir.join(doc)).unwrap();
        assert!(t.contains(from), "{doc} has no {from:?}");
        std::fs::write(dir.join(doc), t.replacen(from, to, 1)).unwrap();
    }

    #[test]
    fn load_runs_the_approved_texts_whatever_is_on_disk() {
        let r = repo(true);
        let g0 = load_in(&r.store).unwrap();
        assert_eq!(g0.cadence.warmup, 1);
        edit(&r.dir, "cadence.md", "warmup = 1", "warmup = 2");
        std::fs::remove_file(r.dir.join("ethos.md")).unwrap();
        std::fs::write(r.dir.join("constitution.md"), "```toml ratchet\nbroken = [\n").unwrap();
        let g1 = load_in(&r.store).unwrap();
        assert_eq!(g1, g0, "edits on disk changed the governance in force before approval");
        approve::approve_in(&r.store, &["cadence.md".into()], Some("alice"), &|| {}).unwrap();
        let g2 = load_in(&r.store).unwrap();
        assert_eq!(g2.cadence.warmup, 2);
        assert_eq!(g2.hashes["ethos.md"], g0.hashes["ethos.md"]);
        let on_disk = std::fs::read_to_string(r.dir.join("cadence.md")).unwrap();
        assert_eq!(
            switched(&g0, &g2),
            vec![(
                "cadence.md".to_string(),
                Some(g0.hashes["cadence.md"].clone()),
                protocol::governance::hash(&on_disk)
            )]
        );
        assert!(switched(&g2, &g2).is_empty());
    }

    #[test]
    fn an_edit_during_an_approval_refuses_it() {
        let r = repo(true);
        let head = r.store.head().unwrap();
        edit(&r.dir, "cadence.md", "warmup = 1", "warmup = 2");
        let meanwhile = || edit(&r.dir, "cadence.md", "warmup = 2", "warmup = 3");
        let e = approve::approve_in(&r.store, &["cadence.md".into()], Some("alice"), &meanwhile).unwrap_err();
        assert!(format!("{e:#}").contains("cadence.md changed while it was being approved"), "{e:#}");
        assert_eq!(r.store.head().unwrap(), head, "a refused approval moved the governance ref");
        assert_eq!(load_in(&r.store).unwrap().cadence.warmup, 1);
    }

    #[test]
    fn nothing_approved_means_no_run_and_says_what_to_do() {
        let r = repo(false);
        let e = format!("{:#}", load_in(&r.store).unwrap_err());
        assert!(
            e.contains("no governance document was ever approved")
                && e.contains("ratchet init")
                && e.contains("ratchet approve"),
            "{e}"
        );
    }

    #[test]
    fn value_errors_get_the_line_of_their_field() {
        let doc = "# Ethos\n\n```toml ratchet\n[ethos]\ngoal = \"g\"\ngates = []\ntest_command = \"t\"\nbenchmark = \"b\"\n\
                   benchmark_paths = []\nmetric = \"ms\"\ndirection = \"lower\"\nconfidence = 0.95\n\
                   min_effect = 1.5\nmin_rounds = 5\nmax_rounds = 30\ngate_timeout_s = 1\nbench_timeout_s = 1\n```\n";
        let e = validate("ethos.md", doc).unwrap_err().to_string();
        assert!(e.starts_with("ethos.md:13: min_effect: 1.5 is outside [0, 1); fix: "), "{e}");
        // A key of the earlier evaluator names what replaced it.
        let old = doc.replace("min_rounds = 5", "min_samples = 5");
        let e = validate("ethos.md", &old).unwrap_err().to_string();
        assert!(
            e.starts_with("ethos.md:14: min_samples: retired:") && e.contains("fix: rename it to min_rounds"),
            "{e}"
        );
    }

    #[test]
    fn ratchets_own_documents_validate_and_name_real_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
        let texts: BTreeMap<String, String> =
            DOCS.iter().map(|d| (d.to_string(), std::fs::read_to_string(root.join(d)).unwrap())).collect();
        for (doc, text) in &texts {
            validate(doc, text).unwrap_or_else(|e| panic!("{e}"));
        }
        let g = Governance::from_texts(texts).unwrap();
        let command = g.proposer.command.clone().unwrap();
        for file in g.ethos.benchmark_paths.iter().chain([&g.ethos.benchmark, &command]) {
            assert!(root.join(file).is_file(), "{file} is named by the governance documents but missing");
        }
        for doc in DOCS {
            assert!(g.constitution.protected_paths.iter().any(|p| p == doc), "{doc} is not protected");
        }
    }

    #[test]
    fn doc_names() {
        assert_eq!(doc_name("ethos"), Some("ethos.md"));
        assert_eq!(doc_name("./cadence.md"), Some("cadence.md"));
        assert_eq!(doc_name("README.md"), None);
    }
}
