//! Send each request to the backends that serve its model, and fall back to the next one when
//! a backend fails before answering.
//!
//! A [`Route`] holds a table of rules, tried in order (the first match wins): a pattern of the
//! client's `model` (a case-insensitive substring, or `*` for every model) and the
//! [`Target`]s that serve it, in fallback order. A target is one backend's service for one
//! upstream model — usually a translation layer for the backend's wire (with its model map
//! sending every name to the target's model) over the backend's HTTP client. Targets may
//! speak different wires: the route sits in front of the per-target translation, and never
//! owns an HTTP client or knows a wire.
//!
//! For each request the route:
//!
//! 1. takes the [`ParsedBody`](crate::parsed::ParsedBody) a layer further out left in the
//!    extensions, or reads and parses the body (and leaves it there for the targets);
//! 2. finds the first rule matching `model`; none → `404 not_found_error` naming the model,
//!    and no backend is called;
//! 3. calls the rule's targets in order with a clone of the buffered request (extensions
//!    included), skipping targets that are cooling down while another is available;
//! 4. falls back to the next target when one fails **before its response head reached the
//!    route**, so before any byte reached the client: the service returned an error
//!    (connection refused or reset), no response head within the target's
//!    [`timeout`](Target::timeout), or a status [`is_fallback_status`] accepts (408, 429, 500,
//!    502, 503, 504, 529). Other statuses (400, 401, 403, 404, 413, 422…) go back at once.
//!    A `Retry-After` on an answer the route skips past is not slept on;
//! 5. returns the answer of the first target that did not fail, or the last target's answer
//!    when all failed (its error, as that target's layers mapped it; `504 timeout_error` when
//!    it timed out), with the [`BACKEND_HEADER`](crate::report::BACKEND_HEADER)
//!    (`x-llm-bridge-backend`) naming the backend that answered and
//!    [`UpstreamAttempts`](crate::report::UpstreamAttempts) in the response extensions listing
//!    every target tried, each `ok`, `error` or `fallback`.
//!
//! Once a target's response head is back, its body goes to the client frame by frame: a
//! stream that fails halfway ends with the target's own error event, and no other target is
//! called. A target that failed is skipped for the [cool-down](RouteBuilder::cool_down) while
//! another target of its route is available; when all of a route's targets are cooling down
//! they are tried anyway, in order. A success ends a target's cool-down at once.
//!
//! The route answers its own errors (no route, bad body, timeout) in Anthropic's shape.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::ServiceExt;
//! use tower_llm_bridge::report::{BACKEND_HEADER, UpstreamAttempts};
//! use tower_llm_bridge::route::{Route, Target};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Stand-ins for two backends' stacks: the first is overloaded, the second answers.
//! let backend = |status: u16| tower::service_fn(move |_req: Request<Full<Bytes>>| async move {
//!     let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
//!     *res.status_mut() = StatusCode::from_u16(status).unwrap();
//!     Ok::<_, Infallible>(res)
//! });
//! let route = Route::builder()
//!     .route("haiku", [Target::new("local", backend(503)), Target::new("cloud", backend(200))])
//!     .build();
//!
//! let request = Request::post("/v1/messages").body(Full::new(Bytes::from_static(
//!     br#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]}"#,
//! ))).unwrap();
//! let response = route.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()[BACKEND_HEADER], "cloud");
//! let attempts = response.extensions().get::<UpstreamAttempts>().unwrap();
//! let tried: Vec<_> = attempts.iter().map(|(backend, outcome)| (backend, outcome.as_str())).collect();
//! assert_eq!(tried, [("local", "fallback"), ("cloud", "ok")]);
//!
//! // No route for this model: 404, and no backend is called.
//! let request = Request::post("/v1/messages").body(Full::new(Bytes::from_static(
//!     br#"{"model":"claude-opus-4-1","max_tokens":8,"messages":[]}"#,
//! ))).unwrap();
//! let response = route.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 404);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert!(String::from_utf8_lossy(&body).contains("claude-opus-4-1"));
//! # }
//! ```
//!
//! # Customised
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_bridge::route::{Route, Target};
//! # let service = tower::service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
//! # });
//! let primary = Target::new("primary", service.clone()).timeout(Duration::from_secs(600));
//! let route = Route::builder()
//!     .cool_down(Duration::from_secs(60))
//!     .body_limit(8 << 20)
//!     .route("haiku", [Target::new("local", service).timeout(Duration::from_secs(20)), primary.clone()])
//!     .route("*", [primary])
//!     .build();
//! assert_eq!(route.plan("claude-3-5-haiku-latest"), ["local", "primary"]);
//! assert_eq!(route.plan("anything-else"), ["primary"]);
//! ```

mod body;
mod future;
mod service;
mod target;

pub use body::RouteBody;
pub use future::ResponseFuture;
pub use service::{
    DEFAULT_COOL_DOWN, DEFAULT_ROUTE_BODY_LIMIT, Route, RouteBuilder, is_fallback_status,
};
pub use target::Target;
