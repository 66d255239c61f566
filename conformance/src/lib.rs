//! `ratchet-tck-agent`: the system under test (SUT) for the official A2A TCK (`a2aproject/a2a-tck`,
//! branch `1.0-dev`), built on the same [`kit::server`] as every Ratchet agent.
//!
//! The 1.0 TCK tests an A2A *implementation* through an agent whose behaviour it drives by the
//! prefix of each message's `messageId` (its `scenarios/*.feature`, from which the official
//! SDKs generate their own SUTs): `tck-complete-task` completes the task at once with
//! "Hello from TCK", `tck-artifact-text` adds an artifact, `tck-message-response` answers with a
//! message instead of a task, `tck-input-required` asks for more input, and so on. A Ratchet
//! swarm agent runs its own skills and asks which one a message wants, so this agent has one
//! skill, `tck`, that every message runs ([`kit::server::AgentSpec::default_skill`]) and that
//! follows the scenarios ([`scenario`]); everything else (validation, the task log, multi-turn,
//! streams, push notifications, cancel, errors, both bindings) is `kit::server`'s, unchanged.
//!
//! It speaks A2A 1.0 only ([`kit::server::AgentSpec::v1_only`]): the TCK checks the card served
//! to a request without `A2A-Version` against the strict 1.0 schema, which a card that also
//! declares 0.3 (what every swarm agent serves, so 0.3 clients can read it) cannot satisfy; see
//! `docs/conformance.md`. It is never a swarm member: no `agents.toml` template names it and
//! `ratchet up` does not start it.

use std::time::Duration;

use kit::agent::AgentEnv;
use kit::server::{AgentSpec, Skill, TaskCtx, TaskEnd, agent_text};
use protocol::{FileContent, Message, Part};

/// The one skill's id.
pub const SKILL: &str = "tck";

/// How long the long-running scenario works (the Python SUT's: twice the TCK's 2 s streaming
/// timeout), unless canceled.
pub const LONG_RUNNING: Duration = Duration::from_secs(4);

/// What the agent does with a message: one scenario of the TCK's `scenarios/*.feature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Complete the task; with a status message carrying this text, if any.
    Complete(Option<&'static str>),
    /// Add an artifact, then complete the task.
    Artifact(Content),
    /// Add an artifact in two chunks ("chunk-1 ", then "chunk-2", the last), then complete.
    Chunked,
    /// Work for [`LONG_RUNNING`], then complete (the TCK resubscribes meanwhile).
    LongRunning,
    /// Answer with a message and no task.
    Reply(&'static str),
    /// Ask for more input (the task goes `input-required`); the next message on the task is
    /// handled by its own prefix.
    InputRequired,
    /// Reject the task.
    Reject,
    /// No scenario has this prefix: complete, saying so (as the Python SUT does).
    Unhandled,
}

/// What an artifact carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Text(&'static str),
    /// The bytes "tck", named `output.txt`, `text/plain`.
    File,
    /// A link to `https://example.com/output.txt`, named `output.txt`, `text/plain`.
    FileUrl,
    /// `{"key": "value", "count": 42}`.
    Data,
}

/// The scenarios by `messageId` prefix, in the order the TCK's generated SUTs test them (a
/// longer prefix before the shorter one it starts with).
const SCENARIOS: &[(&str, Scenario)] = &[
    ("tck-stream-artifact-chunked", Scenario::Chunked),
    ("test-resubscribe-message-id", Scenario::LongRunning),
    ("tck-stream-artifact-text", Scenario::Artifact(Content::Text("Streamed text content"))),
    ("tck-stream-artifact-file", Scenario::Artifact(Content::File)),
    ("tck-stream-ordering-001", Scenario::Artifact(Content::Text("Ordered output"))),
    ("tck-artifact-file-url", Scenario::Artifact(Content::FileUrl)),
    ("tck-message-response", Scenario::Reply("Direct message response")),
    ("tck-input-required", Scenario::InputRequired),
    ("tck-complete-task", Scenario::Complete(Some("Hello from TCK"))),
    ("tck-artifact-text", Scenario::Artifact(Content::Text("Generated text content"))),
    ("tck-artifact-file", Scenario::Artifact(Content::File)),
    ("tck-artifact-data", Scenario::Artifact(Content::Data)),
    ("tck-reject-task", Scenario::Reject),
    ("tck-stream-001", Scenario::Artifact(Content::Text("Stream hello from TCK"))),
    ("tck-stream-002", Scenario::Complete(None)),
    ("tck-stream-003", Scenario::Artifact(Content::Text("Stream task lifecycle"))),
];

/// The scenario a message's id selects.
pub fn scenario(message_id: &str) -> Scenario {
    SCENARIOS.iter().find(|(prefix, _)| message_id.starts_with(prefix)).map_or(Scenario::Unhandled, |(_, s)| *s)
}

impl Content {
    fn part(self) -> Part {
        let file = |bytes: Option<&str>, uri: Option<&str>| Part::File {
            file: FileContent {
                name: Some("output.txt".into()),
                mime_type: Some("text/plain".into()),
                bytes: bytes.map(String::from),
                uri: uri.map(String::from),
            },
            metadata: None,
        };
        match self {
            Content::Text(t) => Part::text(t),
            // "tck", base64-encoded (the wire form of file bytes in both versions).
            Content::File => file(Some("dGNr"), None),
            Content::FileUrl => file(None, Some("https://example.com/output.txt")),
            Content::Data => Part::data(serde_json::json!({"key": "value", "count": 42})),
        }
    }
}

/// The direct answer of a `tck-message-response` message.
fn reply(m: &Message) -> Option<Message> {
    match scenario(&m.message_id) {
        Scenario::Reply(text) => Some(agent_text(text)),
        _ => None,
    }
}

/// A completion with `text` (an empty text: no status message).
fn completed(text: &str) -> TaskEnd {
    TaskEnd::Completed { text: text.to_string(), data: None }
}

/// The `tck` skill: act on the message by its scenario; when the scenario asks for input, act on
/// the answer by its own.
async fn run(mut ctx: TaskCtx) -> TaskEnd {
    loop {
        let id = ctx.message.message_id.clone();
        match scenario(&id) {
            Scenario::Complete(text) => return completed(text.unwrap_or("")),
            Scenario::Artifact(content) => {
                ctx.artifact("output", vec![content.part()]);
                return completed("");
            }
            Scenario::Chunked => {
                ctx.artifact_chunk("output", vec![Part::text("chunk-1 ")], false, false);
                ctx.artifact_chunk("output", vec![Part::text("chunk-2")], true, true);
                return completed("");
            }
            Scenario::LongRunning => {
                tokio::select! {
                    () = tokio::time::sleep(LONG_RUNNING) => return completed(""),
                    () = ctx.canceled() => return TaskEnd::Failed("canceled".into()),
                }
            }
            // A follow-up on a task cannot turn into a direct answer: the task completes with it.
            Scenario::Reply(text) => return completed(text),
            Scenario::InputRequired => {
                if ctx.ask("input required: send a follow-up message on this task").await.is_none() {
                    return TaskEnd::Failed("canceled while waiting for input".into());
                }
            }
            Scenario::Reject => return TaskEnd::Rejected("rejected".into()),
            Scenario::Unhandled => return completed(&format!("Unhandled messageId prefix: {id}")),
        }
    }
}

/// The agent: one skill, run by every message, A2A 1.0 only, push notifications on.
pub fn spec(env: &AgentEnv) -> AgentSpec {
    let skill = Skill::new(
        SKILL,
        "TCK conformance",
        "Follows the A2A TCK's scenarios, chosen by the prefix of each message's messageId",
        run,
    )
    .with_reply(reply);
    AgentSpec {
        name: env.name.clone(),
        role: "tck".into(),
        description: "The system under test for the official A2A TCK, built on Ratchet's A2A server".into(),
        skills: vec![skill],
        push_notifications: env.push,
        routes: None,
        default_skill: Some(SKILL.into()),
        v1_only: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_pick_scenarios_longest_first() {
        assert_eq!(scenario("tck-complete-task-1a2b3c4d"), Scenario::Complete(Some("Hello from TCK")));
        assert_eq!(scenario("tck-artifact-file-url-x"), Scenario::Artifact(Content::FileUrl));
        assert_eq!(scenario("tck-artifact-file-x"), Scenario::Artifact(Content::File));
        assert_eq!(scenario("tck-stream-artifact-file-x"), Scenario::Artifact(Content::File));
        assert_eq!(scenario("tck-stream-artifact-chunked-x"), Scenario::Chunked);
        assert_eq!(scenario("tck-message-response-x"), Scenario::Reply("Direct message response"));
        assert_eq!(scenario("test-resubscribe-message-id"), Scenario::LongRunning);
        assert_eq!(scenario("tck-test-context-x"), Scenario::Unhandled);
        assert_eq!(scenario(""), Scenario::Unhandled);
        // Every prefix is reachable: none is shadowed by an earlier one it starts with.
        for (i, (p, s)) in SCENARIOS.iter().enumerate() {
            assert_eq!(scenario(p), *s, "{p} (entry {i})");
        }
    }

    #[test]
    fn file_bytes_are_the_base64_of_tck() {
        let Part::File { file, .. } = Content::File.part() else { panic!("a file part") };
        // base64("tck"): t=0x74 c=0x63 k=0x6b -> 011101 000110 001101 101011 -> d G N r
        assert_eq!(file.bytes.as_deref(), Some("dGNr"));
    }
}
