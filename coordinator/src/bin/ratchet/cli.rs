//! `ratchet`'s arguments: one variant a subcommand, its flags with their help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ratchet", version, about = "Run and inspect a Ratchet swarm")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum ModelsCommand {
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
pub(crate) struct RepoArgs {
    /// The repository root holding agents.toml.
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub(crate) repo: PathBuf,
}
