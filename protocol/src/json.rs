//! Compact JSON of the A2A values a request serializes most (tasks, messages, parts, status and
//! artifact updates; the 0.3 forms and, through [`AsV1`], their 1.0 forms), written straight
//! into a byte buffer: **the same bytes as `serde_json::to_vec` of their `Serialize`**, pinned by
//! property tests over arbitrary values (`tests` below), at a fraction of the cost.
//!
//! Why: in the wire profile (BENCHMARKS.md, "Where the wire's time and CPU go") serde_json's
//! string escaping was the largest single cost of a `message/send`, a fifth of its instructions:
//! it escapes every field name of every struct one byte at a time, and every string value
//! too. Here field names are literals, and strings are scanned eight bytes at a time.
//! Free-form JSON (`metadata`, data parts) and enums go through serde_json itself, so numbers
//! and maps are exactly its own.

use std::ops::Range;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::a2a::{
    Artifact, FileContent, Message, Part, Role, StreamEvent, Task, TaskArtifactUpdateEvent, TaskState, TaskStatus,
    TaskStatusUpdateEvent,
};
use crate::a2a_v1::{self as v1, AsV1};

/// A value that writes its own compact JSON (the bytes `serde_json::to_vec` gives for it).
pub trait WriteJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// The JSON of `v`.
pub fn to_vec<T: WriteJson + ?Sized>(v: &T) -> Vec<u8> {
    // Room for a task with a few messages: growing the buffer (a `realloc` and a copy) cost more
    // than a larger first allocation.
    let mut out = Vec::with_capacity(2048);
    v.write_json(&mut out);
    out
}

/// `s` as a JSON string, escaped as serde_json escapes it: `"` and `\` with a backslash, the
/// control characters as `\b \t \n \f \r` or `\u00xx`, everything else as it is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut run = 0;
    loop {
        // The clean run (most strings are one), then the byte that needs escaping, if any.
        let at = run + clean_prefix(&b[run..]);
        out.extend_from_slice(&b[run..at]);
        let Some(&c) = b.get(at) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
            }
        }
        run = at + 1;
    }
    out.push(b'"');
}

/// How many bytes at the start of `b` need no escaping: eight at a time, then one at a time.
fn clean_prefix(b: &[u8]) -> usize {
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8) {
        if needs_escape(u64::from_le_bytes(word.try_into().expect("a slice of 8 bytes"))) {
            break;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c < 0x20 || c == b'"' || c == b'\\' {
            return i;
        }
        i += 1;
    }
    i
}

/// `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\` (exact as a whole: the
/// classic "has a byte less than n" and "has a zero byte" tests).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    let s = w ^ (ONES * u64::from(b'\\'));
    let slash = s.wrapping_sub(ONES) & !s & HIGH;
    (below | quote | slash) != 0
}

/// Anything else through serde_json (enums, numbers).
fn serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *out, v).expect("A2A values serialize");
}

/// Free-form JSON (metadata, data parts): strings and keys escaped here, numbers by serde_json.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => serde(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(m) => write_map(out, m),
    }
}

/// A JSON object of free-form members.
pub fn write_map(out: &mut Vec<u8>, m: &Map<String, Value>) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

/// A member's name as it is written, quotes and colon included (`"name":`): one copy of a
/// literal per member instead of four writes (a name needs no escaping).
macro_rules! k {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

/// A JSON object written member by member; each member's name given as [`k!`] writes it.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// The member's name, as [`k!`] writes it (`"name":`), then its value is written.
    #[inline]
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out
    }

    #[inline]
    fn str(&mut self, key: &str, v: &str) {
        write_str(self.key(key), v);
    }

    #[inline]
    fn opt_str(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(key, v);
        }
    }

    #[inline]
    fn json<T: WriteJson + ?Sized>(&mut self, key: &str, v: &T) {
        v.write_json(self.key(key));
    }

    #[inline]
    fn map(&mut self, key: &str, v: Option<&Map<String, Value>>) {
        if let Some(m) = v {
            write_map(self.key(key), m);
        }
    }

    fn strings(&mut self, key: &str, v: &[String]) {
        if !v.is_empty() {
            let out = self.key(key);
            out.push(b'[');
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, s);
            }
            out.push(b']');
        }
    }

    fn seq<T: WriteJson>(&mut self, key: &str, v: &[T]) {
        seq(self.key(key), v.iter());
    }

    #[inline]
    fn raw(&mut self, key: &str, literal: &[u8]) {
        self.key(key).extend_from_slice(literal);
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

fn seq<T: WriteJson>(out: &mut Vec<u8>, items: impl Iterator<Item = T>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item.write_json(out);
    }
    out.push(b']');
}

impl<T: WriteJson + ?Sized> WriteJson for &T {
    fn write_json(&self, out: &mut Vec<u8>) {
        (**self).write_json(out);
    }
}

impl WriteJson for str {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

// -- 0.3 ---------------------------------------------------------------------------------------

/// A 0.3 task state's JSON (its serde name, quoted; pinned by a test).
fn state(s: TaskState) -> &'static str {
    match s {
        TaskState::Submitted => "\"submitted\"",
        TaskState::Working => "\"working\"",
        TaskState::InputRequired => "\"input-required\"",
        TaskState::Completed => "\"completed\"",
        TaskState::Canceled => "\"canceled\"",
        TaskState::Failed => "\"failed\"",
        TaskState::Rejected => "\"rejected\"",
        TaskState::AuthRequired => "\"auth-required\"",
        TaskState::Unknown => "\"unknown\"",
    }
}

impl WriteJson for Message {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        o.raw(
            k!("role"),
            match self.role {
                Role::User => b"\"user\"",
                Role::Agent => b"\"agent\"",
            },
        );
        o.seq(k!("parts"), &self.parts);
        o.map(k!("metadata"), self.metadata.as_ref());
        o.strings(k!("extensions"), &self.extensions);
        o.strings(k!("referenceTaskIds"), &self.reference_task_ids);
        o.str(k!("messageId"), &self.message_id);
        o.opt_str(k!("taskId"), self.task_id.as_deref());
        o.opt_str(k!("contextId"), self.context_id.as_deref());
        o.raw(k!("kind"), b"\"message\"");
        o.end();
    }
}

impl WriteJson for Part {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        let metadata = match self {
            Part::Text { text, metadata } => {
                o.raw(k!("kind"), b"\"text\"");
                o.str(k!("text"), text);
                metadata
            }
            Part::File { file, metadata } => {
                o.raw(k!("kind"), b"\"file\"");
                o.json(k!("file"), file);
                metadata
            }
            Part::Data { data, metadata } => {
                o.raw(k!("kind"), b"\"data\"");
                write_map(o.key(k!("data")), data);
                metadata
            }
        };
        o.map(k!("metadata"), metadata.as_ref());
        o.end();
    }
}

impl WriteJson for FileContent {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        o.opt_str(k!("name"), self.name.as_deref());
        o.opt_str(k!("mimeType"), self.mime_type.as_deref());
        o.opt_str(k!("bytes"), self.bytes.as_deref());
        o.opt_str(k!("uri"), self.uri.as_deref());
        o.end();
    }
}

impl WriteJson for TaskStatus {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_status(out, state(self.state).as_bytes(), self, |m, out| m.write_json(out));
    }
}

/// A status (its state's JSON given) whose message `message` writes; returns where the
/// message's JSON is in `out`.
fn write_status(
    out: &mut Vec<u8>,
    state: &[u8],
    status: &TaskStatus,
    message: fn(&Message, &mut Vec<u8>),
) -> Option<Range<usize>> {
    let mut o = Obj::new(out);
    o.raw(k!("state"), state);
    let span = status.message.as_ref().map(|m| {
        let out = o.key(k!("message"));
        let start = out.len();
        message(m, out);
        start..out.len()
    });
    o.opt_str(k!("timestamp"), status.timestamp.as_deref());
    o.end();
    span
}

/// A task's history, whose messages `message` writes. A task's status message is usually also
/// its last history entry (the same message, applied twice): when it is, its JSON, already
/// written at `status_span`, is copied rather than written again. `plus_status`: the status
/// message is the history's last entry but not in `history` (a task that holds it once).
fn write_history(
    out: &mut Vec<u8>,
    history: &[Message],
    status: &TaskStatus,
    status_span: Option<Range<usize>>,
    plus_status: bool,
    message: fn(&Message, &mut Vec<u8>),
) -> Option<Range<usize>> {
    out.push(b'[');
    let mut first = None;
    for (i, m) in history.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        match &status_span {
            Some(span) if !plus_status && i + 1 == history.len() && status.message.as_ref() == Some(m) => {
                out.extend_from_within(span.clone());
            }
            _ => message(m, out),
        }
        if i == 0 {
            first = Some(start..out.len());
        }
    }
    if plus_status && let Some(span) = status_span {
        if !history.is_empty() {
            out.push(b',');
        }
        out.extend_from_within(span);
    }
    out.push(b']');
    first
}

impl WriteJson for Artifact {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        o.str(k!("artifactId"), &self.artifact_id);
        o.opt_str(k!("name"), self.name.as_deref());
        o.opt_str(k!("description"), self.description.as_deref());
        o.seq(k!("parts"), &self.parts);
        o.map(k!("metadata"), self.metadata.as_ref());
        o.end();
    }
}

impl WriteJson for Task {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_task(out, self);
    }
}

/// [`Task::write_json`], returning where its first history message's JSON is in `out`.
pub fn write_task(out: &mut Vec<u8>, task: &Task) -> Option<Range<usize>> {
    let mut o = Obj::new(out);
    o.str(k!("id"), &task.id);
    o.str(k!("contextId"), &task.context_id);
    let message: fn(&Message, &mut Vec<u8>) = |m, out| m.write_json(out);
    let span = write_status(o.key(k!("status")), state(task.status.state).as_bytes(), &task.status, message);
    let first = if task.history.is_empty() {
        None
    } else {
        write_history(o.key(k!("history")), &task.history, &task.status, span, false, message)
    };
    if !task.artifacts.is_empty() {
        o.seq(k!("artifacts"), &task.artifacts);
    }
    o.map(k!("metadata"), task.metadata.as_ref());
    o.raw(k!("kind"), b"\"task\"");
    o.end();
    first
}

/// The JSON of a task without artifacts and metadata whose status and history messages were
/// serialized already (`status`: a [`TaskStatus`]'s JSON, `history`: each message's): the same
/// bytes as [`Task::write_json`] of that task (a test pins it), spliced instead of written.
pub fn write_task_from_parts(out: &mut Vec<u8>, id: &str, context_id: &str, status: &[u8], history: &[&[u8]]) {
    let mut o = Obj::new(out);
    o.str(k!("id"), id);
    o.str(k!("contextId"), context_id);
    o.raw(k!("status"), status);
    if !history.is_empty() {
        let out = o.key(k!("history"));
        out.push(b'[');
        for (i, m) in history.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(m);
        }
        out.push(b']');
    }
    o.raw(k!("kind"), b"\"task\"");
    o.end();
}

/// A status update event of task `task_id` in context `context_id` (the JSON of a
/// [`TaskStatusUpdateEvent`] without metadata), with the status borrowed from wherever it is.
/// Returns where the status's JSON is in `out`, and its message's.
pub fn write_status_update(
    out: &mut Vec<u8>,
    task_id: &str,
    context_id: &str,
    status: &TaskStatus,
    is_final: bool,
) -> (Range<usize>, Option<Range<usize>>) {
    let mut o = Obj::new(out);
    o.str(k!("taskId"), task_id);
    o.str(k!("contextId"), context_id);
    o.raw(k!("kind"), b"\"status-update\"");
    let out = o.key(k!("status"));
    let start = out.len();
    let message = write_status(out, state(status.state).as_bytes(), status, |m, out| m.write_json(out));
    let span = start..out.len();
    o.raw(k!("final"), if is_final { b"true" } else { b"false" });
    o.end();
    (span, message)
}

impl WriteJson for TaskStatusUpdateEvent {
    fn write_json(&self, out: &mut Vec<u8>) {
        if self.metadata.is_none() {
            write_status_update(out, &self.task_id, &self.context_id, &self.status, self.is_final);
            return;
        }
        let mut o = Obj::new(out);
        o.str(k!("taskId"), &self.task_id);
        o.str(k!("contextId"), &self.context_id);
        o.raw(k!("kind"), b"\"status-update\"");
        o.json(k!("status"), &self.status);
        o.raw(k!("final"), if self.is_final { b"true" } else { b"false" });
        o.map(k!("metadata"), self.metadata.as_ref());
        o.end();
    }
}

impl WriteJson for TaskArtifactUpdateEvent {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        o.str(k!("taskId"), &self.task_id);
        o.str(k!("contextId"), &self.context_id);
        o.raw(k!("kind"), b"\"artifact-update\"");
        o.json(k!("artifact"), &self.artifact);
        if let Some(a) = self.append {
            o.raw(k!("append"), if a { b"true" } else { b"false" });
        }
        if let Some(l) = self.last_chunk {
            o.raw(k!("lastChunk"), if l { b"true" } else { b"false" });
        }
        o.map(k!("metadata"), self.metadata.as_ref());
        o.end();
    }
}

impl WriteJson for StreamEvent {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            StreamEvent::Task(t) => t.write_json(out),
            StreamEvent::Message(m) => m.write_json(out),
            StreamEvent::Status(s) => s.write_json(out),
            StreamEvent::Artifact(a) => a.write_json(out),
        }
    }
}

// -- 1.0, through AsV1 ---------------------------------------------------------------------------

impl WriteJson for AsV1<'_, Part> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        match self.0 {
            Part::Text { text, metadata } => {
                o.str(k!("text"), text);
                o.map(k!("metadata"), metadata.as_ref());
            }
            Part::Data { data, metadata } => {
                write_map(o.key(k!("data")), data);
                o.map(k!("metadata"), metadata.as_ref());
            }
            Part::File { file, metadata } => {
                match (&file.bytes, &file.uri) {
                    (Some(b), _) => o.str(k!("raw"), b),
                    (None, Some(u)) => o.str(k!("url"), u),
                    (None, None) => o.str(k!("raw"), ""),
                }
                o.map(k!("metadata"), metadata.as_ref());
                o.opt_str(k!("filename"), file.name.as_deref());
                o.opt_str(k!("mediaType"), file.mime_type.as_deref());
            }
        }
        o.end();
    }
}

impl WriteJson for AsV1<'_, Message> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let m = self.0;
        let mut o = Obj::new(out);
        o.str(k!("messageId"), &m.message_id);
        o.opt_str(k!("contextId"), m.context_id.as_deref());
        o.opt_str(k!("taskId"), m.task_id.as_deref());
        o.raw(
            k!("role"),
            match m.role {
                Role::User => b"\"ROLE_USER\"",
                Role::Agent => b"\"ROLE_AGENT\"",
            },
        );
        seq(o.key(k!("parts")), m.parts.iter().map(AsV1));
        o.map(k!("metadata"), m.metadata.as_ref());
        o.strings(k!("extensions"), &m.extensions);
        o.strings(k!("referenceTaskIds"), &m.reference_task_ids);
        o.end();
    }
}

impl WriteJson for AsV1<'_, Artifact> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let a = self.0;
        let mut o = Obj::new(out);
        o.str(k!("artifactId"), &a.artifact_id);
        o.opt_str(k!("name"), a.name.as_deref());
        o.opt_str(k!("description"), a.description.as_deref());
        seq(o.key(k!("parts")), a.parts.iter().map(AsV1));
        o.map(k!("metadata"), a.metadata.as_ref());
        o.end();
    }
}

impl WriteJson for AsV1<'_, TaskStatus> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_status(out, v1_state(self.0.state).as_bytes(), self.0, |m, out| AsV1(m).write_json(out));
    }
}

/// A task state's 1.0 JSON (its serde name, quoted; pinned by a test).
fn v1_state(s: TaskState) -> &'static str {
    match v1::TaskState::from(s) {
        v1::TaskState::Unspecified => "\"TASK_STATE_UNSPECIFIED\"",
        v1::TaskState::Submitted => "\"TASK_STATE_SUBMITTED\"",
        v1::TaskState::Working => "\"TASK_STATE_WORKING\"",
        v1::TaskState::Completed => "\"TASK_STATE_COMPLETED\"",
        v1::TaskState::Failed => "\"TASK_STATE_FAILED\"",
        v1::TaskState::Canceled => "\"TASK_STATE_CANCELED\"",
        v1::TaskState::InputRequired => "\"TASK_STATE_INPUT_REQUIRED\"",
        v1::TaskState::Rejected => "\"TASK_STATE_REJECTED\"",
        v1::TaskState::AuthRequired => "\"TASK_STATE_AUTH_REQUIRED\"",
    }
}

impl WriteJson for AsV1<'_, Task> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_task_v1(out, self.0, false);
    }
}

/// A task's 1.0 JSON (`AsV1`). `status_message_last`: the task's status message is also the last
/// entry of its history but is held once, in the status: written as [`AsV1`] writes the task with
/// that message pushed onto its history (a test pins it).
pub fn write_task_v1(out: &mut Vec<u8>, t: &Task, status_message_last: bool) {
    let plus_status = status_message_last && t.status.message.is_some();
    let mut o = Obj::new(out);
    o.str(k!("id"), &t.id);
    o.str(k!("contextId"), &t.context_id);
    let message: fn(&Message, &mut Vec<u8>) = |m, out| AsV1(m).write_json(out);
    let span = write_status(o.key(k!("status")), v1_state(t.status.state).as_bytes(), &t.status, message);
    if !t.artifacts.is_empty() {
        seq(o.key(k!("artifacts")), t.artifacts.iter().map(AsV1));
    }
    if !t.history.is_empty() || plus_status {
        write_history(o.key(k!("history")), &t.history, &t.status, span, plus_status, message);
    }
    o.map(k!("metadata"), t.metadata.as_ref());
    o.end();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::a2a::{ArtifactUpdateKind, MessageKind, StatusUpdateKind, TaskKind};
    use proptest::prelude::*;

    /// Strings that need every kind of escape, and long clean runs (the eight-byte path).
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9 ]{0,40}",
            "\\PC{0,24}",
            proptest::collection::vec(
                prop_oneof![any::<char>(), Just('"'), Just('\\'), Just('\n'), Just('\u{1}'), Just('\u{7f}'), Just('é')],
                0..40
            )
            .prop_map(|v| v.into_iter().collect()),
        ]
    }

    /// Arbitrary JSON values whose strings and keys come from `text`, nested up to `depth`
    /// levels, about `size` nodes, up to `items` per array or object (shared by the protocol's
    /// property tests).
    pub(crate) fn values(text: BoxedStrategy<String>, depth: u32, size: u32, items: usize) -> BoxedStrategy<Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(depth, size, items as u32, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..items).prop_map(Value::Array),
                proptest::collection::btree_map(text.clone(), inner, 0..items)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
    }

    fn value() -> impl Strategy<Value = Value> {
        values(text().boxed(), 3, 16, 4)
    }

    fn map() -> impl Strategy<Value = Option<Map<String, Value>>> {
        proptest::option::of(
            proptest::collection::btree_map(text(), value(), 0..3).prop_map(|m| m.into_iter().collect()),
        )
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            (text(), map()).prop_map(|(text, metadata)| Part::Text { text, metadata }),
            (map(), map()).prop_map(|(data, metadata)| Part::Data { data: data.unwrap_or_default(), metadata }),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                map()
            )
                .prop_map(|(name, mime_type, bytes, uri, metadata)| Part::File {
                    file: FileContent { name, mime_type, bytes, uri },
                    metadata
                }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            any::<bool>(),
            proptest::collection::vec(part(), 0..3),
            map(),
            proptest::collection::vec(text(), 0..2),
            proptest::collection::vec(text(), 0..2),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        )
            .prop_map(
                |(user, parts, metadata, extensions, reference_task_ids, message_id, task_id, context_id)| Message {
                    role: if user { Role::User } else { Role::Agent },
                    parts,
                    metadata,
                    extensions,
                    reference_task_ids,
                    message_id,
                    task_id,
                    context_id,
                    kind: MessageKind::Tag,
                },
            )
    }

    fn state() -> impl Strategy<Value = TaskState> {
        prop_oneof![
            Just(TaskState::Submitted),
            Just(TaskState::Working),
            Just(TaskState::InputRequired),
            Just(TaskState::Completed),
            Just(TaskState::Canceled),
            Just(TaskState::Failed),
            Just(TaskState::Rejected),
            Just(TaskState::AuthRequired),
            Just(TaskState::Unknown),
        ]
    }

    fn status() -> impl Strategy<Value = TaskStatus> {
        (state(), proptest::option::of(message()), proptest::option::of(text()))
            .prop_map(|(state, message, timestamp)| TaskStatus { state, message, timestamp })
    }

    fn artifact() -> impl Strategy<Value = Artifact> {
        (
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::collection::vec(part(), 0..3),
            map(),
        )
            .prop_map(|(artifact_id, name, description, parts, metadata)| Artifact {
                artifact_id,
                name,
                description,
                parts,
                metadata,
            })
    }

    /// A task; often, as a task's status is applied, its status message is also its last
    /// history entry (the case whose JSON is copied).
    fn task() -> impl Strategy<Value = Task> {
        (
            text(),
            text(),
            status(),
            proptest::collection::vec(message(), 0..3),
            proptest::collection::vec(artifact(), 0..2),
            map(),
            any::<bool>(),
        )
            .prop_map(|(id, context_id, status, mut history, artifacts, metadata, applied)| {
                if applied && let Some(m) = &status.message {
                    history.push(m.clone());
                }
                Task { id, context_id, status, history, artifacts, metadata, kind: TaskKind::Tag }
            })
    }

    fn event() -> impl Strategy<Value = StreamEvent> {
        prop_oneof![
            task().prop_map(StreamEvent::Task),
            message().prop_map(StreamEvent::Message),
            (text(), text(), status(), any::<bool>(), map()).prop_map(
                |(task_id, context_id, status, is_final, metadata)| {
                    StreamEvent::Status(TaskStatusUpdateEvent {
                        task_id,
                        context_id,
                        kind: StatusUpdateKind::Tag,
                        status,
                        is_final,
                        metadata,
                    })
                }
            ),
            (
                text(),
                text(),
                artifact(),
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
                map()
            )
                .prop_map(|(task_id, context_id, artifact, append, last_chunk, metadata)| {
                    StreamEvent::Artifact(TaskArtifactUpdateEvent {
                        task_id,
                        context_id,
                        kind: ArtifactUpdateKind::Tag,
                        artifact,
                        append,
                        last_chunk,
                        metadata,
                    })
                }),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptests::config())]

        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(s in text()) {
            let mut out = vec![];
            write_str(&mut out, &s);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn events_and_tasks_are_serde_json_s_bytes(e in event()) {
            prop_assert_eq!(String::from_utf8(to_vec(&e)).unwrap(), serde_json::to_string(&e).unwrap());
        }

        #[test]
        fn a_task_spliced_from_its_parts_is_its_json(mut t in task()) {
            t.artifacts.clear();
            t.metadata = None;
            let whole = to_vec(&t);
            let mut status = vec![];
            let mut out = vec![];
            let (span, _) = write_status_update(&mut out, "t", "c", &t.status, true);
            status.extend_from_slice(&out[span]);
            let history: Vec<Vec<u8>> = t.history.iter().map(to_vec).collect();
            let history: Vec<&[u8]> = history.iter().map(Vec::as_slice).collect();
            let mut spliced = vec![];
            write_task_from_parts(&mut spliced, &t.id, &t.context_id, &status, &history);
            prop_assert_eq!(String::from_utf8(spliced).unwrap(), String::from_utf8(whole.clone()).unwrap());
            // The first message's place, as write_task reports it.
            let mut again = vec![b'x'];
            let first = write_task(&mut again, &t);
            prop_assert_eq!(&again[1..], &whole[..]);
            match (first, t.history.first()) {
                (Some(r), Some(m)) => prop_assert_eq!(&again[r], &to_vec(m)[..]),
                (None, None) => {}
                (r, m) => prop_assert!(false, "span {:?} for first message {:?}", r, m),
            }
        }

        #[test]
        fn the_1_0_forms_are_serde_json_s_bytes_of_the_converted_values(t in task()) {
            prop_assert_eq!(
                String::from_utf8(to_vec(&AsV1(&t))).unwrap(),
                serde_json::to_string(&v1::Task::from(&t)).unwrap()
            );
            for m in &t.history {
                prop_assert_eq!(String::from_utf8(to_vec(&AsV1(m))).unwrap(), serde_json::to_string(&v1::Message::from(m)).unwrap());
            }
        }

        #[test]
        fn a_task_holding_its_status_message_once_writes_the_whole_task_s_1_0_json(t in task()) {
            // The task as a store holds one that ended at once: its status message not (yet) in
            // its history; written as the task with it pushed there.
            let mut whole = t.clone();
            if let Some(m) = &t.status.message {
                whole.history.push(m.clone());
            }
            let mut out = vec![b'x'];
            write_task_v1(&mut out, &t, true);
            prop_assert_eq!(
                String::from_utf8(out[1..].to_vec()).unwrap(),
                serde_json::to_string(&v1::Task::from(&whole)).unwrap()
            );
        }
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut out = vec![];
            write_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn every_byte_value_is_escaped_as_serde_json_does() {
        // Each byte below 0x80 at every position of a 9-byte window (both the eight-byte test and
        // the byte path see it).
        for c in 0u8..0x80 {
            for pos in 0..9 {
                let mut s = vec![b'a'; 9];
                s[pos] = c;
                let s = String::from_utf8(s).unwrap();
                let mut out = vec![];
                write_str(&mut out, &s);
                assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "byte {c:#x} at {pos}");
            }
        }
    }
}
