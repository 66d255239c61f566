//! The JSON-RPC 2.0 envelope, modelled once (as rust-analyzer's lsp-server does) and shared by
//! every server and client in the swarm.

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

/// Standard JSON-RPC and A2A 0.3 error codes (A2A specification §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }

    /// Build the error object; `message` should name the problem and the fix.
    pub fn with(self, message: impl Into<String>) -> ErrorObject {
        ErrorObject { code: self.code(), message: message.into(), data: None }
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
}
