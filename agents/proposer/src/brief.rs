//! What a proposer is told about the run, the same text for every strategy that has someone to
//! tell (`command`'s program on stdin, `openai`'s model in the user message): the metric and
//! where the baseline stands, what was tried (by its summary, never a bare key) and what became
//! of it with the reason and the numbers, what was dropped before it became a candidate, and the
//! banned approaches with why.

use protocol::governance::Governance;
use protocol::work::{ProposeInput, Tried, Verdict};

/// At most this many history entries are shown (the most recent), so a long run does not grow
/// the prompt without bound; the banned list is always whole.
pub const HISTORY_SHOWN: usize = 24;
/// Longest reason shown, in characters.
const REASON_MAX: usize = 200;

/// The briefing: a markdown text, and the banned approaches one a line (`RATCHET_BANNED`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Brief {
    pub text: String,
    pub banned: Vec<String>,
}

fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x:.1}");
    }
    let prec = (2 - x.abs().log10().floor() as i32).clamp(1, 6) as usize;
    format!("{x:.prec$}")
}

fn effect_words(e: f64) -> String {
    let pct = e.abs() * 100.0;
    if pct < 0.05 {
        "no change".into()
    } else if e > 0.0 {
        format!("{pct:.1}% better")
    } else {
        format!("{pct:.1}% worse")
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > REASON_MAX {
        format!("{}...", s.chars().take(REASON_MAX).collect::<String>())
    } else {
        s.into()
    }
}

fn label(t: &Tried) -> String {
    if t.summary.trim().is_empty() { t.key.clone() } else { format!("\"{}\"", t.summary.trim()) }
}

/// `ms 300.0 -> 100.0 (66.7% better)`, or the effect alone, or "".
fn numbers(t: &Tried, metric: &str) -> String {
    let effect = t.effect.map(effect_words);
    match (t.before, t.after, effect) {
        (Some(b), Some(a), Some(e)) => format!("{metric} {} -> {} ({e})", num(b), num(a)),
        (Some(b), Some(a), None) => format!("{metric} {} -> {}", num(b), num(a)),
        (_, _, Some(e)) => e,
        _ => String::new(),
    }
}

fn entry(t: &Tried, metric: &str) -> String {
    let mut parts = vec![];
    let n = numbers(t, metric);
    if !n.is_empty() {
        parts.push(n);
    }
    if let Some(r) = t.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        parts.push(clip(r));
    }
    let tail = if parts.is_empty() { String::new() } else { format!(": {}", parts.join("; ")) };
    format!("- cycle {}: {}{tail}\n", t.cycle, label(t))
}

/// The briefing for `input` under `gov`.
pub fn brief(input: &ProposeInput, gov: &Governance) -> Brief {
    let metric = &gov.ethos.metric;
    let direction = format!("{:?}", gov.ethos.direction).to_lowercase();
    let mut s = String::from("# Where things stand\n\n");
    let base = &input.baseline[..12.min(input.baseline.len())];
    s.push_str(&format!("The metric is `{metric}` ({direction} is better). "));
    match (input.metric, input.start_metric) {
        (Some(now), Some(start)) if (now - start).abs() > f64::EPSILON * start.abs().max(1.0) => s.push_str(&format!(
            "The baseline (main at {base}) measures {} {metric}; the run started at {}.\n",
            num(now),
            num(start)
        )),
        (Some(now), _) => s.push_str(&format!("The baseline (main at {base}) measures {} {metric}.\n", num(now))),
        (None, _) => s.push_str(&format!("The baseline is main at {base}; it has not been measured yet.\n")),
    }
    let history: Vec<&Tried> =
        input.history.iter().rev().take(HISTORY_SHOWN).collect::<Vec<_>>().into_iter().rev().collect();
    s.push_str("\n# What was tried\n\n");
    if history.is_empty() {
        s.push_str("Nothing yet: this is the run's first proposal.\n");
    }
    // Every verdict is in one group (the type has no other).
    let groups: [(&str, &[Verdict]); 5] = [
        ("Promoted onto main (built on, do not repeat)", &[Verdict::Promoted]),
        ("Promotable, but another candidate went onto main, or waiting for a person", &[Verdict::Promote]),
        (
            "Held: no change that matters, or not enough evidence (try something that moves the metric more)",
            &[Verdict::Hold, Verdict::Infra],
        ),
        ("Rejected: worse, failing or refused (do not propose again)", &[Verdict::Reject, Verdict::Failed]),
        ("Dropped before it became a candidate", &[Verdict::Dropped]),
    ];
    for (title, verdicts) in groups {
        let items: Vec<&&Tried> = history.iter().filter(|t| verdicts.contains(&t.verdict)).collect();
        if items.is_empty() {
            continue;
        }
        s.push_str(&format!("{title}:\n"));
        for t in items {
            s.push_str(&entry(t, metric));
        }
        s.push('\n');
    }
    if input.history.len() > HISTORY_SHOWN {
        s.push_str(&format!("({} earlier attempts not shown.)\n\n", input.history.len() - HISTORY_SHOWN));
    }
    s.push_str("# Banned approaches\n\n");
    let banned: Vec<String> = input
        .banned
        .iter()
        .map(|key| match input.history.iter().rev().find(|t| &t.key == key) {
            Some(t) => {
                let why = t.reason.as_deref().map(|r| format!(": {}", clip(r))).unwrap_or_default();
                format!("{} ({} in cycle {}{why})", label(t), t.verdict.as_str().to_lowercase(), t.cycle)
            }
            None => key.clone(),
        })
        .collect();
    if banned.is_empty() {
        s.push_str("(none)\n");
    } else {
        s.push_str("These failed; never propose them again:\n");
        for b in &banned {
            s.push_str(&format!("- {b}\n"));
        }
    }
    Brief { text: s, banned }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(key: &str, verdict: Verdict, summary: &str, reason: Option<&str>, nums: Option<(f64, f64, f64)>) -> Tried {
        Tried {
            key: key.into(),
            verdict,
            effect: nums.map(|n| n.2),
            cycle: 1,
            summary: summary.into(),
            reason: reason.map(String::from),
            before: nums.map(|n| n.0),
            after: nums.map(|n| n.1),
        }
    }

    #[test]
    fn the_briefing_names_summaries_reasons_and_numbers() {
        let gov = Governance::from_texts(
            protocol::governance::DOCS
                .iter()
                .map(|d| {
                    let root =
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../coordinator/templates").join(d);
                    let text = std::fs::read_to_string(root)
                        .unwrap()
                        .replace("{{GATES}}", "[\"true\"]")
                        .replace("{{TEST_COMMAND}}", "\"true\"")
                        .replace("{{TRUSTED_TESTS}}", "[\"tests/**\"]")
                        .replace("{{TRUSTED_CHECKOUT}}", "\"reuse\"")
                        .replace("{{APPEND_ONLY}}", "[\"tests/**\"]");
                    (d.to_string(), text)
                })
                .collect(),
        )
        .unwrap();
        let input = ProposeInput {
            baseline: "0123456789abcdef".into(),
            n: 1,
            history: vec![
                t("command:aaaa", Verdict::Promoted, "halve the delay", None, Some((300.0, 150.0, 0.5))),
                t(
                    "command:bbbb",
                    Verdict::Hold,
                    "rename the label",
                    Some("improvement FAIL: no change"),
                    Some((150.0, 150.0, 0.0)),
                ),
                t("command:cccc", Verdict::Failed, "break the gate", Some("execute: gate `sh check.sh` failed"), None),
                t(
                    "command:dddd",
                    Verdict::Dropped,
                    "halve the delay again",
                    Some("duplicate of an approach already tried"),
                    None,
                ),
            ],
            banned: vec!["command:cccc".into()],
            governance: Default::default(),
            model: None,
            metric: Some(150.0),
            start_metric: Some(300.0),
        };
        let b = brief(&input, &gov);
        for want in [
            "`ms` (lower is better)",
            "measures 150.0 ms; the run started at 300.0",
            "Promoted onto main",
            "\"halve the delay\": ms 300.0 -> 150.0 (50.0% better)",
            "Held",
            "\"rename the label\": ms 150.0 -> 150.0 (no change); improvement FAIL: no change",
            "Rejected",
            "\"break the gate\": execute: gate `sh check.sh` failed",
            "Dropped",
            "\"halve the delay again\": duplicate of an approach already tried",
            "never propose them again:\n- \"break the gate\" (failed in cycle 1: execute: gate `sh check.sh` failed)",
        ] {
            assert!(b.text.contains(want), "{want:?} missing from:\n{}", b.text);
        }
        assert!(!b.text.contains("command:"), "a bare key reached the briefing:\n{}", b.text);
        assert_eq!(b.banned, ["\"break the gate\" (failed in cycle 1: execute: gate `sh check.sh` failed)"]);
    }
}
