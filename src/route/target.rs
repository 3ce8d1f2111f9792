use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// One place a request can go: a backend's service (usually a translation layer for the
/// backend's wire over its HTTP client, with the backend's model set), the backend's name, and
/// how long to wait for its response head.
///
/// Clones share the cool-down state: give the same target (a clone) to several routes and a
/// failure seen through one route makes the others skip it too.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_bridge::route::Target;
///
/// let target = Target::new("local", tower::service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// }))
/// .timeout(Duration::from_secs(30));
/// assert_eq!(target.backend(), "local");
/// assert!(!target.is_cooling_down());
/// ```
pub struct Target<S> {
    pub(crate) backend: Arc<str>,
    pub(crate) service: S,
    pub(crate) timeout: Option<Duration>,
    pub(crate) health: Arc<Health>,
}

impl<S> Target<S> {
    /// A target that calls `service`, reported as `backend` (in the `x-llm-bridge-backend`
    /// header and [`UpstreamAttempts`](crate::report::UpstreamAttempts)).
    pub fn new(backend: impl Into<Arc<str>>, service: S) -> Self {
        Self {
            backend: backend.into(),
            service,
            timeout: None,
            health: Arc::default(),
        }
    }

    /// How long to wait for the service's response head (readiness included); past it the
    /// target counts as failed: the next target is tried, or the client gets `504
    /// timeout_error` when this was the last one. Default: no limit of its own (the service's
    /// own timeout, if any, applies).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Whether the target failed recently and is being skipped (see
    /// [`RouteBuilder::cool_down`](super::RouteBuilder::cool_down)).
    pub fn is_cooling_down(&self) -> bool {
        self.health.is_cooling(Instant::now())
    }

    pub(crate) fn shares_state_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.health, &other.health)
    }
}

impl<S: Clone> Clone for Target<S> {
    fn clone(&self) -> Self {
        Self {
            backend: Arc::clone(&self.backend),
            service: self.service.clone(),
            timeout: self.timeout,
            health: Arc::clone(&self.health),
        }
    }
}

impl<S> fmt::Debug for Target<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .field("cooling_down", &self.is_cooling_down())
            .finish_non_exhaustive()
    }
}

/// When a target may be tried again (tokio's clock, so tests can pause time).
#[derive(Debug, Default)]
pub(crate) struct Health {
    cooling_until: Mutex<Option<Instant>>,
}

impl Health {
    pub(crate) fn is_cooling(&self, now: Instant) -> bool {
        self.lock().is_some_and(|until| until > now)
    }

    /// A failure: skip the target for `cool_down` from now.
    pub(crate) fn failed(&self, cool_down: Duration) {
        if !cool_down.is_zero() {
            *self.lock() = Some(Instant::now() + cool_down);
        }
    }

    /// A success: the target is available again at once.
    pub(crate) fn recovered(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.cooling_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
