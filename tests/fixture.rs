//! Small, fast target repositories for end-to-end tests of the loop: a swarm home whose benchmark
//! is a shell script that sleeps for `delay_ms` (from `params.toml`) and prints the measured time,
//! with gates, tests, the three governance documents (approved) and an agents.toml running the
//! five built-in agents of this workspace.
//!
//! ```text
//! <tmp>/repo/            the target (a git repository on main; the swarm's home)
//!   params.toml          delay_ms, label
//!   bench/bench.sh       sleeps delay_ms, prints {"ms": <measured, rounded down to quantum_ms>}
//!   check.sh             gate: params.toml has a numeric delay_ms
//!   tests/run.sh         test_command: runs every tests/test_*.sh
//!   tests/test_params.sh
//!   constitution.md ethos.md cadence.md agents.toml .gitignore
//! <tmp>/scratch/         outside the repository: scripts and markers a test owns (hidden from
//!                        sandboxed commands)
//! <tmp>/home/            HOME of every process the fixture starts
//! ```
//!
//! The benchmark measures real elapsed time, rounded down to a multiple of `quantum_ms` (100 ms by
//! default): the sleep dominates and the shell's own overhead stays under the quantum, so equal
//! delays give equal samples and different delays clearly different ones, whatever else the
//! machine is doing. A test's verdicts then depend on what the candidate changed, not on noise.
//!
//! Configure with [`Spec`] (every field public, `Spec::default()` plus overrides), build with
//! [`Target::new`], run with [`Target::up_once`] (or [`Target::spawn_up`] to act on the swarm
//! while it runs), and read the evidence with [`Target::events`], [`Target::loop_state`] and
//! [`Target::ratchet`].

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{ProcGuard, bin, git_in, hermetic};

/// Written anywhere in a file of the target (a script, a gate, the proposer command), this is
/// replaced by the absolute path of [`Target::scratch`]: a directory outside the repository (in
/// the host's temporary directory), which sandboxed commands can neither see nor write.
pub const SCRATCH: &str = "@SCRATCH@";

/// How the proposer proposes.
#[derive(Debug, Clone)]
pub enum Proposer {
    /// `strategy = "sweep"` over `params.toml`: (parameter, values as TOML literals).
    Sweep(Vec<(String, Vec<String>)>),
    /// `strategy = "command"`: a shell command run in the proposer's scratch checkout of the
    /// baseline; its diff is the candidate. `@SCRATCH@` in it is the fixture's scratch directory;
    /// see [`Proposer::Calls`] for a proposer that answers differently on each call.
    Command(String),
    /// `strategy = "command"` whose k-th call in the whole run (counted from 1 in
    /// `$HOME/propose.count`, the program's own home, kept between calls) runs the shell snippet
    /// `calls[k - 1]` in the scratch checkout; every later call exits 1 (a proposal failure). A
    /// snippet's last output line is the candidate's summary. The script is cadence.md's `command`
    /// itself: a confined program sees nothing of the fixture's scratch directory.
    Calls(Vec<String>),
    /// `strategy = "openai"`: the model declared as `name` in [`Spec::models`] proposes, with the
    /// minimal governance context (the constitution) as its system prefix.
    Model(String),
}

/// The proposer program for [`Proposer::Calls`].
pub fn calls_script(calls: &[String]) -> String {
    let mut s = String::from(
        "# The fixture's proposer: call k runs snippet k.\nn=$(cat \"$HOME/propose.count\" 2>/dev/null || echo 0)\nn=$((n + 1))\necho \"$n\" > \"$HOME/propose.count\"\ncase \"$n\" in\n",
    );
    for (i, c) in calls.iter().enumerate() {
        assert!(!c.contains(";;"), "a proposer snippet may not contain ;;");
        s.push_str(&format!("{})\n{c}\n;;\n", i + 1));
    }
    s.push_str("*)\necho \"the fixture's proposer has nothing more (call $n)\" >&2\nexit 1\n;;\nesac\n");
    s
}

/// A line of a proposer program (for [`Proposer::Calls`] or [`Proposer::Command`]) that declares
/// its change as a `command` program must: `files` it touches, a rationale, the `tests` it adds.
/// Put it before the snippet's last output line (the summary).
pub fn declare(files: &[&str], tests: &[&str], rationale: &str) -> String {
    let d = protocol::rails::Declaration {
        files: files.iter().map(|f| f.to_string()).collect(),
        rationale: rationale.into(),
        tests: tests.iter().map(|f| f.to_string()).collect(),
        effect: None,
    };
    d.check("the fixture").expect("a valid declaration");
    format!("cat > \"$RATCHET_DECLARATION_FILE\" <<'DECLARATION'\n{}DECLARATION\n", d.to_toml())
}

impl Proposer {
    /// A sweep over one parameter.
    pub fn sweep(param: &str, values: &[&str]) -> Proposer {
        Proposer::Sweep(vec![(param.to_string(), values.iter().map(|v| v.to_string()).collect())])
    }
}

/// Everything a target can be configured with. The defaults make a quick, deterministic loop:
/// one candidate per cycle, sequential paired rounds (a clear answer at round 5, at most 10), no
/// warmup, no calibration, a 10% minimum effect.
#[derive(Debug, Clone)]
pub struct Spec {
    // params.toml and the benchmark
    pub delay_ms: u64,
    pub label: String,
    /// The benchmark's resolution: measured ms rounded down to a multiple of this.
    pub quantum_ms: u64,
    // cadence.md
    pub candidates: u32,
    pub warmup: u32,
    pub stall_limit: u32,
    pub breaker_limit: u32,
    pub lease_ttl_s: u64,
    pub max_attempts: u32,
    /// "auto" or "approval".
    pub promotion: String,
    pub max_cycles: u32,
    pub max_wall_s: u64,
    pub proposer: Proposer,
    // ethos.md
    pub gates: Vec<String>,
    pub test_command: String,
    pub benchmark: String,
    pub benchmark_paths: Vec<String>,
    /// The metric the benchmark prints and whether "lower" or "higher" is better.
    pub metric: String,
    pub direction: String,
    pub min_effect: f64,
    pub confidence: f64,
    /// "sequential" or "duet".
    pub pairing: String,
    pub min_rounds: u32,
    pub max_rounds: u32,
    pub calibration_rounds: u32,
    pub gate_timeout_s: u64,
    pub bench_timeout_s: u64,
    // constitution.md
    pub protected_paths: Vec<String>,
    pub max_diff_lines: u64,
    pub max_files_changed: u64,
    pub sandbox: String,
    /// constitution.md `weak_sandbox`: "refuse" (default) or "allow" (needed by `sandbox = "plain"`).
    pub weak_sandbox: String,
    /// constitution.md `append_only_paths` (default none).
    pub append_only_paths: Vec<String>,
    /// constitution.md `unverified_scope`: "block" (default) or "warn".
    pub unverified_scope: String,
    /// ethos.md `trusted_tests` (default none).
    pub trusted_tests: Vec<String>,
    /// Extra files (or replacements of the fixture's own), relative to the repository root,
    /// committed with the baseline.
    pub files: Vec<(String, String)>,
    /// Replaces the generated agents.toml.
    pub agents_toml: Option<String>,
    /// Record the three governance documents as approved (`ratchet approve`) after the commit.
    pub approve: bool,
    /// constitution.md `[constitution.models.<name>]` tables: (name, the table's body, e.g.
    /// `url = "..."\nmodel = "..."`).
    pub models: Vec<(String, String)>,
    /// constitution.md `model_review`: "off", "advisory" or "blocking".
    pub model_review: String,
    /// ethos.md `[ethos.review]` table body, when a model reviews.
    pub review: Option<String>,
    /// cadence.md `max_tokens` (the token budget; 0: none).
    pub max_tokens: u64,
    /// Extra environment of every process the fixture starts (e.g. a model server's key).
    pub env: Vec<(String, String)>,
    /// Where the target's temporary directory is made (default: the system's, usually /tmp).
    pub tmp_in: Option<PathBuf>,
    /// More lines of ethos.md's `[ethos]` table, e.g. `measure = "instructions"`.
    pub ethos_extra: String,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            delay_ms: 300,
            label: "baseline".into(),
            quantum_ms: 100,
            candidates: 1,
            warmup: 0,
            stall_limit: 3,
            breaker_limit: 3,
            lease_ttl_s: 10,
            max_attempts: 3,
            promotion: "auto".into(),
            max_cycles: 6,
            max_wall_s: 240,
            proposer: Proposer::Sweep(vec![
                ("delay_ms".into(), vec!["300".into(), "100".into()]),
                ("label".into(), vec!["\"baseline\"".into(), "\"tuned\"".into()]),
            ]),
            gates: vec!["sh check.sh".into(), "sh tests/run.sh".into()],
            test_command: "sh tests/run.sh".into(),
            benchmark: "sh bench/bench.sh".into(),
            benchmark_paths: vec!["bench/**".into()],
            metric: "ms".into(),
            direction: "lower".into(),
            min_effect: 0.1,
            confidence: 0.95,
            pairing: "sequential".into(),
            min_rounds: 5,
            max_rounds: 10,
            calibration_rounds: 0,
            gate_timeout_s: 60,
            bench_timeout_s: 30,
            protected_paths: vec![
                "constitution.md".into(),
                "ethos.md".into(),
                "cadence.md".into(),
                "bench/**".into(),
                "agents.toml".into(),
            ],
            max_diff_lines: 200,
            max_files_changed: 5,
            sandbox: "auto".into(),
            weak_sandbox: "refuse".into(),
            append_only_paths: vec![],
            unverified_scope: "block".into(),
            trusted_tests: vec![],
            files: vec![],
            agents_toml: None,
            approve: true,
            models: vec![],
            model_review: "off".into(),
            review: None,
            max_tokens: 0,
            env: vec![],
            tmp_in: None,
            ethos_extra: String::new(),
        }
    }
}

/// The five built-in agents of this workspace, by absolute path.
///
/// `RATCHET_TEST_AGENTS_DIR`, when set, names a directory whose agent binaries are used instead
/// of the workspace's (those it holds): a way to run these tests against a deliberately broken
/// build of one agent and check that they fail.
pub fn builtin_agents_toml() -> String {
    let other = std::env::var_os("RATCHET_TEST_AGENTS_DIR").map(PathBuf::from);
    let mut out = String::from("# The five built-in agents, each its own process.\n");
    for name in ["coordinator", "proposer", "executor", "critic", "evaluator"] {
        let exe = other.as_ref().map(|d| d.join(name)).filter(|p| p.exists()).unwrap_or_else(|| bin(name));
        out.push_str(&format!(
            "[[agent]]\nname = {name:?}\nrole = {name:?}\ncommand = [{:?}]\n\n",
            exe.display().to_string()
        ));
    }
    out
}

/// The benchmark: sleeps `delay_ms` of params.toml (read from the directory it runs in, i.e. the
/// candidate's params with the baseline's bench/), prints the measured ms.
pub fn bench_script(quantum_ms: u64) -> String {
    format!(
        r#"#!/bin/sh
# The fixture's benchmark: work proportional to delay_ms (params.toml), measured.
# The time is rounded down to a multiple of {quantum_ms} ms: the sleep dominates, the shell's own
# overhead stays below the resolution.
set -e
delay=$(sed -n 's/^delay_ms *= *\([0-9][0-9]*\).*/\1/p' params.toml)
[ -n "$delay" ] || {{ echo "params.toml has no delay_ms" >&2; exit 1; }}
start=$(date +%s%N)
sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 / {quantum_ms} * {quantum_ms} ))
echo "bench: delay_ms=$delay"
echo "{{\"ms\": $ms}}"
"#
    )
}

pub const CHECK_SH: &str = r#"#!/bin/sh
# Gate: params.toml holds a numeric delay_ms.
grep -Eq '^delay_ms = [0-9]+$' params.toml || { echo "check: params.toml: delay_ms is not a number" >&2; exit 1; }
"#;

pub const RUN_TESTS_SH: &str = r#"#!/bin/sh
# The test command: every tests/test_*.sh must exit 0.
status=0
for t in tests/test_*.sh; do
    [ -e "$t" ] || continue
    if sh "$t"; then echo "ok   $t"; else echo "FAIL $t"; status=1; fi
done
exit $status
"#;

pub const TEST_PARAMS_SH: &str = r#"#!/bin/sh
# delay_ms is positive.
d=$(sed -n 's/^delay_ms *= *\([0-9][0-9]*\).*/\1/p' params.toml)
[ -n "$d" ] && [ "$d" -gt 0 ]
"#;

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl Spec {
    pub fn constitution_md(&self) -> String {
        format!(
            r#"# Constitution: the test target

Hard rules. The governance documents, the benchmark and agents.toml are off limits to candidates;
a candidate changes at most {files} files and {lines} lines.

```toml ratchet
[constitution]
protected_paths = {protected}
max_diff_lines = {lines}
max_files_changed = {files}
sandbox = "{sandbox}"
weak_sandbox = "{weak_sandbox}"
allow_network = false
command_memory_mb = 0
model_review = "{model_review}"
append_only_paths = {append_only}
unverified_scope = "{unverified_scope}"
{models}```
"#,
            protected = toml_list(&self.protected_paths),
            lines = self.max_diff_lines,
            files = self.max_files_changed,
            sandbox = self.sandbox,
            model_review = self.model_review,
            models = self
                .models
                .iter()
                .map(|(name, body)| format!("\n[constitution.models.{name}]\n{}\n", body.trim_end()))
                .collect::<String>(),
            weak_sandbox = self.weak_sandbox,
            append_only = toml_list(&self.append_only_paths),
            unverified_scope = self.unverified_scope,
        )
    }

    pub fn ethos_md(&self) -> String {
        format!(
            r#"# Ethos: what better means here

The benchmark reports `{metric}` ({direction} is better). A candidate is promoted when it is at
least {effect_pct}% better with {conf_pct}% confidence, in {pairing} paired rounds.

```toml ratchet
[ethos]
goal = "Lower the milliseconds the benchmark takes"
gates = {gates}
test_command = {test:?}
benchmark = {bench:?}
benchmark_paths = {bench_paths}
metric = "{metric}"
direction = "{direction}"
confidence = {confidence}
min_effect = {min_effect}
pairing = "{pairing}"
min_rounds = {min_rounds}
max_rounds = {max_rounds}
calibration_rounds = {calibration_rounds}
gate_timeout_s = {gate_timeout}
bench_timeout_s = {bench_timeout}
trusted_tests = {trusted}
{extra}{review}```
"#,
            effect_pct = self.min_effect * 100.0,
            conf_pct = self.confidence * 100.0,
            gates = toml_list(&self.gates),
            test = self.test_command,
            bench = self.benchmark,
            bench_paths = toml_list(&self.benchmark_paths),
            confidence = self.confidence,
            min_effect = self.min_effect,
            metric = self.metric,
            direction = self.direction,
            pairing = self.pairing,
            min_rounds = self.min_rounds,
            max_rounds = self.max_rounds,
            calibration_rounds = self.calibration_rounds,
            gate_timeout = self.gate_timeout_s,
            bench_timeout = self.bench_timeout_s,
            extra =
                if self.ethos_extra.is_empty() { String::new() } else { format!("{}\n", self.ethos_extra.trim_end()) },
            review = self.review.as_ref().map(|r| format!("\n[ethos.review]\n{}\n", r.trim_end())).unwrap_or_default(),
            trusted = toml_list(&self.trusted_tests),
        )
    }

    pub fn cadence_md(&self) -> String {
        let proposer = match &self.proposer {
            Proposer::Sweep(space) => {
                let mut s =
                    "[proposer]\nstrategy = \"sweep\"\nfile = \"params.toml\"\n\n[proposer.space]\n".to_string();
                for (param, values) in space {
                    s.push_str(&format!("{param} = [{}]\n", values.join(", ")));
                }
                s
            }
            Proposer::Command(cmd) => format!("[proposer]\nstrategy = \"command\"\ncommand = {cmd:?}\n"),
            Proposer::Calls(calls) => {
                format!("[proposer]\nstrategy = \"command\"\ncommand = {:?}\n", calls_script(calls))
            }
            Proposer::Model(name) => {
                format!("[proposer]\nstrategy = \"openai\"\nmodel = {name:?}\ncontext = \"minimal\"\ntimeout_s = 120\n")
            }
        };
        format!(
            r#"# Cadence: how the loop runs here

{candidates} candidate(s) per cycle, paired rounds after {warmup} warmup round(s).

```toml ratchet
[cadence]
candidates = {candidates}
warmup = {warmup}
stall_limit = {stall}
breaker_limit = {breaker}
lease_ttl_s = {ttl}
max_attempts = {attempts}
promotion = "{promotion}"
max_cycles = {max_cycles}
max_wall_s = {max_wall}
max_tokens = {max_tokens}

{proposer}```
"#,
            candidates = self.candidates,
            warmup = self.warmup,
            stall = self.stall_limit,
            breaker = self.breaker_limit,
            ttl = self.lease_ttl_s,
            attempts = self.max_attempts,
            promotion = self.promotion,
            max_cycles = self.max_cycles,
            max_wall = self.max_wall_s,
            max_tokens = self.max_tokens,
        )
    }

    pub fn params_toml(&self) -> String {
        format!("# What the loop tunes.\ndelay_ms = {}\nlabel = {:?}\n", self.delay_ms, self.label)
    }
}

/// A target repository in a temporary directory (removed on drop).
pub struct Target {
    pub tmp: tempfile::TempDir,
    root: PathBuf,
    scratch: PathBuf,
    home: PathBuf,
    pub spec: Spec,
}

impl Target {
    /// Write the target, commit it on main, and approve its governance documents.
    pub fn new(spec: Spec) -> Target {
        let mut builder = tempfile::Builder::new();
        builder.prefix("ratchet-target-");
        let tmp = match &spec.tmp_in {
            Some(dir) => builder.tempdir_in(dir),
            None => builder.tempdir(),
        }
        .expect("temp dir");
        // Canonical: git and the agents report real paths.
        let base = std::fs::canonicalize(tmp.path()).expect("canonical temp dir");
        let (root, scratch, home) = (base.join("repo"), base.join("scratch"), base.join("home"));
        for d in [&root, &scratch, &home] {
            std::fs::create_dir_all(d).expect("create fixture dirs");
        }
        let t = Target { tmp, root, scratch, home, spec };
        let s = &t.spec;
        let mut files: Vec<(String, String)> = vec![
            ("params.toml".into(), s.params_toml()),
            ("bench/bench.sh".into(), bench_script(s.quantum_ms)),
            ("check.sh".into(), CHECK_SH.into()),
            ("tests/run.sh".into(), RUN_TESTS_SH.into()),
            ("tests/test_params.sh".into(), TEST_PARAMS_SH.into()),
            ("constitution.md".into(), s.constitution_md()),
            ("ethos.md".into(), s.ethos_md()),
            ("cadence.md".into(), s.cadence_md()),
            ("agents.toml".into(), s.agents_toml.clone().unwrap_or_else(builtin_agents_toml)),
            (".gitignore".into(), "worktrees/\n".into()),
        ];
        for (path, text) in &s.files {
            match files.iter_mut().find(|(p, _)| p == path) {
                Some(slot) => slot.1 = text.clone(),
                None => files.push((path.clone(), text.clone())),
            }
        }
        let scratch_path = t.scratch.display().to_string();
        for (path, text) in &files {
            t.write(path, &text.replace(SCRATCH, &scratch_path));
        }
        t.git(&["init", "-q", "-b", "main"]);
        t.git(&["add", "-A"]);
        t.git(&["commit", "-q", "-m", "the test target's baseline"]);
        if t.spec.approve {
            let out = t.ratchet(&["approve", "constitution.md", "ethos.md", "cadence.md", "--by", "fixture"]);
            assert!(out.status.success(), "ratchet approve failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        t
    }

    /// The repository root (the swarm's home).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A directory outside the repository for a test's scripts and markers (not visible to
    /// sandboxed commands).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// Write a file of the repository (not committed).
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("create parent dir");
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// Write `scratch/<name>` (e.g. a proposer script) and return its absolute path.
    pub fn script(&self, name: &str, text: &str) -> PathBuf {
        let p = self.scratch.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }

    /// git in the repository (hermetic); panics with stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.root, args)
    }

    /// The commit main points at.
    pub fn main(&self) -> String {
        self.git(&["rev-parse", "refs/heads/main"])
    }

    /// A command for a workspace binary with the fixture's hermetic environment, in the repository.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        hermetic(&mut cmd, &self.home);
        cmd.current_dir(&self.root);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `ratchet <args> --repo <root>`, run to completion.
    pub fn ratchet(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.command(&bin("ratchet"));
        cmd.args(args).arg("--repo").arg(&self.root).stdin(Stdio::null());
        cmd.output().expect("ratchet runs")
    }

    /// [`Target::ratchet`] run by a wrapper command (e.g. `taskset -c 0`).
    pub fn ratchet_under(&self, wrapper: &[&str], args: &[&str]) -> std::process::Output {
        let (program, pre) = wrapper.split_first().expect("a wrapper command");
        let mut cmd = self.command(Path::new(program));
        cmd.args(pre).arg(bin("ratchet")).args(args).arg("--repo").arg(&self.root).stdin(Stdio::null());
        cmd.output().expect("ratchet runs")
    }

    /// `ratchet <args> --json --repo <root>`: must exit 0; its stdout as JSON.
    pub fn ratchet_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ratchet(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ratchet {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("ratchet {args:?} --json printed {stdout:?}: {e}"))
    }

    /// Start `ratchet up --once --json --repo <root> <extra>` (its whole process tree is killed
    /// when the guard drops).
    pub fn spawn_up(&self, extra: &[&str]) -> UpRun {
        self.spawn_up_under(&[], extra)
    }

    /// [`Target::spawn_up`] run by a wrapper command (e.g. `taskset -c 0`: every agent inherits
    /// its CPU affinity); no wrapper when `wrapper` is empty.
    pub fn spawn_up_under(&self, wrapper: &[&str], extra: &[&str]) -> UpRun {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = self.command(Path::new(program));
                c.args(args).arg(bin("ratchet"));
                c
            }
            None => self.command(&bin("ratchet")),
        };
        cmd.args(["up", "--once", "--json", "--repo"]).arg(&self.root).args(extra);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        UpRun::spawn(cmd, self.root.clone())
    }

    /// Run the swarm until the loop stops (`ratchet up --once --json`), within `timeout`.
    /// Panics, with the swarm's output, when it does not exit 0 with a JSON summary.
    pub fn up_once(&self, extra: &[&str], timeout: Duration) -> Run {
        let mut up = self.spawn_up(extra);
        let run = up.finish(timeout);
        assert!(
            run.status.success(),
            "ratchet up --once exited with {}:\n{}\n{}",
            run.status,
            run.stderr,
            self.agent_logs()
        );
        assert!(run.summary.is_object(), "no JSON summary on stdout: {:?}\n{}", run.stdout, run.stderr);
        run
    }

    /// Every agent's log (worktrees/.swarm/logs/*.log), for failure messages.
    pub fn agent_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("worktrees/.swarm/logs")) {
            let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                out.push_str(&format!("--- {} (last 40 lines)\n{tail}\n", p.display()));
            }
        }
        out
    }

    /// The swarm's event log (worktrees/.swarm/events.jsonl), each line parsed.
    pub fn events(&self) -> Vec<Value> {
        read_jsonl(&self.root.join("worktrees/.swarm/events.jsonl"))
    }

    /// A candidate branch's event log (worktrees/<branch>/events/events.jsonl).
    pub fn branch_events(&self, branch: &str) -> Vec<Value> {
        read_jsonl(&kit::layout::Layout::new(&self.root).branch_dir(branch).join("events/events.jsonl"))
    }

    /// worktrees/.swarm/loop.json.
    pub fn loop_state(&self) -> Value {
        let p = self.root.join("worktrees/.swarm/loop.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
    }

    /// A file of `commit` (`git show commit:path`).
    pub fn show(&self, commit: &str, path: &str) -> String {
        self.git(&["show", &format!("{commit}:{path}")])
    }
}

/// Events of one type (`"promoted"`, `"proposed"`, ...).
pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// Every line of a JSONL file, parsed (a missing file is empty). Panics on a line that is not
/// JSON: event logs are append-only and must never hold a torn line.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not JSON: {l:?}: {e}", path.display())))
        .collect()
}

/// What `ratchet up --once --json` printed.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    /// The parsed stdout (Null when it was not JSON).
    pub summary: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The summary's candidates of one list (`promoted`, `rejected`, `held`).
    pub fn list(&self, key: &str) -> Vec<Value> {
        self.summary[key].as_array().cloned().unwrap_or_default()
    }

    pub fn stop_reason(&self) -> &str {
        self.summary["stop_reason"].as_str().unwrap_or_default()
    }
}

/// A running `ratchet up`. Stdout is collected whole (the JSON summary); stderr (progress) is
/// read line by line so a test can wait on it. Dropping the guard kills the whole process tree.
pub struct UpRun {
    pub proc: ProcGuard,
    root: PathBuf,
    stderr_rx: Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl UpRun {
    /// Start a `ratchet up` command the test built itself (e.g. with extra environment) in
    /// the target at `root`.
    pub fn spawn_cmd(mut cmd: Command, root: &Path) -> UpRun {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        UpRun::spawn(cmd, root.to_path_buf())
    }

    fn spawn(cmd: Command, root: PathBuf) -> UpRun {
        let mut proc = ProcGuard::spawn(cmd);
        let mut out = proc.child.stdout.take().expect("stdout is piped");
        let err = proc.child.stderr.take().expect("stderr is piped");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let (tx, stderr_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        UpRun { proc, root, stderr_rx, stderr_seen: vec![], stdout: Some(stdout) }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The progress seen so far.
    pub fn stderr(&mut self) -> String {
        while let Ok(l) = self.stderr_rx.try_recv() {
            self.stderr_seen.push(l);
        }
        self.stderr_seen.join("\n")
    }

    /// Wait until `ready` holds (checked every 5 ms, also against the swarm's files), or panic
    /// after `timeout` with the progress so far. Panics too if `ratchet up` exits first.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut(&Path) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(&self.root) {
                return;
            }
            if let Some(st) = self.proc.child.try_wait().expect("try_wait") {
                panic!("ratchet up exited ({st}) before {what}:\n{}", self.stderr());
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}:\n{}", self.stderr());
            while let Ok(l) = self.stderr_rx.try_recv() {
                self.stderr_seen.push(l);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for exit within `timeout` and collect the output.
    pub fn finish(&mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.proc.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let err = self.stderr();
                kill_tree(self.pid());
                panic!("ratchet up --once did not finish within {timeout:?}; progress:\n{err}");
            }
            match self.stderr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => self.stderr_seen.push(l),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
        };
        // The pipes close when every process holding them is gone: bounded by the deadline.
        let stdout = self.stdout.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        // Every line the reader thread has yet to pass on: it ends at the pipe's end.
        while Instant::now() < deadline {
            match self.stderr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => self.stderr_seen.push(l),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let stderr = self.stderr();
        let summary = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        Run { status, summary, stdout, stderr }
    }

    /// SIGKILL the whole swarm at once: `ratchet up`, every agent, and every command they run
    /// (each in its own process group). Returns the pids it killed.
    pub fn kill9(&mut self) -> Vec<i32> {
        let killed = kill_tree(self.pid());
        let _ = self.proc.child.wait();
        killed
    }
}

impl Drop for UpRun {
    fn drop(&mut self) {
        kill_tree(self.pid());
    }
}

/// (pid, ppid, pgid) of every process, from /proc.
fn processes() -> Vec<(i32, i32, i32)> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(ppid), Some(pgid)) = (f.get(1).and_then(|s| s.parse().ok()), f.get(2).and_then(|s| s.parse().ok()))
        {
            out.push((pid, ppid, pgid));
        }
    }
    out
}

/// `root` and all its descendants (now).
pub fn process_tree(root: i32) -> Vec<i32> {
    let procs = processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|(_, pp, _)| *pp == parent).map(|(p, _, _)| *p));
        i += 1;
    }
    tree
}

/// Freeze `root`'s whole process tree (SIGSTOP until no new process appears), then SIGKILL every
/// process and every process group in it. Returns the pids killed.
pub fn kill_tree(root: i32) -> Vec<i32> {
    let mut all: Vec<i32> = vec![];
    loop {
        let tree = process_tree(root);
        let new: Vec<i32> = tree.iter().copied().filter(|p| !all.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            let _ = kill(Pid::from_raw(p), Signal::SIGSTOP);
        }
        all.extend(new);
    }
    let groups: Vec<i32> =
        processes().into_iter().filter(|(p, _, _)| all.contains(p)).map(|(_, _, g)| g).filter(|g| *g > 1).collect();
    for &p in &all {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
    all
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}
