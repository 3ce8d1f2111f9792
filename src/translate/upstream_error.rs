//! Upstream failures as Anthropic errors: an error response ([`translate_error`]) and an
//! error object met inside a stream. Chat Completions and Responses servers share OpenAI's
//! error shape (`{"error": {"message", "type", "code"}}`), read leniently.

use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// The error object of an OpenAI-style error body, read leniently.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OpenAiErrorBody {
    /// `{"error": {...}}` or `{"error": "text"}`.
    pub error: Option<Value>,
    /// Some servers (FastAPI-based) send `{"detail": ...}`.
    pub detail: Option<Value>,
    /// Some servers send `{"message": ...}` at top level.
    pub message: Option<String>,
}

impl OpenAiErrorBody {
    /// The most specific human-readable message the body carries.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::models::OpenAiErrorBody;
    /// let body: OpenAiErrorBody =
    ///     serde_json::from_str(r#"{"error":{"message":"Rate limit","code":429}}"#).unwrap();
    /// assert_eq!(body.message_text().as_deref(), Some("Rate limit"));
    /// ```
    pub fn message_text(&self) -> Option<String> {
        let from_value = |value: &Value| match value {
            Value::String(text) => Some(text.clone()),
            Value::Object(map) => map
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        self.error
            .as_ref()
            .and_then(from_value)
            .or_else(|| self.detail.as_ref().and_then(from_value))
            .or_else(|| self.message.clone())
            .filter(|text| !text.is_empty())
    }
}

/// Maps an upstream error response to the Anthropic error for its status (SPEC §29),
/// keeping the upstream's message when it has one and passing `retry-after` through.
///
/// ```
/// use http::{HeaderValue, StatusCode};
/// use tower_llm_bridge::translate::response::translate_error;
///
/// let err = translate_error(
///     StatusCode::TOO_MANY_REQUESTS,
///     Some(&HeaderValue::from_static("20")),
///     br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
/// );
/// assert_eq!(err.status(), 429);
/// assert_eq!(err.error_type(), "rate_limit_error");
/// assert_eq!(err.message(), "Rate limit reached");
/// ```
pub fn translate_error(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    body: &[u8],
) -> ApiError {
    let message = crate::parsed::from_slice_max_depth::<OpenAiErrorBody>(
        body,
        crate::parsed::DEFAULT_MAX_JSON_DEPTH,
    )
    .ok()
    .and_then(|parsed| parsed.message_text())
    .unwrap_or_else(|| format!("upstream returned HTTP {}", status.as_u16()));
    ApiError::from_upstream_status(status, message).with_retry_after(retry_after.cloned())
}

/// Maps an upstream error object (`{"error": {...}}`, `{...}` or a string) to the error event
/// sent to the client: `overloaded_error` when the upstream says it is overloaded (so SDKs
/// retry), `api_error` otherwise; the upstream's message is kept.
pub(crate) fn upstream_error(value: &Value) -> ApiError {
    let inner = value
        .get("error")
        .filter(|inner| !inner.is_null())
        .unwrap_or(value);
    let message = match inner {
        Value::String(text) => text.clone(),
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| inner.to_string(), str::to_owned),
        other => other.to_string(),
    };
    if mentions_overload(inner) {
        ApiError::from_upstream_status(http::StatusCode::SERVICE_UNAVAILABLE, message)
    } else {
        ApiError::bad_gateway(message)
    }
}

fn mentions_overload(value: &Value) -> bool {
    match value {
        Value::String(text) => text.to_ascii_lowercase().contains("overload"),
        Value::Number(number) => matches!(number.as_u64(), Some(503 | 529)),
        Value::Object(map) => ["type", "code", "status", "message"]
            .iter()
            .any(|key| map.get(*key).is_some_and(mentions_overload)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_keep_message_and_spot_overload() {
        let err = upstream_error(
            &serde_json::json!({"error": {"message": "Server overloaded, retry", "type": "server_error"}}),
        );
        assert_eq!(
            (err.error_type(), err.message()),
            ("overloaded_error", "Server overloaded, retry")
        );
        let err = upstream_error(&serde_json::json!({"error": {"message": "busy", "code": 529}}));
        assert_eq!(err.error_type(), "overloaded_error");
        let err = upstream_error(&serde_json::json!({"message": "boom", "type": "internal"}));
        assert_eq!((err.error_type(), err.message()), ("api_error", "boom"));
        let err = upstream_error(&serde_json::json!("plain text"));
        assert_eq!(
            (err.error_type(), err.message()),
            ("api_error", "plain text")
        );
    }
}
