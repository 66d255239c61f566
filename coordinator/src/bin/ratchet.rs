//! `ratchet`: the swarm's command line. Each subcommand is one call into the coordinator library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Print a line to stdout. A reader that went away (`ratchet explain main --json | head`) ends
/// the command quietly, as a closed pipe ends any Unix tool, never with a panic.
macro_rules! out {
    ($($t:tt)*) => { emit(&format!($($t)*), true) };
}

/// [`out!`] without the newline.
macro_rules! outp {
    ($($t:tt)*) => { emit(&format!($($t)*), false) };
}

fn emit(text: &str, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_all(text.as_bytes())
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}
use coordinator::supervisor::{self, LoopRequest, RestartPolicy, SupervisorError, UpOptions};

#[derive(Parser)]
#[command(name = "ratchet", version, about = "Run and inspect a Ratchet swarm")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every agent in agents.toml, run the improvement loop, and supervise them in the
    /// foreground (Ctrl-C stops all).
    Up {
        #[command(flatten)]
        repo: RepoArgs,
        /// Stop the swarm when the loop stops, and print the run summary.
        #[arg(long)]
        once: bool,
        /// With --once: print the summary as JSON (progress goes to stderr).
        #[arg(long)]
        json: bool,
        /// Only supervise the agents; do not start the loop.
        #[arg(long, conflicts_with = "once")]
        no_loop: bool,
        /// Start a new run even if loop.json holds an unfinished one.
        #[arg(long)]
        fresh: bool,
        /// Most cycles for this run, on top of cadence.md's budget (0: no extra limit).
        #[arg(long, default_value_t = 0)]
        max_cycles: u32,
        /// Start the loop without `ratchet check` first (a configuration error then costs cycles).
        #[arg(long)]
        no_check: bool,
    },
    /// Is this repository ready for the loop? Governance, agents.toml, the sandbox, the
    /// proposer's configuration, every gate and the benchmark run once on the baseline, and the
    /// baseline's noise. Exits 2 on a configuration error (`ratchet up` runs the same check
    /// before the first cycle and does not start the loop then).
    Check {
        #[command(flatten)]
        repo: RepoArgs,
        /// Look only: do not run the gates and the benchmark.
        #[arg(long)]
        no_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run the whole loop on an embedded demo target (no model, no network) and print its history.
    Demo {
        #[command(flatten)]
        repo: RepoArgs,
        /// Print the run summary as JSON (progress goes to stderr).
        #[arg(long)]
        json: bool,
        /// Put a real model in the loop: start the local model route (scripts/model/serve) and
        /// run the demo with it as the proposer and as the (advisory) reviewer.
        #[arg(long)]
        model: bool,
        /// Internal: the proposer's and reviewer's server URLs (`writer,reviewer`), already running.
        #[arg(long, hide = true, conflicts_with = "model")]
        with_models: Option<String>,
    },
    /// Why is this commit on main? The proposal, gates, critic findings, samples, statistics,
    /// verdict and governance hashes behind it, from the events alone. For a candidate that was
    /// not promoted (its commit or branch name): its record, every finding with its evidence.
    Explain {
        /// A commit id or revision, or a candidate's branch name.
        commit: String,
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Measure the machine's noise for the benchmark now: the baseline (main) against itself
    /// for ethos.md's calibration_rounds, in its pairing; prints the spread of the paired ratios
    /// and the first look it suggests, and records a `calibrated` event.
    Calibrate {
        #[command(flatten)]
        repo: RepoArgs,
        /// Print the calibration as JSON.
        #[arg(long)]
        json: bool,
        /// Calibrate this measure instead of ethos.md's: `instructions` also reports which
        /// instruction counters work here, the benchmark's slowdown under the chosen one and the
        /// wall time's spread beside the counts' (ethos.md is not changed).
        #[arg(long, value_parser = ["metric", "instructions"])]
        measure: Option<String>,
    },
    /// A candidate branch's tasks, leases, artefacts, events and diff stat.
    Inspect {
        branch: String,
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove finished worktrees and their branches (never an unpromoted commit: those are archived).
    Gc {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Export the evidence: `trace` (Chrome/Perfetto trace JSON of the run) or `pairs`
    /// (preference pairs of promoted vs rejected candidates, JSON lines, for fine-tuning).
    Export {
        #[arg(value_parser = ["trace", "pairs"])]
        what: String,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// List the running swarm, checking each agent's card live.
    Status {
        #[command(flatten)]
        repo: RepoArgs,
        /// Print a JSON array of agents instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The approved governance documents, pending edits on disk (with a diff) and agent proposals.
    Governance {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Approve governance documents as they are on disk (validated first), apply an agent
    /// proposal, or promote a candidate waiting for approval.
    Approve {
        /// constitution.md, ethos.md, cadence.md, a proposal id (p-...), or a candidate branch.
        #[arg(required = true, value_name = "DOC|PROPOSAL-ID|BRANCH")]
        targets: Vec<String>,
        /// Who approves (default: the git identity).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Restore a governance document's approved text over a pending edit, drop a proposal, or
    /// discard a promotion waiting for approval.
    Reject {
        /// constitution.md, ethos.md, cadence.md, a proposal id (p-...), or a candidate branch.
        #[arg(value_name = "DOC|PROPOSAL-ID|BRANCH")]
        target: String,
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Which sandbox modes work on this machine, what each one confines (measured by a probe),
    /// and where this repository's approved constitution makes commands run. Exits 1 when its
    /// commands would be refused.
    Sandbox {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
    /// Model endpoints: `compare <current> <candidate>` benchmarks a candidate endpoint against
    /// the current one on the same proposal tasks, through the rails and the evaluator of the
    /// running swarm (`ratchet up --no-loop`), and records PROMOTE, HOLD or REJECT.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Make this git repository a swarm home: agents.toml and the three governance documents from
    /// templates, worktrees/ in .gitignore, and the documents recorded as first approved versions.
    Init {
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Who approves the first versions (default: the git identity).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Compare two models declared in constitution.md on the same proposal tasks.
    Compare {
        /// The current model's name (e.g. cadence.md's `[proposer] model`).
        current: String,
        /// The candidate model's name.
        candidate: String,
        /// Proposal tasks each model answers.
        #[arg(long, default_value_t = 3)]
        tasks: u32,
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RepoArgs {
    /// The repository root holding agents.toml.
    #[arg(long, value_name = "PATH", default_value = ".")]
    repo: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
    let result = match cli.command {
        Command::Up { repo, once, json, no_loop, fresh, max_cycles, no_check } => {
            supervisor::human_output_to_stderr(json);
            if !no_loop
                && !no_check
                && let Err(code) = runtime.block_on(check_before_loop(&repo.repo, fresh))
            {
                return code;
            }
            let run_loop = (!no_loop).then_some(LoopRequest { max_cycles, fresh, exit_when_done: once });
            let repo_path = repo.repo.clone();
            let opts = UpOptions { repo: repo.repo, policy: RestartPolicy::default(), run_loop };
            match runtime.block_on(supervisor::up(opts)) {
                Ok(outcome) => {
                    if let Some(s) = outcome.loop_summary.filter(|_| once) {
                        if json {
                            // Through a JSON value: keys in alphabetical order, as always.
                            let v = serde_json::to_value(&s).unwrap_or_default();
                            out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                        } else {
                            // The same history `ratchet demo` prints: every candidate's line.
                            let state = coordinator::engine::read_state(&repo_path).ok().flatten();
                            supervisor::say(&match state {
                                Some(st) => coordinator::demo::render_history(&st, &s),
                                None => coordinator::demo::render_summary(&s),
                            });
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Command::Status { repo, json } => runtime.block_on(status(repo.repo, json)),
        Command::Check { repo, no_run, json } => {
            let opts = coordinator::check::Options { run_commands: !no_run, noise: !no_run };
            let r = runtime.block_on(coordinator::check::check(&repo.repo, opts));
            if json {
                out!("{}", serde_json::to_string_pretty(&r).expect("a check report serializes"));
            } else {
                outp!("{}", r.render());
            }
            return if r.ok { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
        Command::Demo { repo, json, model, with_models } => {
            let run = async {
                if model {
                    return coordinator::demo::demo_model(&repo.repo, json).await;
                }
                let models = match with_models.as_deref().map(|m| m.split_once(',')) {
                    Some(Some((w, r))) => {
                        Some(coordinator::demo::DemoModels { writer: w.to_string(), reviewer: r.to_string() })
                    }
                    Some(None) => anyhow::bail!("--with-models takes `writer_url,reviewer_url`"),
                    None => None,
                };
                coordinator::demo::demo_with(&repo.repo, json, models).await
            };
            return report(runtime.block_on(run).map(|_| ()));
        }
        Command::Explain { commit, repo, json } => return report(explain(&repo.repo, &commit, json)),
        Command::Calibrate { repo, json, measure } => return report(calibrate(&repo.repo, json, measure.as_deref())),
        Command::Inspect { branch, repo, json } => return report(inspect(&repo.repo, &branch, json)),
        Command::Gc { repo, json } => return report(gc(&repo.repo, json)),
        Command::Export { what, repo } => return report(export(&repo.repo, &what)),
        Command::Governance { repo, json } => return report(governance(&repo.repo, json)),
        Command::Approve { targets, by, repo, json } => {
            return report(approve(&repo.repo, &targets, by.as_deref(), json));
        }
        Command::Reject { target, by, repo } => return report(reject(&repo.repo, &target, by.as_deref())),
        Command::Init { force, by, repo, json } => return report(init(&repo.repo, force, by.as_deref(), json)),
        Command::Sandbox { repo, json } => return sandbox(&repo.repo, json),
        Command::Models { command: ModelsCommand::Compare { current, candidate, tasks, repo, json } } => {
            return report(runtime.block_on(async {
                let r = coordinator::models::compare(&repo.repo, &current, &candidate, tasks).await?;
                if json {
                    out!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    outp!("{}", coordinator::models::render(&r));
                }
                Ok(())
            }));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn status(repo: PathBuf, json: bool) -> Result<(), SupervisorError> {
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
async fn check_before_loop(repo: &std::path::Path, fresh: bool) -> Result<(), ExitCode> {
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
fn sandbox(repo: &std::path::Path, json: bool) -> ExitCode {
    let report = kit::sandbox::probe::probe_sandbox();
    // The approved constitution, when this is a swarm home with one.
    let constitution = coordinator::govern::load(repo).ok().map(|g| g.constitution);
    let decision = constitution.as_ref().map(|c| report.decide(c.sandbox, c.allows_weak_sandbox()));
    if json {
        let out = serde_json::json!({"modes": report.modes, "auto": report.auto, "constitution": decision});
        out!("{}", serde_json::to_string_pretty(&out).expect("a report serializes"));
    } else {
        outp!("{}", render_sandbox(&report, decision.as_ref()));
    }
    if decision.as_ref().is_some_and(|d| d.refused.is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn render_sandbox(
    report: &kit::sandbox::probe::SandboxReport,
    decision: Option<&kit::sandbox::probe::Decision>,
) -> String {
    let mut out = String::from("sandbox modes on this machine (probed now):\n");
    for m in &report.modes {
        let state = if m.confines() {
            "confines".to_string()
        } else if m.works && m.mode.is_weak() {
            "weak: rlimits, the timeout and the group kill only".to_string()
        } else if m.works {
            format!("weak: {}", m.problem.as_deref().unwrap_or("does not confine"))
        } else {
            format!("does not work: {}", m.problem.as_deref().unwrap_or("unknown"))
        };
        out.push_str(&format!("  {:<11} {state}\n", m.mode.as_str()));
    }
    out.push_str(&format!("\n{:<32}", "what each confines"));
    for m in &report.modes {
        out.push_str(&format!(" {:>10}", m.mode.as_str()));
    }
    out.push('\n');
    for (i, name) in kit::sandbox::probe::PROPERTIES.iter().enumerate() {
        out.push_str(&format!("  {name:<30}"));
        for m in &report.modes {
            let cell = match m.properties.get(i) {
                _ if !m.works => "-",
                Some(p) if p.holds => "yes",
                _ => "NO",
            };
            out.push_str(&format!(" {cell:>10}"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\nsandbox = \"auto\" picks: {}{}\n",
        report.auto,
        if report.auto_is_weak() { " (weak)" } else { "" }
    ));
    match decision {
        None => {
            out.push_str("no approved constitution.md here: run `ratchet init` to make this repository a swarm home\n")
        }
        Some(d) => match &d.refused {
            Some(why) => out.push_str(&format!("this repository's commands would be REFUSED: {why}\n")),
            None => out.push_str(&format!(
                "this repository's approved constitution.md (sandbox = \"{}\"): commands run in {}{}\n",
                d.asked,
                d.mode,
                if d.weak { ", which does not confine them (weak_sandbox = \"allow\")" } else { "" }
            )),
        },
    }
    out
}

/// Exit status for the commands that return `anyhow` errors.
fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn calibrate(repo: &std::path::Path, json: bool, measure: Option<&str>) -> anyhow::Result<()> {
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

fn explain(repo: &std::path::Path, commit: &str, json: bool) -> anyhow::Result<()> {
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

fn inspect(repo: &std::path::Path, branch: &str, json: bool) -> anyhow::Result<()> {
    let home = kit::substrate::Home::open(repo)?;
    let report = kit::substrate::inspect(&home, branch)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outp!("{}", kit::substrate::render_text(&report));
    }
    Ok(())
}

fn gc(repo: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let home = kit::substrate::Home::open(repo)?;
    let report = kit::substrate::gc(&home)?;
    let (helpers, failed) = coordinator::housekeeping::gc_helper_checkouts(repo);
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["helper_checkouts_removed"] = serde_json::json!(helpers);
        v["helper_gc_failed"] = serde_json::json!(failed);
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outp!("{}", render_gc(&report, &helpers));
    }
    for f in &failed {
        eprintln!("warning: an agent could not clean its checkouts: {f}");
    }
    Ok(())
}

/// `ratchet gc` for people: what was removed, archived and kept, in a few lines.
fn render_gc(r: &kit::substrate::GcReport, helpers: &[String]) -> String {
    fn names(v: &[String]) -> String {
        const SHOWN: usize = 6;
        let mut s = v.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > SHOWN {
            s.push_str(&format!(" and {} more", v.len() - SHOWN));
        }
        s
    }
    let mut o = String::new();
    if !r.removed_checkouts.is_empty() {
        o.push_str(&format!(
            "removed {} finished checkout(s): {}\n",
            r.removed_checkouts.len(),
            names(&r.removed_checkouts)
        ));
    }
    if !r.deleted_branches.is_empty() {
        o.push_str(&format!(
            "deleted {} branch(es) whose commits are on main or archived: {}\n",
            r.deleted_branches.len(),
            names(&r.deleted_branches)
        ));
    }
    if !r.archived.is_empty() {
        let b: Vec<String> = r.archived.iter().map(|(b, _)| b.clone()).collect();
        o.push_str(&format!(
            "archived {} unpromoted commit(s) under refs/ratchet/archive/ (nothing is lost; `git log refs/ratchet/archive/<branch>`): {}\n",
            b.len(),
            names(&b)
        ));
    }
    for (b, why) in &r.kept_branches {
        o.push_str(&format!("kept {b}: {why}\n"));
    }
    for p in &r.orphans_removed {
        o.push_str(&format!("removed {} (a checkout git did not know: left by a crash)\n", p.display()));
    }
    for (p, why) in &r.orphans_reported {
        o.push_str(&format!("left alone {}: {why}\n", p.display()));
    }
    for h in helpers {
        o.push_str(&format!("removed helper checkout {h}\n"));
    }
    if o.is_empty() {
        o.push_str("nothing to clean: no finished worktree, no orphan\n");
    }
    o.push_str("artefacts and events stay under worktrees/<branch>/ (`ratchet inspect <branch>`); --json for the full report\n");
    o
}

fn governance(repo: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let r = coordinator::govern::report(repo)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        outp!("{}", coordinator::govern::report::render(&r));
    }
    Ok(())
}

fn approve(repo: &std::path::Path, targets: &[String], by: Option<&str>, json: bool) -> anyhow::Result<()> {
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

fn reject(repo: &std::path::Path, target: &str, by: Option<&str>) -> anyhow::Result<()> {
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

fn init(repo: &std::path::Path, force: bool, by: Option<&str>, json: bool) -> anyhow::Result<()> {
    let o = coordinator::govern::init(repo, force, by)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        outp!("{}", coordinator::govern::init::render(&o));
    }
    Ok(())
}

fn export(repo: &std::path::Path, what: &str) -> anyhow::Result<()> {
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
