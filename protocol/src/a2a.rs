//! A2A 0.3.0 wire types (specification: a2aproject/A2A, tag v0.3.0, docs/specification.md), which
//! are also the model the agents run on; the 1.0 forms and the conversions are in [`crate::a2a_v1`].
//!
//! Field names follow the specification's camelCase JSON exactly; the snapshot tests at the
//! bottom pin the shapes so a changed field shows up as a reviewed diff.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version every Ratchet card declares.
pub const PROTOCOL_VERSION: &str = "0.3.0";

macro_rules! kind_tag {
    ($name:ident, $lit:literal) => {
        #[doc = concat!("The constant discriminator `\"", $lit, "\"`.")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            #[default]
            #[serde(rename = $lit)]
            Tag,
        }
    };
}
kind_tag!(MessageKind, "message");
kind_tag!(TaskKind, "task");
kind_tag!(StatusUpdateKind, "status-update");
kind_tag!(ArtifactUpdateKind, "artifact-update");

// ---------------------------------------------------------------------------------------------
// Agent Card

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCard {
    pub protocol_version: String,
    pub name: String,
    pub description: String,
    pub url: String,
    pub preferred_transport: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_interfaces: Vec<AgentInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AgentProvider>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    pub capabilities: AgentCapabilities,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_schemes: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Vec<Map<String, Value>>>,
    pub default_input_modes: Vec<String>,
    pub default_output_modes: Vec<String>,
    pub skills: Vec<AgentSkill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_authenticated_extended_card: Option<bool>,
}

impl AgentCard {
    /// The Ratchet role this card declares (the `ratchet:role` tag on its skills, or the
    /// `role` extension parameter); third-party cards without one have no role.
    pub fn ratchet_role(&self) -> Option<String> {
        let ext = self.capabilities.extensions.iter().find(|e| e.uri == RATCHET_ROLE_EXTENSION);
        if let Some(role) = ext.and_then(|e| e.params.as_ref()?.get("role")?.as_str().map(String::from)) {
            return Some(role);
        }
        self.skills.iter().flat_map(|s| s.tags.iter()).find_map(|t| t.strip_prefix("ratchet:role:").map(String::from))
    }
}

/// Extension URI under which a Ratchet card states its role.
pub const RATCHET_ROLE_EXTENSION: &str = "https://ratchet.dev/a2a/role/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInterface {
    pub url: String,
    pub transport: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProvider {
    pub organization: String,
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCapabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notifications: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_transition_history: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<AgentExtension>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentExtension {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSkill {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modes: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Messages and parts

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_task_ids: Vec<String>,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    pub kind: MessageKind,
}

impl Message {
    /// A message with the given parts and a fresh id supplied by the caller.
    pub fn new(role: Role, message_id: impl Into<String>, parts: Vec<Part>) -> Message {
        Message {
            role,
            parts,
            metadata: None,
            extensions: vec![],
            reference_task_ids: vec![],
            message_id: message_id.into(),
            task_id: None,
            context_id: None,
            kind: MessageKind::Tag,
        }
    }

    /// All text parts joined by newlines.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        texts.join("\n")
    }

    /// The first data part, if any.
    pub fn data(&self) -> Option<&Map<String, Value>> {
        self.parts.iter().find_map(|p| match p {
            Part::Data { data, .. } => Some(data),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Part {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Map<String, Value>>,
    },
    File {
        file: FileContent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Map<String, Value>>,
    },
    Data {
        data: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Map<String, Value>>,
    },
}

impl Part {
    pub fn text(text: impl Into<String>) -> Part {
        Part::Text { text: text.into(), metadata: None }
    }

    /// A data part; non-object values are wrapped as `{"value": v}`.
    pub fn data(value: Value) -> Part {
        let data = match value {
            Value::Object(m) => m,
            other => Map::from_iter([("value".to_string(), other)]),
        };
        Part::Data { data, metadata: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Tasks

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Submitted,
    Working,
    InputRequired,
    Completed,
    Canceled,
    Failed,
    Rejected,
    AuthRequired,
    Unknown,
}

impl TaskState {
    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Canceled | TaskState::Failed | TaskState::Rejected)
    }

    /// Whether the task stops at this state for the current request (terminal or waiting on the client).
    pub fn is_interrupted(self) -> bool {
        self.is_terminal() || matches!(self, TaskState::InputRequired | TaskState::AuthRequired)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub artifact_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub context_id: String,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    pub kind: TaskKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusUpdateEvent {
    pub task_id: String,
    pub context_id: String,
    pub kind: StatusUpdateKind,
    pub status: TaskStatus,
    #[serde(rename = "final")]
    pub is_final: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskArtifactUpdateEvent {
    pub task_id: String,
    pub context_id: String,
    pub kind: ArtifactUpdateKind,
    pub artifact: Artifact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_chunk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// One item of a `message/stream` or `tasks/resubscribe` SSE stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamEvent {
    Task(Task),
    Message(Message),
    Status(TaskStatusUpdateEvent),
    Artifact(TaskArtifactUpdateEvent),
}

impl StreamEvent {
    /// Whether this event ends the stream.
    pub fn is_final(&self) -> bool {
        match self {
            StreamEvent::Status(s) => s.is_final,
            StreamEvent::Message(_) => true,
            StreamEvent::Task(t) => t.status.state.is_interrupted(),
            StreamEvent::Artifact(_) => false,
        }
    }
}

/// The result of `message/send`: a task, or a direct message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SendResult {
    Task(Task),
    Message(Message),
}

// ---------------------------------------------------------------------------------------------
// Method parameters

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSendParams {
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<MessageSendConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSendConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_output_modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notification_config: Option<PushNotificationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskQueryParams {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIdParams {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushNotificationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPushNotificationConfig {
    pub task_id: String,
    pub push_notification_config: PushNotificationConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetTaskPushNotificationConfigParams {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notification_config_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteTaskPushNotificationConfigParams {
    pub id: String,
    pub push_notification_config_id: String,
}

// ---------------------------------------------------------------------------------------------
// Typed methods (lsp-server style): each has params, result and a method name.

pub trait Method {
    const METHOD: &'static str;
    type Params: Serialize + serde::de::DeserializeOwned;
    type Result: Serialize + serde::de::DeserializeOwned;
}

macro_rules! method {
    ($name:ident, $lit:literal, $p:ty, $r:ty) => {
        pub enum $name {}
        impl Method for $name {
            const METHOD: &'static str = $lit;
            type Params = $p;
            type Result = $r;
        }
    };
}
method!(SendMessage, "message/send", MessageSendParams, SendResult);
method!(SendStreamingMessage, "message/stream", MessageSendParams, StreamEvent);
method!(GetTask, "tasks/get", TaskQueryParams, Task);
method!(CancelTask, "tasks/cancel", TaskIdParams, Task);
method!(Resubscribe, "tasks/resubscribe", TaskIdParams, StreamEvent);
method!(SetPushConfig, "tasks/pushNotificationConfig/set", TaskPushNotificationConfig, TaskPushNotificationConfig);
method!(
    GetPushConfig,
    "tasks/pushNotificationConfig/get",
    GetTaskPushNotificationConfigParams,
    TaskPushNotificationConfig
);
method!(ListPushConfig, "tasks/pushNotificationConfig/list", TaskIdParams, Vec<TaskPushNotificationConfig>);
method!(DeletePushConfig, "tasks/pushNotificationConfig/delete", DeleteTaskPushNotificationConfigParams, Value);

/// Every method name a Ratchet server knows.
pub const METHODS: &[&str] = &[
    SendMessage::METHOD,
    SendStreamingMessage::METHOD,
    GetTask::METHOD,
    CancelTask::METHOD,
    Resubscribe::METHOD,
    SetPushConfig::METHOD,
    GetPushConfig::METHOD,
    ListPushConfig::METHOD,
    DeletePushConfig::METHOD,
];

/// RFC 3339 UTC timestamp for `TaskStatus::timestamp` and files that cross processes.
pub fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use serde_json::json;

    #[test]
    fn message_and_parts_shape() {
        let mut m = Message::new(Role::User, "m1", vec![Part::text("hi"), Part::data(json!({"branch": "b"}))]);
        m.task_id = Some("t1".into());
        expect![[r#"{"role":"user","parts":[{"kind":"text","text":"hi"},{"kind":"data","data":{"branch":"b"}}],"messageId":"m1","taskId":"t1","kind":"message"}"#]]
            .assert_eq(&serde_json::to_string(&m).unwrap());
        assert_eq!(m.text(), "hi");
        assert_eq!(m.data().unwrap()["branch"], "b");
    }

    #[test]
    fn task_and_events_shape() {
        let status = TaskStatus { state: TaskState::InputRequired, message: None, timestamp: None };
        let task = Task {
            id: "t".into(),
            context_id: "c".into(),
            status: status.clone(),
            history: vec![],
            artifacts: vec![],
            metadata: None,
            kind: TaskKind::Tag,
        };
        expect![[r#"{"id":"t","contextId":"c","status":{"state":"input-required"},"kind":"task"}"#]]
            .assert_eq(&serde_json::to_string(&task).unwrap());
        let ev = StreamEvent::Status(TaskStatusUpdateEvent {
            task_id: "t".into(),
            context_id: "c".into(),
            kind: StatusUpdateKind::Tag,
            status,
            is_final: true,
            metadata: None,
        });
        let text = serde_json::to_string(&ev).unwrap();
        expect![[
            r#"{"taskId":"t","contextId":"c","kind":"status-update","status":{"state":"input-required"},"final":true}"#
        ]]
        .assert_eq(&text);
        // Untagged decoding picks the variant by its `kind`.
        let back: StreamEvent = serde_json::from_str(&text).unwrap();
        assert!(matches!(back, StreamEvent::Status(_)));
        let back: SendResult = serde_json::from_str(&serde_json::to_string(&task).unwrap()).unwrap();
        assert!(matches!(back, SendResult::Task(_)));
    }

    #[test]
    fn card_shape() {
        let card = AgentCard {
            protocol_version: PROTOCOL_VERSION.into(),
            name: "critic".into(),
            description: "reviews".into(),
            url: "http://127.0.0.1:1/".into(),
            preferred_transport: "JSONRPC".into(),
            additional_interfaces: vec![],
            provider: None,
            version: "0.1.0".into(),
            documentation_url: None,
            capabilities: AgentCapabilities { streaming: Some(true), ..Default::default() },
            security_schemes: None,
            security: None,
            default_input_modes: vec!["text/plain".into()],
            default_output_modes: vec!["application/json".into()],
            skills: vec![AgentSkill {
                id: "review".into(),
                name: "Review".into(),
                description: "d".into(),
                tags: vec!["ratchet:role:critic".into()],
                examples: vec![],
                input_modes: None,
                output_modes: None,
            }],
            supports_authenticated_extended_card: None,
        };
        expect![[r#"{"protocolVersion":"0.3.0","name":"critic","description":"reviews","url":"http://127.0.0.1:1/","preferredTransport":"JSONRPC","version":"0.1.0","capabilities":{"streaming":true},"defaultInputModes":["text/plain"],"defaultOutputModes":["application/json"],"skills":[{"id":"review","name":"Review","description":"d","tags":["ratchet:role:critic"]}]}"#]]
            .assert_eq(&serde_json::to_string(&card).unwrap());
        assert_eq!(card.ratchet_role().as_deref(), Some("critic"));
    }
}
