use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::codec::{AnthropicMessages, OpenAiChat, StreamCodec};
use super::inflight::Inflight;
use super::service::ResponseCache;
use super::{CacheBackend, CacheConfig, CacheNamespace, MemoryCache};

/// Default request body limit: 32 MiB.
const DEFAULT_BODY_LIMIT: usize = 32 << 20;
/// Default largest response stored: 8 MiB.
const DEFAULT_MAX_ENTRY_BYTES: usize = 8 << 20;
/// Default time a coalesced request waits for the one doing the work.
const DEFAULT_COALESCE_WAIT: Duration = Duration::from_secs(60);

/// Puts a response cache in front of a service; see the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use tower_llm_bridge::cache::{MemoryCache, ResponseCacheLayer};
///
/// let layer = ResponseCacheLayer::new(MemoryCache::new(1_000))
///     .default_ttl_secs(600)
///     .backend_name("openai")
///     .coalesce_wait(Duration::from_secs(30));
/// assert_eq!(layer.get_default_ttl_secs(), 600);
/// ```
pub struct ResponseCacheLayer<B> {
    config: Config<B>,
}

/// Everything a [`ResponseCache`] service needs, shared by all its clones.
pub(crate) struct Config<B> {
    pub(crate) backend: Arc<B>,
    pub(crate) backend_name: Arc<str>,
    pub(crate) default_ttl_secs: u64,
    pub(crate) body_limit: usize,
    pub(crate) max_json_depth: usize,
    pub(crate) max_entry_bytes: usize,
    pub(crate) coalesce: bool,
    pub(crate) coalesce_wait: Duration,
    pub(crate) inflight: Arc<Inflight>,
    /// Whether streamed answers are cached (and concurrent identical streams shared).
    pub(crate) streams: bool,
    pub(crate) anthropic_codec: Arc<dyn StreamCodec>,
    pub(crate) openai_codec: Arc<dyn StreamCodec>,
}

impl<B> Config<B> {
    /// The codec of a namespace, when streams are cached.
    pub(crate) fn codec(&self, ns: CacheNamespace) -> Option<&Arc<dyn StreamCodec>> {
        if !self.streams {
            return None;
        }
        Some(match ns {
            CacheNamespace::Anthropic => &self.anthropic_codec,
            CacheNamespace::OpenAI => &self.openai_codec,
        })
    }
}

impl<B> Clone for Config<B> {
    fn clone(&self) -> Self {
        Self {
            backend: Arc::clone(&self.backend),
            backend_name: Arc::clone(&self.backend_name),
            default_ttl_secs: self.default_ttl_secs,
            body_limit: self.body_limit,
            max_json_depth: self.max_json_depth,
            max_entry_bytes: self.max_entry_bytes,
            coalesce: self.coalesce,
            coalesce_wait: self.coalesce_wait,
            inflight: Arc::clone(&self.inflight),
            streams: self.streams,
            anthropic_codec: Arc::clone(&self.anthropic_codec),
            openai_codec: Arc::clone(&self.openai_codec),
        }
    }
}

impl<B> fmt::Debug for Config<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("backend", &std::any::type_name::<B>())
            .field("backend_name", &self.backend_name)
            .field("default_ttl_secs", &self.default_ttl_secs)
            .field("body_limit", &self.body_limit)
            .field("max_json_depth", &self.max_json_depth)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("coalesce", &self.coalesce)
            .field("coalesce_wait", &self.coalesce_wait)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl<B: CacheBackend> ResponseCacheLayer<B> {
    /// A layer storing into `backend`, with the defaults: TTL 300 s, request bodies up to
    /// 32 MiB, responses up to 8 MiB stored, backend name `default`, coalescing on with a
    /// 60 s wait.
    pub fn new(backend: B) -> Self {
        Self::with_shared_backend(Arc::new(backend))
    }

    /// Like [`new`](Self::new), for a backend also used elsewhere (metrics, a second layer).
    pub fn with_shared_backend(backend: Arc<B>) -> Self {
        Self {
            config: Config {
                backend,
                backend_name: Arc::from("default"),
                default_ttl_secs: CacheConfig::default().ttl_secs,
                body_limit: DEFAULT_BODY_LIMIT,
                max_json_depth: crate::parsed::DEFAULT_MAX_JSON_DEPTH,
                max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
                coalesce: true,
                coalesce_wait: DEFAULT_COALESCE_WAIT,
                inflight: Arc::default(),
                streams: true,
                anthropic_codec: Arc::new(AnthropicMessages),
                openai_codec: Arc::new(OpenAiChat),
            },
        }
    }

    /// TTL of entries whose request has no `cache_ttl_secs`. `0` stores only requests that
    /// ask for it with their own `cache_ttl_secs`.
    #[must_use]
    pub fn default_ttl_secs(mut self, secs: u64) -> Self {
        self.config.default_ttl_secs = secs;
        self
    }

    /// Largest request body read; larger ones get `413 request_too_large`.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config.body_limit = bytes;
        self
    }

    /// Deepest nesting of arrays and objects accepted in a request body (default 512); a
    /// deeper one gets `400 invalid_request_error`. See [`crate::parsed`] for the stack it
    /// needs.
    ///
    /// ```
    /// # use tower_llm_bridge::cache::{MemoryCache, ResponseCacheLayer};
    /// let layer = ResponseCacheLayer::new(MemoryCache::new(10)).max_json_depth(256);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn max_json_depth(mut self, levels: usize) -> Self {
        self.config.max_json_depth = levels;
        self
    }

    /// Largest response body stored; larger ones are passed through but not stored.
    #[must_use]
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.config.max_entry_bytes = bytes;
        self
    }

    /// The backend's name, part of every key: services in front of different upstreams must
    /// use different names when they share a cache backend.
    #[must_use]
    pub fn backend_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.backend_name = name.into();
        self
    }

    /// Whether concurrent identical misses wait for one inner call (default `true`).
    #[must_use]
    pub fn coalesce(mut self, on: bool) -> Self {
        self.config.coalesce = on;
        self
    }

    /// How long a coalesced request waits before calling the inner service itself.
    ///
    /// The bound uses Tokio's timer: inside a Tokio runtime it must have time enabled (as
    /// `#[tokio::main]` has). Under another executor there is no timer, and a waiting request
    /// waits for the one it follows to finish or fail.
    #[must_use]
    pub fn coalesce_wait(mut self, wait: Duration) -> Self {
        self.config.coalesce_wait = wait;
        self
    }

    /// Whether streamed answers are cached and concurrent identical streams share one upstream
    /// call (default `true`). With `false`, `"stream": true` requests pass with
    /// `x-cache: BYPASS`.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::{Either, Full};
    /// use std::convert::Infallible;
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_llm_bridge::cache::ResponseCacheLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let svc = ServiceBuilder::new()
    ///     .layer(ResponseCacheLayer::default().cache_streams(false))
    ///     .service_fn(|_req: Request<Either<Full<Bytes>, Full<Bytes>>>| async {
    ///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    ///     });
    /// let req = Request::post("/v1/messages")
    ///     .body(Full::new(Bytes::from_static(br#"{"model":"m","stream":true}"#)))
    ///     .unwrap();
    /// assert_eq!(svc.oneshot(req).await.unwrap().headers()["x-cache"], "BYPASS");
    /// # }
    /// ```
    #[must_use]
    pub fn cache_streams(mut self, on: bool) -> Self {
        self.config.streams = on;
        self
    }

    /// The codec converting between the streamed and JSON answers of a namespace
    /// (defaults: [`AnthropicMessages`] and [`OpenAiChat`]); see the
    /// [codec docs](super::StreamCodec).
    ///
    /// ```
    /// use tower_llm_bridge::cache::{CacheNamespace, MemoryCache, OpenAiChat, ResponseCacheLayer};
    ///
    /// // A backend that streams OpenAI chunks: use the OpenAI codec (the default there).
    /// let layer = ResponseCacheLayer::new(MemoryCache::new(100))
    ///     .stream_codec(CacheNamespace::OpenAI, OpenAiChat);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn stream_codec(mut self, ns: CacheNamespace, codec: impl StreamCodec) -> Self {
        let codec: Arc<dyn StreamCodec> = Arc::new(codec);
        match ns {
            CacheNamespace::Anthropic => self.config.anthropic_codec = codec,
            CacheNamespace::OpenAI => self.config.openai_codec = codec,
        }
        self
    }

    /// The default TTL in seconds.
    pub fn get_default_ttl_secs(&self) -> u64 {
        self.config.default_ttl_secs
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.config.backend
    }
}

impl Default for ResponseCacheLayer<MemoryCache> {
    /// A [`MemoryCache`] and TTL from [`CacheConfig::default`].
    fn default() -> Self {
        let config = CacheConfig::default();
        Self::new(MemoryCache::from_config(&config)).default_ttl_secs(config.ttl_secs)
    }
}

impl<B> Clone for ResponseCacheLayer<B> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl<B> fmt::Debug for ResponseCacheLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<S, B> Layer<S> for ResponseCacheLayer<B> {
    type Service = ResponseCache<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache::from_config(inner, Arc::new(self.config.clone()))
    }
}
