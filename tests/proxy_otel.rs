//! The example proxy's request spans over OTLP (the `otel` feature, which CI's
//! `--all-features` runs): a small OTLP/HTTP receiver on 127.0.0.1 decodes what the proxy
//! exports after real traffic, the GenAI attributes are asserted, and no key or prompt is in
//! the bytes. Also the warning of a build without the feature.

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod proxy_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The one warning of a build without `otel` (the function such a build calls at startup),
/// naming the variable and how to build with the feature; nothing without the variable.
#[test]
fn without_the_feature_an_endpoint_is_one_warning() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = |env: &[(&str, &str)]| {
        let mock_base = "http://127.0.0.1:9/v1";
        let mut vars = vec![("OPENAI_BASE_URL", mock_base)];
        vars.extend_from_slice(env);
        let config = proxy_support::parse_config(&vars);
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || proxy::warn_without_otel(&config));
        let bytes = captured.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    };
    let text = logs(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_ENDPOINT is set but this build lacks the `otel` feature"),
        "{text}"
    );
    assert!(text.contains("--features otel"), "{text}");
    assert_eq!(logs(&[]), "");
    // OTEL_SDK_DISABLED turns the endpoint off: nothing to warn about.
    assert_eq!(
        logs(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]),
        ""
    );
}

/// The standard variables: endpoint + `/v1/traces` (the signal's own variable as is), decoded
/// headers, timeout, service name; mistakes are startup errors that never echo a header.
#[test]
fn otlp_settings_follow_the_standard_variables() {
    let settings = |env: &[(&str, &str)]| {
        let mut vars = vec![("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")];
        vars.extend_from_slice(env);
        proxy_support::parse_config(&vars).otlp
    };
    assert!(settings(&[]).is_none());
    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Basic%20abc, x-tenant=t1",
        ),
    ])
    .expect("set");
    assert_eq!(
        s.traces_endpoint.to_string(),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(s.service_name, "llm-bridge");
    assert_eq!(s.timeout, std::time::Duration::from_secs(10));
    let headers: Vec<(&str, &str)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(
        headers,
        [("authorization", "Basic abc"), ("x-tenant", "t1")]
    );
    assert!(!format!("{s:?}").contains("Basic abc"), "{s:?}");

    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://wrong:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector/otlp/traces",
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_SERVICE_NAME", "gateway-eu"),
    ])
    .expect("set");
    assert_eq!(
        s.traces_endpoint.to_string(),
        "https://collector/otlp/traces"
    );
    assert_eq!(s.source, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    assert_eq!(s.timeout, std::time::Duration::from_millis(2500));
    assert_eq!(s.service_name, "gateway-eu");
    let s = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,service.name=from-attrs",
        ),
    ])
    .expect("set");
    assert_eq!(s.service_name, "from-attrs");

    let error = |env: &[(&str, &str)]| {
        let mut vars = vec![("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")];
        vars.extend_from_slice(env);
        let env: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match proxy::Config::from_sources(std::iter::empty(), |name| env.get(name).cloned()) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("accepted {vars:?}"),
        }
    };
    let err = error(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
    assert!(err.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
    let err = error(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ]);
    assert!(err.contains("http/protobuf"), "{err}");
    let err = error(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer tok\u{7}en-secret",
        ),
    ]);
    assert!(err.starts_with("OTEL_EXPORTER_OTLP_HEADERS"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[cfg(feature = "otel")]
mod export {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use prost::Message;
    use serde_json::json;
    use tokio::net::TcpListener;

    use super::proxy;
    use crate::common::*;
    use crate::proxy_support::{UPSTREAM_KEY, anthropic_request, config_for, start};

    const PROXY_KEY: &str = "proxy-key-otel-secret-5151";

    /// What one `POST /v1/traces` brought.
    struct Export {
        headers: http::HeaderMap,
        body: Bytes,
    }

    /// An OTLP/HTTP receiver: `POST /v1/traces` recorded and answered with an empty
    /// (protobuf) `ExportTraceServiceResponse`; anything else 404.
    async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Export>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let exports = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&exports);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let recorded = Arc::clone(&recorded);
                        async move {
                            let ok = req.method() == http::Method::POST
                                && req.uri().path() == "/v1/traces";
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await?.to_bytes();
                            let mut res = Response::new(Full::new(Bytes::new()));
                            if ok {
                                recorded
                                    .lock()
                                    .expect("lock")
                                    .push(Export { headers, body });
                                res.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/x-protobuf"),
                                );
                            } else {
                                *res.status_mut() = http::StatusCode::NOT_FOUND;
                            }
                            Ok::<_, hyper::Error>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
            Ok::<_, Infallible>(())
        });
        (addr, exports)
    }

    /// A decoded span: name, kind, status, attributes as text (`i:` for integers).
    #[derive(Debug)]
    struct Span {
        name: String,
        kind: i32,
        status: i32,
        attributes: BTreeMap<String, String>,
    }

    fn text(value: &Option<AnyValue>) -> String {
        match value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(s)) => s.clone(),
            Some(Any::IntValue(n)) => format!("i:{n}"),
            other => format!("{other:?}"),
        }
    }

    fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
        list.iter()
            .map(|kv| (kv.key.clone(), text(&kv.value)))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_spans_reach_an_otlp_collector_with_the_gen_ai_attributes() {
        let (collector, exports) = receiver().await;
        let mock = MockUpstream::start().await;
        let backend = mock.addr().to_string();
        mock.respond_with(|req| {
            let stream = req.body.get("stream").and_then(|s| s.as_bool()) == Some(true);
            match req.body["messages"][0]["content"].as_str() {
                Some("prompt-otel-limited") => Reply::error(429, "slow down"),
                _ if stream => Reply::sse(text_stream(&["Hel", "lo"], "stop", (30, 7))),
                _ => Reply::json(chat_completion_json("Hello", "stop", usage(100, 20))),
            }
        });
        let endpoint = format!("http://{collector}");
        let config = config_for(
            &mock,
            &[
                ("PROXY_API_KEYS", PROXY_KEY),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "x-collector-token=collector%20token",
                ),
            ],
        );
        let tracing = proxy::init_tracing(&config, &tokio::runtime::Handle::current())
            .expect("tracing installed");
        let proxy = start(config).await;
        let key = [("x-api-key", PROXY_KEY)];

        let answer = post_json(
            &proxy.url("/v1/messages"),
            &key,
            &anthropic_request("prompt-otel-alpha"),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let mut streamed = anthropic_request("prompt-otel-beta");
        streamed["stream"] = json!(true);
        let answer = post_json(&proxy.url("/v1/messages"), &key, &streamed).await;
        assert!(answer.text().contains("message_stop"));
        let limited = post_json(
            &proxy.url("/v1/messages"),
            &key,
            &anthropic_request("prompt-otel-limited"),
        )
        .await;
        assert_eq!(limited.status, 429);
        assert_eq!(get(&proxy.url("/v1/nowhere"), &key).await.status, 404);

        proxy.stop().await;
        // The flush of a graceful shutdown: the batch is sent now, not at the next scheduled
        // export (5 s away).
        tokio::time::timeout(
            WAIT,
            tokio::task::spawn_blocking(move || tracing.shutdown()),
        )
        .await
        .expect("shutdown within the wait")
        .expect("shutdown did not panic");

        let exports = std::mem::take(&mut *exports.lock().expect("lock"));
        assert!(!exports.is_empty(), "nothing exported by shutdown");
        let mut spans = Vec::new();
        for export in &exports {
            assert_eq!(
                export.headers.get("content-type").map(|v| v.as_bytes()),
                Some(&b"application/x-protobuf"[..])
            );
            assert_eq!(
                export
                    .headers
                    .get("x-collector-token")
                    .map(|v| v.as_bytes()),
                Some(&b"collector token"[..])
            );
            for secret in [
                PROXY_KEY,
                UPSTREAM_KEY,
                "prompt-otel-alpha",
                "prompt-otel-beta",
                "prompt-otel-limited",
                "Hello",
            ] {
                assert!(
                    memchr::memmem::find(&export.body, secret.as_bytes()).is_none(),
                    "{secret} exported"
                );
            }
            let request = ExportTraceServiceRequest::decode(export.body.clone()).expect("OTLP");
            for resource in request.resource_spans {
                let resource_attributes = resource
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                assert_eq!(
                    resource_attributes.get("service.name").map(String::as_str),
                    Some("llm-bridge")
                );
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push(Span {
                            name: span.name.clone(),
                            kind: span.kind,
                            status: span.status.map_or(0, |s| s.code),
                            attributes: attributes(&span.attributes),
                        });
                    }
                }
            }
        }
        // One span per request, the request span only (nothing from the layers below).
        assert_eq!(spans.len(), 4, "{spans:#?}");
        let messages: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "POST /v1/messages")
            .collect();
        assert_eq!(messages.len(), 3, "{spans:#?}");
        for span in &messages {
            assert_eq!(span.kind, SpanKind::Server as i32, "{span:#?}");
            let a = &span.attributes;
            assert_eq!(a["gen_ai.operation.name"], "chat", "{span:#?}");
            assert_eq!(a["gen_ai.request.model"], "claude-sonnet-4-5");
            assert_eq!(a["gen_ai.response.model"], "gpt-4o");
            assert_eq!(a["llm_bridge.backend"], backend);
            assert_eq!(a["llm_bridge.cache"], "miss");
            assert_eq!(a["method"], "POST");
            assert_eq!(a["path"], "/v1/messages");
        }
        let with_status = |code: &str| {
            messages
                .iter()
                .filter(|s| s.attributes["http.response.status_code"] == code)
                .collect::<Vec<_>>()
        };
        let ok = with_status("i:200");
        assert_eq!(ok.len(), 2, "{messages:#?}");
        // The JSON answer and the stream, tokens as integers.
        let json = ok
            .iter()
            .find(|s| {
                !s.attributes
                    .contains_key("llm_bridge.time_to_first_token_ms")
            })
            .expect("the JSON answer's span");
        assert_eq!(json.attributes["gen_ai.usage.input_tokens"], "i:100");
        assert_eq!(json.attributes["gen_ai.usage.output_tokens"], "i:20");
        let stream = ok
            .iter()
            .find(|s| {
                s.attributes
                    .contains_key("llm_bridge.time_to_first_token_ms")
            })
            .expect("the stream's span");
        assert!(stream.attributes["llm_bridge.time_to_first_token_ms"].starts_with("i:"));
        assert_eq!(stream.attributes["gen_ai.usage.input_tokens"], "i:30");
        assert_eq!(stream.attributes["gen_ai.usage.output_tokens"], "i:7");
        for span in ok {
            assert_ne!(span.status, StatusCode::Error as i32, "{span:#?}");
        }
        // A client error is not a server span error (OpenTelemetry's HTTP conventions).
        let limited = with_status("i:429");
        assert_eq!(limited.len(), 1, "{messages:#?}");
        assert_ne!(limited[0].status, StatusCode::Error as i32);
        assert!(
            !limited[0]
                .attributes
                .contains_key("gen_ai.usage.input_tokens")
        );
        // A path no route knows names the span by its method alone.
        let nowhere = spans.iter().find(|s| s.name == "GET").expect("GET span");
        assert_eq!(nowhere.attributes["http.response.status_code"], "i:404");
        assert!(!nowhere.attributes.contains_key("gen_ai.operation.name"));
    }
}
