//! The `openai` strategy: ask a declared model (any OpenAI-compatible chat endpoint: llama.cpp
//! server, vLLM, Ollama, the local model route) for one change as a unified diff.
//!
//! The governance context goes first as the system message, byte-identical between calls, so a
//! model server's prefix cache can reuse it; the user message carries the goal, the files of the
//! baseline and the hard-banned approaches. The answer's diff (a fenced ```diff block, or the
//! whole answer when it is a bare diff) must apply to the baseline (`git apply --check` in the
//! scratch checkout) to become a proposal.

use std::path::Path;

use kit::model::ModelClient;
use protocol::models::ModelCall;
use serde_json::json;

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

/// What the proposer asks the model: the goal, the baseline's files and the hard-banned
/// approaches (the governance context goes separately, first, as the system message).
pub fn user_prompt(goal: &str, files: &[&str], banned: &[String]) -> String {
    format!(
        "Goal: {goal}\n\nFiles in the repository:\n{}\n\nApproaches already tried and failed (do not propose these again):\n{}\n\n\
         Propose ONE small change toward the goal. Answer with a one-line summary, then the change as a unified diff \
         (paths relative to the repository root, a/ and b/ prefixes) in a ```diff block.",
        files.join("\n"),
        if banned.is_empty() { "(none)".to_string() } else { banned.join("\n") }
    )
}

/// Ask the model for one candidate against the checkout at `worktree` (the baseline). Returns
/// the proposal, or why there is none, and the call's evidence either way: an answer with no
/// diff, or with a diff that does not apply to the baseline, is `malformed` (a proposal failure,
/// never a worktree); no answer at all is an infrastructure failure.
pub async fn propose_openai(
    client: &ModelClient,
    worktree: &Path,
    goal: &str,
    context: &str,
    banned: &[String],
) -> (Result<Proposal, ProposalError>, ModelCall) {
    let files = {
        let w = worktree.to_path_buf();
        tokio::task::spawn_blocking(move || git_blocking(&w, &["ls-files"], None))
            .await
            .map_err(|e| ProposalError::Io { path: worktree.into(), source: std::io::Error::other(e.to_string()) })
    };
    let files = match files {
        Ok(Ok(f)) => f,
        Ok(Err(e)) | Err(e) => {
            let call = ModelCall {
                stage: "propose".into(),
                model: client.id.clone(),
                started_at: protocol::timestamp(std::time::SystemTime::now()),
                outcome: "error".into(),
                response_id: None,
                usage: Default::default(),
                detail: Some(format!("the model was not asked: {e}")),
                answer: None,
            };
            return (Err(e), call);
        }
    };
    let files: Vec<&str> = files.lines().take(300).collect();
    let user = user_prompt(goal, &files, banned);
    let who = client.id.to_string();
    let (answer, mut call) = client.chat("propose", context, &user, None).await;
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
        call.outcome = "malformed".into();
        call.detail = Some(detail);
        Err(e)
    };
    let Some(diff) = extract_diff(&answer) else {
        let r = malformed(
            "the answer holds no diff (no ```diff block, and it does not start like one)".into(),
            ProposalError::EmptyDiff { command: who, worktree: worktree.into() },
        );
        return (r, call);
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
            let r = malformed(
                format!("its diff does not apply to the baseline: {e}"),
                ProposalError::CommandFailed {
                    command: who,
                    status: "proposed a patch that does not apply to the baseline".into(),
                    stderr_tail: e.to_string(),
                },
            );
            return (r, call);
        }
    };
    let files: Vec<String> = numstat.lines().filter_map(|l| l.split('\t').nth(2).map(String::from)).collect();
    let summary = answer
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("```"))
        .unwrap_or("a change proposed by the model")
        .chars()
        .take(120)
        .collect::<String>();
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
    };
    (Ok(proposal), call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_are_found_in_answers() {
        let a = "Use a faster sort.\n```diff\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n```\nDone.";
        assert_eq!(extract_diff(a).unwrap(), "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(extract_diff("no diff here").is_none());
        assert!(extract_diff("diff --git a/x b/x\n--- a/x\n+++ b/x\n").unwrap().starts_with("diff --git"));
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
        let answer = "Switch to the standard sort.\n```diff\n--- a/params.toml\n+++ b/params.toml\n@@ -1 +1 @@\n-algorithm = \"heap\"\n+algorithm = \"std\"\n```\n";
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
            structured: true,
        };
        let client = ModelClient::new(
            protocol::models::ModelId::of("canned", &endpoint_decl),
            &endpoint_decl,
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        let (p, call) =
            propose_openai(&client, repo, "sort faster", "<governance/>", &["algorithm=shell".into()]).await;
        let p = p.unwrap();
        assert_eq!(call.outcome, "ok");
        assert_eq!(
            (call.usage.prompt_tokens, call.usage.cached_prompt_tokens, call.usage.completion_tokens),
            (40, 30, 9)
        );
        assert_eq!(p.model.as_deref(), Some(format!("canned: local @ {endpoint}").as_str()));
        let request = server.await.unwrap();
        assert!(request.contains("POST /v1/chat/completions"), "{request}");
        assert!(
            request.contains("<governance/>") && request.contains("algorithm=shell"),
            "context and banned list are sent: {request}"
        );
        assert_eq!(p.strategy, "openai");
        assert_eq!(p.files, vec!["params.toml".to_string()]);
        assert_eq!(p.summary, "Switch to the standard sort.");
        assert!(p.patch.unwrap().contains("+algorithm = \"std\""));
    }
}
