//! The configured commands run once on the baseline (`main`), in the sandbox, the way the loop
//! runs them: with ethos.md `trusted_checkout = "fresh"` the fresh build and the test command in
//! a checkout nothing ran in yet, every gate and the test command, then the benchmark, whose metric the evaluator
//! must parse, with (on request) the baseline's noise and the settings it suggests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::exec::{RunOutcome, RunSpec, RunStatus};
use protocol::governance::{Governance, TrustedCheckout};

use super::{Item, Status, clip};

/// A scratch checkout of `main` for running the commands once (`worktrees/.swarm/check/`).
fn checkout(home: &Path) -> anyhow::Result<(PathBuf, String)> {
    let git = kit::git::Git::new(home);
    let main = git.resolve_commit("refs/heads/main")?.ok_or_else(|| {
        anyhow::anyhow!("the repository has no main branch; fix: create it (git branch -M main) and commit")
    })?;
    let dir = kit::layout::Layout::new(home).check_dir();
    git.scratch_checkout(&dir, &main)?;
    Ok((dir, main))
}

/// A command run the way the loop runs it: in the sandbox the approved constitution says.
fn spec(home: &Path, gov: &Governance, command: &str, dir: &Path, timeout_s: u64) -> RunSpec {
    let c = &gov.constitution;
    let mut s = RunSpec::new(command, dir)
        .with_timeout(Duration::from_secs(timeout_s.max(1)))
        .with_sandbox(c.sandbox)
        .with_weak_sandbox_allowed(c.allows_weak_sandbox())
        .with_network(c.allow_network)
        .with_repository(home)
        // On the job engine the constitution names (a benchmark run as the evaluator's would).
        .with_jobs(&c.jobs, command == gov.ethos.benchmark);
    if c.command_memory_mb > 0 {
        s = s.with_memory_limit(c.command_memory_mb * 1024 * 1024);
    }
    s
}

/// The last lines of a command's output, for a message.
fn tail(o: &RunOutcome) -> String {
    let text = if o.stderr.trim().is_empty() { &o.stdout } else { &o.stderr };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let t = lines[lines.len().saturating_sub(3)..].join(" | ");
    if t.is_empty() { "no output".into() } else { clip(&t, 300) }
}

/// Judge one run of a configured command on the baseline.
pub fn judge(what: &str, field: &str, command: &str, o: &RunOutcome) -> Item {
    let file = format!("ethos.md {field}");
    match &o.status {
        RunStatus::Exited(0) => {
            Item::ok(what, format!("`{command}` passes on the baseline ({:.1} s)", o.duration.as_secs_f64()))
        }
        RunStatus::Exited(127) => Item::error(
            what,
            format!("`{command}`: command not found (exit 127: {})", tail(o)),
            file,
            "install the program, commit the script it names, or correct the command in ethos.md (then `ratchet approve ethos.md`)",
        ),
        RunStatus::Exited(126) => Item::error(
            what,
            format!("`{command}`: not executable (exit 126: {})", tail(o)),
            file,
            "make the script executable (chmod +x, then commit) or run it through its interpreter (e.g. `sh script`)",
        ),
        RunStatus::Exited(code) => Item::error(
            what,
            format!(
                "`{command}` fails on the baseline itself (exit {code}: {}): every candidate would fail it",
                tail(o)
            ),
            file,
            "make main pass it, or correct the command in ethos.md (then `ratchet approve ethos.md`)",
        ),
        RunStatus::TimedOut => Item::error(
            what,
            format!("`{command}` did not finish on the baseline within its timeout ({})", o.describe()),
            format!("ethos.md {}", if field == "benchmark" { "bench_timeout_s" } else { "gate_timeout_s" }),
            "raise the timeout in ethos.md or make the command faster",
        ),
        _ => Item::error(
            what,
            format!("`{command}` {}", o.describe()),
            "constitution.md sandbox",
            "see `ratchet sandbox`",
        ),
    }
}

/// A fresh scratch checkout of `main` (nothing of an earlier run in it), or an error item.
async fn fresh_checkout(home: &Path, items: &mut Vec<Item>) -> Option<PathBuf> {
    let h = home.to_path_buf();
    match tokio::task::spawn_blocking(move || checkout(&h)).await.expect("the checkout task runs") {
        Ok((dir, _)) => Some(dir),
        Err(e) => {
            items.push(Item::error("checkout", format!("{e:#}"), "the repository", "see the message"));
            None
        }
    }
}

pub(super) async fn commands_items(home: &Path, gov: &Governance, items: &mut Vec<Item>) {
    let Some(mut dir) = fresh_checkout(home, items).await else { return };
    let e = &gov.ethos;
    // ethos.md trusted_checkout = "fresh": the baseline's tests as the executor runs them for
    // every candidate, in a checkout nothing ran in yet (`trusted_build`, then `test_command`):
    // a build that cannot work there would fail every candidate.
    if e.trusted_checkout == TrustedCheckout::Fresh && !e.trusted_tests.is_empty() {
        let mut fresh: Vec<(String, String, String)> = e
            .trusted_build
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("fresh build {}", i + 1), format!("trusted_build[{i}]"), b.clone()))
            .collect();
        fresh.push(("the baseline's tests, fresh".into(), "test_command".into(), e.test_command.clone()));
        for (what, field, command) in fresh {
            let o = spec(home, gov, &command, &dir, e.gate_timeout_s).run().await;
            items.push(judge(&what, &field, &command, &o));
            if !o.success() {
                break;
            }
        }
        // The gates start from a fresh checkout too, as a candidate's do.
        let Some(again) = fresh_checkout(home, items).await else { return };
        dir = again;
    }
    let mut runs: Vec<(String, String, String)> = e
        .gates
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("gate {}", i + 1), format!("gates[{i}]"), g.clone()))
        .collect();
    if !e.test_command.trim().is_empty() && !e.gates.contains(&e.test_command) {
        runs.push(("test command".into(), "test_command".into(), e.test_command.clone()));
    }
    for (what, field, command) in runs {
        let o = spec(home, gov, &command, &dir, e.gate_timeout_s).run().await;
        items.push(judge(&what, &field, &command, &o));
    }
}

/// The benchmark on the baseline: its command exists and exits 0 (one run here, so that a
/// missing command reads as one), then the evaluator's own measurement of `main` against itself
/// (`evaluator --once`, [`crate::calibrate::measure`]): its metric parses by the evaluator's
/// parser; with `noise`, ethos.md's calibration rounds measure the baseline's noise, shown with
/// the settings it suggests.
pub async fn benchmark(home: &Path, gov: &Governance, noise: bool) -> Vec<Item> {
    let h = home.to_path_buf();
    let (dir, _) = match tokio::task::spawn_blocking(move || checkout(&h)).await.expect("the checkout task runs") {
        Ok(x) => x,
        Err(e) => return vec![Item::error("benchmark", format!("{e:#}"), "the repository", "see the message")],
    };
    let e = &gov.ethos;
    let o = spec(home, gov, &e.benchmark, &dir, e.bench_timeout_s).run().await;
    let item = judge("benchmark", "benchmark", &e.benchmark, &o);
    if item.status != Status::Ok {
        return vec![item];
    }
    let (h, g) = (home.to_path_buf(), gov.clone());
    let rounds = if noise { None } else { Some(1) };
    let measured = tokio::task::spawn_blocking(move || crate::calibrate::measure(&h, &g, rounds, None))
        .await
        .expect("the measurement task runs");
    let (c, counting) = match measured {
        Ok(out) => (out.calibration, out.counting),
        Err(err) => {
            let why = format!("{err:#}");
            let why = why.trim_start_matches("calibration failed: ").trim_start_matches("the measurement failed: ");
            // The evaluator's message names its own fix when it has one.
            let (why, fix) = match why.split_once("; fix: ") {
                Some((w, f)) => (w.to_string(), format!("{f} (then `ratchet approve ethos.md`)")),
                None => (
                    why.to_string(),
                    "make the benchmark's last stdout line a JSON object holding the metric, or set metric_pattern (then `ratchet approve ethos.md`)".into(),
                ),
            };
            return vec![Item::error(
                "benchmark",
                format!("`{}` runs, but the evaluator cannot use it: {why}", e.benchmark),
                "ethos.md benchmark, metric, metric_pattern",
                fix,
            )];
        }
    };
    let mut out = vec![Item::ok(
        "benchmark",
        format!(
            "`{}` passes on the baseline and its metric `{}` parses ({:.1} s a run)",
            e.benchmark,
            e.metric,
            o.duration.as_secs_f64()
        ),
    )];
    match &counting {
        // Instruction counts: their spread beside the wall time's, instead of the metric's noise.
        Some(counting) => out.push(Item::ok("counters", counting_detail(counting, &c))),
        None => {
            if noise {
                out.push(noise_item(gov, &c));
            }
            out.push(counters_item(gov).await);
        }
    }
    out
}

/// `measure = "instructions"`: the counters, the slowdown and both spreads, on one line.
fn counting_detail(counting: &protocol::evaluation::Counting, c: &protocol::evaluation::Calibration) -> String {
    crate::calibrate::render_counting(counting, c)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `measure = "metric"`: whether instruction counts would work here (probed in the benchmark's
/// sandbox), so the other mode can be chosen with numbers.
async fn counters_item(gov: &Governance) -> Item {
    let sandbox = protocol::work::SandboxSettings::from(&gov.constitution);
    let report = kit::counters::cached(sandbox.sandbox, sandbox.allow_weak).await;
    let each: Vec<String> = report
        .tools
        .iter()
        .map(|t| format!("{}: {}", t.counter, if t.works { "works".to_string() } else { t.detail.clone() }))
        .collect();
    match report.chosen {
        Some(c) => Item::ok(
            "counters",
            format!(
                "{}; measure = \"instructions\" would count with {c} here (`ratchet calibrate --measure instructions` shows its slowdown and the spread of counts beside wall time's)",
                each.join("; ")
            ),
        ),
        None => Item::ok("counters", format!("{}; measure = \"instructions\" is not available here", each.join("; "))),
    }
}

/// The baseline's noise and the settings it suggests.
pub fn noise_item(gov: &Governance, c: &protocol::evaluation::Calibration) -> Item {
    let e = &gov.ethos;
    // Duet pairing is refused on Slurm (each side would be its own job): there, the quiet
    // hardware comes from an exclusive, pinned benchmark node.
    let quieter = if gov.constitution.jobs.is_local() {
        "pairing = \"duet\" (both sides at once on their own CPUs)"
    } else {
        "exclusive_bench = true and bench_cpu in constitution.md [constitution.jobs] (a whole, pinned Slurm node per run)"
    };
    let mut detail = format!("{}; first look at round {}", c.describe(), c.first_look);
    let mut advice = vec![];
    if c.first_look > e.min_rounds {
        advice.push(format!(
            "min_rounds = {} (now {}): the loop raises it to that by itself after its own calibration",
            c.first_look, e.min_rounds
        ));
    }
    match c.spread {
        Some(s) if s > 0.0 && e.min_effect > 0.0 => {
            let ratio = e.min_effect / s;
            detail
                .push_str(&format!("; min_effect {:.1}% is {ratio:.1}x the noise of one round", e.min_effect * 100.0));
            if ratio < 1.0 {
                advice.push(format!(
                    "min_effect of at least {:.1}% (twice the spread), {quieter}, or a quieter machine: an effect of {:.1}% drowns in ±{:.1}% per round",
                    s * 200.0,
                    e.min_effect * 100.0,
                    s * 100.0
                ));
            } else if ratio < 2.0 {
                advice.push(format!(
                    "expect undecided (HOLD, too noisy) verdicts near {:.1}%: max_rounds = {} caps each measurement; raise it, or min_effect",
                    e.min_effect * 100.0,
                    e.max_rounds
                ));
            }
        }
        None => advice.push("a quieter benchmark: its spread is undefined (the runs are too few or identical)".into()),
        _ => {}
    }
    if c.outlier_share > 0.2 {
        advice.push(format!(
            "{:.0}% of the rounds were outliers (bursts hitting one side): {quieter}",
            c.outlier_share * 100.0
        ));
    }
    if advice.is_empty() {
        Item::ok("noise", format!("{detail}; the settings in ethos.md suit it"))
    } else {
        Item::warn("noise", detail, Some("ethos.md".into()), Some(format!("consider {}", advice.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::evaluation::Calibration;
    use protocol::governance::{self, JobEngine, Pairing};

    fn demo_governance() -> Governance {
        let texts = governance::DOCS
            .iter()
            .map(|d| (d.to_string(), crate::demo_target::file(d).expect("embedded").to_string()))
            .collect();
        Governance::from_texts(texts).expect("the demo's documents parse")
    }

    /// Noise far above min_effect, with bursts: the advice names a way to quieter rounds that this
    /// job engine allows (duet is refused on Slurm).
    #[test]
    fn the_noise_advice_suits_the_job_engine() {
        let c = Calibration {
            pairing: Pairing::Sequential,
            base: "abc".into(),
            rounds: 8,
            spread: Some(0.2),
            outlier_share: 0.5,
            first_look: 5,
            at: "2026-11-29T18:00:00Z".into(),
            pairs: vec![],
            counter: None,
        };
        let mut gov = demo_governance();
        let advice = |gov: &Governance| {
            let item = noise_item(gov, &c);
            assert_eq!(item.status, Status::Warn, "{item:?}");
            item.fix.expect("advice")
        };
        let local = advice(&gov);
        assert!(local.matches("pairing = \"duet\"").count() == 2 && !local.contains("exclusive_bench"), "{local}");
        gov.constitution.jobs.engine = JobEngine::Slurm;
        let slurm = advice(&gov);
        assert!(!slurm.contains("duet") && slurm.matches("exclusive_bench = true").count() == 2, "{slurm}");
    }
}
