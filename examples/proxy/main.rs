//! An Anthropic Messages API endpoint in front of any OpenAI-compatible backend.
//!
//! ```text
//! OPENAI_API_KEY=sk-... cargo run --release --example proxy
//! ANTHROPIC_BASE_URL=http://127.0.0.1:3000 claude
//! ```
//!
//! Run with `--help` for every setting. The pieces are reusable: [`app`] builds the whole
//! service (tests drive it through real sockets), [`serve`] runs it on a listener until a
//! shutdown signal, and `main` only reads the configuration and waits for Ctrl-C or SIGTERM.
//!
//! Request flow:
//!
//! ```text
//! TraceLayer (bodies failing mid-stream; the request span at debug level)
//!   └─ MetricsLayer (every request; one log line per request when its body is over)
//!        └─ Router: GET /health · GET /metrics · auth (PROXY_API_KEYS) · GET /v1/models · POST /v1/messages/count_tokens
//!        └─ POST /v1/messages, POST /v1/chat/completions: body collected under BODY_LIMIT_BYTES
//!             └─ LLM stack (cache, translation) ─► Upstream (hyper-util client, rustls, pooled)
//! ```
//!
//! One concern per file, so that a new setting, route or layer has one obvious place:
//!
//! | file | what it holds |
//! |---|---|
//! | `config.rs` | every flag, environment variable and default (clap), their validation, [`Config`] |
//! | `config_file.rs` | the TOML file: `[[backends]]`, `[[routes]]`, top-level settings |
//! | `app.rs` | the layer stack ([`app`]): logging, cache, translation, upstream |
//! | `router.rs` | the routes: `/health`, auth, `/v1/models`, `count_tokens`, the LLM routes, 404 |
//! | `auth.rs` | proxy keys: which credential a client presented, constant-time comparison |
//! | `models.rs` | the model list behind `/v1/models` |
//! | `upstream.rs` | the pooled HTTP client to the backend ([`Upstream`]) |
//! | `telemetry.rs` | metrics (`GET /metrics`), the log line per request, the tracing subscriber |
//! | `otlp.rs` | with the `otel` feature: the request spans exported over OTLP/HTTP |
//! | `server.rs` | the accept loop ([`serve`]): HTTP/1.1 + h2, header timeouts, graceful shutdown |
//! | `main.rs` | reads the configuration, starts the runtime, waits for Ctrl-C or SIGTERM |

mod app;
mod auth;
mod config;
mod config_file;
mod models;
#[cfg(feature = "otel")]
mod otlp;
mod router;
mod server;
mod telemetry;
mod upstream;

use std::process::ExitCode;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use app::{App, ProxyBody, app};
pub use auth::constant_time_eq;
pub use config::{
    CacheSettings, Command, Config, ConfigError, OtlpSettings, Secret, UpstreamUrl, Wire,
};
pub use router::Router;
pub use server::{serve, tune_accepted};
pub use telemetry::{Tracing, init_tracing, warn_without_otel};
pub use upstream::Upstream;

// glibc's malloc spends ~30% of a Claude-Code-sized request in malloc/free (freeing a
// 64 KiB+ block consolidates the fast bins); jemalloc takes 17% off that request's CPU time
// for +1 MiB idle RSS (mimalloc: 24%, but +7 MiB idle and +75% RSS at 1,000 open streams).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let config =
        match Config::from_sources(std::env::args().skip(1), |name| std::env::var(name).ok()) {
            Ok(Command::Run(config)) => config,
            Ok(Command::Help(text)) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(err) => {
                eprintln!("proxy: {err}\nRun with --help to see every setting.");
                return ExitCode::from(2);
            }
        };
    // Parsing, walking and dropping JSON costs stack per nesting level (up to ~2 KiB in a
    // debug build): give the workers room for MAX_JSON_DEPTH (512 fits tokio's 2 MiB).
    let stack = (config.max_json_depth * 4096).max(2 << 20);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(stack)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let tracing = match init_tracing(&config, runtime.handle()) {
        Ok(tracing) => tracing,
        Err(err) => {
            eprintln!("proxy: cannot set up tracing: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
        serve(listener, *config, shutdown_signal())
            .await
            .map_err(|err| err.to_string())
    });
    // The runtime still runs here: the last spans are exported on it.
    tracing.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proxy: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix (what `docker stop` and systemd send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("Ctrl-C received, shutting down"),
        () = terminate => info!("SIGTERM received, shutting down"),
    }
}
