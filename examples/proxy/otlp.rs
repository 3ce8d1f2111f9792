//! The request spans over OTLP/HTTP (protobuf), with the `otel` feature: the tracer provider
//! and the HTTP client its exporter posts with.
//!
//! The SDK's batch processor exports from a thread of its own, which has no Tokio reactor, so
//! the client hands each export to the proxy's runtime and waits for it there. It is the same
//! hyper-util + rustls client as the upstream's (no second HTTP stack, no gRPC).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Handle;
use tower_llm_bridge::BoxError;

use super::config::OtlpSettings;

/// The largest collector answer read (an export answer is a few bytes; the SDK's own clients
/// stop at the same size).
const RESPONSE_LIMIT: usize = 4 << 20;

/// A tracer provider exporting in batches to `settings`' endpoint. Its exports run on
/// `runtime`, which must outlive [`SdkTracerProvider::shutdown`].
///
/// # Errors
/// When the TLS configuration or the exporter cannot be built.
pub fn tracer_provider(
    settings: &OtlpSettings,
    runtime: Handle,
) -> Result<SdkTracerProvider, BoxError> {
    let headers: HashMap<String, String> = settings
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose().to_owned()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient::new(runtime, settings.timeout)?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.traces_endpoint.to_string())
        .with_timeout(settings.timeout)
        .with_headers(headers)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Posts the exporter's requests from the proxy's runtime, each bounded by the export
/// timeout (connecting, sending and reading the answer).
#[derive(Clone)]
struct RuntimeClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: Handle,
    timeout: Duration,
}

impl RuntimeClient {
    fn new(runtime: Handle, timeout: Duration) -> Result<Self, BoxError> {
        let mut http = HttpConnector::new();
        // The TLS wrapper decides between http and https.
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Self {
            client,
            runtime,
            timeout,
        })
    }
}

impl fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient for RuntimeClient {
    // The trait is declared with `async_trait`; this is the signature it expands to.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        let export = self.runtime.spawn(async move {
            let send = async {
                let res = client.request(request.map(Full::new)).await?;
                let (parts, body) = res.into_parts();
                let body = Limited::new(body, RESPONSE_LIMIT).collect().await?;
                Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
            };
            match tokio::time::timeout(timeout, send).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer from the collector within {timeout:?}").into()),
            }
        });
        Box::pin(async move { export.await.map_err(HttpError::from)? })
    }
}
