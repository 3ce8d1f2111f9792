//! Keeps web pages from driving a service by accident: an `Origin` allow-list, a `Host`
//! check against DNS rebinding, and CORS preflights answered only for allowed origins.
//!
//! A proxy on `127.0.0.1` without keys trusts whoever can reach it, and a browser can reach
//! it on behalf of any web page: a cross-site `fetch` carries the page's `Origin`, and a
//! DNS-rebinding page makes the browser send `Host: attacker.example` to a loopback address.
//! [`OriginGuardLayer`] answers:
//!
//! | request | enforcing (the default) | not enforcing (e.g. API keys required) |
//! |---|---|---|
//! | `Origin` not on the allow-list | `403 permission_error` | passed on, no CORS headers |
//! | `Host` not loopback, not the listen address, not on the host allow-list | `403` | passed on |
//! | preflight (`OPTIONS` + `Origin` + `Access-Control-Request-Method`) from an allowed origin | `204` with CORS headers | same |
//! | preflight from any other origin | `403` | `403` |
//! | no `Origin` (SDKs, curl, Claude Code) on a loopback/allowed `Host` | passed on | passed on |
//!
//! Answers to allowed origins carry `access-control-allow-origin` (the origin itself) and
//! `vary: origin`. Errors are in Anthropic's shape, or OpenAI's on `/v1/chat/completions`.
//!
//! Loopback names are `localhost` and `*.localhost` (browsers resolve them to loopback
//! themselves), `127.0.0.0/8` and `[::1]`; the port does not matter.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::origin::OriginGuardLayer;
//!
//! let app = ServiceBuilder::new()
//!     .layer(OriginGuardLayer::new().allow_origin("https://app.example.com"))
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//!     });
//! let request = |host: &str, origin: Option<&str>| {
//!     let mut req = Request::post("/v1/messages").header("host", host);
//!     if let Some(origin) = origin {
//!         req = req.header("origin", origin);
//!     }
//!     req.body(Full::new(Bytes::new())).unwrap()
//! };
//!
//! // An SDK on the same machine.
//! let res = app.clone().oneshot(request("127.0.0.1:3000", None)).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! // Some web page.
//! let res = app.clone().oneshot(request("127.0.0.1:3000", Some("https://evil.example"))).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! // DNS rebinding: the page's own name, resolved to 127.0.0.1.
//! let res = app.clone().oneshot(request("evil.example:3000", None)).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! // The allowed web app.
//! let res = app.oneshot(request("localhost:3000", Some("https://app.example.com"))).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");
//! # }
//! ```

mod body;
mod future;
mod layer;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::OriginGuardLayer;
pub use service::OriginGuard;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{Service, ServiceExt};

    use super::*;

    type Calls = Arc<AtomicUsize>;

    type Handler = Box<
        dyn FnMut(
                Request<Full<Bytes>>,
            ) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>
            + Send,
    >;
    type Guarded = OriginGuard<tower::util::ServiceFn<Handler>>;

    fn app(layer: OriginGuardLayer) -> (Arc<tokio::sync::Mutex<Guarded>>, Calls) {
        let calls = Calls::default();
        let counter = calls.clone();
        let handler: Handler = Box::new(move |_req| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
        });
        let svc = tower::ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(handler));
        (Arc::new(tokio::sync::Mutex::new(svc)), calls)
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(Bytes::new())).expect("request")
    }

    async fn send(
        svc: &Arc<tokio::sync::Mutex<Guarded>>,
        req: Request<Full<Bytes>>,
    ) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let res = {
            let mut svc = svc.lock().await;
            let ready = svc.ready().await.expect("infallible");
            ready.call(req).await.expect("infallible")
        };
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (parts.status, parts.headers, json)
    }

    const HOST: (&str, &[u8]) = ("host", b"127.0.0.1:3000");

    #[tokio::test]
    async fn unlisted_origins_and_foreign_hosts_are_refused_when_enforcing() {
        let (svc, calls) = app(OriginGuardLayer::new().allow_origin("https://ok.example/"));
        let (status, _, body) = send(
            &svc,
            req(
                "POST",
                "/v1/messages",
                &[HOST, ("origin", b"https://evil.example")],
            ),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["type"], "permission_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("origin"))
        );
        // The OpenAI route answers in OpenAI's shape.
        let (status, _, body) = send(
            &svc,
            req(
                "POST",
                "/v1/chat/completions",
                &[("host", b"rebind.evil.example:3000")],
            ),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["type"], "permission_error");
        assert!(body.get("type").is_none(), "OpenAI shape: {body}");
        // h2 carries the host in the URI's authority.
        let (status, _, _) = send(&svc, req("GET", "http://rebind.evil.example/health", &[])).await;
        assert_eq!(status, 403);
        for origin in [&b"null"[..], b"https://ok.example.evil", b"\xff"] {
            let (status, _, _) = send(
                &svc,
                req("POST", "/v1/messages", &[HOST, ("origin", origin)]),
            )
            .await;
            assert_eq!(status, 403, "{origin:?}");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "nothing refused reaches the service"
        );

        // Allowed: no origin, an allowed origin (any case, with a trailing slash in the list).
        let (status, headers, _) = send(&svc, req("POST", "/v1/messages", &[HOST])).await;
        assert_eq!(status, 200);
        assert!(!headers.contains_key("access-control-allow-origin"));
        let (status, headers, _) = send(
            &svc,
            req(
                "POST",
                "/v1/messages",
                &[("host", b"localhost"), ("origin", b"https://OK.example")],
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["access-control-allow-origin"], "https://OK.example");
        assert_eq!(headers["vary"], "origin");
        assert!(headers.contains_key("access-control-expose-headers"));
        // No Host at all (HTTP/1.0 tools) is no browser.
        let (status, _, _) = send(&svc, req("POST", "/v1/messages", &[])).await;
        assert_eq!(status, 200);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn not_enforcing_passes_everything_but_preflights_on() {
        let (svc, calls) = app(OriginGuardLayer::new().enforce(false));
        let (status, headers, _) = send(
            &svc,
            req(
                "POST",
                "/v1/messages",
                &[
                    ("host", b"proxy.example.com"),
                    ("origin", b"https://x.example"),
                ],
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert!(!headers.contains_key("access-control-allow-origin"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let (status, _, _) = send(
            &svc,
            req(
                "OPTIONS",
                "/v1/messages",
                &[
                    HOST,
                    ("origin", b"https://x.example"),
                    ("access-control-request-method", b"POST"),
                ],
            ),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn preflights_are_answered_only_for_allowed_origins() {
        let layer = OriginGuardLayer::new()
            .allow_origins(["https://ok.example"])
            .allow_host("proxy.internal");
        let (svc, calls) = app(layer);
        let preflight = |origin: &'static [u8], host: &'static [u8]| {
            req(
                "OPTIONS",
                "/v1/messages",
                &[
                    ("host", host),
                    ("origin", origin),
                    ("access-control-request-method", b"POST"),
                    (
                        "access-control-request-headers",
                        b"content-type, x-api-key, anthropic-version",
                    ),
                ],
            )
        };
        let (status, headers, _) = send(
            &svc,
            preflight(b"https://ok.example", b"proxy.internal:8080"),
        )
        .await;
        assert_eq!(status, 204);
        assert_eq!(headers["access-control-allow-origin"], "https://ok.example");
        assert_eq!(
            headers["access-control-allow-methods"],
            "GET, POST, OPTIONS"
        );
        assert_eq!(
            headers["access-control-allow-headers"],
            "content-type, x-api-key, anthropic-version"
        );
        for (origin, host) in [
            (&b"https://evil.example"[..], &b"127.0.0.1"[..]),
            (b"https://ok.example", b"rebind.evil.example"),
        ] {
            let (status, headers, _) = send(&svc, preflight(origin, host)).await;
            assert_eq!(status, 403, "{origin:?} {host:?}");
            assert!(!headers.contains_key("access-control-allow-origin"));
        }
        // A plain OPTIONS (no preflight) goes to the service, which decides.
        let (status, _, _) = send(&svc, req("OPTIONS", "/v1/messages", &[HOST])).await;
        assert_eq!(status, 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
