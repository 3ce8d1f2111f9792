//! Error bodies in the shape each endpoint's clients expect.
//!
//! Every failure this crate produces, whether bad input, an upstream fault or its own limit,
//! becomes an [`ApiError`], which renders as an Anthropic error
//! (`{"type":"error","error":{"type":…,"message":…}}`) on `/v1/messages` and as an OpenAI error
//! (`{"error":{"message":…,"type":…,"param":null,"code":null}}`) on `/v1/chat/completions`.
//!
//! ```
//! use http::StatusCode;
//! use tower_llm_bridge::error::ApiError;
//!
//! // An upstream 503 becomes Anthropic's 529 overloaded_error, so SDKs retry it.
//! let err = ApiError::from_upstream_status(StatusCode::SERVICE_UNAVAILABLE, "busy");
//! assert_eq!(err.status(), 529);
//! assert_eq!(err.error_type(), "overloaded_error");
//!
//! let res: http::Response<bytes::Bytes> = err.into_anthropic_response();
//! assert_eq!(res.headers()["content-type"], "application/json");
//! assert!(res.headers().contains_key("request-id"));
//! ```

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// An error to be sent to the client, with its HTTP status and Anthropic error type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
    retry_after: Option<HeaderValue>,
}

/// Status 529, Anthropic's "overloaded".
const OVERLOADED: u16 = 529;

impl ApiError {
    /// An error with an explicit status and Anthropic error type.
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `400 invalid_request_error`: the client sent something we cannot accept.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// let err = ApiError::invalid_request("max_tokens: field required");
    /// assert_eq!(err.status(), 400);
    /// assert_eq!(err.message(), "max_tokens: field required");
    /// ```
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// `413 request_too_large`: the body is over the configured limit.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// assert_eq!(ApiError::request_too_large(1024).error_type(), "request_too_large");
    /// ```
    pub fn request_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// `404 not_found_error` for a route this proxy does not serve.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// assert_eq!(ApiError::not_found("/v2/x").status(), 404);
    /// ```
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no route for {path}"),
        )
    }

    /// `401 authentication_error`.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// assert_eq!(ApiError::authentication("invalid x-api-key").status(), 401);
    /// ```
    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    /// `502 api_error`: the upstream could not be reached or sent something unusable.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// assert_eq!(ApiError::bad_gateway("connection refused").status(), 502);
    /// ```
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "api_error", message)
    }

    /// `504 timeout_error`: the upstream did not answer in time.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// assert_eq!(ApiError::gateway_timeout("upstream timed out").status(), 504);
    /// ```
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message)
    }

    /// Maps an upstream error status to the status and type an Anthropic client expects
    /// (SPEC §29): 503 and 529 become `529 overloaded_error`, other 4xx keep their status as
    /// `invalid_request_error`, other 5xx become `api_error`.
    ///
    /// ```
    /// # use http::StatusCode;
    /// # use tower_llm_bridge::error::ApiError;
    /// let err = ApiError::from_upstream_status(StatusCode::TOO_MANY_REQUESTS, "slow down");
    /// assert_eq!((err.status().as_u16(), err.error_type()), (429, "rate_limit_error"));
    /// let err = ApiError::from_upstream_status(StatusCode::IM_A_TEAPOT, "teapot");
    /// assert_eq!((err.status().as_u16(), err.error_type()), (418, "invalid_request_error"));
    /// ```
    pub fn from_upstream_status(status: StatusCode, message: impl Into<String>) -> Self {
        let (status, error_type) = match status.as_u16() {
            401 => (status, "authentication_error"),
            402 => (status, "billing_error"),
            403 => (status, "permission_error"),
            404 => (status, "not_found_error"),
            413 => (status, "request_too_large"),
            429 => (status, "rate_limit_error"),
            503 | OVERLOADED => (overloaded_status(), "overloaded_error"),
            504 => (status, "timeout_error"),
            // 400 and every other client error keep their status.
            400..=499 => (status, "invalid_request_error"),
            _ => (
                if status.is_server_error() {
                    status
                } else {
                    StatusCode::BAD_GATEWAY
                },
                "api_error",
            ),
        };
        Self::new(status, error_type, message)
    }

    /// Attaches a `retry-after` value to send back with the error.
    ///
    /// ```
    /// # use http::{HeaderValue, StatusCode};
    /// # use tower_llm_bridge::error::ApiError;
    /// let res: http::Response<bytes::Bytes> = ApiError::from_upstream_status(StatusCode::TOO_MANY_REQUESTS, "later")
    ///     .with_retry_after(Some(HeaderValue::from_static("7")))
    ///     .into_anthropic_response();
    /// assert_eq!(res.headers()["retry-after"], "7");
    /// ```
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<HeaderValue>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The Anthropic error type (`invalid_request_error`, `overloaded_error`, …).
    pub fn error_type(&self) -> &'static str {
        self.error_type
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The Anthropic JSON body: `{"type":"error","error":{"type":…,"message":…}}`.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// let body = ApiError::invalid_request("bad").anthropic_body();
    /// assert_eq!(&body[..], br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#);
    /// ```
    pub fn anthropic_body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            r#type: &'static str,
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            r#type: &'static str,
            message: &'a str,
        }
        to_json_bytes(&Envelope {
            r#type: "error",
            error: Inner {
                r#type: self.error_type,
                message: &self.message,
            },
        })
    }

    /// The OpenAI JSON body: `{"error":{"message":…,"type":…,"param":null,"code":null}}`.
    ///
    /// ```
    /// # use tower_llm_bridge::error::ApiError;
    /// let body = ApiError::invalid_request("bad").openai_body();
    /// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert_eq!(v["error"]["message"], "bad");
    /// assert_eq!(v["error"]["type"], "invalid_request_error");
    /// ```
    pub fn openai_body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            r#type: &'static str,
            param: Option<()>,
            code: Option<()>,
        }
        to_json_bytes(&Envelope {
            error: Inner {
                message: &self.message,
                r#type: self.error_type,
                param: None,
                code: None,
            },
        })
    }

    /// A complete Anthropic error response with `content-type`, `request-id` and, when known,
    /// `retry-after`.
    pub fn into_anthropic_response<B: From<Bytes>>(self) -> Response<B> {
        let body = self.anthropic_body();
        self.into_response(body)
    }

    /// A complete OpenAI error response.
    ///
    /// ```
    /// # use http_body_util::Full;
    /// # use bytes::Bytes;
    /// # use tower_llm_bridge::error::ApiError;
    /// let res: http::Response<Full<Bytes>> = ApiError::invalid_request("bad").into_openai_response();
    /// assert_eq!(res.status(), 400);
    /// ```
    pub fn into_openai_response<B: From<Bytes>>(self) -> Response<B> {
        let body = self.openai_body();
        self.into_response(body)
    }

    fn into_response<B: From<Bytes>>(self, body: Bytes) -> Response<B> {
        let mut res = Response::new(B::from(body));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(id) = HeaderValue::from_str(&crate::ids::new_id("req_")) {
            headers.insert("request-id", id);
        }
        if let Some(retry_after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, retry_after);
        }
        res
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error_type, self.message)
    }
}

impl std::error::Error for ApiError {}

fn overloaded_status() -> StatusCode {
    StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// Serializes a value that cannot fail to serialize (plain structs of strings and numbers).
pub(crate) fn to_json_bytes<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn status_table_matches_spec_29() {
        let cases = [
            (400, 400, "invalid_request_error"),
            (401, 401, "authentication_error"),
            (402, 402, "billing_error"),
            (403, 403, "permission_error"),
            (404, 404, "not_found_error"),
            (409, 409, "invalid_request_error"),
            (413, 413, "request_too_large"),
            (422, 422, "invalid_request_error"),
            (429, 429, "rate_limit_error"),
            (500, 500, "api_error"),
            (502, 502, "api_error"),
            (503, 529, "overloaded_error"),
            (504, 504, "timeout_error"),
            (529, 529, "overloaded_error"),
            (301, 502, "api_error"),
        ];
        for (upstream, status, kind) in cases {
            let err = ApiError::from_upstream_status(
                StatusCode::from_u16(upstream).expect("valid status"),
                "m",
            );
            assert_eq!(err.status().as_u16(), status, "status for {upstream}");
            assert_eq!(err.error_type(), kind, "type for {upstream}");
        }
    }

    #[test]
    fn anthropic_response_has_shape_and_headers() {
        let res: Response<Full<Bytes>> = ApiError::invalid_request("messages: field required")
            .with_retry_after(Some(HeaderValue::from_static("3")))
            .into_anthropic_response();
        assert_eq!(res.status(), 400);
        assert_eq!(res.headers()["retry-after"], "3");
        let id = res.headers()["request-id"].to_str().expect("ascii");
        assert!(id.starts_with("req_"));
    }
}
