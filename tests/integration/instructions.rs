//! ethos.md `measure = "instructions"` end to end: the real swarm counts a real benchmark's
//! instructions (perf where the CPU's counters work inside the sandbox, else callgrind), decides
//! in a couple of rounds whatever else the machine does, and guards a PROMOTE with a paired
//! wall-time check. Decisions and counts are asserted, never timings.

use std::process::Command;
use std::time::Duration;

use ratchet_tests::ProcGuard;
use ratchet_tests::fixture::{Proposer, Spec, Target, of_type};
use serde_json::Value;

const RUN: Duration = Duration::from_secs(600);

/// A CPU-bound shell loop (builtins only: one process, so a counted run starts fast) of
/// `work` * 2 steps; the "sleepy" variant does a tenth less work but sleeps 0.3 s, which no
/// instruction count sees. It prints a checksum, which this mode does not read.
const SH_BENCH: &str = r#"#!/bin/sh
work=1300; variant=plain
while IFS=' =' read -r key value || [ -n "$key" ]; do
  case "$key" in work) work=$value ;; variant) variant=$value ;; esac
done < params.toml
n=$((work * 2))
if [ "$variant" = '"sleepy"' ]; then n=$((n * 9 / 10)); sleep 0.3; fi
i=0; x=1
while [ $i -lt $n ]; do x=$(( (x * 31 + i) % 1000003 )); i=$((i + 1)); done
echo "{\"checksum\": $x}"
"#;

/// A busy loop pinned to one CPU for as long as the guard lives.
fn cpu_hog(cpu: usize) -> ProcGuard {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"]);
    ProcGuard::spawn(cmd)
}

/// A candidate's evaluated event (the last one of its branch).
fn evaluated<'a>(events: &'a [Value], summary: &Value, key: &str) -> &'a Value {
    let c = ["promoted", "rejected", "held"]
        .iter()
        .flat_map(|l| summary[*l].as_array().into_iter().flatten())
        .find(|i| i["approach"].as_str() == Some(key))
        .unwrap_or_else(|| panic!("no decision for {key} in {summary:#}"));
    let branch = c["branch"].as_str().expect("a branch");
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "evaluated" && e["branch"] == branch)
        .unwrap_or_else(|| panic!("no evaluated event of {branch}"))
}

fn reasons(ev: &Value) -> Vec<&str> {
    ev["reasons"].as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// One cycle while a busy loop holds one CPU: 4% fewer instructions is promoted after two
/// rounds (the counts repeat exactly, so two runs a side agree at once), a no-op (a label) is
/// held as no change, and a candidate that does 10% less work but sleeps is rejected by the
/// wall-time guard with both measurements in its evidence. The calibration at the start counts
/// the baseline against itself. `ratchet explain` says it was an instruction count.
#[test]
fn instruction_counts_decide_in_two_rounds_under_a_cpu_hog_and_the_wall_time_guard_blocks_a_sleeper() {
    let t = Target::new(Spec {
        candidates: 3,
        max_cycles: 1,
        proposer: Proposer::Sweep(vec![
            ("work".into(), vec!["1300".into(), "1250".into()]),
            ("label".into(), vec!["\"baseline\"".into(), "\"tuned\"".into()]),
            ("variant".into(), vec!["\"plain\"".into(), "\"sleepy\"".into()]),
        ]),
        files: vec![
            ("params.toml".into(), "delay_ms = 100\nlabel = \"baseline\"\nwork = 1300\nvariant = \"plain\"\n".into()),
            ("bench/bench.sh".into(), SH_BENCH.into()),
        ],
        benchmark: "sh bench/bench.sh".into(),
        metric: "checksum".into(),
        direction: "lower".into(),
        min_effect: 0.02,
        // The wall-time guard's false rejection of a real improvement is bounded by 1%.
        confidence: 0.99,
        min_rounds: 7,
        max_rounds: 14,
        calibration_rounds: 2,
        bench_timeout_s: 300,
        ethos_extra: "measure = \"instructions\"\ncount_tolerance = 0.001\nguard_wall_time = true".into(),
        ..Spec::default()
    });
    // Alone with its hog: the wall-time guard and the other CPU-hog tests measure wall time.
    let _one = crate::evaluation::one_hog();
    let cpus = kit::exec::available_cpus();
    let _hog = cpu_hog(*cpus.last().expect("a CPU"));
    let run = t.up_once(&[], RUN);
    let s = &run.summary;
    let events = t.events();

    // The calibration counted the baseline against itself: the counts repeat.
    let cal = of_type(&events, "calibrated").first().map(|e| (*e).clone()).expect("a calibration at the start");
    let counter = cal["calibration"]["counter"].as_str().expect("a counted calibration").to_string();
    assert!(counter == "perf" || counter == "callgrind", "{cal:#}");
    assert!(cal["calibration"]["spread"].as_f64().is_some_and(|x| x < 0.001), "{cal:#}");

    // 4% fewer instructions: promoted after two rounds, the wall-time guard passed.
    let better = evaluated(&events, s, "work=1250");
    assert_eq!(better["outcome"], "better", "{better:#}");
    let why = reasons(better);
    assert!(why[0].starts_with("PROMOTE: instructions fewer by 3."), "{why:#?}");
    let sampling = &better["sampling"];
    assert_eq!(
        (sampling["measure"].as_str(), sampling["counter"].as_str(), sampling["stopping"].as_str()),
        (Some("instructions"), Some(counter.as_str()), Some("agreed")),
        "{sampling:#}"
    );
    assert_eq!(sampling["rounds"], 2, "{sampling:#}");
    assert!(why.iter().any(|r| r.starts_with("wall-time guard pass: ")), "{why:#?}");
    assert!(sampling["wall_time"]["rounds"].as_u64().is_some_and(|r| r >= 7), "{sampling:#}");
    let promoted: Vec<String> =
        run.list("promoted").iter().filter_map(|p| p["approach"].as_str().map(str::to_string)).collect();
    assert!(promoted.iter().any(|p| p == "work=1250"), "{s:#}");
    // Counted runs say so in the evidence; the counts of the same side are equal.
    let commands: Vec<&str> =
        better["stats"]["runs"].as_array().into_iter().flatten().filter_map(|r| r["command"].as_str()).collect();
    assert!(commands.iter().any(|c| c.ends_with(&format!("under {counter}"))), "{commands:#?}");

    // The no-op: no change that matters, in two rounds, and no wall-time check.
    let noop = evaluated(&events, s, "label=tuned");
    assert_eq!(
        (noop["outcome"].as_str(), noop["sampling"]["rounds"].as_u64()),
        (Some("no-change"), Some(2)),
        "{noop:#}"
    );
    let why = reasons(noop);
    assert!(
        why[0].starts_with("HOLD: no change that matters: instructions ") && why[0].ends_with("within ±2.0%"),
        "{why:#?}"
    );
    let change = noop["stats"]["stats"]["effect"].as_f64().expect("an effect");
    assert!(change.abs() < 0.001, "a label changes the count by little: {change}");
    assert!(noop["sampling"]["wall_time"].is_null());

    // Fewer instructions but a sleep: the counts say PROMOTE, the wall-time guard rejects it.
    let sleeper = evaluated(&events, s, "variant=sleepy");
    let why = reasons(sleeper);
    assert_eq!(sleeper["outcome"], "guard-regressed", "{why:#?}");
    assert!(
        why[0].starts_with("REJECT: guard wall_time regressed: wall_time_ms worse by ")
            && why[0].contains("; yet the candidate executes 9."),
        "{why:#?}"
    );
    assert!(why.iter().any(|r| r.starts_with("wall-time guard FAIL: ")), "{why:#?}");
    assert_eq!(sleeper["sampling"]["stopping"], "agreed", "the counts decided first: {sleeper:#}");
    assert_eq!(sleeper["sampling"]["wall_time"]["measure"], Value::Null, "the guard measured wall time");

    // explain: the measure, the counter and both verdicts.
    let commit = run
        .list("promoted")
        .iter()
        .find(|p| p["approach"] == "work=1250")
        .and_then(|p| p["commit"].as_str().map(str::to_string))
        .expect("the promoted commit");
    let out = t.ratchet(&["explain", &commit]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "PROMOTE: instructions fewer by 3.",
        &format!("measure: instructions, counted by {counter}; two runs of a side agree within 0.10%"),
        "fewer instructions, interval [+3.",
        "wall-time guard pass",
        "  wall-time guard (native runs, wall_time_ms, lower is better):\n    pairing: sequential, ",
    ] {
        assert!(text.contains(needle), "explain lacks {needle:?}:\n{text}");
    }

    // ratchet calibrate: which counters work, the slowdown under the chosen one, both spreads.
    let out = t.ratchet(&["calibrate"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with(&format!("calibrated: instruction counts ({counter}): spread ±")), "{text}");
    for needle in [
        "counters (probed in the benchmark's sandbox):\n  perf: ",
        "\n  callgrind: works: counted ",
        &format!("slowdown under {counter}: "),
        "run-to-run spread per round: instruction counts ±",
    ] {
        assert!(text.contains(needle), "calibrate lacks {needle:?}:\n{text}");
    }
    let slowdown = text.split(&format!("slowdown under {counter}: ")).nth(1).and_then(|r| r.split('x').next());
    let slowdown: f64 = slowdown.and_then(|x| x.parse().ok()).unwrap_or_else(|| panic!("no slowdown in {text}"));
    assert!(slowdown > 1.0, "counting costs time: {text}");

    // ratchet check says the same before a run: the counters, the slowdown, both spreads.
    let out = t.ratchet(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let line =
        text.lines().find(|l| l.trim_start().starts_with("ok    counters: ")).unwrap_or_else(|| panic!("{text}"));
    for needle in ["callgrind: works: ", &format!("slowdown under {counter}: "), "instruction counts ±"] {
        assert!(line.contains(needle), "the counters line lacks {needle:?}: {line}");
    }
}
