//! Switching the proposer's model on evidence: `ratchet models compare` on a real swarm between
//! two OpenAI-compatible endpoints whose answers are known (two small HTTP servers on loopback
//! standing in for external model servers: one always answers something unusable, the other a
//! real improvement), the PROMOTE it records, the governance proposal it writes, `ratchet
//! approve` of it, and the loop then proposing with the new model, `ratchet explain` showing the
//! compare behind it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ratchet_tests::fixture::{Proposer, Spec, Target, of_type};
use serde_json::{Value, json};

/// An OpenAI-compatible chat endpoint on loopback whose k-th answer (from 0) is `answer(k)`.
fn endpoint(answer: impl Fn(u32) -> String + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicU32::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let k = count.fetch_add(1, Ordering::SeqCst);
            let reply = json!({"id": format!("canned-{k}"), "choices": [{"message": {"role": "assistant", "content": answer(k)}}],
                               "usage": {"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 90}}})
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    url
}

#[test]
fn a_compare_promote_becomes_a_proposal_whose_approval_switches_the_proposer() {
    let useless = endpoint(|_| "I would rather not.".into());
    // Each answer a different real improvement: delay_ms 300 -> 100, 95, 90, ...
    let better = endpoint(|k| {
        json!({"summary": format!("sleep {} ms", 100 - 5 * k),
               "declaration": {"files": ["params.toml"], "rationale": "less sleep, less time", "effect": "better"},
               "file": "params.toml", "find": "delay_ms = 300", "replace": format!("delay_ms = {}", 100 - 5 * k)})
        .to_string()
    });
    let decl = |url: &str| format!("url = {url:?}\nmodel = \"m\"\n");
    let t = Target::new(Spec {
        proposer: Proposer::Model("old".into()),
        models: vec![("old".into(), decl(&useless)), ("new".into(), decl(&better))],
        ..Spec::default()
    });
    let old_main = t.main();
    {
        let mut cmd = t.command(&ratchet_tests::bin("ratchet"));
        cmd.args(["up", "--no-loop", "--repo"]).arg(t.path());
        let mut swarm = ratchet_tests::Swarm::start(cmd);
        swarm.wait_for("swarm up", Duration::from_secs(60));
        let r = t.ratchet_json(&["models", "compare", "old", "new", "--tasks", "5"]);
        assert_eq!(r["decision"], "PROMOTE", "{r:#}");
        assert_eq!(r["candidate"]["outcomes"], json!(vec!["PROMOTE"; 5]), "{r:#}");
        assert_eq!(r["current"]["outcomes"], json!(vec!["no-proposal"; 5]), "{r:#}");
        assert_eq!(
            (r["stats"]["candidate_only"].as_u64(), r["stats"]["p_better"].as_f64()),
            (Some(5), Some(1.0 / 32.0))
        );
        assert_eq!(t.main(), old_main, "a compare promotes nothing");
        let switch = r["switch"].as_str().expect("a switch proposal");
        let id = switch.split_whitespace().find(|w| w.starts_with("p-")).expect("an id").trim_end_matches(':');
        // Nothing changed yet: the proposal waits for a person.
        let g = t.ratchet_json(&["governance"]);
        let listed = g.to_string();
        assert!(listed.contains(id) && listed.contains("model = \\\"new\\\""), "{g:#}");
        let out = t.ratchet(&["approve", id, "--by", "tester"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(t.read("cadence.md").contains("model = \"new\""));
    }
    // The loop now proposes with the new model; explain shows the compare behind the promotion.
    let run = t.up_once(&["--max-cycles", "1"], Duration::from_secs(180));
    let promoted = run.list("promoted");
    assert_eq!(promoted.len(), 1, "{:#}", run.summary);
    let producer = promoted[0]["models"]["producer"].as_str().expect("a producer").to_string();
    assert!(producer.starts_with("new: m @ "), "{producer}");
    let x = t.ratchet_json(&["explain", promoted[0]["commit"].as_str().expect("commit")]);
    assert_eq!(x["model_choice"]["type"], "model_compared", "{:#}", x["model_choice"]);
    assert_eq!(x["model_choice"]["decision"], "PROMOTE");
    assert_eq!(x["model_choice"]["candidate"], producer.as_str());
    let events: Vec<Value> = t.events();
    assert_eq!(of_type(&events, "model_compared").len(), 1);
}
