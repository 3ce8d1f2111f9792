//! The accept loop: HTTP/1.1 and h2 on one listener, header read timeouts, graceful shutdown.

use std::future::Future;
use std::time::Duration;

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
    builder.http2().timer(TokioTimer::new());

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
        match &config.proxy_api_keys {
            Some(keys) => format!("on ({} keys)", keys.len()),
            None => "off".to_owned(),
        },
        config.cache.describe(),
    );
    info!(
        "models: claude-sonnet-4-5 -> {}, claude-opus-4-1 -> {}, claude-haiku-4-5 -> {}",
        config.map_model("claude-sonnet-4-5"),
        config.map_model("claude-opus-4-1"),
        config.map_model("claude-haiku-4-5"),
    );

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
        tokio::spawn(async move {
            if let Some(limit) = first_bytes_timeout
                && !protocol_known_within(&stream, limit).await
            {
                tracing::debug!("closing a connection that sent no request in time");
                return;
            }
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(%err, "connection ended with an error");
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
