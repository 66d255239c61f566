//! What each subcommand does and prints: a call into the library, its report as JSON or text.

use std::path::PathBuf;
use std::process::ExitCode;

use coordinator::supervisor::{self, SupervisorError};

pub(crate) async fn status(repo: PathBuf, json: bool) -> Result<(), SupervisorError> {
    match supervisor::status(&repo).await {
        Ok(report) if json => out!("{}", report.to_json()),
        Ok(report) => outp!("{}", report.to_table()),
        Err(e) => {
            if json {
                out!("[]");
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Before the first cycle of a run (not when resuming one): `ratchet check`, and no loop when it
/// finds a configuration error (exit 2). The summary line goes to the human output.
pub(crate) async fn check_before_loop(repo: &std::path::Path, fresh: bool) -> Result<(), ExitCode> {
    let resuming = !fresh
        && coordinator::engine::read_state(repo)
            .ok()
            .flatten()
            .is_some_and(|st| st.stopped.is_none() && st.cycles_done > 0);
    // A swarm without a coordinator runs no loop (`up` says so); one whose agents.toml does not
    // parse or is missing is refused by `up` itself with the line and the fix.
    let has_coordinator = std::fs::read_to_string(repo.join("agents.toml"))
        .ok()
        .and_then(|t| protocol::config::AgentsFile::parse(&t, "agents.toml").ok())
        .is_some_and(|c| c.agents.iter().any(|a| a.role == "coordinator"));
    // A swarm already running here holds the supervisor lock: `up` refuses to start a second
    // one, and the check must not run commands beside it.
    let lock = kit::layout::Layout::new(repo).supervisor_lock();
    let running = std::fs::File::open(&lock).is_ok_and(|f| f.try_lock_shared().is_err());
    if resuming || !has_coordinator || running {
        // Resuming: checked when the run began.
        return Ok(());
    }
    supervisor::say(
        "ratchet: checking the configuration before the first cycle (`ratchet check`; skip with --no-check)",
    );
    let r = coordinator::check::check(repo, coordinator::check::Options { run_commands: true, noise: false }).await;
    if r.ok {
        for i in r.items.iter().filter(|i| i.status != coordinator::check::Status::Ok) {
            supervisor::say(&format!("  {}", i.line()));
        }
        return Ok(());
    }
    eprint!("{}", r.render());
    eprintln!("error: the loop did not start: fix the configuration error(s) above, then run `ratchet up` again");
    Err(ExitCode::from(2))
}

/// `ratchet sandbox`: the probe's report and this repository's decision.
pub(crate) fn sandbox(repo: &std::path::Path, json: bool) -> ExitCode {
    let report = kit::sandbox::probe::probe_sandbox();
    // The approved constitution, when this is a swarm home with one.
    let constitution = coordinator::govern::load(repo).ok().map(|g| g.constitution);
    let decision = constitution.as_ref().map(|c| report.decide(c.sandbox, c.allows_weak_sandbox()));
    if json {
        let out = serde_json::json!({"modes": report.modes, "auto": report.auto, "constitution": decision});
        out!("{}", serde_json::to_string_pretty(&out).expect("a report serializes"));
    } else {
        outp!("{}", kit::sandbox::probe::render(&report, decision.as_ref()));
    }
    if decision.as_ref().is_some_and(|d| d.refused.is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

pub(crate) fn calibrate(repo: &std::path::Path, json: bool, measure: Option<&str>) -> anyhow::Result<()> {
    let measure = match measure {
        Some("instructions") => Some(protocol::governance::Measure::Instructions),
        Some(_) => Some(protocol::governance::Measure::Metric),
        None => None,
    };
    let out = coordinator::calibrate::calibrate(repo, measure)?;
    if json {
        let mut v = serde_json::to_value(&out.calibration)?;
        if let Some(c) = &out.counting {
            v["counting"] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", coordinator::calibrate::render(&out));
    }
    Ok(())
}

pub(crate) fn explain(repo: &std::path::Path, commit: &str, json: bool) -> anyhow::Result<()> {
    // A candidate that was not promoted (named by branch or commit): its record, every finding.
    if let Some(r) = coordinator::record::find(repo, commit)?.filter(|r| !r.promoted) {
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", coordinator::record::render(&r));
        }
        return Ok(());
    }
    let x = coordinator::explain::explain(repo, commit)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&x)?);
    } else {
        outp!("{}", coordinator::explain::render(&x));
    }
    Ok(())
}

pub(crate) fn inspect(repo: &std::path::Path, branch: &str, json: bool) -> anyhow::Result<()> {
    let home = kit::substrate::Home::open(repo)?;
    let report = kit::substrate::inspect(&home, branch)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outp!("{}", kit::substrate::render_text(&report));
    }
    Ok(())
}

pub(crate) fn gc(repo: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let home = kit::substrate::Home::open(repo)?;
    let report = kit::substrate::gc(&home)?;
    let (helpers, failed) = coordinator::housekeeping::gc_helper_checkouts(repo);
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["helper_checkouts_removed"] = serde_json::json!(helpers);
        v["helper_gc_failed"] = serde_json::json!(failed);
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outp!("{}", coordinator::housekeeping::render_gc(&report, &helpers));
    }
    for f in &failed {
        eprintln!("warning: an agent could not clean its checkouts: {f}");
    }
    Ok(())
}

pub(crate) fn governance(repo: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let r = coordinator::govern::report(repo)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        outp!("{}", coordinator::govern::report::render(&r));
    }
    Ok(())
}

pub(crate) fn approve(repo: &std::path::Path, targets: &[String], by: Option<&str>, json: bool) -> anyhow::Result<()> {
    // A candidate branch awaiting a person's approval (cadence.md promotion = "approval").
    if let [branch] = targets
        && protocol::names::check_branch(branch).is_ok()
        && kit::layout::Layout::new(repo).branch_dir(branch).join("meta.json").is_file()
    {
        let who = coordinator::govern::approve::approver_of(repo, by)?;
        let rec = coordinator::approvals::approve(repo, branch, &who)?;
        if json {
            out!("{}", serde_json::to_string_pretty(&rec)?);
        } else {
            out!("promoted {branch}: main {} -> {} (approved by {who})", &rec.from[..12], &rec.commit[..12]);
        }
        return Ok(());
    }
    let outcomes = coordinator::govern::approve(repo, targets, by)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&outcomes)?);
    }
    for o in &outcomes {
        let what = o.proposal.as_ref().map(|p| format!(" (proposal {p})")).unwrap_or_default();
        let line = if o.recorded {
            let from = o.previous_sha256.as_deref().map(|p| format!("{} -> ", &p[..12])).unwrap_or_default();
            format!("approved {}{what}: {from}{} by {}", o.doc, &o.sha256[..12], o.approved_by)
        } else {
            format!("{} is already approved as it is ({}); nothing recorded", o.doc, &o.sha256[..12])
        };
        if json { eprintln!("{line}") } else { out!("{line}") }
    }
    Ok(())
}

pub(crate) fn reject(repo: &std::path::Path, target: &str, by: Option<&str>) -> anyhow::Result<()> {
    // A candidate branch awaiting a person's approval: discard it.
    if protocol::names::check_branch(target).is_ok()
        && kit::layout::Layout::new(repo).branch_dir(target).join("meta.json").is_file()
    {
        let who = coordinator::govern::approve::approver_of(repo, by)?;
        let r = coordinator::approvals::reject(repo, target, &who)?;
        out!(
            "rejected the promotion of {target} (cycle {}, by {who}): main does not move; its approach is banned for the rest of the run",
            r.cycle
        );
        return Ok(());
    }
    let o = coordinator::govern::reject(repo, target, by)?;
    match (&o.restored, o.changed) {
        (Some(h), true) => out!("restored the approved {} ({})", o.target, &h[..12]),
        (Some(h), false) => {
            out!("{} on disk is already the approved text ({}); nothing to reject", o.target, &h[..12])
        }
        (None, _) => out!("rejected proposal {}", o.target),
    }
    Ok(())
}

pub(crate) fn init(repo: &std::path::Path, force: bool, by: Option<&str>, json: bool) -> anyhow::Result<()> {
    let o = coordinator::govern::init(repo, force, by)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        outp!("{}", coordinator::govern::init::render(&o));
    }
    Ok(())
}

pub(crate) fn export(repo: &std::path::Path, what: &str) -> anyhow::Result<()> {
    match what {
        "trace" => out!("{}", serde_json::to_string(&coordinator::export::chrome_trace(repo)?)?),
        _ => {
            let (pairs, why) = coordinator::export::pairs_explained(repo)?;
            for pair in &pairs {
                out!("{}", serde_json::to_string(pair)?);
            }
            if let Some(why) = why {
                // On stderr: stdout stays JSON lines (none).
                eprintln!("{why}");
            } else {
                eprintln!("{} preference pair(s)", pairs.len());
            }
        }
    }
    Ok(())
}
