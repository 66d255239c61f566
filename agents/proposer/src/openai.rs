//! The `openai` strategy: ask a declared model (any OpenAI-compatible chat endpoint: llama.cpp
//! server, vLLM, Ollama, the local model route) for one change as a unified diff.
//!
//! The governance context goes first as the system message, byte-identical between calls, so a
//! model server's prefix cache can reuse it; the user message carries the goal, the files of the
//! baseline and the briefing (where the metric stands, what was tried and why it did not go
//! onto main, the banned approaches: [`crate::brief`], the text a `command` program gets on
//! stdin). The answer's diff (a fenced ```diff block, or the
//! whole answer when it is a bare diff) must apply to the baseline (`git apply --check` in the
//! scratch checkout) to become a proposal.
//!
//! Declare, then verify: the answer carries the proposal's declaration (files, a one-line
//! rationale, optionally the tests it adds and the effect it expects) beside its change, as JSON.
//! An endpoint with constrained output is held to a JSON schema with a required `declaration`
//! object; others are asked for a ```json block before the diff. Either way the declaration is
//! validated ([`protocol::rails::Declaration::from_json`]): an invalid one makes the answer
//! malformed; a diff answer without one becomes a proposal without a declaration, whose scope
//! the critic reports unverified.

use std::path::Path;

use kit::model::ModelClient;
use protocol::models::{CallOutcome, ModelCall};
use protocol::rails::Declaration;
use serde_json::{Value, json};

use crate::{Proposal, ProposalError, slug};

/// `git -C dir args` through `kit::git`, with `stdin` fed to it when given; stdout as text.
fn git_blocking(dir: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, ProposalError> {
    let git = kit::git::Git::new(dir);
    let out = match stdin {
        Some(text) => git.run_input(args, text.as_bytes()),
        None => git.run_bytes(args),
    };
    let out = out.map_err(|e| ProposalError::git(dir, args, e))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The diff in a model's answer: the first ```diff (or ```patch) block, else the answer itself
/// when it starts like a diff.
pub fn extract_diff(answer: &str) -> Option<String> {
    for fence in ["```diff", "```patch"] {
        if let Some(start) = answer.find(fence) {
            let body = &answer[start + fence.len()..];
            let body = body.strip_prefix('\n').unwrap_or(body);
            let end = body.find("```").unwrap_or(body.len());
            let diff = body[..end].to_string();
            return (!diff.trim().is_empty()).then_some(diff);
        }
    }
    let t = answer.trim_start();
    (t.starts_with("diff --git") || t.starts_with("--- ")).then(|| {
        let mut d = t.to_string();
        if !d.ends_with('\n') {
            d.push('\n');
        }
        d
    })
}

/// The declaration in a diff answer: the first ```json block, validated. `Ok(None)`: the answer
/// has none.
pub fn extract_declaration(answer: &str) -> Result<Option<Declaration>, String> {
    let Some(start) = answer.find("```json") else { return Ok(None) };
    let body = &answer[start + "```json".len()..];
    let end = body.find("```").unwrap_or(body.len());
    let value: Value =
        serde_json::from_str(body[..end].trim()).map_err(|e| format!("its ```json declaration is not JSON: {e}"))?;
    let value = value.get("declaration").cloned().unwrap_or(value);
    Declaration::from_json("the answer's declaration", &value).map(Some).map_err(|e| e.to_string())
}

/// The JSON schema of a declaration, its files limited to `files`.
fn declaration_schema(files: &[&str]) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["files", "rationale"],
        "properties": {
            "files": {"type": "array", "items": {"enum": files}, "minItems": 1, "maxItems": 8},
            "rationale": {"type": "string", "minLength": 1, "maxLength": 160},
            "tests": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "maxItems": 4},
            "effect": {"enum": ["better", "same", "worse"]},
        },
    })
}

/// The files a candidate may change, with their contents, shown to the model: tracked text
/// files outside the protected paths, each at most [`SHOWN_FILE_MAX`] bytes, in all at most
/// [`SHOWN_TOTAL_MAX`].
pub type Editable = Vec<(String, String)>;
pub const SHOWN_FILE_MAX: usize = 4096;
pub const SHOWN_TOTAL_MAX: usize = 12 * 1024;

/// [`Editable`] of the checkout at `worktree`: `protected` are glob patterns no candidate may touch.
pub fn editable_files(worktree: &Path, protected: &[String]) -> Result<Editable, ProposalError> {
    let listed = git_blocking(worktree, &["ls-files"], None)?;
    let mut out = vec![];
    let mut total = 0;
    for path in listed.lines().take(2000) {
        if protected.iter().any(|p| p == path || protocol::governance::glob_match(p, path)) {
            continue;
        }
        let Ok(bytes) = std::fs::read(worktree.join(path)) else { continue };
        let Ok(text) = String::from_utf8(bytes) else { continue };
        if text.len() > SHOWN_FILE_MAX || total + text.len() > SHOWN_TOTAL_MAX {
            continue;
        }
        total += text.len();
        out.push((path.to_string(), text));
    }
    Ok(out)
}

/// What the proposer asks the model: the goal, the files it may change with their contents and
/// the briefing ([`crate::brief`]; the governance context goes separately, first, as the system
/// message). `edit`: the answer is a JSON edit ([`edit_schema`]); otherwise a unified diff.
pub fn user_prompt(goal: &str, editable: &[(String, String)], brief: &str, edit: bool) -> String {
    let shown: String = editable.iter().map(|(p, t)| format!("--- {p}\n{t}\n")).collect();
    let ask = if edit {
        "Propose ONE small change toward the goal as an edit of one file: a one-line summary; your declaration (the \
         files you change, one line of rationale, optionally the tests you add and the effect you expect: better, same \
         or worse); the file; an exact piece of its text to find (it must occur once); and the text to put in its place. \
         A change to a file you did not declare is rejected."
    } else {
        "Propose ONE small change toward the goal. Answer with a one-line summary; then your declaration as a ```json \
         block: {\"files\": [the files you change], \"rationale\": \"one line: why it helps\", \"tests\": [test files you \
         add, optional], \"effect\": \"better\"}; then the change as a unified diff (paths relative to the repository \
         root, a/ and b/ prefixes) in a ```diff block. A change to a file you did not declare is rejected, and so is a \
         change without a declaration."
    };
    format!("Goal: {goal}\n\nThe files you may change, with their contents:\n{shown}\n{}\n\n{ask}", brief.trim_end())
}

/// The JSON schema of an edit answer, its file limited to those shown.
pub fn edit_schema(editable: &[(String, String)]) -> Value {
    let files: Vec<&str> = editable.iter().map(|(p, _)| p.as_str()).collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary", "declaration", "file", "find", "replace"],
        "properties": {
            "summary": {"type": "string", "minLength": 1, "maxLength": 120},
            "declaration": declaration_schema(&files),
            "file": {"enum": files},
            "find": {"type": "string", "minLength": 1, "maxLength": 400},
            "replace": {"type": "string", "maxLength": 400},
        },
    })
}

/// An edit answer.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    summary: String,
    declaration: Value,
    file: String,
    find: String,
    replace: String,
}

/// A diff with what came beside it: (summary, unified diff, declaration).
type Answer = (String, String, Option<Declaration>);

/// Turn an edit answer into (summary, unified diff against the checkout, its validated
/// declaration), or say why it is malformed. The checkout is left as it was.
fn edit_to_diff(worktree: &Path, editable: &[(String, String)], answer: &str) -> Result<Answer, String> {
    let e: Edit = serde_json::from_str(answer.trim()).map_err(|e| format!("the answer is not an edit: {e}"))?;
    let declaration = Declaration::from_json("the answer's declaration", &e.declaration).map_err(|e| e.to_string())?;
    let Some((_, text)) = editable.iter().find(|(p, _)| *p == e.file) else {
        return Err(format!("file {:?} is not one the candidate may change", e.file));
    };
    let n = if e.find.is_empty() { 0 } else { text.matches(&e.find).count() };
    if n != 1 {
        return Err(format!("the text to find occurs {n} times in {} (it must occur once): {:?}", e.file, e.find));
    }
    let new = text.replacen(&e.find, &e.replace, 1);
    if new == *text {
        return Err("the edit changes nothing".into());
    }
    let path = worktree.join(&e.file);
    std::fs::write(&path, &new).map_err(|err| format!("writing {}: {err}", path.display()))?;
    let diff = git_blocking(worktree, &["diff", "--no-color", "--", &e.file], None);
    std::fs::write(&path, text).map_err(|err| format!("restoring {}: {err}", path.display()))?;
    let diff = diff.map_err(|err| err.to_string())?;
    Ok((e.summary.trim().to_string(), diff, Some(declaration)))
}

/// Ask the model for one candidate against the checkout at `worktree` (the baseline), showing it
/// `editable`. An endpoint that constrains output to a schema (`structured`) is asked for an
/// edit (file, text to find, replacement), others for a unified diff. Returns the proposal, or
/// why there is none, and the call's evidence either way: an answer that is not an edit or a
/// diff, or does not apply to the baseline, is `malformed` (a proposal failure, never a
/// worktree); no answer at all is an infrastructure failure.
pub async fn propose_openai(
    client: &ModelClient,
    worktree: &Path,
    editable: &[(String, String)],
    goal: &str,
    context: &str,
    brief: &str,
) -> (Result<Proposal, ProposalError>, ModelCall) {
    let edit = client.endpoint().structured && !editable.is_empty();
    let user = user_prompt(goal, editable, brief, edit);
    let schema = edit.then(|| edit_schema(editable));
    let who = client.id.to_string();
    let (answer, mut call) = client.chat("propose", context, &user, schema.as_ref()).await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            return (
                Err(ProposalError::CommandInfra { command: who, status: e.to_string(), stderr_tail: String::new() }),
                call,
            );
        }
    };
    let mut malformed = |detail: String, e: ProposalError| {
        call.outcome = CallOutcome::Malformed;
        call.detail = Some(detail);
        Err(e)
    };
    let (summary, diff, declaration) = if edit {
        let (w, shown, a) = (worktree.to_path_buf(), editable.to_vec(), answer.clone());
        let applied = tokio::task::spawn_blocking(move || edit_to_diff(&w, &shown, &a))
            .await
            .unwrap_or_else(|e| Err(format!("the edit could not be tried: {e}")));
        match applied {
            Ok(sd) => sd,
            Err(why) => {
                let r = malformed(why.clone(), ProposalError::Malformed { model: who, problem: why });
                return (r, call);
            }
        }
    } else {
        let Some(diff) = extract_diff(&answer) else {
            let why = "the answer holds no diff (no ```diff block, and it does not start like one)".to_string();
            let r = malformed(why.clone(), ProposalError::Malformed { model: who, problem: why });
            return (r, call);
        };
        let summary = answer
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("```"))
            .unwrap_or("a change proposed by the model")
            .chars()
            .take(120)
            .collect::<String>();
        match extract_declaration(&answer) {
            Ok(declaration) => (summary, diff, declaration),
            Err(why) => {
                let r = malformed(why.clone(), ProposalError::Malformed { model: who, problem: why });
                return (r, call);
            }
        }
    };
    let w = worktree.to_path_buf();
    let d2 = diff.clone();
    let numstat = tokio::task::spawn_blocking(move || {
        git_blocking(&w, &["apply", "--check", "-"], Some(&d2))?;
        git_blocking(&w, &["apply", "--numstat", "-"], Some(&d2))
    })
    .await
    .unwrap_or_else(|e| Err(ProposalError::Io { path: worktree.into(), source: std::io::Error::other(e.to_string()) }));
    let numstat = match numstat {
        Ok(n) => n,
        Err(e) => {
            let why = format!("its diff does not apply to the baseline: {e}");
            let r = malformed(why.clone(), ProposalError::Malformed { model: who, problem: why });
            return (r, call);
        }
    };
    let files: Vec<String> = numstat.lines().filter_map(|l| l.split('\t').nth(2).map(String::from)).collect();
    let summary = if summary.is_empty() { "a change proposed by the model".to_string() } else { summary };
    let hash = protocol::governance::hash(&diff);
    let proposal = Proposal {
        id: format!("openai-{}-{}", slug(&summary, 40), &hash[..8]),
        strategy: "openai".into(),
        summary,
        files,
        params: json!({}),
        patch: Some(diff),
        edits: vec![],
        model: Some(who),
        declaration,
    };
    (Ok(proposal), call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_found_in_diff_answers_and_validated() {
        let a = "Faster.\n```json\n{\"files\": [\"x\"], \"rationale\": \"r\", \"tests\": [\"t/x.sh\"]}\n```\n```diff\n--- a/x\n```";
        let d = extract_declaration(a).unwrap().unwrap();
        assert_eq!((d.files, d.tests), (vec!["x".to_string()], vec!["t/x.sh".to_string()]));
        let wrapped = "```json\n{\"declaration\": {\"files\": [\"x\"], \"rationale\": \"r\"}}\n```";
        assert!(extract_declaration(wrapped).unwrap().is_some());
        assert_eq!(extract_declaration("```diff\n--- a/x\n```").unwrap(), None);
        let e = extract_declaration("```json\n{\"files\": []}\n```").unwrap_err();
        assert!(e.contains("files") && e.contains("fix:"), "{e}");
        assert!(extract_declaration("```json\n{files\n```").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn diffs_are_found_in_answers() {
        let a = "Use a faster sort.\n```diff\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n```\nDone.";
        assert_eq!(extract_diff(a).unwrap(), "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(extract_diff("no diff here").is_none());
        assert!(extract_diff("diff --git a/x b/x\n--- a/x\n+++ b/x\n").unwrap().starts_with("diff --git"));
    }

    #[test]
    fn an_edit_becomes_a_diff_only_when_its_text_occurs_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        let run = |args: &[&str]| {
            kit::git::Git::new(repo).without_user_config().with_identity("t", "t@t").run(args).expect("git");
        };
        run(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("params.toml"), "a = 1\nb = 1\n").unwrap();
        std::fs::write(repo.join("bench.sh"), "echo 1\n").unwrap();
        run(&["add", "-A"]);
        run(&["commit", "-q", "-m", "base"]);
        let shown = editable_files(repo, &["bench.sh".into()]).unwrap();
        assert_eq!(shown.len(), 1, "protected files are not shown: {shown:?}");
        let declared = json!({"files": ["params.toml"], "rationale": "a higher a", "effect": "better"});
        let edit = |find: &str, file: &str| {
            json!({"summary": "s", "declaration": declared, "file": file, "find": find, "replace": "a = 2"}).to_string()
        };
        let (summary, diff, declaration) = edit_to_diff(repo, &shown, &edit("a = 1", "params.toml")).unwrap();
        assert_eq!(summary, "s");
        let declaration = declaration.expect("the edit's declaration");
        assert_eq!(
            (declaration.files.as_slice(), declaration.rationale.as_str()),
            (&["params.toml".to_string()][..], "a higher a")
        );
        // The schema holds the declaration, its files limited to those shown.
        let schema = edit_schema(&shown);
        assert_eq!(schema["required"], json!(["summary", "declaration", "file", "find", "replace"]));
        assert_eq!(schema["properties"]["declaration"]["properties"]["files"]["items"]["enum"], json!(["params.toml"]));
        // Validated always: a declaration the schema would let through but the rails refuse.
        let bad = json!({"summary": "s", "declaration": {"files": ["params.toml"], "rationale": "one\ntwo"},
                         "file": "params.toml", "find": "a = 1", "replace": "a = 2"});
        let e = edit_to_diff(repo, &shown, &bad.to_string()).unwrap_err();
        assert!(e.contains("rationale: the rationale spans several lines"), "{e}");
        let missing = json!({"summary": "s", "file": "params.toml", "find": "a = 1", "replace": "a = 2"});
        assert!(edit_to_diff(repo, &shown, &missing.to_string()).unwrap_err().contains("declaration"));
        assert!(diff.contains("-a = 1\n+a = 2"), "{diff}");
        assert_eq!(
            std::fs::read_to_string(repo.join("params.toml")).unwrap(),
            "a = 1\nb = 1\n",
            "the checkout is restored"
        );
        let e = edit_to_diff(repo, &shown, &edit(" = 1", "params.toml")).unwrap_err();
        assert!(e.contains("occurs 2 times"), "{e}");
        let e = edit_to_diff(repo, &shown, &edit("c = 1", "params.toml")).unwrap_err();
        assert!(e.contains("occurs 0 times"), "{e}");
        let e = edit_to_diff(repo, &shown, &edit("echo 1", "bench.sh")).unwrap_err();
        assert!(e.contains("not one the candidate may change"), "{e}");
        assert!(edit_to_diff(repo, &shown, "a = 1").unwrap_err().contains("not an edit"));
    }

    /// A real HTTP round trip to an OpenAI-compatible server (a canned one on loopback) and a
    /// real git checkout: the model's diff becomes a proposal that applies.
    #[tokio::test(flavor = "current_thread")]
    async fn a_model_answer_becomes_a_proposal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        let git = |args: &[&str]| {
            let git = kit::git::Git::new(repo).env("GIT_CONFIG_GLOBAL", "/dev/null");
            git.with_identity("t", "t@t").run(args).unwrap_or_else(|e| panic!("{e}"));
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("params.toml"), "algorithm = \"heap\"\n").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "base"]);
        let answer = "Switch to the standard sort.\n```json\n{\"files\": [\"params.toml\"], \"rationale\": \"std sorts faster\"}\n```\n```diff\n--- a/params.toml\n+++ b/params.toml\n@@ -1 +1 @@\n-algorithm = \"heap\"\n+algorithm = \"std\"\n```\n";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/v1", listener.local_addr().unwrap());
        let reply = json!({"id": "c1", "choices": [{"message": {"role": "assistant", "content": answer}}],
                           "usage": {"prompt_tokens": 40, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 30}}})
        .to_string();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(h) = text.find("\r\n\r\n") {
                    let len: usize = text[..h]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if got.len() >= h + 4 + len {
                        break;
                    }
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        let endpoint_decl = protocol::models::ModelEndpoint {
            url: endpoint.clone(),
            model: "local".into(),
            api_key_env: None,
            temperature: 0.0,
            max_tokens: 64,
            structured: false,
        };
        let client = ModelClient::new(
            protocol::models::ModelId::of("canned", &endpoint_decl),
            &endpoint_decl,
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        let editable = editable_files(repo, &[]).unwrap();
        assert_eq!(editable, vec![("params.toml".to_string(), "algorithm = \"heap\"\n".to_string())]);
        let (p, call) = propose_openai(
            &client,
            repo,
            &editable,
            "sort faster",
            "<governance/>",
            "# Banned approaches\n- algorithm=shell",
        )
        .await;
        let p = p.unwrap();
        assert_eq!(call.outcome, CallOutcome::Ok);
        assert_eq!(
            (call.usage.prompt_tokens, call.usage.cached_prompt_tokens, call.usage.completion_tokens),
            (40, 30, 9)
        );
        assert_eq!(p.model.as_deref(), Some(format!("canned: local @ {endpoint}").as_str()));
        let request = server.await.unwrap();
        assert!(request.contains("POST /v1/chat/completions"), "{request}");
        assert!(
            request.contains("<governance/>")
                && request.contains("algorithm=shell")
                && request.contains("--- params.toml"),
            "context and banned list are sent: {request}"
        );
        assert_eq!(p.strategy, "openai");
        assert_eq!(p.files, vec!["params.toml".to_string()]);
        assert_eq!(p.summary, "Switch to the standard sort.");
        let d = p.declaration.clone().expect("the answer's declaration");
        assert_eq!((d.files.as_slice(), d.rationale.as_str()), (&["params.toml".to_string()][..], "std sorts faster"));
        assert!(request.contains("declaration"), "the model is told to declare: {request}");
        assert!(p.patch.unwrap().contains("+algorithm = \"std\""));
    }
}
