//! A request through the cache layer is parsed exactly once, and the inner service finds the
//! parsed body in the extensions. Alone in its own test binary: `ParsedBody::parse_count()` is
//! process-wide, so no other test may parse concurrently.
#![cfg(feature = "cache")]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bridge::cache::ResponseCacheLayer;
use tower_llm_bridge::parsed::ParsedBody;

#[tokio::test]
async fn each_request_is_parsed_once() {
    let svc = ServiceBuilder::new()
        .layer(ResponseCacheLayer::default())
        .service_fn(
            |req: Request<Either<Full<Bytes>, Full<Bytes>>>| async move {
                // What a translation layer further in does: use the extension, never re-parse.
                let parsed = req
                    .extensions()
                    .get::<ParsedBody>()
                    .cloned()
                    .expect("the cache layer leaves the parsed body for the next layer");
                assert!(parsed.is_object());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
            },
        );

    let cases: [(&str, &[u8], &str); 5] = [
        ("/v1/messages", br#"{"model":"m","messages":[]}"#, "MISS"),
        ("/v1/messages", br#"{"model":"m","messages":[]}"#, "HIT"),
        // Stripping cache_ttl_secs re-serializes the JSON; it does not parse again.
        (
            "/v1/chat/completions",
            br#"{"model":"m","cache_ttl_secs":60}"#,
            "MISS",
        ),
        // A streaming request served (rendered) from the stored answer.
        (
            "/v1/messages",
            br#"{"model":"m","messages":[],"stream":true}"#,
            "HIT",
        ),
        (
            "/v1/messages",
            br#"{"model":"m","cache_ttl_secs":0}"#,
            "BYPASS",
        ),
    ];
    for (uri, body, expected) in cases {
        let before = ParsedBody::parse_count();
        let res = svc
            .clone()
            .oneshot(
                Request::post(uri)
                    .body(Full::new(Bytes::from_static(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], expected);
        res.into_body().collect().await.unwrap();
        assert_eq!(ParsedBody::parse_count() - before, 1, "{uri} {expected}");
    }
}
