//! A JSON-RPC request that sends a message (0.3 `message/send`, 1.0 `SendMessage`: nearly every
//! request an agent serves), decoded in one pass: the envelope and, when `method` comes before
//! `params` (as every client writes it), the params straight into their type as they are read.
//!
//! The general path (the envelope with its params kept as raw text, then the params decoded by
//! the method) scans the params twice, and decodes a 0.3 part, an internally tagged enum,
//! through serde's buffered `Content`: 13K of the 68K instructions of a send (callgrind,
//! BENCHMARKS.md). This path decodes a part whose `kind` comes first (as every client writes
//! it) straight into its variant, and borrows the method's name from the body.
//!
//! It is only a faster way to the same values: [`decode_send`] gives `None` for anything it does
//! not take whole (`params` before `method`, a part whose `kind` is not its first member, a
//! duplicate member, any error) and the caller then takes the general path, so every error,
//! and every value, is the general path's. Property tests pin that whatever this path
//! takes decodes to exactly what the general path gives (`tests` below).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::a2a::{FileContent, Message, MessageKind, MessageSendConfiguration, MessageSendParams, Part, Role};
use crate::a2a_v1;
use crate::jsonrpc::RequestId;

/// A request's envelope; its params decoded when the method is the send of its generation.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub jsonrpc: Cow<'a, str>,
    pub id: RequestId,
    pub method: Cow<'a, str>,
    pub params: Params<'a>,
}

/// A request's params.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one per request, on the stack; boxing is an allocation more")]
pub enum Params<'a> {
    /// As they arrived (absent, or `null`: `None`), for the method to decode.
    Raw(Option<&'a RawValue>),
    /// 0.3 `message/send`'s.
    Send03(MessageSendParams),
    /// 1.0 `SendMessage`'s.
    Send10(a2a_v1::SendMessageRequest),
}

/// Which send's params to decode on the way: the one of the generation the request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOf {
    V03,
    V10,
    /// Neither (a version this agent does not speak): params stay raw.
    Neither,
}

/// The 0.3 send method, and the 1.0 one.
const SEND_03: &str = "message/send";
const SEND_10: &str = "SendMessage";

/// `body` decoded in one pass, or `None` (see the module documentation): then decode it the
/// general way, which gives the same values, or the error.
pub fn decode_send(body: &[u8], send_of: SendOf) -> Option<Envelope<'_>> {
    // The body checked as UTF-8 once (then serde_json reads it as text and checks no string
    // again: 23 checks of a send, 2K instructions).
    let text = std::str::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let envelope = de.deserialize_map(EnvelopeVisitor(send_of)).ok()?;
    de.end().ok()?;
    (envelope.jsonrpc == "2.0").then_some(envelope)
}

/// A member's name, borrowed when the body has it unescaped.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A request id, without the buffering of `RequestId`'s untagged derive: a whole number that
/// fits an `i64`, a string, or null (anything else fails, and the general path decides).
struct Id(RequestId);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a request id")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id(RequestId::Num(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                i64::try_from(v).map(|n| Id(RequestId::Num(n))).map_err(|_| E::custom("id out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id(RequestId::Str(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Id, E> {
                Ok(Id(RequestId::Null))
            }
        }
        d.deserialize_any(V)
    }
}

struct EnvelopeVisitor(SendOf);

fn duplicate<E: de::Error>() -> E {
    E::custom("duplicate member")
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let (mut jsonrpc, mut id, mut method, mut params) = (None, None, None, None);
        while let Some(Name(key)) = map.next_key::<Name<'de>>()? {
            match key.as_ref() {
                "jsonrpc" if jsonrpc.is_some() => return Err(duplicate()),
                "jsonrpc" => jsonrpc = Some(map.next_value::<Name<'de>>()?.0),
                "id" if id.is_some() => return Err(duplicate()),
                "id" => id = Some(map.next_value::<Id>()?.0),
                "method" if method.is_some() => return Err(duplicate()),
                "method" => method = Some(map.next_value::<Name<'de>>()?.0),
                "params" if params.is_some() => return Err(duplicate()),
                "params" => {
                    params = Some(match (self.0, method.as_deref()) {
                        (SendOf::V03, Some(SEND_03)) => Params::Send03(map.next_value::<SendParams03>()?.into()),
                        (SendOf::V10, Some(SEND_10)) => Params::Send10(map.next_value()?),
                        // Not a send, or `params` before `method`: as the general path reads it.
                        _ => Params::Raw(map.next_value::<Option<&'de RawValue>>()?),
                    })
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (Some(jsonrpc), Some(method)) = (jsonrpc, method) else {
            return Err(de::Error::custom("jsonrpc and method are required"));
        };
        // A send's params given before its method were kept raw: the general path decodes them.
        let params = params.unwrap_or(Params::Raw(None));
        Ok(Envelope { jsonrpc, id: id.unwrap_or(RequestId::Null), method, params })
    }
}

/// `MessageSendParams`, its message read as [`Message03`]. The same members and attributes as
/// `MessageSendParams` (the conversion below names every field: a field added there fails to
/// compile here until it is added).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendParams03 {
    message: Message03,
    #[serde(default)]
    configuration: Option<MessageSendConfiguration>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

impl From<SendParams03> for MessageSendParams {
    fn from(p: SendParams03) -> MessageSendParams {
        let SendParams03 { message, configuration, metadata } = p;
        MessageSendParams { message: message.into(), configuration, metadata }
    }
}

/// A 0.3 `Message` whose parts are read by [`Part03`]: the same members and attributes as
/// `Message`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message03 {
    role: Role,
    parts: Vec<Part03>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    extensions: Vec<String>,
    #[serde(default)]
    reference_task_ids: Vec<String>,
    message_id: String,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    context_id: Option<String>,
    kind: MessageKind,
}

impl From<Message03> for Message {
    fn from(m: Message03) -> Message {
        let Message03 { role, parts, metadata, extensions, reference_task_ids, message_id, task_id, context_id, kind } =
            m;
        Message {
            role,
            parts: parts.into_iter().map(|p| p.0).collect(),
            metadata,
            extensions,
            reference_task_ids,
            message_id,
            task_id,
            context_id,
            kind,
        }
    }
}

/// A 0.3 `Part` whose `kind` is its first member, read straight into its variant (the derived
/// internally tagged decoding buffers the whole part first, to find `kind` wherever it is).
struct Part03(Part);

/// Whether a member is there, whatever its value.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

// The members of each variant after `kind` (a second `kind` is an error: `repeated`).
#[derive(Deserialize)]
struct TextBody {
    text: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default, rename = "kind", deserialize_with = "present")]
    repeated: bool,
}

#[derive(Deserialize)]
struct FileBody {
    file: FileContent,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default, rename = "kind", deserialize_with = "present")]
    repeated: bool,
}

#[derive(Deserialize)]
struct DataBody {
    data: Map<String, Value>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default, rename = "kind", deserialize_with = "present")]
    repeated: bool,
}

impl<'de> Deserialize<'de> for Part03 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Part03;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a part whose first member is kind")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Part03, A::Error> {
                let Some(Name(key)) = map.next_key::<Name<'de>>()? else {
                    return Err(de::Error::custom("kind is not the first member"));
                };
                if key != "kind" {
                    return Err(de::Error::custom("kind is not the first member"));
                }
                let Name(kind) = map.next_value::<Name<'de>>()?;
                let rest = MapAccessDeserializer::new(map);
                let (part, repeated) = match kind.as_ref() {
                    "text" => {
                        let b = TextBody::deserialize(rest)?;
                        (Part::Text { text: b.text, metadata: b.metadata }, b.repeated)
                    }
                    "file" => {
                        let b = FileBody::deserialize(rest)?;
                        (Part::File { file: b.file, metadata: b.metadata }, b.repeated)
                    }
                    "data" => {
                        let b = DataBody::deserialize(rest)?;
                        (Part::Data { data: b.data, metadata: b.metadata }, b.repeated)
                    }
                    _ => return Err(de::Error::custom("unknown kind")),
                };
                if repeated {
                    return Err(duplicate());
                }
                Ok(Part03(part))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The general path: the envelope with raw params (as the server's `WireRequest`), then the
    /// params decoded into the method's type.
    #[derive(Debug, Deserialize)]
    struct General<'a> {
        jsonrpc: Cow<'a, str>,
        #[serde(default = "null_id")]
        id: RequestId,
        method: Cow<'a, str>,
        #[serde(borrow, default)]
        params: Option<&'a RawValue>,
    }

    fn null_id() -> RequestId {
        RequestId::Null
    }

    /// What the general path makes of `body`: the envelope, the params' raw text, and the
    /// params decoded as the send of `send_of` (when the method is that send), or None where the
    /// envelope fails.
    #[allow(clippy::type_complexity)]
    fn general(
        body: &[u8],
        send_of: SendOf,
    ) -> Option<(String, RequestId, String, Option<String>, Option<Result<String, ()>>)> {
        let g: General<'_> = serde_json::from_slice(body).ok()?;
        if g.jsonrpc != "2.0" {
            return None;
        }
        let raw = g.params.map_or("null", |r| r.get());
        let typed = match (send_of, g.method.as_ref()) {
            (SendOf::V03, SEND_03) => {
                Some(serde_json::from_str::<MessageSendParams>(raw).map(|p| format!("{p:?}")).map_err(|_| ()))
            }
            (SendOf::V10, SEND_10) => {
                Some(serde_json::from_str::<a2a_v1::SendMessageRequest>(raw).map(|p| format!("{p:?}")).map_err(|_| ()))
            }
            _ => None,
        };
        Some((g.jsonrpc.into_owned(), g.id, g.method.into_owned(), g.params.map(|r| r.get().to_string()), typed))
    }

    /// Whatever the fast path takes, the general path takes too, to the same values: the same
    /// envelope, and the same params (raw: the same text, which the method then decodes as the
    /// general path would; decoded: what the general path decodes from that text). Returns
    /// whether the fast path took it with its params decoded.
    fn check(body: &[u8], send_of: SendOf) -> Result<bool, TestCaseError> {
        let Some(e) = decode_send(body, send_of) else { return Ok(false) };
        let g = general(body, send_of);
        prop_assert!(
            g.is_some(),
            "the fast path took what the general path refuses: {}",
            String::from_utf8_lossy(body)
        );
        let (jsonrpc, id, method, raw, typed) = g.expect("checked");
        prop_assert_eq!((e.jsonrpc.as_ref(), &e.id, e.method.as_ref()), (jsonrpc.as_str(), &id, method.as_str()));
        match &e.params {
            Params::Raw(r) => {
                prop_assert_eq!(r.map(|r| r.get().to_string()), raw);
                Ok(false)
            }
            Params::Send03(p) => {
                prop_assert_eq!(Some(Ok(format!("{p:?}"))), typed, "{}", String::from_utf8_lossy(body));
                Ok(true)
            }
            Params::Send10(p) => {
                prop_assert_eq!(Some(Ok(format!("{p:?}"))), typed, "{}", String::from_utf8_lossy(body));
                Ok(true)
            }
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9 ]{0,12}", "\\PC{0,8}", Just("a\"b\\c\n\u{1}é".to_string())]
    }

    fn value() -> impl Strategy<Value = Value> {
        crate::json::tests::values(text().boxed(), 2, 8, 3)
    }

    /// A member of an object: usually right, sometimes of the wrong type or missing.
    fn member(key: &'static str, good: BoxedStrategy<Value>) -> BoxedStrategy<Option<(String, Value)>> {
        prop_oneof![
            40 => good.prop_map(move |v| Some((key.to_string(), v))),
            1 => value().prop_map(move |v| Some((key.to_string(), v))),
            1 => Just(None),
        ]
        .boxed()
    }

    /// An object of `members` (now and then one dropped, one repeated, an unknown one added, two
    /// swapped), in the given order otherwise.
    fn object(members: Vec<BoxedStrategy<Option<(String, Value)>>>) -> BoxedStrategy<String> {
        let rarely = || proptest::bool::weighted(0.05);
        (members, rarely(), rarely(), proptest::option::weighted(0.1, (text(), value())), any::<u64>())
            .prop_map(|(members, shuffle, repeat, extra, seed)| {
                let mut m: Vec<(String, Value)> = members.into_iter().flatten().collect();
                if let Some(x) = extra {
                    m.push(x);
                }
                if repeat && !m.is_empty() {
                    let dup = m[seed as usize % m.len()].clone();
                    m.push(dup);
                }
                if shuffle && m.len() > 1 {
                    let n = m.len();
                    m.swap(seed as usize % n, (seed as usize / 7) % n);
                }
                let body: Vec<String> =
                    m.iter().map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), splice(v))).collect();
                format!("{{{}}}", body.join(","))
            })
            .boxed()
    }

    /// JSON text as a member's value: carried as a marked string and spliced in as it is
    /// (member order and repeated members do not survive a `Value`).
    fn raw(s: BoxedStrategy<String>) -> BoxedStrategy<Value> {
        s.prop_map(|t| Value::String(format!("\u{0}RAW{t}"))).boxed()
    }

    /// JSON text of `v`, with the objects that `raw` wrapped spliced in as they were written.
    fn splice(v: &Value) -> String {
        match v {
            Value::String(s) if s.starts_with("\u{0}RAW") => s["\u{0}RAW".len()..].to_string(),
            Value::Array(a) => format!("[{}]", a.iter().map(splice).collect::<Vec<_>>().join(",")),
            Value::Object(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), splice(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => serde_json::to_string(other).unwrap(),
        }
    }

    fn part03() -> BoxedStrategy<Value> {
        let map = || {
            proptest::option::of(proptest::collection::btree_map(text(), value(), 0..2)).prop_map(|m| match m {
                Some(m) => Value::Object(m.into_iter().collect()),
                None => Value::Null,
            })
        };
        raw(prop_oneof![
            object(vec![
                member("kind", Just(json!("text")).boxed()),
                member("text", text().prop_map(Value::String).boxed()),
                member("metadata", map().boxed()),
            ]),
            object(vec![
                member("kind", Just(json!("data")).boxed()),
                member(
                    "data",
                    proptest::collection::btree_map(text(), value(), 0..3)
                        .prop_map(|m| Value::Object(m.into_iter().collect()))
                        .boxed()
                ),
                member("metadata", map().boxed()),
            ]),
            object(vec![
                member("kind", Just(json!("file")).boxed()),
                member(
                    "file",
                    (proptest::option::of(text()), proptest::option::of(text()))
                        .prop_map(|(n, u)| json!({"name": n, "uri": u}))
                        .boxed()
                ),
            ]),
        ]
        .boxed())
    }

    fn message03() -> BoxedStrategy<Value> {
        raw(object(vec![
            member("kind", Just(json!("message")).boxed()),
            member("role", prop_oneof![Just(json!("user")), Just(json!("agent"))].boxed()),
            member("messageId", text().prop_map(Value::String).boxed()),
            member("parts", proptest::collection::vec(part03(), 0..3).prop_map(Value::Array).boxed()),
            member(
                "metadata",
                proptest::collection::btree_map(text(), value(), 0..2)
                    .prop_map(|m| Value::Object(m.into_iter().collect()))
                    .boxed(),
            ),
            member("contextId", text().prop_map(Value::String).boxed()),
            member("taskId", text().prop_map(Value::String).boxed()),
            member("referenceTaskIds", proptest::collection::vec(text(), 0..2).prop_map(|v| json!(v)).boxed()),
        ]))
    }

    fn params03() -> BoxedStrategy<Value> {
        raw(object(vec![
            member("message", message03()),
            member(
                "configuration",
                (any::<bool>(), proptest::option::of(-2i64..5))
                    .prop_map(|(b, h)| json!({"blocking": b, "historyLength": h}))
                    .boxed(),
            ),
            member(
                "metadata",
                proptest::collection::btree_map(text(), value(), 0..2)
                    .prop_map(|m| Value::Object(m.into_iter().collect()))
                    .boxed(),
            ),
        ]))
    }

    fn params10() -> BoxedStrategy<Value> {
        let metadata = || {
            proptest::collection::btree_map(text(), value(), 0..2)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed()
        };
        let part = raw(prop_oneof![
            object(vec![member("text", text().prop_map(Value::String).boxed()), member("metadata", metadata())]),
            object(vec![member("data", value().boxed()), member("metadata", metadata())]),
        ]
        .boxed());
        let message = raw(object(vec![
            member("role", prop_oneof![Just(json!("ROLE_USER")), Just(json!("ROLE_AGENT"))].boxed()),
            member("messageId", text().prop_map(Value::String).boxed()),
            member("parts", proptest::collection::vec(part, 0..3).prop_map(Value::Array).boxed()),
            member("contextId", text().prop_map(Value::String).boxed()),
        ]));
        raw(object(vec![
            member("message", message),
            member(
                "configuration",
                (any::<bool>(), proptest::option::of(0i64..5))
                    .prop_map(|(b, h)| json!({"returnImmediately": b, "historyLength": h}))
                    .boxed(),
            ),
        ]))
    }

    /// A request: mostly a send of the generation the request speaks, written the usual way;
    /// now and then another method, another generation's send, params of the wrong shape.
    fn request() -> impl Strategy<Value = (String, SendOf)> {
        let quoted = |m: &str| format!("\"{m}\"");
        let any_method = prop_oneof![
            Just(quoted(SEND_03)),
            Just(quoted(SEND_10)),
            Just(quoted("tasks/get")),
            Just("\"mess\\u0061ge/send\"".to_string()),
        ];
        let send_of = || prop_oneof![Just(SendOf::V03), Just(SendOf::V10), Just(SendOf::Neither)];
        let call = prop_oneof![
            4 => (Just(quoted(SEND_03)), params03(), Just(SendOf::V03)),
            4 => (Just(quoted(SEND_10)), params10(), Just(SendOf::V10)),
            2 => (any_method, prop_oneof![params03(), params10(), value().boxed()], send_of()),
        ];
        let id = prop_oneof![
            4 => any::<i64>().prop_map(Value::from),
            4 => text().prop_map(Value::String),
            1 => Just(Value::Null),
            1 => any::<u64>().prop_map(Value::from),
            1 => Just(json!(1.5)),
        ];
        (call, id, prop_oneof![10 => Just(json!("2.0")), 1 => Just(json!("1.0"))]).prop_flat_map(
            |((method, params, send_of), id, jsonrpc)| {
                (
                    object(vec![
                        member("jsonrpc", Just(jsonrpc).boxed()),
                        member("id", Just(id).boxed()),
                        member("method", Just(Value::String(format!("\u{0}RAW{method}"))).boxed()),
                        member("params", Just(params).boxed()),
                    ]),
                    Just(send_of),
                )
            },
        )
    }

    proptest! {
        #![proptest_config(crate::proptests::config())]

        #[test]
        fn what_the_fast_path_takes_the_general_path_decodes_the_same((body, send_of) in request()) {
            check(body.as_bytes(), send_of)?;
        }
    }

    #[test]
    fn the_usual_sends_take_the_fast_path() {
        let b03 = br#"{"jsonrpc":"2.0","id":7,"method":"message/send","params":{"message":{"kind":"message","role":"user","messageId":"m","parts":[{"kind":"text","text":"ping"},{"kind":"data","data":{"skill":"status","n":[1,2.5]}}],"metadata":{"skill":"status"}},"configuration":{"blocking":true}}}"#;
        let b10 = br#"{"jsonrpc":"2.0","id":"x","method":"SendMessage","params":{"message":{"role":"ROLE_USER","messageId":"m","parts":[{"text":"ping"}],"metadata":{"skill":"status"}}}}"#;
        for (body, send_of) in [(&b03[..], SendOf::V03), (&b10[..], SendOf::V10)] {
            let e = decode_send(body, send_of).expect("taken");
            assert!(!matches!(e.params, Params::Raw(_)), "{e:?}");
            assert!(matches!(e.method, Cow::Borrowed(_)), "the method is borrowed from the body");
            proptest::test_runner::TestRunner::default()
                .run(&Just(()), |()| check(body, send_of).map(|taken| assert!(taken, "decoded on the way")))
                .unwrap();
        }
        // Not taken, so decided by the general path: params before method, kind not first,
        // a repeated member, a repeated kind, a version this agent does not speak.
        for body in [
            &br#"{"jsonrpc":"2.0","id":7,"params":{},"method":"message/send"}"#[..],
            br#"{"jsonrpc":"2.0","id":7,"method":"message/send","params":{"message":{"kind":"message","role":"user","messageId":"m","parts":[{"text":"ping","kind":"text"}]}}}"#,
            br#"{"jsonrpc":"2.0","id":7,"id":8,"method":"message/send","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"message/send","params":{"message":{"kind":"message","role":"user","messageId":"m","parts":[{"kind":"text","text":"ping","kind":"text"}]}}}"#,
        ] {
            let e = decode_send(body, SendOf::V03);
            assert!(e.as_ref().is_none_or(|e| matches!(e.params, Params::Raw(_))), "{}: {e:?}", String::from_utf8_lossy(body));
        }
        assert!(matches!(decode_send(b03, SendOf::Neither).expect("the envelope").params, Params::Raw(Some(_))));
    }
}
