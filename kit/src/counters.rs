//! Counting the instructions a command executes (ethos.md `measure = "instructions"`): the
//! evaluator's counted runs and `ratchet measure` both come here, so there is one way to count.
//!
//! Two tools, chosen by [`probe`] on this machine, inside the sandbox the command will run in:
//! - **perf** (`perf stat -e instructions:u`), when the CPU's counters are exposed here (a
//!   virtual machine often hides them, and `perf_event_paranoid` or a seccomp filter may refuse
//!   them): the CPU's own count of user-space instructions, every process of the tree summed,
//!   at native speed;
//! - else **callgrind** (valgrind), following child processes (`--trace-children=yes`: an
//!   interpreter behind a shim is counted too): the instructions executed on valgrind's
//!   simulated CPU, summed over one output file per process, tens of times slower than native.
//!   A process that `exec`s another is counted from its last image (valgrind restarts at each
//!   exec), so a shim that execs the interpreter costs nothing.
//!
//! Either way the command runs through [`crate::exec`] as every benchmark does (the sandbox,
//! the timeout, the cleared environment), wrapped as `setarch -R <tool> ... sh -c '<command>'`:
//! address-space randomization off, and [`DETERMINISTIC_ENV`] added, so that hash tables and
//! allocators do the same work on every run. The tool writes its counts into a fresh private
//! directory of the host's temporary directory, made writable in the sandbox for that run only
//! and removed afterwards: never into the checkout, never read from the command's output (which
//! the code under test could print anything into).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exec::{RunOutcome, RunSpec, SandboxMode};
pub use protocol::evaluation::{Counter, CounterReport, ToolReport};

/// Added to a counted run's environment (and to the wall-time runs that guard a count): the
/// hash seeds of the common interpreters fixed (Python's `PYTHONHASHSEED`; Perl's
/// `PERL_HASH_SEED` with `PERL_PERTURB_KEYS`), so the same program does the same work each run.
/// A benchmark's own random numbers are its own to seed.
pub const DETERMINISTIC_ENV: [(&str, &str); 3] =
    [("PYTHONHASHSEED", "0"), ("PERL_HASH_SEED", "0"), ("PERL_PERTURB_KEYS", "0")];

/// How long a probe may take (valgrind's start is slow on a loaded machine).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// An instruction count of a whole process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub instructions: u64,
    /// Processes counted (callgrind writes one file per process; perf does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
}

/// A counted run: how the command ended, and its count (or why there is none).
#[derive(Debug, Clone)]
pub struct Counted {
    pub outcome: RunOutcome,
    pub count: Result<Count, String>,
}

/// `'text'` for `sh`, with every `'` inside closed, escaped and reopened.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The command line that runs `command` under `counter`, its counts written into `out`.
pub fn wrap(counter: Counter, command: &str, out: &Path) -> String {
    let dir = shell_quote(&out.to_string_lossy());
    let inner = shell_quote(command);
    match counter {
        Counter::Perf => {
            format!("exec setarch -R perf stat --no-big-num -x, -e instructions:u -o {dir}/perf.csv -- sh -c {inner}")
        }
        Counter::Callgrind => format!(
            "exec setarch -R valgrind -q --tool=callgrind --trace-children=yes --callgrind-out-file={dir}/callgrind.%p.out sh -c {inner}"
        ),
    }
}

/// The instructions perf counted, from its `-x,` output: the value field of the
/// `instructions:u` line (`<not supported>` or `<not counted>` when the counter is not there).
pub fn parse_perf(text: &str) -> Result<u64, String> {
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 || !fields[2].starts_with("instructions") {
            continue;
        }
        return fields[0].trim().parse::<u64>().map_err(|_| format!("perf reports {} for {}", fields[0], fields[2]));
    }
    Err(format!("perf wrote no instructions line ({:?})", text.lines().rev().find(|l| !l.trim().is_empty())))
}

/// The instructions one callgrind output file holds: its `summary:` line (or `totals:`), the
/// first event being `Ir`.
pub fn parse_callgrind(text: &str) -> Result<u64, String> {
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
    if let Some(events) = field("events:")
        && events.split_whitespace().next() != Some("Ir")
    {
        return Err(format!("the first event is not Ir (events: {events})"));
    }
    let total = field("summary:").or_else(|| field("totals:")).ok_or("no summary: or totals: line")?;
    let first = total.split_whitespace().next().unwrap_or_default();
    first.parse::<u64>().map_err(|_| format!("summary {first:?} is not a count"))
}

/// Read the counts `counter` wrote into `out`: perf's one file, or every callgrind file summed.
pub fn read_counts(counter: Counter, out: &Path) -> Result<Count, String> {
    match counter {
        Counter::Perf => {
            let path = out.join("perf.csv");
            let text = std::fs::read_to_string(&path).map_err(|e| format!("perf wrote no counts: {e}"))?;
            Ok(Count { instructions: parse_perf(&text)?, processes: None })
        }
        Counter::Callgrind => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(out)
                .map_err(|e| format!("reading callgrind's output: {e}"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("callgrind.")))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err("callgrind wrote no output file (did the command run?)".into());
            }
            let mut total = 0u64;
            for f in &files {
                let text = std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
                let n = parse_callgrind(&text).map_err(|e| format!("{}: {e}", f.display()))?;
                total = total.saturating_add(n);
            }
            Ok(Count { instructions: total, processes: Some(files.len() as u32) })
        }
    }
}

/// `spec` with [`DETERMINISTIC_ENV`] added (the spec's own values win).
pub fn deterministic(mut spec: RunSpec) -> RunSpec {
    for (k, v) in DETERMINISTIC_ENV {
        if !spec.env.iter().any(|(name, _)| name == k) {
            spec.env.insert(0, (k.to_string(), v.to_string()));
        }
    }
    spec
}

/// Run `spec` under `counter` (see the module documentation): the same command, sandbox and
/// limits, its counts read from a private directory afterwards. A run that fails has no count.
pub async fn run_counted(spec: &RunSpec, counter: Counter) -> Counted {
    let out = match tempfile::Builder::new().prefix("ratchet-counts-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            let why = format!("cannot make a directory for the counts: {e}");
            let outcome = RunOutcome {
                status: crate::exec::RunStatus::SpawnFailed(why.clone()),
                stdout: String::new(),
                stderr: String::new(),
                duration: Duration::ZERO,
                sandbox: crate::exec::resolve(spec.sandbox),
                job: None,
                spawned: None,
            };
            return Counted { outcome, count: Err(why) };
        }
    };
    let mut counted = deterministic(spec.clone()).with_writable(out.path());
    counted.command = wrap(counter, &spec.command, out.path());
    let outcome = crate::exec::run(&counted).await;
    let count = if outcome.success() {
        read_counts(counter, out.path())
    } else {
        Err(format!("the counted run {}", outcome.describe()))
    };
    Counted { outcome, count }
}

/// Probe one tool: count `true` inside the sandbox.
async fn probe_tool(counter: Counter, sandbox: SandboxMode, allow_weak: bool) -> ToolReport {
    let scratch = match tempfile::Builder::new().prefix("ratchet-counter-probe-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return ToolReport { counter, works: false, detail: format!("cannot make a scratch directory: {e}") };
        }
    };
    let program = match counter {
        Counter::Perf => "perf",
        Counter::Callgrind => "valgrind",
    };
    let spec = RunSpec::new("true", scratch.path())
        .with_sandbox(sandbox)
        .with_weak_sandbox_allowed(allow_weak)
        .with_timeout(PROBE_TIMEOUT);
    let counted = run_counted(&spec, counter).await;
    let (works, detail) = match (&counted.count, counted.outcome.success()) {
        (Ok(c), _) if c.instructions > 0 => {
            (true, format!("counted {} instructions of `true` ({})", c.instructions, counted.outcome.describe()))
        }
        (Ok(_), _) => (false, "counted 0 instructions of `true`".to_string()),
        (Err(why), true) => (false, why.clone()),
        (Err(_), false) => {
            let said = counted.outcome.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            let missing = matches!(counted.outcome.status, crate::exec::RunStatus::Exited(127));
            if missing {
                (false, format!("{program} is not installed (exit 127: {said})"))
            } else {
                (false, format!("{} ({said})", counted.outcome.describe()))
            }
        }
    };
    let detail = match counter {
        Counter::Perf if !works => perf_hint(&detail, paranoid()),
        Counter::Callgrind if !works && detail.contains("not installed") => {
            format!("{detail}; fix: apt-get install valgrind (or your system's valgrind package)")
        }
        _ => detail,
    };
    ToolReport { counter, works, detail }
}

/// The kernel's `perf_event_paranoid` (what unprivileged processes may count), when readable.
fn paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok()?.trim().parse().ok()
}

/// Why perf cannot count here, in words, with the fix: the kernel's `perf_event_paranoid`
/// forbids it (above 2 no unprivileged process may count; Debian's default is 3), the CPU's
/// counters are not exposed (a virtual machine without a virtual PMU), or perf is missing.
pub fn perf_hint(why: &str, paranoid: Option<i32>) -> String {
    let fallback = "callgrind counts instead";
    if why.contains("not installed") {
        return format!("{why}; fix: apt-get install linux-perf (or your system's perf package), or let {fallback}");
    }
    let refused = ["perf_event_paranoid", "Permission denied", "Access to performance monitoring", "No permission"]
        .iter()
        .any(|w| why.contains(w));
    match paranoid {
        Some(level) if level > 2 => format!(
            "{why}: kernel.perf_event_paranoid is {level}, which forbids counting to unprivileged processes (the sandbox runs benchmarks as one); fix: sysctl -w kernel.perf_event_paranoid=2 (a user may count their own processes' user-space instructions; make it permanent in /etc/sysctl.d/), or let {fallback}"
        ),
        _ if refused => {
            format!("{why}: the kernel refuses perf events here (seccomp or perf_event_paranoid); {fallback}")
        }
        _ if why.contains("<not supported>") || why.contains("<not counted>") => format!(
            "{why}: this machine does not expose the CPU's instruction counter (a virtual machine without a virtual PMU, or a container that hides it); {fallback}"
        ),
        _ => format!("{why}; {fallback}"),
    }
}

/// Which counters work here inside `sandbox` (probed now: a perf run of `true` and a callgrind
/// run of `true`).
pub async fn probe(sandbox: SandboxMode, allow_weak: bool) -> CounterReport {
    let resolved = crate::exec::resolve(sandbox);
    let perf = probe_tool(Counter::Perf, resolved, allow_weak).await;
    let callgrind = probe_tool(Counter::Callgrind, resolved, allow_weak).await;
    let chosen = [&perf, &callgrind].into_iter().find(|t| t.works).map(|t| t.counter);
    CounterReport { sandbox: resolved, tools: vec![perf, callgrind], chosen }
}

/// [`probe`], once per process and sandbox mode (the evaluator asks before every counted
/// evaluation; a tool installed later is seen after a restart).
pub async fn cached(sandbox: SandboxMode, allow_weak: bool) -> CounterReport {
    static CACHE: Mutex<Vec<(SandboxMode, bool, CounterReport)>> = Mutex::new(Vec::new());
    let key = (crate::exec::resolve(sandbox), allow_weak);
    if let Some((_, _, r)) = CACHE.lock().expect("counter cache lock").iter().find(|(m, w, _)| (*m, *w) == key) {
        return r.clone();
    }
    let report = probe(sandbox, allow_weak).await;
    CACHE.lock().expect("counter cache lock").push((key.0, key.1, report.clone()));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let w = wrap(Counter::Callgrind, "python3 -c 'print(1)'", Path::new("/tmp/x y"));
        assert_eq!(
            w,
            r"exec setarch -R valgrind -q --tool=callgrind --trace-children=yes --callgrind-out-file='/tmp/x y'/callgrind.%p.out sh -c 'python3 -c '\''print(1)'\'''"
        );
        assert!(
            wrap(Counter::Perf, "true", Path::new("/o"))
                .contains("perf stat --no-big-num -x, -e instructions:u -o '/o'/perf.csv -- sh -c 'true'")
        );
    }

    #[test]
    fn perf_output_is_read_or_refused() {
        let ok = "# started on Sun Nov 29 13:18:39 2026\n\n454123021,,instructions:u,402110912,100.00,,\n";
        assert_eq!(parse_perf(ok), Ok(454_123_021));
        let hidden = "# started on Sun Nov 29 13:18:39 2026\n\n<not supported>,,instructions:u,0,100.00,,\n";
        assert_eq!(parse_perf(hidden), Err("perf reports <not supported> for instructions:u".into()));
        assert!(parse_perf("").unwrap_err().starts_with("perf wrote no instructions line"));
    }

    #[test]
    fn why_perf_cannot_count_names_the_fix() {
        let hidden = perf_hint("perf reports <not supported> for instructions:u", Some(2));
        assert!(
            hidden.contains("does not expose the CPU's instruction counter")
                && hidden.ends_with("callgrind counts instead"),
            "{hidden}"
        );
        let paranoid =
            perf_hint("exited with status 255 (Error: No permission to enable instructions:u event.)", Some(3));
        assert!(
            paranoid.contains("kernel.perf_event_paranoid is 3")
                && paranoid.contains("fix: sysctl -w kernel.perf_event_paranoid=2"),
            "{paranoid}"
        );
        // A refusal is named as such even where the level looks permissive (a seccomp filter).
        assert!(perf_hint("Permission denied", Some(1)).contains("the kernel refuses perf events here"));
        assert!(
            perf_hint("perf is not installed (exit 127: sh: perf: not found)", Some(2))
                .contains("fix: apt-get install linux-perf")
        );
    }

    #[test]
    fn callgrind_output_is_read_or_refused() {
        let file = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 12\ncmd: true\npart: 1\n\npositions: line\nevents: Ir\nsummary: 126559\n\nfn=(1) main\n0 5\ntotals: 126559\n";
        assert_eq!(parse_callgrind(file), Ok(126_559));
        assert_eq!(parse_callgrind("events: Ir\ntotals: 7\n"), Ok(7));
        assert!(parse_callgrind("events: Dr Ir\nsummary: 5 6\n").unwrap_err().contains("not Ir"));
        assert!(parse_callgrind("nothing").is_err());
    }

    /// The perf path for real, where the CPU's counters work inside the sandbox: the whole tree
    /// counted (three children count more than one), a repeat within 1% (perf is the CPU's own
    /// count, not a simulation: interrupts may add a little), nothing in the checkout, a failing
    /// command without a count. Where perf cannot count, `tests/run` says why (and sets
    /// `RATCHET_TEST_SKIP_PERF=1`), and this test prints SKIPPED with the probe's reason (this
    /// project's development VMs have no virtual PMU: ARCHITECTURE.md, "Instruction counts").
    #[tokio::test]
    async fn perf_counts_the_whole_tree_where_the_counters_work() {
        let report = probe(SandboxMode::Auto, false).await;
        let perf = report.tool(Counter::Perf).expect("probed");
        if !perf.works {
            // No counter to count with (nothing to fix on this machine), or tests/run said so:
            // skipped, saying why. A refusal with a fix (perf missing, perf_event_paranoid) fails.
            let hidden = ["<not supported>", "<not counted>"].iter().any(|w| perf.detail.contains(w));
            let told = std::env::var("RATCHET_TEST_SKIP_PERF").as_deref() == Ok("1");
            assert!(
                hidden || told,
                "perf cannot count here: {}; tests/run sets RATCHET_TEST_SKIP_PERF=1, and says why, where the machine cannot",
                perf.detail
            );
            println!("SKIPPED: perf cannot count instructions here: {}", perf.detail);
            return;
        }
        assert_eq!(report.chosen, Some(Counter::Perf), "perf is preferred where it counts: {report:#?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = |cmd: &str| RunSpec::new(cmd, dir.path()).with_timeout(Duration::from_secs(60));
        let one = run_counted(&spec("/bin/true"), Counter::Perf).await;
        let three = run_counted(&spec("/bin/true; /bin/true; /bin/true"), Counter::Perf).await;
        let again = run_counted(&spec("/bin/true; /bin/true; /bin/true"), Counter::Perf).await;
        let (one, three, again) = (one.count.unwrap(), three.count.unwrap(), again.count.unwrap());
        println!("perf: {one:?} {three:?} {again:?}");
        assert!(three.instructions > one.instructions + 100_000, "sh and its children: {one:?} {three:?}");
        let apart = three.instructions.abs_diff(again.instructions) as f64 / three.instructions as f64;
        assert!(apart < 0.01, "the same command counts the same within 1%: {three:?} {again:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written into the checkout");
        let failed = run_counted(&spec("exit 3"), Counter::Perf).await;
        assert_eq!(failed.outcome.status, crate::exec::RunStatus::Exited(3));
        assert!(failed.count.is_err());
    }

    /// The whole tree is counted: a shell that starts three children counts more than one that
    /// starts one, each run of the same command counts the same, and the files land in the
    /// private directory, not in the checkout. Runs where valgrind is installed (tests/run
    /// installs it).
    #[tokio::test]
    async fn callgrind_counts_the_whole_tree_and_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = probe(SandboxMode::Auto, false).await;
        let cg = report.tool(Counter::Callgrind).expect("probed");
        assert!(cg.works, "valgrind must be installed for these tests (tests/run installs it): {report:#?}");
        let spec = |cmd: &str| RunSpec::new(cmd, dir.path()).with_timeout(Duration::from_secs(120));
        let one = run_counted(&spec("/bin/true"), Counter::Callgrind).await;
        let three = run_counted(&spec("/bin/true; /bin/true; /bin/true"), Counter::Callgrind).await;
        let again = run_counted(&spec("/bin/true; /bin/true; /bin/true"), Counter::Callgrind).await;
        let (one, three, again) = (one.count.unwrap(), three.count.unwrap(), again.count.unwrap());
        println!("{one:?} {three:?}");
        assert!(three.processes > one.processes, "sh and its children: {one:?} {three:?}");
        assert!(three.instructions > one.instructions + 2 * 100_000, "{one:?} {three:?}");
        assert_eq!(three, again, "the same command counts the same");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written into the checkout");
        // The command's exit status is the command's: a failing benchmark has no count.
        let failed = run_counted(&spec("exit 3"), Counter::Callgrind).await;
        assert_eq!(failed.outcome.status, crate::exec::RunStatus::Exited(3));
        assert!(failed.count.is_err());
    }
}
