//! Governance (issue 5): constitution.md, ethos.md and cadence.md change only with a person's
//! approval. The real `ratchet` binary on real temporary git repositories; the last two tests run
//! the whole swarm (`ratchet up`) on a tiny shell target.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use protocol::governance::hash;
use ratchet_tests::{ProcGuard, Swarm, TestHome, git_in, ratchet_cmd, wait_for};
use serde_json::Value;

const GOV_REF: &str = "refs/ratchet/governance";
const IDENTITY: &str = "Ratchet Test <test@ratchet.invalid>";

fn ratchet(home: &Path, args: &[&str]) -> Output {
    ratchet_cmd(home, args).stdin(Stdio::null()).output().expect("ratchet runs")
}

/// Run ratchet and insist it succeeds; returns stdout.
fn ok(home: &Path, args: &[&str]) -> String {
    let out = ratchet(home, args);
    assert!(
        out.status.success(),
        "ratchet {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run ratchet and insist it fails; returns stderr.
fn fails(home: &Path, args: &[&str]) -> String {
    let out = ratchet(home, args);
    assert!(!out.status.success(), "ratchet {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn governance(home: &Path) -> Value {
    serde_json::from_str(&ok(home, &["governance", "--json"])).expect("governance --json is JSON")
}

fn doc_status<'a>(report: &'a Value, doc: &str) -> &'a Value {
    report["docs"].as_array().unwrap().iter().find(|d| d["doc"] == doc).unwrap_or_else(|| panic!("{doc} in {report}"))
}

fn ref_commit(home: &Path) -> String {
    git_in(home, &["rev-parse", GOV_REF])
}

fn lock(home: &Path) -> Value {
    serde_json::from_str(&git_in(home, &["show", &format!("{GOV_REF}:lock.json")])).expect("lock.json is JSON")
}

fn history(home: &Path) -> Vec<Value> {
    git_in(home, &["show", &format!("{GOV_REF}:history.jsonl")])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a history line is JSON"))
        .collect()
}

fn read(home: &Path, doc: &str) -> String {
    std::fs::read_to_string(home.join(doc)).unwrap_or_else(|e| panic!("reading {doc}: {e}"))
}

fn edit(home: &Path, doc: &str, from: &str, to: &str) {
    let text = read(home, doc);
    assert!(text.contains(from), "{doc} has no {from:?}");
    std::fs::write(home.join(doc), text.replacen(from, to, 1)).expect("write doc");
}

fn events(home: &Path) -> Vec<Value> {
    let path = kit::layout::Layout::new(home).events_file();
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// A home made by `ratchet init` (templates written and approved).
fn initialised() -> TestHome {
    let home = TestHome::new();
    ok(home.path(), &["init"]);
    home
}

#[test]
fn init_writes_templates_and_records_first_approvals() {
    let home = TestHome::new();
    let p = home.path();
    std::fs::write(p.join(".gitignore"), "target/\n").unwrap();
    let out = ok(p, &["init"]);
    assert!(out.contains("approved constitution.md"), "{out}");
    // No build directory a test runner loads code from was recognised: the baseline's tests reuse
    // the build, and init says why.
    assert!(
        out.contains("the baseline's tests: trusted_checkout = \"reuse\" in ethos.md: no build directory"),
        "{out}"
    );
    assert!(read(p, "ethos.md").contains("\ntrusted_checkout = \"reuse\"\n"));
    for f in ["agents.toml", "constitution.md", "ethos.md", "cadence.md"] {
        assert!(p.join(f).is_file(), "init did not write {f}");
    }
    assert_eq!(std::fs::read_to_string(p.join(".gitignore")).unwrap(), "target/\nworktrees/\n");
    let lock = lock(p);
    for doc in ["constitution.md", "ethos.md", "cadence.md"] {
        let a = &lock["docs"][doc];
        assert_eq!(a["sha256"], hash(&read(p, doc)), "{doc}");
        assert_eq!(a["approved_by"], IDENTITY);
        assert!(a["previous_sha256"].is_null());
        assert_eq!(git_in(p, &["show", &format!("{GOV_REF}:{doc}")]).trim_end(), read(p, doc).trim_end());
    }
    assert_eq!(history(p).len(), 3);
    // Approvals never move main or touch the index.
    assert_eq!(git_in(p, &["log", "--format=%s", "main"]), "initial");
    let report = governance(p);
    assert_eq!(report["pending_edits"], 0);
    assert_eq!(report["in_force"]["cadence.md"], hash(&read(p, "cadence.md")));

    // Again, with a pending edit: files are kept, the edit stays pending, nothing is re-approved.
    edit(p, "ethos.md", "min_effect = 0.02", "min_effect = 0.03");
    let out = ok(p, &["init"]);
    assert!(out.contains("kept ethos.md"), "{out}");
    assert!(read(p, "ethos.md").contains("min_effect = 0.03"));
    assert_eq!(history(p).len(), 3, "a second init approved something");
    assert_eq!(doc_status(&governance(p), "ethos.md")["state"], "modified");
    assert_eq!(std::fs::read_to_string(p.join(".gitignore")).unwrap(), "target/\nworktrees/\n");

    let not_git = tempfile::tempdir().unwrap();
    let err = fails(not_git.path(), &["init"]);
    assert!(err.contains("not a git repository") && err.contains("fix:"), "{err}");
}

#[test]
fn nothing_runs_before_a_first_approval() {
    let home = TestHome::new();
    let p = home.path();
    let report = governance(p);
    assert!(report["commit"].is_null());
    let why = report["in_force_error"].as_str().unwrap();
    assert!(why.contains("ratchet init") && why.contains("ratchet approve"), "{why}");
}

#[test]
fn a_pending_edit_shows_a_diff_and_changes_nothing_until_approved() {
    let home = initialised();
    let p = home.path();
    let old = hash(&read(p, "cadence.md"));
    let main_before = git_in(p, &["rev-parse", "main"]);
    edit(p, "cadence.md", "warmup = 1", "warmup = 2");

    let report = governance(p);
    let cadence = doc_status(&report, "cadence.md");
    assert_eq!(cadence["state"], "modified");
    assert_eq!(cadence["valid"], true);
    let diff = cadence["diff"].as_str().unwrap();
    assert!(diff.contains("\n-warmup = 1\n+warmup = 2\n"), "{diff}");
    assert_eq!(report["pending_edits"], 1);
    assert_eq!(report["in_force"]["cadence.md"], old, "an unapproved edit is in force");
    let text = ok(p, &["governance"]);
    assert!(text.contains("PENDING EDIT") && text.contains("+warmup = 2"), "{text}");

    let out = ok(p, &["approve", "cadence.md", "--by", "Alice"]);
    assert!(out.contains("approved cadence.md"), "{out}");
    let new = hash(&read(p, "cadence.md"));
    let a = &lock(p)["docs"]["cadence.md"];
    assert_eq!(a["sha256"], new);
    assert_eq!(a["previous_sha256"], old);
    assert_eq!(a["approved_by"], "Alice");
    assert!(a["approved_at"].as_str().unwrap().len() >= 20);
    let h = history(p);
    assert_eq!(h.len(), 4);
    assert_eq!((h[3]["doc"].as_str(), h[3]["sha256"].as_str()), (Some("cadence.md"), Some(new.as_str())));
    let report = governance(p);
    assert_eq!(report["pending_edits"], 0);
    assert_eq!(report["in_force"]["cadence.md"], new);
    assert_eq!(git_in(p, &["rev-parse", "main"]), main_before, "an approval moved main");

    // Approving the same text again records nothing.
    let out = ok(p, &["approve", "cadence"]);
    assert!(out.contains("already approved"), "{out}");
    assert_eq!(history(p).len(), 4);
}

#[test]
fn an_invalid_edit_cannot_be_approved_and_the_old_state_stays() {
    let home = initialised();
    let p = home.path();
    let before = ref_commit(p);
    let approved = read(p, "ethos.md");
    edit(p, "ethos.md", "min_effect = 0.02", "min_effect = 1.5");
    let line = read(p, "ethos.md").lines().position(|l| l.starts_with("min_effect")).unwrap() + 1;
    let err = fails(p, &["approve", "ethos.md"]);
    assert!(err.contains(&format!("ethos.md:{line}: min_effect: 1.5 is outside [0, 1); fix: ")), "{err}");
    assert!(err.contains("the approved version stays in force"), "{err}");
    assert_eq!(ref_commit(p), before, "an invalid approval moved the governance ref");
    let report = governance(p);
    assert_eq!(report["in_force"]["ethos.md"], hash(&approved));
    let ethos = doc_status(&report, "ethos.md");
    assert_eq!(ethos["valid"], false);
    assert!(ethos["error"].as_str().unwrap().contains("min_effect"), "{ethos}");

    // A broken settings block: named with its line, refused, nothing recorded.
    std::fs::write(p.join("cadence.md"), "# Cadence\n\n```toml ratchet\n[cadence]\ncandidates = 2\n").unwrap();
    let err = fails(p, &["approve", "cadence.md"]);
    assert!(err.contains("cadence.md:3: settings: the ```toml ratchet block is never closed; fix: "), "{err}");
    // An unknown key (a typo) is refused too.
    std::fs::write(p.join("cadence.md"), read(p, "cadence.md") + "```\n").unwrap();
    let err = fails(p, &["approve", "cadence.md"]);
    assert!(err.contains("cadence.md:"), "{err}");
    assert_eq!(ref_commit(p), before);
    let err = fails(p, &["approve", "README.md"]);
    assert!(err.contains("neither a governance document") && err.contains("fix:"), "{err}");
}

#[test]
fn reject_restores_the_approved_text_and_a_deleted_doc_changes_nothing() {
    let home = initialised();
    let p = home.path();
    let approved = read(p, "ethos.md");
    edit(p, "ethos.md", "min_effect = 0.02", "min_effect = 0.5");
    let out = ok(p, &["reject", "ethos.md"]);
    assert!(out.contains("restored the approved ethos.md"), "{out}");
    assert_eq!(read(p, "ethos.md"), approved);
    let rejected: Vec<Value> = events(p).into_iter().filter(|e| e["type"] == "governance_rejected").collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["doc"], "ethos.md");
    assert_eq!(rejected[0]["restored"], hash(&approved));
    assert_eq!(rejected[0]["governance"]["ethos.md"], hash(&approved));
    let out = ok(p, &["reject", "ethos.md"]);
    assert!(out.contains("nothing to reject"), "{out}");

    // Deleted: the approved state stands, it cannot be approved, reject writes it back.
    let cadence = read(p, "cadence.md");
    std::fs::remove_file(p.join("cadence.md")).unwrap();
    let report = governance(p);
    assert_eq!(doc_status(&report, "cadence.md")["state"], "missing");
    assert_eq!(report["in_force"]["cadence.md"], hash(&cadence));
    let err = fails(p, &["approve", "cadence.md"]);
    assert!(err.contains("does not exist") && err.contains("ratchet reject cadence.md"), "{err}");
    ok(p, &["reject", "cadence.md"]);
    assert_eq!(read(p, "cadence.md"), cadence);

    // Not UTF-8: refused with a clear error, the approved state stands.
    std::fs::write(p.join("constitution.md"), b"\xff\xfe not text").unwrap();
    let err = fails(p, &["approve", "constitution.md"]);
    assert!(err.contains("not UTF-8"), "{err}");
    assert_eq!(doc_status(&governance(p), "constitution.md")["state"], "unreadable");
}

#[test]
fn concurrent_approvals_of_different_docs_both_land() {
    let home = initialised();
    let p = home.path();
    for round in 0..4 {
        edit(p, "ethos.md", "goal = \"", &format!("goal = \"R{round} "));
        edit(p, "cadence.md", &format!("stall_limit = {}", 3 + round), &format!("stall_limit = {}", 4 + round));
        let spawn = |doc: &str| {
            let mut cmd = ratchet_cmd(p, &["approve", doc]);
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            ProcGuard::spawn(cmd)
        };
        let (mut a, mut b) = (spawn("ethos.md"), spawn("cadence.md"));
        for (doc, g) in [("ethos.md", &mut a), ("cadence.md", &mut b)] {
            let st = g.wait_timeout(Duration::from_secs(30)).expect("approve finishes");
            let mut err = String::new();
            std::io::Read::read_to_string(g.child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(st.success(), "round {round}: approving {doc} failed: {err}");
        }
        let lock = lock(p);
        assert_eq!(lock["docs"]["ethos.md"]["sha256"], hash(&read(p, "ethos.md")), "round {round}");
        assert_eq!(lock["docs"]["cadence.md"]["sha256"], hash(&read(p, "cadence.md")), "round {round}");
        let h = history(p);
        assert_eq!(h.len(), 3 + 2 * (round + 1), "round {round}: {h:?}");
        let mut last: Vec<&str> = h[h.len() - 2..].iter().map(|e| e["doc"].as_str().unwrap()).collect();
        last.sort();
        assert_eq!(last, ["cadence.md", "ethos.md"]);
    }
}

// ---------------------------------------------------------------------------------------------
// The running swarm, on a tiny shell target: `params.toml` holds `ms = N` and the benchmark
// prints it, so every comparison is clear-cut and a cycle takes a second or two.

const AGENTS: &str = "[[agent]]\nname = \"coordinator\"\nrole = \"coordinator\"\ncommand = [\"coordinator\"]\n\n\
[[agent]]\nname = \"proposer\"\nrole = \"proposer\"\ncommand = [\"proposer\"]\n\n\
[[agent]]\nname = \"executor\"\nrole = \"executor\"\ncommand = [\"executor\"]\n\n\
[[agent]]\nname = \"critic\"\nrole = \"critic\"\ncommand = [\"critic\"]\n\n\
[[agent]]\nname = \"evaluator\"\nrole = \"evaluator\"\ncommand = [\"evaluator\"]\n";

const CONSTITUTION: &str = "# Constitution\n\nThe benchmark is off limits.\n\n```toml ratchet\n[constitution]\n\
protected_paths = [\"bench.sh\"]\nmax_diff_lines = 20\nmax_files_changed = 2\nsandbox = \"auto\"\n```\n";

const ETHOS: &str = "# Ethos\n\nLower ms.\n\n```toml ratchet\n[ethos]\ngoal = \"lower ms\"\ngates = [\"true\"]\n\
test_command = \"true\"\nbenchmark = \"sh bench.sh\"\nbenchmark_paths = [\"bench.sh\"]\nmetric = \"ms\"\n\
direction = \"lower\"\nconfidence = 0.9\nmin_effect = 0.001\nmin_rounds = 4\nmax_rounds = 8\ncalibration_rounds = 0\n\
gate_timeout_s = 60\nbench_timeout_s = 60\n```\n";

const BENCH: &str = "#!/bin/sh\nms=$(sed -n 's/^ms = //p' params.toml)\necho \"{\\\"ms\\\": $ms}\"\n";

fn cadence(candidates: u32, warmup: u32, stall_limit: u32, proposer: &str) -> String {
    format!(
        "# Cadence\n\n```toml ratchet\n[cadence]\ncandidates = {candidates}\nwarmup = {warmup}\n\
         stall_limit = {stall_limit}\nbreaker_limit = 5\nlease_ttl_s = 60\nmax_attempts = 3\npromotion = \"auto\"\n\
         max_cycles = 0\nmax_wall_s = 0\n\n{proposer}```\n"
    )
}

/// A committed shell target with approved governance.
///
/// The governance documents are left untracked: a pending edit to a *tracked* document makes the
/// main checkout dirty, and the substrate holds every promotion while main's checkout has
/// uncommitted changes, which would hide what these tests look at (the approved state lives on
/// the governance ref either way).
fn shell_target(cadence_md: &str) -> TestHome {
    let home = TestHome::new();
    let p = home.path();
    for (f, t) in [("agents.toml", AGENTS), ("bench.sh", BENCH), ("params.toml", "ms = 100\n")] {
        std::fs::write(p.join(f), t).unwrap();
    }
    home.git(&["add", "-A"]);
    home.git(&["commit", "-q", "-m", "shell target"]);
    for (f, t) in [("constitution.md", CONSTITUTION), ("ethos.md", ETHOS), ("cadence.md", cadence_md)] {
        std::fs::write(p.join(f), t).unwrap();
    }
    ok(p, &["approve", "constitution.md", "ethos.md", "cadence.md"]);
    home
}

fn of_type<'a>(evs: &'a [Value], t: &str) -> Vec<(usize, &'a Value)> {
    evs.iter().enumerate().filter(|(_, e)| e["type"] == t).collect()
}

#[test]
fn a_running_swarm_picks_up_an_approval_at_the_next_cycle() {
    // A sweep walking ms down one step per cycle: every cycle evaluates and promotes.
    let values: Vec<String> = (1..=100).rev().map(|v| v.to_string()).collect();
    let sweep = format!(
        "[proposer]\nstrategy = \"sweep\"\nfile = \"params.toml\"\n\n[proposer.space]\nms = [{}]\n",
        values.join(", ")
    );
    let home = shell_target(&cadence(1, 2, 50, &sweep));
    let p = home.path();
    let old = hash(&read(p, "cadence.md"));
    edit(p, "cadence.md", "warmup = 2", "warmup = 1");
    let new = hash(&read(p, "cadence.md"));

    let swarm = Swarm::up(p);
    let deadline = Duration::from_secs(120);
    wait_for("two evaluations under the approved cadence", deadline, || {
        (of_type(&events(p), "evaluated").len() >= 2).then_some(())
    });
    let status = ok(p, &["status"]);
    assert!(status.contains("governance: 1 pending edit(s) (cadence.md)"), "{status}");
    // Each evaluation decides at its first look (4 rounds at 90%: every round favours the
    // candidate), after the warmup rounds in force.
    for (_, e) in of_type(&events(p), "evaluated") {
        assert_eq!(e["stats"]["warmup"], 2, "an unapproved edit was used: {e}");
        assert_eq!(e["stats"]["rounds"], 4, "{e}");
        assert_eq!(e["stats"]["runs"].as_array().unwrap().len(), 12, "{e}");
        assert_eq!(e["governance"]["cadence.md"], old);
    }

    ok(p, &["approve", "cadence.md"]);
    let (switch_at, switch) = wait_for("the governance switch", deadline, || {
        let evs = events(p);
        of_type(&evs, "governance_switched").first().map(|(i, e)| (*i, (*e).clone()))
    });
    assert_eq!((switch["doc"].as_str(), switch["from"].as_str()), (Some("cadence.md"), Some(old.as_str())));
    assert_eq!(switch["to"], new);
    assert_eq!(switch["governance"]["cadence.md"], new);
    let evs = wait_for("an evaluation and a promotion under the new cadence", deadline, || {
        let evs = events(p);
        let after = |t: &str| of_type(&evs, t).iter().any(|(i, _)| *i > switch_at);
        (after("evaluated") && after("promoted")).then_some(evs)
    });
    for (i, e) in of_type(&evs, "evaluated") {
        let (warmup, hash_in_force) = if i < switch_at { (2, &old) } else { (1, &new) };
        assert_eq!(e["stats"]["warmup"], warmup, "event {i}: {e}");
        assert_eq!(e["stats"]["runs"].as_array().unwrap().len(), 2 * (warmup + 4), "event {i}: {e}");
        assert_eq!(&e["governance"]["cadence.md"], hash_in_force, "event {i}");
    }
    // A promotion records the approved hashes in force at that moment, and explain shows them.
    let approved: serde_json::Map<String, Value> =
        lock(p)["docs"].as_object().unwrap().iter().map(|(d, a)| (d.clone(), a["sha256"].clone())).collect();
    let (_, promoted) = *of_type(&evs, "promoted").iter().find(|(i, _)| *i > switch_at).unwrap();
    assert_eq!(promoted["governance"], Value::Object(approved.clone()));
    let commit = promoted["commit"].as_str().unwrap();
    let explained: Value = serde_json::from_str(&ok(p, &["explain", commit, "--json"])).unwrap();
    assert_eq!(explained["governance"], Value::Object(approved));
    let text = ok(p, &["explain", commit]);
    assert!(text.contains(&new), "{text}");
    drop(swarm);
}

#[test]
fn repeated_critic_findings_become_a_proposal_applied_only_on_approval() {
    // A command proposer that edits the (protected) benchmark every time, differently each time.
    let proposer = "[proposer]\nstrategy = \"command\"\ncommand = \"echo \\\"# $(date +%s%N)\\\" >> bench.sh; echo tune the benchmark\"\n";
    let home = shell_target(&cadence(3, 0, 1, proposer));
    let p = home.path();
    let constitution = read(p, "constitution.md");
    let mut swarm = Swarm::up(p);
    swarm.wait_for("stopped: stalled", Duration::from_secs(120));
    drop(swarm);

    let proposed: Vec<Value> = events(p).into_iter().filter(|e| e["type"] == "governance_proposed").collect();
    assert_eq!(proposed.len(), 1, "{proposed:?}");
    let id = proposed[0]["id"].as_str().unwrap().to_string();
    let evidence = proposed[0]["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 3);
    assert!(
        evidence.iter().all(|e| e["finding"].as_str().unwrap().contains("[protected-path] bench.sh")),
        "{evidence:?}"
    );
    // Proposed, not imposed: the document and its approval are untouched.
    assert_eq!(read(p, "constitution.md"), constitution);
    let report = governance(p);
    assert_eq!(report["in_force"]["constitution.md"], hash(&constitution));
    let listed = &report["proposals"][0];
    assert_eq!(listed["id"], id.as_str());
    assert!(listed["diff"].as_str().unwrap().contains("+forbid_paths = [\"bench.sh\"]"), "{listed}");

    let out = ok(p, &["approve", &id, "--by", "Carol"]);
    assert!(out.contains(&format!("(proposal {id})")), "{out}");
    let now = read(p, "constitution.md");
    assert!(now.contains("[[constitution.rules]]") && now.contains("forbid_paths = [\"bench.sh\"]"), "{now}");
    let last = history(p).pop().unwrap();
    assert_eq!(last["doc"], "constitution.md");
    assert_eq!(last["sha256"], hash(&now));
    assert_eq!(last["previous_sha256"], hash(&constitution));
    assert_eq!(last["proposal"], id.as_str());
    assert_eq!(last["approved_by"], "Carol");
    let report = governance(p);
    assert_eq!(report["in_force"]["constitution.md"], hash(&now));
    assert!(report["proposals"].as_array().unwrap().is_empty());
    let err = fails(p, &["approve", &id]);
    assert!(err.contains("already approved"), "{err}");
}
