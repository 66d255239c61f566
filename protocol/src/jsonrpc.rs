//! The JSON-RPC 2.0 envelope, modelled once (as rust-analyzer's lsp-server does) and shared by
//! every server and client in the swarm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request id: JSON-RPC allows a string, a number or null.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Num(i64),
    Str(String),
    Null,
}

impl From<i64> for RequestId {
    fn from(n: i64) -> Self {
        RequestId::Num(n)
    }
}

/// A request as sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    pub id: RequestId,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Request {
    pub fn new(id: impl Into<RequestId>, method: &str, params: impl Serialize) -> Request {
        Request {
            jsonrpc: "2.0".into(),
            id: id.into(),
            method: method.to_string(),
            params: Some(serde_json::to_value(params).expect("A2A params always serialize")),
        }
    }
}

/// A response: exactly one of `result` and `error` is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: RequestId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

impl Response {
    pub fn ok(id: RequestId, result: impl Serialize) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(serde_json::to_value(result).expect("A2A results always serialize")),
            error: None,
        }
    }

    pub fn err(id: RequestId, error: ErrorObject) -> Response {
        Response { jsonrpc: "2.0".into(), id, result: None, error: Some(error) }
    }

    /// The result, or the error as a Rust error.
    pub fn into_result(self) -> Result<Value, ErrorObject> {
        match (self.result, self.error) {
            (_, Some(e)) => Err(e),
            (Some(v), None) => Ok(v),
            (None, None) => Ok(Value::Null),
        }
    }
}

/// The error member of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Standard JSON-RPC and A2A error codes (A2A 0.3 §8; 1.0 §5.4 adds -32008 and -32009).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InternalError,
    TaskNotFound,
    TaskNotCancelable,
    PushNotificationNotSupported,
    UnsupportedOperation,
    ContentTypeNotSupported,
    InvalidAgentResponse,
    AuthenticatedExtendedCardNotConfigured,
    ExtensionSupportRequired,
    VersionNotSupported,
}

impl ErrorCode {
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::InternalError => -32603,
            ErrorCode::TaskNotFound => -32001,
            ErrorCode::TaskNotCancelable => -32002,
            ErrorCode::PushNotificationNotSupported => -32003,
            ErrorCode::UnsupportedOperation => -32004,
            ErrorCode::ContentTypeNotSupported => -32005,
            ErrorCode::InvalidAgentResponse => -32006,
            ErrorCode::AuthenticatedExtendedCardNotConfigured => -32007,
            ErrorCode::ExtensionSupportRequired => -32008,
            ErrorCode::VersionNotSupported => -32009,
        }
    }

    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::InternalError,
        ErrorCode::TaskNotFound,
        ErrorCode::TaskNotCancelable,
        ErrorCode::PushNotificationNotSupported,
        ErrorCode::UnsupportedOperation,
        ErrorCode::ContentTypeNotSupported,
        ErrorCode::InvalidAgentResponse,
        ErrorCode::AuthenticatedExtendedCardNotConfigured,
        ErrorCode::ExtensionSupportRequired,
        ErrorCode::VersionNotSupported,
    ];

    pub fn from_code(code: i64) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The `google.rpc.ErrorInfo` reason of an A2A-specific error (1.0 §11.6: "the A2A error
    /// type in UPPER_SNAKE_CASE without the Error suffix"); none for the standard JSON-RPC ones.
    pub fn reason(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::TaskNotFound => "TASK_NOT_FOUND",
            ErrorCode::TaskNotCancelable => "TASK_NOT_CANCELABLE",
            ErrorCode::PushNotificationNotSupported => "PUSH_NOTIFICATION_NOT_SUPPORTED",
            ErrorCode::UnsupportedOperation => "UNSUPPORTED_OPERATION",
            ErrorCode::ContentTypeNotSupported => "CONTENT_TYPE_NOT_SUPPORTED",
            ErrorCode::InvalidAgentResponse => "INVALID_AGENT_RESPONSE",
            ErrorCode::AuthenticatedExtendedCardNotConfigured => "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
            ErrorCode::ExtensionSupportRequired => "EXTENSION_SUPPORT_REQUIRED",
            ErrorCode::VersionNotSupported => "VERSION_NOT_SUPPORTED",
            _ => return None,
        })
    }

    /// The HTTP status of this error in the HTTP+JSON binding. A2A 1.0.0 §5.4's table, which
    /// the official TCK (branch 1.0-dev) checks: 409 for TaskNotCancelable, 415 for
    /// ContentTypeNotSupported, 502 for InvalidAgentResponse (1.0.1 later changed these three to
    /// 400 and 500; the 1.0.0 values are kept until the TCK follows).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::TaskNotFound | ErrorCode::MethodNotFound => 404,
            ErrorCode::TaskNotCancelable => 409,
            ErrorCode::ContentTypeNotSupported => 415,
            ErrorCode::InvalidAgentResponse => 502,
            ErrorCode::InternalError => 500,
            _ => 400,
        }
    }

    /// The canonical `google.rpc.Code` name for the `status` member of an HTTP+JSON error
    /// (1.0 §11.6; the gRPC column of §5.4).
    pub fn rpc_status(self) -> &'static str {
        match self {
            ErrorCode::TaskNotFound => "NOT_FOUND",
            ErrorCode::MethodNotFound => "UNIMPLEMENTED",
            ErrorCode::ContentTypeNotSupported
            | ErrorCode::InvalidParams
            | ErrorCode::InvalidRequest
            | ErrorCode::ParseError => "INVALID_ARGUMENT",
            ErrorCode::InvalidAgentResponse | ErrorCode::InternalError => "INTERNAL",
            _ => "FAILED_PRECONDITION",
        }
    }

    /// Build the error object; `message` should name the problem and the fix.
    pub fn with(self, message: impl Into<String>) -> ErrorObject {
        ErrorObject { code: self.code(), message: message.into(), data: None }
    }

    /// An A2A error with its message, to be rendered for a binding and version.
    pub fn fault(self, message: impl Into<String>) -> Fault {
        Fault { code: self, message: message.into(), metadata: BTreeMap::new() }
    }
}

/// The domain of every A2A `ErrorInfo` (1.0 §9.5, §11.6).
pub const ERROR_DOMAIN: &str = "a2a-protocol.org";
/// The ProtoJSON `@type` of `google.rpc.ErrorInfo`.
pub const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// An error of an A2A operation, before it is rendered: its code, a message that names the
/// problem and the fix, and context (a task id, ...) for the 1.0 `ErrorInfo.metadata`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Fault {
    pub code: ErrorCode,
    pub message: String,
    pub metadata: BTreeMap<String, String>,
}

impl Fault {
    pub fn meta(mut self, key: &str, value: impl Into<String>) -> Fault {
        self.metadata.insert(key.to_string(), value.into());
        self
    }

    /// The `google.rpc.ErrorInfo` detail of an A2A-specific error (none for the standard ones).
    pub fn error_info(&self) -> Option<Value> {
        let reason = self.code.reason()?;
        let mut info = serde_json::json!({"@type": ERROR_INFO_TYPE, "reason": reason, "domain": ERROR_DOMAIN});
        if !self.metadata.is_empty() {
            info["metadata"] = serde_json::to_value(&self.metadata).expect("string maps serialize");
        }
        Some(info)
    }

    /// The JSON-RPC error object: in 1.0 with `data` the array of error details (§9.5), in 0.3
    /// without.
    pub fn to_jsonrpc(&self, v1: bool) -> ErrorObject {
        let data = if v1 { self.error_info().map(|i| Value::Array(vec![i])) } else { None };
        ErrorObject { code: self.code.code(), message: self.message.clone(), data }
    }

    /// The HTTP+JSON error: its status and the `google.rpc.Status` body (§11.6).
    pub fn to_rest(&self) -> (u16, Value) {
        let status = self.code.http_status();
        let details: Vec<Value> = self.error_info().into_iter().collect();
        let body = serde_json::json!({"error": {
            "code": status,
            "status": self.code.rpc_status(),
            "message": self.message,
            "details": details,
        }});
        (status, body)
    }
}

impl From<Fault> for ErrorObject {
    fn from(f: Fault) -> ErrorObject {
        f.to_jsonrpc(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn envelope_shapes() {
        let req = Request::new(7, "tasks/get", serde_json::json!({"id": "t1"}));
        expect![[r#"{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{"id":"t1"}}"#]]
            .assert_eq(&serde_json::to_string(&req).unwrap());
        let resp = Response::err(RequestId::Str("a".into()), ErrorCode::TaskNotFound.with("no task t1"));
        expect![[r#"{"jsonrpc":"2.0","id":"a","error":{"code":-32001,"message":"no task t1"}}"#]]
            .assert_eq(&serde_json::to_string(&resp).unwrap());
        let null: Response = serde_json::from_str(r#"{"jsonrpc":"2.0","id":null,"result":1}"#).unwrap();
        assert_eq!(null.id, RequestId::Null);
    }

    #[test]
    fn faults_render_per_version_and_binding() {
        let f = ErrorCode::TaskNotFound.fault("task \"x\" not found").meta("taskId", "x");
        expect![[r#"{"code":-32001,"message":"task \"x\" not found"}"#]]
            .assert_eq(&serde_json::to_string(&f.to_jsonrpc(false)).unwrap());
        expect![[r#"{"code":-32001,"message":"task \"x\" not found","data":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"a2a-protocol.org","metadata":{"taskId":"x"},"reason":"TASK_NOT_FOUND"}]}"#]]
            .assert_eq(&serde_json::to_string(&f.to_jsonrpc(true)).unwrap());
        let (status, body) = ErrorCode::TaskNotCancelable.fault("done").to_rest();
        assert_eq!(status, 409);
        expect![[r#"{"error":{"code":409,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"a2a-protocol.org","reason":"TASK_NOT_CANCELABLE"}],"message":"done","status":"FAILED_PRECONDITION"}}"#]]
            .assert_eq(&serde_json::to_string(&body).unwrap());
        // Standard JSON-RPC errors carry no ErrorInfo; every A2A one does.
        assert!(ErrorCode::InvalidParams.fault("x").to_jsonrpc(true).data.is_none());
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
            assert_eq!(c.reason().is_some(), (-32099..=-32001).contains(&c.code()), "{c:?}");
        }
        assert_eq!(ErrorCode::VersionNotSupported.code(), -32009);
    }
}
