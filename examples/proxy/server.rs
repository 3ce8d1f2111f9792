//! The accept loop: HTTP/1.1 and h2 on one listener, header read timeouts, graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_llm_bridge::BoxError;
use tracing::{info, warn};

use super::app::app;
use super::config::Config;

/// Serves [`app`] on `listener` (HTTP/1.1 and HTTP/2) until `shutdown` resolves, then stops
/// accepting, lets open requests finish for up to `shutdown_grace` and returns.
///
/// # Errors
/// When the upstream client cannot be built or the listener has no local address.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let app = app(&config).await?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer is what makes hyper enforce the header read timeout (slowloris protection).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    // Pings find dead HTTP/2 peers (a vanished laptop, a silent middlebox); the idle timeout
    // below closes live ones that do nothing.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.h2_ping_interval)
        .keep_alive_timeout(config.h2_ping_timeout);

    let auth = match &config.proxy_api_keys {
        Some(keys) => format!("on ({} keys)", keys.len()),
        None => "off".to_owned(),
    };
    match &config.routing {
        None => {
            info!(
                "listening on http://{}, upstream {} ({} wire, API key {}), proxy auth {}, cache {}",
                listener.local_addr()?,
                config.upstream,
                config.wire,
                if config.openai_api_key.is_some() {
                    "set"
                } else {
                    "not set"
                },
                auth,
                config.cache.describe(),
            );
            info!(
                "models: claude-sonnet-4-5 -> {}, claude-opus-4-1 -> {}, claude-haiku-4-5 -> {}",
                config.map_model("claude-sonnet-4-5"),
                config.map_model("claude-opus-4-1"),
                config.map_model("claude-haiku-4-5"),
            );
        }
        Some(routing) => {
            // Names, kinds and URLs only: keys stay out of the log.
            let backends: Vec<String> = routing
                .backends
                .iter()
                .map(|b| format!("{} ({} at {})", b.name, b.kind, b.base_url))
                .collect();
            let routes: Vec<String> = routing
                .routes
                .iter()
                .map(|r| {
                    let targets: Vec<String> = r
                        .targets
                        .iter()
                        .map(|(i, model)| format!("{}:{model}", routing.backends[*i].name))
                        .collect();
                    format!("{:?} -> {}", r.pattern, targets.join(" then "))
                })
                .collect();
            info!(
                "listening on http://{}, backends {}, proxy auth {}, cache {}",
                listener.local_addr()?,
                backends.join(", "),
                auth,
                config.cache.describe(),
            );
            info!("routes: {}", routes.join("; "));
        }
    }

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tune_accepted(&stream);
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let first_bytes_timeout = config.header_read_timeout;
        let idle_timeout = config.idle_timeout;
        tokio::spawn(async move {
            if let Some(limit) = first_bytes_timeout
                && !protocol_known_within(&stream, limit).await
            {
                tracing::debug!("closing a connection that sent no request in time");
                return;
            }
            let activity = Arc::new(Activity::new());
            let app = Tracked {
                inner: app,
                activity: Arc::clone(&activity),
            };
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let conn = watcher.watch(conn);
            let Some(idle_timeout) = idle_timeout else {
                if let Err(err) = conn.await {
                    tracing::debug!(%err, "connection ended with an error");
                }
                return;
            };
            tokio::select! {
                result = conn => if let Err(err) = result {
                    tracing::debug!(%err, "connection ended with an error");
                },
                // Dropping the connection closes it: nothing is in flight to lose.
                () = activity.idle_for(idle_timeout) => {
                    tracing::debug!("closing a connection idle for {} s", idle_timeout.as_secs());
                }
            }
        });
    }

    drop(listener);
    info!(
        "draining open connections (up to {} s)",
        config.shutdown_grace.as_secs()
    );
    tokio::select! {
        () = graceful.shutdown() => info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_grace) => {
            warn!("grace period over, closing the remaining connections");
        }
    }
    Ok(())
}

/// Waits, at most `limit`, until the client has sent enough to tell HTTP/1 from HTTP/2: a
/// byte that differs from the HTTP/2 preface, or the whole preface. hyper's header read
/// timeout only starts once the protocol is known, so without this a client that connects and
/// sends nothing (or half a preface) holds a descriptor and a task forever.
async fn protocol_known_within(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    tokio::time::timeout(limit, async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // A prefix of the preface: the rest is on its way (or never comes).
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Socket options for an accepted connection.
pub fn tune_accepted(stream: &tokio::net::TcpStream) {
    // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm holds
    // each one back for up to ~40 ms waiting for the client's ACK.
    if let Err(err) = stream.set_nodelay(true) {
        warn!(%err, "cannot set TCP_NODELAY");
    }
}

/// What a connection is doing: requests in flight (until their response body is over) and
/// when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn last(&self) -> tokio::time::Instant {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves once nothing has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let due = self.last() + timeout;
            if self.in_flight.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() >= due {
                return;
            }
            // Busy: look again a timeout later (a request ending restarts the clock).
            let now = tokio::time::Instant::now();
            tokio::time::sleep_until(if due > now { due } else { now + timeout }).await;
        }
    }
}

/// One request in flight on a connection; dropped with its response body (or with the
/// request, when the client leaves first).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The app, counting requests in flight on one connection for its idle timeout.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B, ResBody> tower::Service<Request<B>> for Tracked<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let guard = self.activity.begin();
        let future = self.inner.call(req);
        Box::pin(async move {
            let res = future.await?;
            Ok(res.map(|body| TrackedBody {
                body,
                _in_flight: guard,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is dropped.
    struct TrackedBody<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
