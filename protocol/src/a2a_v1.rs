//! A2A 1.0 wire types (specification: a2aproject/A2A, tag v1.0.0/v1.0.1, docs/specification.md
//! and specification/a2a.proto), beside the 0.3 ones in [`crate::a2a`].
//!
//! ProtoJSON, as the specification requires (§5.5): camelCase field names (the proto's
//! snake_case names are accepted on input too, as ProtoJSON parsers do, and as the official TCK
//! sends them in JSON-RPC params), enums as their SCREAMING_SNAKE_CASE names, no `kind`
//! discriminators: a part is whichever of `text`, `raw`, `url` or `data` it carries (§4.1.6), a
//! stream event is an object with exactly one of `task`, `message`, `statusUpdate` or
//! `artifactUpdate` (§3.2.3, `StreamResponse`).
//!
//! The agents keep one internal model, the 0.3 types (the task log is written in them). The
//! conversions here are pure and total in the direction the server needs: every 0.3 value has
//! a 1.0 form; a 1.0 request converts to 0.3 except for a data part that is not a JSON object,
//! which 0.3 cannot carry and is wrapped as `{"value": ...}` (the same rule as
//! [`crate::Part::data`]).
//!
//! Version negotiation (§3.6): [`negotiate`]. The one Agent Card both generations read:
//! [`merged_card`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::a2a as v03;

/// The protocol version of the 1.0 interfaces (Major.Minor, §3.6: no patch number on the wire).
pub const PROTOCOL_VERSION: &str = "1.0";
/// The version a request means when it names none (§3.6.2: "Agents MUST interpret empty value
/// as 0.3 version").
pub const DEFAULT_VERSION: &str = "0.3";
/// The service parameter (HTTP header, or query parameter) naming the version (§3.2.6, §3.6.1).
pub const VERSION_HEADER: &str = "A2A-Version";

/// A protocol generation this implementation speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V0_3,
    V1_0,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3 => "0.3",
            Version::V1_0 => "1.0",
        }
    }
}

/// A requested version this implementation does not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "A2A-Version {requested:?} is not supported: this agent speaks 0.3 and 1.0; send `A2A-Version: 1.0`, or no header for 0.3"
)]
pub struct UnsupportedVersion {
    pub requested: String,
}

/// The version a request asked for, from its `A2A-Version` header or query parameter: missing or
/// empty means 0.3 (§3.6.2); only `Major.Minor` counts, a patch number is ignored (§3.6: "MUST
/// not be considered when clients and servers negotiate").
pub fn negotiate(requested: Option<&str>) -> Result<Version, UnsupportedVersion> {
    let raw = requested.map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Ok(Version::V0_3);
    }
    let mut it = raw.split('.');
    let (major, minor) = (it.next().unwrap_or(""), it.next().unwrap_or("0"));
    let num = |s: &str| s.parse::<u32>().ok();
    let patch_ok = it.next().is_none_or(|p| num(p).is_some()) && it.next().is_none();
    match (num(major), num(minor), patch_ok) {
        (Some(0), Some(3), true) => Ok(Version::V0_3),
        (Some(1), Some(0), true) => Ok(Version::V1_0),
        _ => Err(UnsupportedVersion { requested: raw.to_string() }),
    }
}

// ---------------------------------------------------------------------------------------------
// Enums

/// `TaskState` (§4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STATE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "TASK_STATE_SUBMITTED")]
    Submitted,
    #[serde(rename = "TASK_STATE_WORKING")]
    Working,
    #[serde(rename = "TASK_STATE_COMPLETED")]
    Completed,
    #[serde(rename = "TASK_STATE_FAILED")]
    Failed,
    #[serde(rename = "TASK_STATE_CANCELED")]
    Canceled,
    #[serde(rename = "TASK_STATE_INPUT_REQUIRED")]
    InputRequired,
    #[serde(rename = "TASK_STATE_REJECTED")]
    Rejected,
    #[serde(rename = "TASK_STATE_AUTH_REQUIRED")]
    AuthRequired,
}

impl From<v03::TaskState> for TaskState {
    fn from(s: v03::TaskState) -> TaskState {
        match s {
            v03::TaskState::Submitted => TaskState::Submitted,
            v03::TaskState::Working => TaskState::Working,
            v03::TaskState::InputRequired => TaskState::InputRequired,
            v03::TaskState::Completed => TaskState::Completed,
            v03::TaskState::Canceled => TaskState::Canceled,
            v03::TaskState::Failed => TaskState::Failed,
            v03::TaskState::Rejected => TaskState::Rejected,
            v03::TaskState::AuthRequired => TaskState::AuthRequired,
            v03::TaskState::Unknown => TaskState::Unspecified,
        }
    }
}

impl From<TaskState> for v03::TaskState {
    fn from(s: TaskState) -> v03::TaskState {
        match s {
            TaskState::Submitted => v03::TaskState::Submitted,
            TaskState::Working => v03::TaskState::Working,
            TaskState::InputRequired => v03::TaskState::InputRequired,
            TaskState::Completed => v03::TaskState::Completed,
            TaskState::Canceled => v03::TaskState::Canceled,
            TaskState::Failed => v03::TaskState::Failed,
            TaskState::Rejected => v03::TaskState::Rejected,
            TaskState::AuthRequired => v03::TaskState::AuthRequired,
            TaskState::Unspecified => v03::TaskState::Unknown,
        }
    }
}

/// `Role` (§4.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "ROLE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "ROLE_USER")]
    User,
    #[serde(rename = "ROLE_AGENT")]
    Agent,
}

// ---------------------------------------------------------------------------------------------
// Parts, messages, artifacts, tasks

/// What a part carries: exactly one of these (the proto's `oneof content`).
#[derive(Debug, Clone, PartialEq)]
pub enum PartContent {
    Text(String),
    /// File bytes, base64 (ProtoJSON's encoding of `bytes`).
    Raw(String),
    Url(String),
    Data(Value),
}

/// `Part` (§4.1.6).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub content: PartContent,
    pub metadata: Option<Map<String, Value>>,
    pub filename: Option<String>,
    pub media_type: Option<String>,
}

impl Part {
    pub fn text(text: impl Into<String>) -> Part {
        Part { content: PartContent::Text(text.into()), metadata: None, filename: None, media_type: None }
    }

    pub fn data(value: Value) -> Part {
        Part { content: PartContent::Data(value), metadata: None, filename: None, media_type: None }
    }
}

/// The JSON form of a part: all members optional; exactly one content member is checked.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// `Some(Value::Null)` for `"data": null` (a `google.protobuf.Value` may be null).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "media_type")]
    media_type: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// [`PartWire`] borrowed, for serializing: `data` is a `Value` (a 1.0 part) or a map (a 0.3 data
/// part, the same JSON as `Value::Object`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PartWireRef<'a, D: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
}

impl<'a, D: Serialize> PartWireRef<'a, D> {
    fn new(metadata: Option<&'a Map<String, Value>>) -> Self {
        PartWireRef { text: None, raw: None, url: None, data: None, metadata, filename: None, media_type: None }
    }
}

impl Serialize for Part {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut w = PartWireRef::new(self.metadata.as_ref());
        w.filename = self.filename.as_deref();
        w.media_type = self.media_type.as_deref();
        match &self.content {
            PartContent::Text(t) => w.text = Some(t),
            PartContent::Raw(r) => w.raw = Some(r),
            PartContent::Url(u) => w.url = Some(u),
            PartContent::Data(d) => w.data = Some(d),
        }
        w.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Part {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Part, D::Error> {
        let w = PartWire::deserialize(d)?;
        let mut contents = vec![];
        if let Some(t) = w.text {
            contents.push(PartContent::Text(t));
        }
        if let Some(r) = w.raw {
            contents.push(PartContent::Raw(r));
        }
        if let Some(u) = w.url {
            contents.push(PartContent::Url(u));
        }
        if let Some(v) = w.data {
            contents.push(PartContent::Data(v));
        }
        if contents.len() != 1 {
            return Err(serde::de::Error::custom(format!(
                "a part carries exactly one of text, raw, url or data (found {}); see A2A 1.0 §4.1.6",
                contents.len()
            )));
        }
        let content = contents.pop().expect("one content");
        Ok(Part { content, metadata: w.metadata, filename: w.filename, media_type: w.media_type })
    }
}

/// `Message` (§4.1.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(alias = "message_id")]
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "context_id")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "task_id")]
    pub task_id: Option<String>,
    pub role: Role,
    pub parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "reference_task_ids")]
    pub reference_task_ids: Vec<String>,
}

/// `Artifact` (§4.1.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    #[serde(alias = "artifact_id")]
    pub artifact_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

/// `TaskStatus` (§4.1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// `Task` (§4.1.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    #[serde(default, alias = "context_id")]
    pub context_id: String,
    pub status: TaskStatus,
    /// `None` leaves the member out (ListTasks without `includeArtifacts`, §3.1.4: "the artifacts
    /// field MUST be omitted entirely").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<Artifact>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// `TaskStatusUpdateEvent` (§4.2.1): no `final` flag in 1.0; the stream closes itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusUpdateEvent {
    #[serde(alias = "task_id")]
    pub task_id: String,
    #[serde(default, alias = "context_id")]
    pub context_id: String,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// `TaskArtifactUpdateEvent` (§4.2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskArtifactUpdateEvent {
    #[serde(alias = "task_id")]
    pub task_id: String,
    #[serde(default, alias = "context_id")]
    pub context_id: String,
    pub artifact: Artifact,
    #[serde(default, skip_serializing_if = "is_false")]
    pub append: bool,
    #[serde(default, skip_serializing_if = "is_false", alias = "last_chunk")]
    pub last_chunk: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `StreamResponse` (§3.2.3): one item of a stream, and the payload of a push notification
/// (§4.3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamResponse {
    Task(Task),
    Message(Message),
    #[serde(alias = "status_update")]
    StatusUpdate(TaskStatusUpdateEvent),
    #[serde(alias = "artifact_update")]
    ArtifactUpdate(TaskArtifactUpdateEvent),
}

/// `SendMessageResponse`: a task, or a direct message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SendMessageResponse {
    Task(Task),
    Message(Message),
}

// ---------------------------------------------------------------------------------------------
// Requests and responses

/// `AuthenticationInfo` of a push notification config (§4.3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationInfo {
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// `TaskPushNotificationConfig`: in 1.0 the config and its task in one flat object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPushNotificationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "task_id")]
    pub task_id: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageConfiguration {
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "accepted_output_modes")]
    pub accepted_output_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "task_push_notification_config")]
    pub task_push_notification_config: Option<TaskPushNotificationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "history_length")]
    pub history_length: Option<i64>,
    /// Blocking unless this is true (§3.2.2: "Operations are blocking by default").
    #[serde(default, skip_serializing_if = "is_false", alias = "return_immediately")]
    pub return_immediately: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<SendMessageConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetTaskRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "history_length")]
    pub history_length: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "context_id")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "page_size")]
    pub page_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "page_token")]
    pub page_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "history_length")]
    pub history_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "status_timestamp_after")]
    pub status_timestamp_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "include_artifacts")]
    pub include_artifacts: Option<bool>,
}

/// Default and largest `pageSize` of ListTasks (the proto: "If unspecified, at most 50 tasks will
/// be returned. The minimum value is 1. The maximum value is 100.").
pub const LIST_PAGE_DEFAULT: i64 = 50;
pub const LIST_PAGE_MAX: i64 = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksResponse {
    pub tasks: Vec<Task>,
    /// Always present; empty on the last page (§3.1.4).
    pub next_page_token: String,
    pub page_size: i64,
    pub total_size: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelTaskRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeToTaskRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetTaskPushNotificationConfigRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(alias = "task_id")]
    pub task_id: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteTaskPushNotificationConfigRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(alias = "task_id")]
    pub task_id: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskPushNotificationConfigsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(alias = "task_id")]
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "page_size")]
    pub page_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "page_token")]
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskPushNotificationConfigsResponse {
    pub configs: Vec<TaskPushNotificationConfig>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetExtendedAgentCardRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The empty result of `DeleteTaskPushNotificationConfig` (`google.protobuf.Empty`: `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

// ---------------------------------------------------------------------------------------------
// Typed methods (JSON-RPC method names of §9.4 / §5.3)

/// A 1.0 method: its JSON-RPC name, params and result.
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
method!(SendMessage, "SendMessage", SendMessageRequest, SendMessageResponse);
method!(SendStreamingMessage, "SendStreamingMessage", SendMessageRequest, StreamResponse);
method!(GetTask, "GetTask", GetTaskRequest, Task);
method!(ListTasks, "ListTasks", ListTasksRequest, ListTasksResponse);
method!(CancelTask, "CancelTask", CancelTaskRequest, Task);
method!(SubscribeToTask, "SubscribeToTask", SubscribeToTaskRequest, StreamResponse);
method!(CreatePushConfig, "CreateTaskPushNotificationConfig", TaskPushNotificationConfig, TaskPushNotificationConfig);
method!(
    GetPushConfig,
    "GetTaskPushNotificationConfig",
    GetTaskPushNotificationConfigRequest,
    TaskPushNotificationConfig
);
method!(
    ListPushConfigs,
    "ListTaskPushNotificationConfigs",
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse
);
method!(DeletePushConfig, "DeleteTaskPushNotificationConfig", DeleteTaskPushNotificationConfigRequest, Empty);
method!(GetExtendedAgentCard, "GetExtendedAgentCard", GetExtendedAgentCardRequest, AgentCard);

/// Every 1.0 method name a Ratchet server knows.
pub const METHODS: &[&str] = &[
    SendMessage::METHOD,
    SendStreamingMessage::METHOD,
    GetTask::METHOD,
    ListTasks::METHOD,
    CancelTask::METHOD,
    SubscribeToTask::METHOD,
    CreatePushConfig::METHOD,
    GetPushConfig::METHOD,
    ListPushConfigs::METHOD,
    DeletePushConfig::METHOD,
    GetExtendedAgentCard::METHOD,
];

// ---------------------------------------------------------------------------------------------
// Agent Card (§4.4, §8)

/// The binding names of `AgentInterface.protocolBinding` (§5.3).
pub const BINDING_JSONRPC: &str = "JSONRPC";
pub const BINDING_HTTP_JSON: &str = "HTTP+JSON";
pub const BINDING_GRPC: &str = "GRPC";

/// `AgentInterface`: one URL, binding and protocol version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInterface {
    pub url: String,
    #[serde(alias = "protocol_binding")]
    pub protocol_binding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, alias = "protocol_version")]
    pub protocol_version: String,
}

impl AgentInterface {
    /// The version this interface speaks, if this implementation speaks it (patch ignored).
    pub fn version(&self) -> Option<Version> {
        let v = if self.protocol_version.trim().is_empty() { DEFAULT_VERSION } else { &self.protocol_version };
        negotiate(Some(v)).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProvider {
    pub url: String,
    pub organization: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCapabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "push_notifications")]
    pub push_notifications: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<v03::AgentExtension>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "extended_agent_card")]
    pub extended_agent_card: Option<bool>,
}

/// `SecurityRequirement`: scheme name to its scopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityRequirement {
    pub schemes: BTreeMap<String, StringList>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StringList {
    #[serde(default)]
    pub list: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSkill {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "input_modes")]
    pub input_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "output_modes")]
    pub output_modes: Vec<String>,
}

/// `AgentCard` (§4.4.1), 1.0 form. Security schemes are kept as JSON (a `SecurityScheme` is a
/// oneof of five kinds, of which Ratchet only issues the HTTP bearer one: [`bearer_scheme`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCard {
    pub name: String,
    pub description: String,
    #[serde(alias = "supported_interfaces")]
    pub supported_interfaces: Vec<AgentInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AgentProvider>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "documentation_url")]
    pub documentation_url: Option<String>,
    pub capabilities: AgentCapabilities,
    #[serde(default, skip_serializing_if = "Map::is_empty", alias = "security_schemes")]
    pub security_schemes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "security_requirements")]
    pub security_requirements: Vec<SecurityRequirement>,
    #[serde(default, alias = "default_input_modes")]
    pub default_input_modes: Vec<String>,
    #[serde(default, alias = "default_output_modes")]
    pub default_output_modes: Vec<String>,
    #[serde(default)]
    pub skills: Vec<AgentSkill>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "icon_url")]
    pub icon_url: Option<String>,
}

/// The 1.0 form of an HTTP bearer scheme (`SecurityScheme.httpAuthSecurityScheme`).
pub fn bearer_scheme() -> Value {
    serde_json::json!({"httpAuthSecurityScheme": {"scheme": "Bearer"}})
}

impl AgentCard {
    /// The Ratchet role this card declares (the role extension's `role` parameter, or a
    /// `ratchet:role:<role>` tag on a skill); a third-party card has none.
    pub fn ratchet_role(&self) -> Option<String> {
        let ext = self.capabilities.extensions.iter().find(|e| e.uri == v03::RATCHET_ROLE_EXTENSION);
        if let Some(role) = ext.and_then(|e| e.params.as_ref()?.get("role")?.as_str().map(String::from)) {
            return Some(role);
        }
        self.skills.iter().flat_map(|s| s.tags.iter()).find_map(|t| t.strip_prefix("ratchet:role:").map(String::from))
    }

    /// The interface a client of this implementation should use: the first JSON-RPC interface
    /// in the card's order whose version it speaks (§8.3.2: "Prefer earlier entries").
    pub fn jsonrpc_interface(&self) -> Option<(&AgentInterface, Version)> {
        self.supported_interfaces
            .iter()
            .filter(|i| i.protocol_binding.eq_ignore_ascii_case(BINDING_JSONRPC))
            .find_map(|i| i.version().map(|v| (i, v)))
    }

    pub fn has_skill(&self, id: &str) -> bool {
        self.skills.iter().any(|s| s.id == id)
    }
}

/// Why a card could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an A2A Agent Card: {0}")]
pub struct CardError(pub String);

/// Read an Agent Card of either generation into its 1.0 form: a card with `supportedInterfaces`
/// is a 1.0 card (unknown members, such as a merged card's 0.3 ones, are ignored, §5.7); one
/// without is a 0.3 card, whose `url`, `preferredTransport`, `protocolVersion` and
/// `additionalInterfaces` become interfaces (as the official SDK reads legacy cards).
pub fn parse_card(bytes: &[u8]) -> Result<AgentCard, CardError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| CardError(e.to_string()))?;
    if value.get("supportedInterfaces").or_else(|| value.get("supported_interfaces")).is_some() {
        return serde_json::from_value(value).map_err(|e| CardError(e.to_string()));
    }
    let old: v03::AgentCard = serde_json::from_value(value).map_err(|e| CardError(e.to_string()))?;
    Ok(card_from_v03(&old))
}

/// A 0.3 card in its 1.0 form.
pub fn card_from_v03(old: &v03::AgentCard) -> AgentCard {
    let version = {
        let mut parts = old.protocol_version.split('.');
        format!("{}.{}", parts.next().unwrap_or("0"), parts.next().unwrap_or("3"))
    };
    let mut interfaces = vec![AgentInterface {
        url: old.url.clone(),
        protocol_binding: old.preferred_transport.clone(),
        tenant: None,
        protocol_version: version.clone(),
    }];
    interfaces.extend(old.additional_interfaces.iter().map(|i| AgentInterface {
        url: i.url.clone(),
        protocol_binding: i.transport.clone(),
        tenant: None,
        protocol_version: version.clone(),
    }));
    AgentCard {
        name: old.name.clone(),
        description: old.description.clone(),
        supported_interfaces: interfaces,
        provider: old
            .provider
            .as_ref()
            .map(|p| AgentProvider { url: p.url.clone(), organization: p.organization.clone() }),
        version: old.version.clone(),
        documentation_url: old.documentation_url.clone(),
        capabilities: AgentCapabilities {
            streaming: old.capabilities.streaming,
            push_notifications: old.capabilities.push_notifications,
            extensions: old.capabilities.extensions.clone(),
            extended_agent_card: old.supports_authenticated_extended_card,
        },
        security_schemes: Map::new(),
        security_requirements: vec![],
        default_input_modes: old.default_input_modes.clone(),
        default_output_modes: old.default_output_modes.clone(),
        skills: old
            .skills
            .iter()
            .map(|s| AgentSkill {
                id: s.id.clone(),
                name: s.name.clone(),
                description: s.description.clone(),
                tags: s.tags.clone(),
                examples: s.examples.clone(),
                input_modes: s.input_modes.clone().unwrap_or_default(),
                output_modes: s.output_modes.clone().unwrap_or_default(),
            })
            .collect(),
        signatures: vec![],
        icon_url: None,
    }
}

/// The one card both generations read: the 1.0 card, with the 0.3 card's members merged in where
/// the 1.0 card lacks them (objects merged member by member, lists item by item), as the
/// official a2a-sdk 1.x serves it. A 0.3 client finds `protocolVersion`, `url`,
/// `preferredTransport` and its `securitySchemes` entries (`{"type": "http", "scheme": "bearer"}`
/// beside the 1.0 `httpAuthSecurityScheme`); a 1.0 client reads `supportedInterfaces` and
/// ignores the rest (§5.7: "Implementations SHOULD ignore unrecognized fields").
pub fn merged_card(card: &AgentCard, old: &v03::AgentCard) -> Value {
    let mut out = serde_json::to_value(card).expect("cards serialize");
    let old = serde_json::to_value(old).expect("cards serialize");
    merge_missing(&mut out, &old);
    out
}

fn merge_missing(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                    Some(existing) => merge_missing(existing, v),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter_mut().zip(b) {
                merge_missing(x, y);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions between the 0.3 model and 1.0 wire forms

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl From<&v03::Part> for Part {
    fn from(p: &v03::Part) -> Part {
        match p {
            v03::Part::Text { text, metadata } => Part {
                content: PartContent::Text(text.clone()),
                metadata: metadata.clone(),
                filename: None,
                media_type: None,
            },
            v03::Part::Data { data, metadata } => Part {
                content: PartContent::Data(Value::Object(data.clone())),
                metadata: metadata.clone(),
                filename: None,
                media_type: None,
            },
            v03::Part::File { file, metadata } => Part {
                content: match (&file.bytes, &file.uri) {
                    (Some(b), _) => PartContent::Raw(b.clone()),
                    (None, Some(u)) => PartContent::Url(u.clone()),
                    (None, None) => PartContent::Raw(String::new()),
                },
                metadata: metadata.clone(),
                filename: file.name.clone(),
                media_type: file.mime_type.clone(),
            },
        }
    }
}

impl From<Part> for v03::Part {
    fn from(p: Part) -> v03::Part {
        let file =
            |bytes, uri| v03::FileContent { name: p.filename.clone(), mime_type: p.media_type.clone(), bytes, uri };
        match p.content {
            PartContent::Text(text) => v03::Part::Text { text, metadata: p.metadata },
            PartContent::Data(value) => match value {
                Value::Object(data) => v03::Part::Data { data, metadata: p.metadata },
                other => v03::Part::Data { data: Map::from_iter([("value".to_string(), other)]), metadata: p.metadata },
            },
            PartContent::Raw(b) => v03::Part::File { file: file(Some(b), None), metadata: p.metadata },
            PartContent::Url(u) => v03::Part::File { file: file(None, Some(u)), metadata: p.metadata },
        }
    }
}

impl From<&v03::Message> for Message {
    fn from(m: &v03::Message) -> Message {
        Message {
            message_id: m.message_id.clone(),
            context_id: m.context_id.clone(),
            task_id: m.task_id.clone(),
            role: match m.role {
                v03::Role::User => Role::User,
                v03::Role::Agent => Role::Agent,
            },
            parts: m.parts.iter().map(Part::from).collect(),
            metadata: m.metadata.clone(),
            extensions: m.extensions.clone(),
            reference_task_ids: m.reference_task_ids.clone(),
        }
    }
}

/// A role 0.3 cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message.role must be ROLE_USER or ROLE_AGENT, not ROLE_UNSPECIFIED")]
pub struct UnspecifiedRole;

impl TryFrom<Message> for v03::Message {
    type Error = UnspecifiedRole;

    fn try_from(m: Message) -> Result<v03::Message, UnspecifiedRole> {
        let role = match m.role {
            Role::User => v03::Role::User,
            Role::Agent => v03::Role::Agent,
            Role::Unspecified => return Err(UnspecifiedRole),
        };
        Ok(v03::Message {
            role,
            parts: m.parts.into_iter().map(v03::Part::from).collect(),
            metadata: m.metadata,
            extensions: m.extensions,
            reference_task_ids: m.reference_task_ids,
            message_id: m.message_id,
            task_id: non_empty(m.task_id),
            context_id: non_empty(m.context_id),
            kind: v03::MessageKind::Tag,
        })
    }
}

impl From<&v03::TaskStatus> for TaskStatus {
    fn from(s: &v03::TaskStatus) -> TaskStatus {
        TaskStatus {
            state: s.state.into(),
            message: s.message.as_ref().map(Message::from),
            timestamp: s.timestamp.clone(),
        }
    }
}

impl From<&v03::Artifact> for Artifact {
    fn from(a: &v03::Artifact) -> Artifact {
        Artifact {
            artifact_id: a.artifact_id.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            parts: a.parts.iter().map(Part::from).collect(),
            metadata: a.metadata.clone(),
            extensions: vec![],
        }
    }
}

impl From<&v03::Task> for Task {
    fn from(t: &v03::Task) -> Task {
        Task {
            id: t.id.clone(),
            context_id: t.context_id.clone(),
            status: TaskStatus::from(&t.status),
            artifacts: (!t.artifacts.is_empty()).then(|| t.artifacts.iter().map(Artifact::from).collect()),
            history: t.history.iter().map(Message::from).collect(),
            metadata: t.metadata.clone(),
        }
    }
}

/// A 0.3 value serialized in its 1.0 form straight from the 0.3 one: the same JSON as the 1.0
/// value converted from it (`Task::from(&task)`, ...) without building that copy (a 1.0 send's
/// answer is serialized this way).
pub struct AsV1<'a, T>(pub &'a T);

/// The elements of a slice, each [`AsV1`].
struct AsV1Seq<'a, T>(&'a [T]);

impl<T> AsV1Seq<'_, T> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, T> Serialize for AsV1Seq<'a, T>
where
    AsV1<'a, T>: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(AsV1))
    }
}

impl Serialize for AsV1<'_, v03::Part> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v03::Part::Text { text, metadata } => {
                PartWireRef::<()> { text: Some(text), ..PartWireRef::new(metadata.as_ref()) }.serialize(s)
            }
            v03::Part::Data { data, metadata } => {
                PartWireRef { data: Some(data), ..PartWireRef::new(metadata.as_ref()) }.serialize(s)
            }
            v03::Part::File { file, metadata } => {
                let mut w = PartWireRef::<()>::new(metadata.as_ref());
                match (&file.bytes, &file.uri) {
                    (Some(b), _) => w.raw = Some(b),
                    (None, Some(u)) => w.url = Some(u),
                    (None, None) => w.raw = Some(""),
                }
                w.filename = file.name.as_deref();
                w.media_type = file.mime_type.as_deref();
                w.serialize(s)
            }
        }
    }
}

impl Serialize for AsV1<'_, v03::Message> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct W<'a> {
            message_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            context_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            task_id: Option<&'a str>,
            role: Role,
            parts: AsV1Seq<'a, v03::Part>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<&'a Map<String, Value>>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            extensions: &'a [String],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            reference_task_ids: &'a [String],
        }
        let m = self.0;
        W {
            message_id: &m.message_id,
            context_id: m.context_id.as_deref(),
            task_id: m.task_id.as_deref(),
            role: match m.role {
                v03::Role::User => Role::User,
                v03::Role::Agent => Role::Agent,
            },
            parts: AsV1Seq(&m.parts),
            metadata: m.metadata.as_ref(),
            extensions: &m.extensions,
            reference_task_ids: &m.reference_task_ids,
        }
        .serialize(s)
    }
}

impl Serialize for AsV1<'_, v03::Artifact> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct W<'a> {
            artifact_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            parts: AsV1Seq<'a, v03::Part>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<&'a Map<String, Value>>,
        }
        let a = self.0;
        W {
            artifact_id: &a.artifact_id,
            name: a.name.as_deref(),
            description: a.description.as_deref(),
            parts: AsV1Seq(&a.parts),
            metadata: a.metadata.as_ref(),
        }
        .serialize(s)
    }
}

impl Serialize for AsV1<'_, v03::TaskStatus> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct W<'a> {
            state: TaskState,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<AsV1<'a, v03::Message>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            timestamp: Option<&'a str>,
        }
        let t = self.0;
        W { state: t.state.into(), message: t.message.as_ref().map(AsV1), timestamp: t.timestamp.as_deref() }
            .serialize(s)
    }
}

impl Serialize for AsV1<'_, v03::Task> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct W<'a> {
            id: &'a str,
            context_id: &'a str,
            status: AsV1<'a, v03::TaskStatus>,
            #[serde(skip_serializing_if = "AsV1Seq::is_empty")]
            artifacts: AsV1Seq<'a, v03::Artifact>,
            #[serde(skip_serializing_if = "AsV1Seq::is_empty")]
            history: AsV1Seq<'a, v03::Message>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<&'a Map<String, Value>>,
        }
        let t = self.0;
        W {
            id: &t.id,
            context_id: &t.context_id,
            status: AsV1(&t.status),
            artifacts: AsV1Seq(&t.artifacts),
            history: AsV1Seq(&t.history),
            metadata: t.metadata.as_ref(),
        }
        .serialize(s)
    }
}

impl From<&v03::StreamEvent> for StreamResponse {
    fn from(e: &v03::StreamEvent) -> StreamResponse {
        match e {
            v03::StreamEvent::Task(t) => StreamResponse::Task(t.into()),
            v03::StreamEvent::Message(m) => StreamResponse::Message(m.into()),
            v03::StreamEvent::Status(s) => StreamResponse::StatusUpdate(TaskStatusUpdateEvent {
                task_id: s.task_id.clone(),
                context_id: s.context_id.clone(),
                status: (&s.status).into(),
                metadata: s.metadata.clone(),
            }),
            v03::StreamEvent::Artifact(a) => StreamResponse::ArtifactUpdate(TaskArtifactUpdateEvent {
                task_id: a.task_id.clone(),
                context_id: a.context_id.clone(),
                artifact: (&a.artifact).into(),
                append: a.append.unwrap_or(false),
                last_chunk: a.last_chunk.unwrap_or(false),
                metadata: a.metadata.clone(),
            }),
        }
    }
}

impl From<Task> for v03::Task {
    fn from(t: Task) -> v03::Task {
        v03::Task {
            id: t.id,
            context_id: t.context_id,
            status: t.status.into(),
            history: t.history.into_iter().filter_map(|m| m.try_into().ok()).collect(),
            artifacts: t.artifacts.unwrap_or_default().into_iter().map(Into::into).collect(),
            metadata: t.metadata,
            kind: v03::TaskKind::Tag,
        }
    }
}

impl From<TaskStatus> for v03::TaskStatus {
    fn from(s: TaskStatus) -> v03::TaskStatus {
        v03::TaskStatus {
            state: s.state.into(),
            message: s.message.and_then(|m| m.try_into().ok()),
            timestamp: s.timestamp,
        }
    }
}

impl From<Artifact> for v03::Artifact {
    fn from(a: Artifact) -> v03::Artifact {
        v03::Artifact {
            artifact_id: a.artifact_id,
            name: a.name,
            description: a.description,
            parts: a.parts.into_iter().map(Into::into).collect(),
            metadata: a.metadata,
        }
    }
}

impl StreamResponse {
    /// This event in the 0.3 model (for a client that speaks 1.0 to a third-party agent but
    /// hands events on as the rest of the swarm reads them). A status update's `final` is
    /// whether its state ends the exchange (terminal or interrupted), as 1.0 closes the stream
    /// there.
    pub fn into_v03(self) -> v03::StreamEvent {
        match self {
            StreamResponse::Task(t) => v03::StreamEvent::Task(t.into()),
            StreamResponse::Message(m) => match v03::Message::try_from(m.clone()) {
                Ok(m) => v03::StreamEvent::Message(m),
                Err(_) => v03::StreamEvent::Message(v03::Message::new(
                    v03::Role::Agent,
                    m.message_id,
                    m.parts.into_iter().map(Into::into).collect(),
                )),
            },
            StreamResponse::StatusUpdate(s) => {
                let status: v03::TaskStatus = s.status.into();
                v03::StreamEvent::Status(v03::TaskStatusUpdateEvent {
                    task_id: s.task_id,
                    context_id: s.context_id,
                    kind: v03::StatusUpdateKind::Tag,
                    is_final: status.state.is_interrupted(),
                    status,
                    metadata: s.metadata,
                })
            }
            StreamResponse::ArtifactUpdate(a) => v03::StreamEvent::Artifact(v03::TaskArtifactUpdateEvent {
                task_id: a.task_id,
                context_id: a.context_id,
                kind: v03::ArtifactUpdateKind::Tag,
                artifact: a.artifact.into(),
                append: Some(a.append),
                last_chunk: Some(a.last_chunk),
                metadata: a.metadata,
            }),
        }
    }
}

impl SendMessageRequest {
    /// The request in the 0.3 model the agents run on. `returnImmediately` becomes `blocking`
    /// (1.0 blocks unless asked not to, §3.2.2).
    pub fn into_v03(self) -> Result<v03::MessageSendParams, UnspecifiedRole> {
        let cfg = self.configuration.unwrap_or_default();
        Ok(v03::MessageSendParams {
            message: self.message.try_into()?,
            configuration: Some(v03::MessageSendConfiguration {
                accepted_output_modes: (!cfg.accepted_output_modes.is_empty()).then_some(cfg.accepted_output_modes),
                history_length: cfg.history_length,
                push_notification_config: cfg.task_push_notification_config.map(TaskPushNotificationConfig::into_v03),
                blocking: Some(!cfg.return_immediately),
            }),
            metadata: self.metadata,
        })
    }
}

impl TaskPushNotificationConfig {
    /// The config in the 0.3 model (1.0 `authentication {scheme, credentials}` becomes 0.3
    /// `{schemes: [scheme], credentials}`).
    pub fn into_v03(self) -> v03::PushNotificationConfig {
        v03::PushNotificationConfig {
            id: non_empty(self.id),
            url: self.url,
            token: non_empty(self.token),
            authentication: self
                .authentication
                .map(|a| serde_json::json!({"schemes": [a.scheme], "credentials": a.credentials})),
        }
    }

    /// A 0.3 config of task `task_id` in 1.0 form.
    pub fn from_v03(task_id: &str, c: &v03::PushNotificationConfig) -> TaskPushNotificationConfig {
        let authentication = c.authentication.as_ref().and_then(|a| {
            let scheme = a.get("schemes")?.as_array()?.first()?.as_str()?.to_string();
            let credentials = a.get("credentials").and_then(Value::as_str).map(String::from);
            Some(AuthenticationInfo { scheme, credentials })
        });
        TaskPushNotificationConfig {
            tenant: None,
            id: c.id.clone(),
            task_id: Some(task_id.to_string()),
            url: c.url.clone(),
            token: c.token.clone(),
            authentication,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use serde_json::json;

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate(None), Ok(Version::V0_3));
        assert_eq!(negotiate(Some("")), Ok(Version::V0_3), "empty means 0.3 (§3.6.2)");
        assert_eq!(negotiate(Some(" 1.0 ")), Ok(Version::V1_0));
        assert_eq!(negotiate(Some("1.0.1")), Ok(Version::V1_0), "the patch number is ignored");
        assert_eq!(negotiate(Some("0.3.0")), Ok(Version::V0_3));
        assert_eq!(negotiate(Some("1")), Ok(Version::V1_0));
        for bad in ["99.0", "1.1", "0.2", "abc", "1.0.x", "1.0.0.0"] {
            let e = negotiate(Some(bad)).unwrap_err();
            assert!(e.to_string().contains("0.3 and 1.0"), "{bad}: {e}");
        }
    }

    #[test]
    fn task_and_stream_shapes() {
        let mut m =
            v03::Message::new(v03::Role::Agent, "m2", vec![v03::Part::text("done"), v03::Part::data(json!({"n": 1}))]);
        m.task_id = Some("t".into());
        m.context_id = Some("c".into());
        let task = v03::Task {
            id: "t".into(),
            context_id: "c".into(),
            status: v03::TaskStatus {
                state: v03::TaskState::Completed,
                message: Some(m.clone()),
                timestamp: Some("2026-01-01T00:00:00.000Z".into()),
            },
            history: vec![m],
            artifacts: vec![],
            metadata: None,
            kind: v03::TaskKind::Tag,
        };
        let v1 = SendMessageResponse::Task(Task::from(&task));
        expect![[r#"{"task":{"id":"t","contextId":"c","status":{"state":"TASK_STATE_COMPLETED","message":{"messageId":"m2","contextId":"c","taskId":"t","role":"ROLE_AGENT","parts":[{"text":"done"},{"data":{"n":1}}]},"timestamp":"2026-01-01T00:00:00.000Z"},"history":[{"messageId":"m2","contextId":"c","taskId":"t","role":"ROLE_AGENT","parts":[{"text":"done"},{"data":{"n":1}}]}]}}"#]]
            .assert_eq(&serde_json::to_string(&v1).unwrap());
        let ev = v03::StreamEvent::Status(v03::TaskStatusUpdateEvent {
            task_id: "t".into(),
            context_id: "c".into(),
            kind: v03::StatusUpdateKind::Tag,
            status: v03::TaskStatus { state: v03::TaskState::InputRequired, message: None, timestamp: None },
            is_final: true,
            metadata: None,
        });
        let v1 = StreamResponse::from(&ev);
        let text = serde_json::to_string(&v1).unwrap();
        expect![[r#"{"statusUpdate":{"taskId":"t","contextId":"c","status":{"state":"TASK_STATE_INPUT_REQUIRED"}}}"#]]
            .assert_eq(&text);
        // And back: interrupted states end the exchange, as `final` said in 0.3.
        assert_eq!(serde_json::from_str::<StreamResponse>(&text).unwrap().into_v03(), ev);
        let art = v03::StreamEvent::Artifact(v03::TaskArtifactUpdateEvent {
            task_id: "t".into(),
            context_id: "c".into(),
            kind: v03::ArtifactUpdateKind::Tag,
            artifact: v03::Artifact {
                artifact_id: "a".into(),
                name: Some("out".into()),
                description: None,
                parts: vec![v03::Part::File {
                    file: v03::FileContent {
                        name: Some("o.txt".into()),
                        mime_type: Some("text/plain".into()),
                        bytes: Some("aGk=".into()),
                        uri: None,
                    },
                    metadata: None,
                }],
                metadata: None,
            },
            append: None,
            last_chunk: Some(true),
            metadata: None,
        });
        expect![[r#"{"artifactUpdate":{"taskId":"t","contextId":"c","artifact":{"artifactId":"a","name":"out","parts":[{"raw":"aGk=","filename":"o.txt","mediaType":"text/plain"}]},"lastChunk":true}}"#]]
            .assert_eq(&serde_json::to_string(&StreamResponse::from(&art)).unwrap());
    }

    /// The borrowed 1.0 view of a 0.3 task writes the same bytes as the converted copy, for every
    /// kind of part, artifacts, metadata and the optional members present and absent.
    #[test]
    fn the_borrowed_view_writes_what_the_conversion_does() {
        let meta = json!({"skill": "status", "n": [1, 2]}).as_object().cloned();
        let file = |bytes: Option<&str>, uri: Option<&str>| v03::Part::File {
            file: v03::FileContent {
                name: Some("o.txt".into()),
                mime_type: None,
                bytes: bytes.map(String::from),
                uri: uri.map(String::from),
            },
            metadata: meta.clone(),
        };
        let mut user = v03::Message::new(
            v03::Role::User,
            "m1",
            vec![
                v03::Part::Text { text: "hi \"there\"\n".into(), metadata: meta.clone() },
                v03::Part::data(json!({"a": {"b": null}})),
                file(Some("aGk="), None),
                file(None, Some("https://x/y")),
                file(None, None),
            ],
        );
        user.metadata = meta.clone();
        user.reference_task_ids = vec!["t0".into()];
        user.extensions = vec!["urn:x".into()];
        let agent = v03::Message::new(v03::Role::Agent, "m2", vec![v03::Part::text("done")]);
        let artifact = v03::Artifact {
            artifact_id: "a".into(),
            name: Some("out".into()),
            description: Some("d".into()),
            parts: vec![v03::Part::text("x"), file(Some("eA=="), None)],
            metadata: meta.clone(),
        };
        let mut task = v03::Task {
            id: "t".into(),
            context_id: "c".into(),
            status: v03::TaskStatus {
                state: v03::TaskState::Completed,
                message: Some(agent.clone()),
                timestamp: Some("2026-01-01T00:00:00.000Z".into()),
            },
            history: vec![user, agent],
            artifacts: vec![artifact],
            metadata: meta,
            kind: v03::TaskKind::Tag,
        };
        let same = |t: &v03::Task| {
            assert_eq!(serde_json::to_string(&AsV1(t)).unwrap(), serde_json::to_string(&Task::from(t)).unwrap());
        };
        same(&task);
        task.artifacts.clear();
        task.history.clear();
        task.metadata = None;
        task.status = v03::TaskStatus { state: v03::TaskState::Working, message: None, timestamp: None };
        same(&task);
    }

    #[test]
    fn requests_read_camel_and_snake_case_and_parts_are_a_oneof() {
        let req: SendMessageRequest = serde_json::from_value(json!({
            "message": {"message_id": "m", "role": "ROLE_USER", "context_id": "c",
                        "parts": [{"text": "hi"}, {"data": [1, 2]}, {"url": "https://x/y", "media_type": "text/plain"}]},
            "configuration": {"returnImmediately": true, "history_length": 2,
                              "taskPushNotificationConfig": {"url": "http://127.0.0.1:9/h",
                                                             "authentication": {"scheme": "Bearer", "credentials": "s"}}}
        }))
        .unwrap();
        let p = req.into_v03().unwrap();
        assert_eq!(p.message.context_id.as_deref(), Some("c"));
        let cfg = p.configuration.unwrap();
        assert_eq!((cfg.blocking, cfg.history_length), (Some(false), Some(2)));
        assert_eq!(cfg.push_notification_config.unwrap().authentication.unwrap()["schemes"][0], "Bearer");
        expect![[r#"{"role":"user","parts":[{"kind":"text","text":"hi"},{"kind":"data","data":{"value":[1,2]}},{"kind":"file","file":{"mimeType":"text/plain","uri":"https://x/y"}}],"messageId":"m","contextId":"c","kind":"message"}"#]]
            .assert_eq(&serde_json::to_string(&p.message).unwrap());
        for bad in [json!({}), json!({"text": "a", "data": 1}), json!({"raw": "aGk=", "url": "x"})] {
            let e = serde_json::from_value::<Part>(bad.clone()).unwrap_err();
            assert!(e.to_string().contains("exactly one"), "{bad}: {e}");
        }
        assert_eq!(
            serde_json::from_value::<Part>(json!({"data": null})).unwrap().content,
            PartContent::Data(Value::Null)
        );
        // An omitted configuration blocks (1.0's default).
        let req: SendMessageRequest = serde_json::from_value(
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]}}),
        )
        .unwrap();
        assert_eq!(req.into_v03().unwrap().configuration.unwrap().blocking, Some(true));
        let unspecified: Message =
            serde_json::from_value(json!({"messageId": "m", "role": "ROLE_UNSPECIFIED", "parts": [{"text": "x"}]}))
                .unwrap();
        assert!(v03::Message::try_from(unspecified).is_err());
    }

    fn cards() -> (AgentCard, v03::AgentCard) {
        let ext = v03::AgentExtension {
            uri: v03::RATCHET_ROLE_EXTENSION.into(),
            description: None,
            required: Some(false),
            params: Some(Map::from_iter([("role".to_string(), json!("critic"))])),
        };
        let skill = v03::AgentSkill {
            id: "critique".into(),
            name: "Critique".into(),
            description: "d".into(),
            tags: vec!["ratchet:role:critic".into()],
            examples: vec![],
            input_modes: None,
            output_modes: None,
        };
        let old = v03::AgentCard {
            protocol_version: "0.3.0".into(),
            name: "critic".into(),
            description: "reviews".into(),
            url: "http://127.0.0.1:1/".into(),
            preferred_transport: "JSONRPC".into(),
            additional_interfaces: vec![],
            provider: None,
            version: "0.1.0".into(),
            documentation_url: None,
            capabilities: v03::AgentCapabilities {
                streaming: Some(true),
                push_notifications: Some(true),
                state_transition_history: None,
                extensions: vec![ext],
            },
            security_schemes: Some(Map::from_iter([(
                "bearer".to_string(),
                json!({"type": "http", "scheme": "bearer"}),
            )])),
            security: Some(vec![Map::from_iter([("bearer".to_string(), json!([]))])]),
            default_input_modes: vec!["text/plain".into()],
            default_output_modes: vec!["application/json".into()],
            skills: vec![skill],
            supports_authenticated_extended_card: None,
        };
        let mut new = card_from_v03(&old);
        new.supported_interfaces = vec![
            AgentInterface {
                url: old.url.clone(),
                protocol_binding: BINDING_JSONRPC.into(),
                tenant: None,
                protocol_version: PROTOCOL_VERSION.into(),
            },
            AgentInterface {
                url: old.url.clone(),
                protocol_binding: BINDING_HTTP_JSON.into(),
                tenant: None,
                protocol_version: PROTOCOL_VERSION.into(),
            },
            AgentInterface {
                url: old.url.clone(),
                protocol_binding: BINDING_JSONRPC.into(),
                tenant: None,
                protocol_version: DEFAULT_VERSION.into(),
            },
        ];
        new.security_schemes = Map::from_iter([("bearer".to_string(), bearer_scheme())]);
        new.security_requirements =
            vec![SecurityRequirement { schemes: BTreeMap::from([("bearer".to_string(), StringList::default())]) }];
        (new, old)
    }

    #[test]
    fn one_card_for_both_generations() {
        let (new, old) = cards();
        let merged = merged_card(&new, &old);
        expect![[r#"{"capabilities":{"extensions":[{"params":{"role":"critic"},"required":false,"uri":"https://ratchet.dev/a2a/role/v1"}],"pushNotifications":true,"streaming":true},"defaultInputModes":["text/plain"],"defaultOutputModes":["application/json"],"description":"reviews","name":"critic","preferredTransport":"JSONRPC","protocolVersion":"0.3.0","security":[{"bearer":[]}],"securityRequirements":[{"schemes":{"bearer":{"list":[]}}}],"securitySchemes":{"bearer":{"httpAuthSecurityScheme":{"scheme":"Bearer"},"scheme":"bearer","type":"http"}},"skills":[{"description":"d","id":"critique","name":"Critique","tags":["ratchet:role:critic"]}],"supportedInterfaces":[{"protocolBinding":"JSONRPC","protocolVersion":"1.0","url":"http://127.0.0.1:1/"},{"protocolBinding":"HTTP+JSON","protocolVersion":"1.0","url":"http://127.0.0.1:1/"},{"protocolBinding":"JSONRPC","protocolVersion":"0.3","url":"http://127.0.0.1:1/"}],"url":"http://127.0.0.1:1/","version":"0.1.0"}"#]]
            .assert_eq(&serde_json::to_string(&merged).unwrap());
        let bytes = serde_json::to_vec(&merged).unwrap();
        // A 1.0 reader takes the interfaces; a 0.3 reader its own members.
        let mut as_new = parse_card(&bytes).unwrap();
        assert_eq!(as_new.security_schemes["bearer"]["httpAuthSecurityScheme"]["scheme"], "Bearer");
        as_new.security_schemes = new.security_schemes.clone();
        assert_eq!(as_new, new, "a 1.0 reader sees the 1.0 card (and the 0.3 scheme members beside its own)");
        assert_eq!(
            as_new.jsonrpc_interface().map(|(i, v)| (i.url.as_str(), v)),
            Some(("http://127.0.0.1:1/", Version::V1_0))
        );
        assert_eq!(as_new.ratchet_role().as_deref(), Some("critic"));
        let mut as_old: v03::AgentCard = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(as_old.security_schemes.as_ref().unwrap()["bearer"]["type"], "http");
        as_old.security_schemes = old.security_schemes.clone();
        assert_eq!(as_old, old);
        // A plain 0.3 card reads as a 1.0 card with one 0.3 interface.
        let from_old = parse_card(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(from_old.jsonrpc_interface().map(|(_, v)| v), Some(Version::V0_3));
        assert!(from_old.has_skill("critique"));
        assert!(parse_card(b"{\"name\": 1}").is_err());
    }
}
