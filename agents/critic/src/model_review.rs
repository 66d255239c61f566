//! The model review rail: after the deterministic rails pass, a declared model (ethos.md
//! `[ethos.review] model`) reviews the diff against the rubric (`[ethos.review] rubric`) and
//! answers a verdict with findings in one fixed JSON shape ([`ModelVerdict`]).
//!
//! The shape is asked for as a JSON schema (`response_format` `json_schema`, grammar-constrained
//! where the server supports it) and validated always ([`validate`]): an answer that does not
//! parse or does not fit is never a pass. It is asked once more; when that fails too, the review
//! is an infrastructure failure (the task is retried by the lease substrate, and a candidate whose
//! review never succeeds ends INFRA, never counted against it, never promoted).
//!
//! constitution.md `model_review` decides what the verdict does: `advisory` records every
//! finding as a warning; `blocking` turns a `block` verdict into a blocking finding.

use std::path::Path;
use std::time::Duration;

use kit::model::ModelClient;
use protocol::models::{CallOutcome, ModelCall, ModelId, ReviewMode, ReviewSettings};
use serde_json::{Value, json};

use crate::{Finding, Review, Severity};

pub const RAIL: &str = "model-review";
/// Most characters of a finding's message.
pub const MESSAGE_MAX: usize = 160;
/// Answers asked per review before it is an infrastructure failure.
pub const ATTEMPTS: usize = 2;

pub use protocol::work::{ModelFinding, ModelVerdict};

/// The JSON schema of [`ModelVerdict`] for this diff: files limited to those it changes.
pub fn schema(files: &[String], max_findings: u32) -> Value {
    let file = if files.is_empty() { json!({"type": "string", "maxLength": 200}) } else { json!({"enum": files}) };
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["verdict", "findings"],
        "properties": {
            "verdict": {"enum": ["pass", "block"]},
            "findings": {
                "type": "array",
                "maxItems": max_findings,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["severity", "file", "message"],
                    "properties": {
                        "severity": {"enum": ["block", "warn"]},
                        "file": file,
                        "message": {"type": "string", "minLength": 1, "maxLength": MESSAGE_MAX},
                    },
                },
            },
        },
    })
}

/// The stable system message (the rubric; the same for every candidate, so a server's prefix
/// cache reuses it) and the per-candidate user message (goal, summary, diff).
pub fn prompt(settings: &ReviewSettings, goal: &str, summary: &str, diff: &str) -> (String, String) {
    let rubric: Vec<String> =
        settings.rubric.iter().filter(|c| !c.trim().is_empty()).map(|c| format!("- {}", c.trim())).collect();
    let system = format!(
        "You review one proposed code change. Check the diff against this rubric:\n{}\n\n\
         Answer with JSON only: {{\"verdict\": \"pass\" or \"block\", \"findings\": [{{\"severity\": \"block\" or \"warn\", \
         \"file\": a changed file, \"message\": what is wrong}}]}}, at most {} findings. Block only a change that breaks the rubric.",
        rubric.join("\n"),
        settings.max_findings
    );
    let max = settings.max_diff_bytes as usize;
    let shown = if diff.len() > max {
        let mut cut = max;
        while !diff.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}\n[... the diff is cut here: {} of {} bytes shown]\n", &diff[..cut], cut, diff.len())
    } else {
        diff.to_string()
    };
    let user = format!("Goal of the project: {goal}\nThe change: {summary}\n\n```diff\n{shown}```");
    (system, user)
}

/// Parse and check an answer against the fixed shape. Every problem is named.
pub fn validate(text: &str, files: &[String], max_findings: u32) -> Result<ModelVerdict, String> {
    let body = text.trim();
    // Servers without schema support may wrap the JSON in a fence.
    let body = body
        .strip_prefix("```json")
        .or_else(|| body.strip_prefix("```"))
        .and_then(|b| b.trim_end().strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(body);
    let v: ModelVerdict =
        serde_json::from_str(body).map_err(|e| format!("the answer is not the review's JSON shape: {e}"))?;
    if !matches!(v.verdict.as_str(), "pass" | "block") {
        return Err(format!("verdict {:?} is neither \"pass\" nor \"block\"", v.verdict));
    }
    if v.findings.len() > max_findings as usize {
        return Err(format!("{} findings, over the limit of {max_findings}", v.findings.len()));
    }
    for (i, f) in v.findings.iter().enumerate() {
        if !matches!(f.severity.as_str(), "block" | "warn") {
            return Err(format!("finding {i}: severity {:?} is neither \"block\" nor \"warn\"", f.severity));
        }
        if f.message.trim().is_empty() || f.message.chars().count() > MESSAGE_MAX {
            return Err(format!("finding {i}: the message is empty or over {MESSAGE_MAX} characters"));
        }
        if !files.is_empty() && !files.contains(&f.file) {
            return Err(format!("finding {i}: file {:?} is not a file the diff changes", f.file));
        }
    }
    Ok(v)
}

/// Ask the model, up to [`ATTEMPTS`] times, for a valid review. Returns the verdict (or why
/// none came) and every call's evidence.
pub async fn ask(
    id: ModelId,
    endpoint: &protocol::models::ModelEndpoint,
    settings: &ReviewSettings,
    goal: &str,
    summary: &str,
    diff: &str,
    files: &[String],
) -> (Result<ModelVerdict, String>, Vec<ModelCall>) {
    let client = match ModelClient::new(id, endpoint, Duration::from_secs(settings.timeout_s)) {
        Ok(c) => c,
        Err(e) => return (Err(e.to_string()), vec![]),
    };
    let (system, user) = prompt(settings, goal, summary, diff);
    let schema = schema(files, settings.max_findings);
    let mut calls = vec![];
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let (answer, mut call) = client.chat("review", &system, &user, Some(&schema)).await;
        let checked = answer.map_err(|e| e.to_string()).and_then(|text| {
            validate(&text, files, settings.max_findings).inspect_err(|why| {
                call.outcome = CallOutcome::Malformed;
                call.detail = Some(why.clone());
            })
        });
        calls.push(call);
        match checked {
            Ok(v) => return (Ok(v), calls),
            Err(e) => last = e,
        }
    }
    (Err(format!("no valid review in {ATTEMPTS} answers; the last: {last}")), calls)
}

/// Add the model's verdict to the rails' review, as `mode` says it counts.
pub fn merge(review: &mut Review, verdict: &ModelVerdict, mode: ReviewMode, reviewer: &ModelId) {
    let blocking = mode == ReviewMode::Blocking && verdict.verdict == "block";
    let mut added = 0;
    let mut blocked = false;
    for f in &verdict.findings {
        let severity = if blocking && f.severity == "block" { Severity::Block } else { Severity::Warn };
        blocked |= severity == Severity::Block;
        review.findings.push(Finding {
            rail: RAIL.into(),
            severity,
            file: Some(f.file.clone()),
            line: None,
            message: f.message.trim().to_string(),
            evidence: format!("reviewer {reviewer}: verdict {} ({} review)", verdict.verdict, mode_name(mode)),
            class: None,
        });
        added += 1;
    }
    if blocking && !blocked {
        review.findings.push(Finding {
            rail: RAIL.into(),
            severity: Severity::Block,
            file: None,
            line: None,
            message: "the model reviewer's verdict is block".into(),
            evidence: format!("reviewer {reviewer}: verdict block with no blocking finding (blocking review)"),
            class: None,
        });
    }
    if blocking {
        review.pass = false;
    }
    review.summary.push_str(&format!(
        "; model review by {}: {} ({added} findings, {})",
        reviewer.name,
        verdict.verdict,
        mode_name(mode)
    ));
}

fn mode_name(mode: ReviewMode) -> &'static str {
    match mode {
        ReviewMode::Off => "off",
        ReviewMode::Advisory => "advisory",
        ReviewMode::Blocking => "blocking",
    }
}

/// The diff between `parent` and `commit`, and the files it changes.
pub fn diff_of(repo: &Path, parent: &str, commit: &str) -> Result<(String, Vec<String>), crate::CriticError> {
    let diff = crate::git::git(repo, ["diff", "--no-color", "--no-ext-diff", parent, commit])?;
    let names = crate::git::git(repo, ["diff", "--name-only", "--no-renames", parent, commit])?;
    let files = String::from_utf8_lossy(&names).lines().filter(|l| !l.is_empty()).map(String::from).collect();
    Ok((String::from_utf8_lossy(&diff).into_owned(), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<String> {
        vec!["src/a.rs".into()]
    }

    #[test]
    fn valid_answers_pass_validation() {
        let v = validate(r#"{"verdict":"pass","findings":[]}"#, &files(), 3).unwrap();
        assert_eq!(v.verdict, "pass");
        let v = validate(
            "```json\n{\"verdict\":\"block\",\"findings\":[{\"severity\":\"block\",\"file\":\"src/a.rs\",\"message\":\"drops a check\"}]}\n```",
            &files(),
            3,
        )
        .unwrap();
        assert_eq!(v.findings[0].message, "drops a check");
    }

    #[test]
    fn invalid_answers_are_refused_with_the_reason() {
        for (answer, why) in [
            ("looks good to me", "not the review's JSON shape"),
            (r#"{"verdict":"ok","findings":[]}"#, "neither \"pass\" nor \"block\""),
            (r#"{"verdict":"pass"}"#, "missing field `findings`"),
            (r#"{"verdict":"pass","findings":[],"extra":1}"#, "unknown field `extra`"),
            (r#"{"verdict":"pass","findings":[{"severity":"low","file":"src/a.rs","message":"x"}]}"#, "severity"),
            (
                r#"{"verdict":"pass","findings":[{"severity":"warn","file":"src/b.rs","message":"x"}]}"#,
                "not a file the diff changes",
            ),
            (r#"{"verdict":"pass","findings":[{"severity":"warn","file":"src/a.rs","message":" "}]}"#, "empty"),
            (
                r#"{"verdict":"pass","findings":[{"severity":"warn","file":"src/a.rs","message":"a"},{"severity":"warn","file":"src/a.rs","message":"b"}]}"#,
                "over the limit of 1",
            ),
        ] {
            let e = validate(answer, &files(), 1).unwrap_err();
            assert!(e.contains(why), "{answer}: {e}");
        }
    }

    fn review() -> Review {
        Review { pass: true, findings: vec![], infra_error: None, summary: "pass (1 files, 2 lines)".into() }
    }

    fn id() -> ModelId {
        ModelId { name: "rev".into(), model: "m".into(), url: "http://127.0.0.1:1/v1".into() }
    }

    #[test]
    fn the_constitution_decides_what_a_block_does() {
        let block: ModelVerdict = serde_json::from_str(
            r#"{"verdict":"block","findings":[{"severity":"block","file":"src/a.rs","message":"bad"}]}"#,
        )
        .unwrap();
        let mut r = review();
        merge(&mut r, &block, ReviewMode::Advisory, &id());
        assert!(r.pass, "advisory never blocks");
        assert_eq!(r.findings[0].severity, Severity::Warn);
        let mut r = review();
        merge(&mut r, &block, ReviewMode::Blocking, &id());
        assert!(!r.pass && r.findings[0].severity == Severity::Block, "{r:?}");
        assert!(r.summary.contains("model review by rev: block"), "{}", r.summary);
        // A block verdict with only warnings still blocks, with a finding saying so.
        let bare: ModelVerdict = serde_json::from_str(r#"{"verdict":"block","findings":[]}"#).unwrap();
        let mut r = review();
        merge(&mut r, &bare, ReviewMode::Blocking, &id());
        assert!(!r.pass && r.findings.iter().any(|f| f.severity == Severity::Block));
        // A pass verdict never blocks, whatever its findings say.
        let pass: ModelVerdict = serde_json::from_str(
            r#"{"verdict":"pass","findings":[{"severity":"block","file":"src/a.rs","message":"hmm"}]}"#,
        )
        .unwrap();
        let mut r = review();
        merge(&mut r, &pass, ReviewMode::Blocking, &id());
        assert!(r.pass && r.findings[0].severity == Severity::Warn);
    }

    #[test]
    fn long_diffs_are_cut_and_say_so() {
        let s = ReviewSettings {
            model: "rev".into(),
            rubric: vec!["tests stay meaningful".into()],
            max_findings: 2,
            max_diff_bytes: 300,
            timeout_s: 5,
        };
        let (system, user) = prompt(&s, "g", "sum", &"+x\n".repeat(500));
        assert!(system.contains("- tests stay meaningful") && system.contains("at most 2 findings"));
        assert!(user.contains("the diff is cut here: 300 of 1500 bytes shown"), "{user}");
    }
}
