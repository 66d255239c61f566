//! The benchmark Ratchet's own swarm optimises (ethos.md at the repository root): the protocol
//! crate's per-cycle hot paths, on a fixed workload.
//!
//! One round: 2,000 events written as JSONL lines and parsed back (every stage of the loop
//! appends events; `ratchet explain` reads them all), 2,000 A2A messages with a data part
//! serialised and parsed (every task hand-off), 200 parses of the three governance documents
//! (the coordinator validates them on every approval and reload), and 20,000 glob matches (the
//! critic's protected-path rail). Prints the median round time of 15 rounds, after 3 uncounted
//! ones, as `{"ms": ...}` on its last line.
//!
//! Run: `scripts/bench` (= `cargo run --release --quiet -p ratchet-protocol --example bench`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use ratchet_protocol::events::{EvaluatedStats, Event, EventKind};
use ratchet_protocol::governance::{Governance, glob_match};
use ratchet_protocol::{Message, Part, Role};
use serde_json::json;

const ROUNDS: usize = 15;
const WARMUP: usize = 3;

const CONSTITUTION: &str = "# Constitution\n\n```toml ratchet\n[constitution]\n\
protected_paths = [\"constitution.md\", \"ethos.md\", \"cadence.md\", \"bench/**\", \".github/**\"]\n\
max_diff_lines = 300\nmax_files_changed = 8\n\n[[constitution.rules]]\nid = \"r1\"\ntext = \"keep out\"\n\
forbid_paths = [\"vendor/**\"]\n```\n";
const ETHOS: &str = "# Ethos\n\n```toml ratchet\n[ethos]\ngoal = \"faster\"\ngates = [\"make\", \"make test\"]\n\
test_command = \"make test\"\nbenchmark = \"bench/run\"\nbenchmark_paths = [\"bench/**\"]\nmetric = \"ms\"\n\
direction = \"lower\"\nconfidence = 0.95\nmin_effect = 0.02\npairing = \"sequential\"\nmin_rounds = 5\n\
max_rounds = 30\ngate_timeout_s = 600\nbench_timeout_s = 60\n```\n";
const CADENCE: &str = "# Cadence\n\n```toml ratchet\n[cadence]\ncandidates = 3\nwarmup = 1\n\
stall_limit = 3\nbreaker_limit = 5\nlease_ttl_s = 30\nmax_attempts = 3\npromotion = \"auto\"\nmax_cycles = 8\n\
max_wall_s = 0\n\n[proposer]\nstrategy = \"sweep\"\nfile = \"params.toml\"\n\n[proposer.space]\n\
algorithm = [\"a\", \"b\", \"c\"]\ncutoff = [4, 8, 16, 32]\n```\n";

fn round(paths: &[String]) -> usize {
    let mut work = 0;
    let mut hashes = BTreeMap::new();
    hashes.insert("ethos.md".to_string(), "ab".repeat(32));
    for i in 0..2000u64 {
        let mut e = Event::new(
            "run-0123456789abcdef",
            EventKind::Evaluated {
                candidate: format!("sweep-cutoff-{i}"),
                verdict: ratchet_protocol::work::Verdict::Hold,
                reasons: vec!["improvement fail: median 10.0 -> 9.9".into(), "significance fail".into()],
                stats: Box::new(EvaluatedStats {
                    rounds: Some(7),
                    baseline_median: Some(10.0),
                    candidate_median: Some(9.9),
                    effect: Some(0.01),
                    ..Default::default()
                }),
                outcome: None,
                sampling: None,
            },
        );
        e.cycle = Some(i / 3);
        e.branch = Some(format!("r01-c{}-{}", i / 3, i % 3));
        e.governance = hashes.clone();
        let line = serde_json::to_string(&e).expect("events serialize");
        let back: Event = serde_json::from_str(&line).expect("events parse");
        work += line.len() + back.type_name().len();
    }
    for i in 0..2000u64 {
        let m = Message::new(
            Role::User,
            format!("msg-{i}"),
            vec![Part::data(
                json!({"skill": "critique", "input": {"branch": "r01-c1-1", "task_id": "critique", "n": i}}),
            )],
        );
        let text = serde_json::to_string(&m).expect("messages serialize");
        let back: Message = serde_json::from_str(&text).expect("messages parse");
        work += back.data().map_or(0, |d| d.len());
    }
    for _ in 0..200 {
        let texts = [("constitution.md", CONSTITUTION), ("ethos.md", ETHOS), ("cadence.md", CADENCE)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let g = Governance::from_texts(texts).expect("the bench's documents are valid");
        work += g.constitution.protected_paths.len();
    }
    let patterns = ["constitution.md", "bench/**", ".github/**", "src/*.rs", "**/*.md", "vendor/"];
    for i in 0..20_000 {
        let path = &paths[i % paths.len()];
        work += patterns.iter().filter(|p| glob_match(p, path)).count();
    }
    work
}

fn main() {
    let paths: Vec<String> = (0..64)
        .map(|i| match i % 4 {
            0 => format!("src/module_{i}.rs"),
            1 => format!("bench/data/set_{i}/input.txt"),
            2 => format!("docs/chapter_{i}/notes.md"),
            _ => format!("vendor/lib_{i}/src/deep/file.c"),
        })
        .collect();
    let mut times = vec![];
    for r in 0..WARMUP + ROUNDS {
        let t = Instant::now();
        black_box(round(black_box(&paths)));
        if r >= WARMUP {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("{{\"ms\": {median:.3}}}");
}
