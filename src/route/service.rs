use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tokio::time::Instant;
use tower_service::Service;

use super::body::RouteBody;
use super::future::ResponseFuture;
use super::target::Target;
use crate::BoxError;
use crate::error::ApiError;
use crate::parsed::{ParsedBody, collect_limited};
use crate::report::{AttemptOutcome, BACKEND_HEADER, UpstreamAttempts};

/// Default cool-down of a failed target: 30 seconds.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(30);

/// Default limit on a request body the route has to read itself (when no layer further out
/// left a [`ParsedBody`]): 32 MiB, the Messages API's own.
pub const DEFAULT_ROUTE_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Whether an answer with this status is a failure of the target (the next one is tried)
/// rather than an answer about the request (which goes back to the client at once): timeouts,
/// rate limits, server errors and Anthropic's `529 overloaded`.
///
/// ```
/// use http::StatusCode;
/// use tower_llm_bridge::route::is_fallback_status;
/// assert!(is_fallback_status(StatusCode::TOO_MANY_REQUESTS));
/// assert!(is_fallback_status(StatusCode::from_u16(529).unwrap()));
/// assert!(!is_fallback_status(StatusCode::BAD_REQUEST));
/// assert!(!is_fallback_status(StatusCode::UNAUTHORIZED));
/// ```
pub fn is_fallback_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// Which client models a route serves: a case-insensitive substring, or `*` for all.
#[derive(Clone, Debug)]
struct Pattern(Option<String>);

impl Pattern {
    fn new(pattern: &str) -> Self {
        let pattern = pattern.trim();
        if pattern == "*" {
            Self(None)
        } else {
            Self(Some(pattern.to_ascii_lowercase()))
        }
    }

    fn matches(&self, model: &str) -> bool {
        match &self.0 {
            None => true,
            Some(pattern) => model.to_ascii_lowercase().contains(pattern.as_str()),
        }
    }
}

#[derive(Debug)]
struct Rule {
    pattern: Pattern,
    /// Indices into the route's targets, in the order they are tried.
    targets: Vec<usize>,
}

#[derive(Debug)]
struct Table {
    rules: Vec<Rule>,
    cool_down: Duration,
    body_limit: usize,
    max_json_depth: usize,
}

/// Builds a [`Route`]: rules tried in the order added (first match wins), each with its
/// targets in fallback order.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_bridge::route::{Route, Target};
/// # let service = tower::service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// # });
/// let local = Target::new("local", service.clone());
/// let primary = Target::new("primary", service).timeout(Duration::from_secs(600));
/// let route = Route::builder()
///     .cool_down(Duration::from_secs(10))
///     .route("haiku", [local, primary.clone()])
///     .route("*", [primary])
///     .build();
/// assert_eq!(route.targets().count(), 2, "the clone of `primary` is the same target");
/// ```
#[derive(Debug)]
pub struct RouteBuilder<S> {
    targets: Vec<Target<S>>,
    rules: Vec<Rule>,
    cool_down: Duration,
    body_limit: usize,
    max_json_depth: usize,
}

impl<S> Default for RouteBuilder<S> {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            rules: Vec::new(),
            cool_down: DEFAULT_COOL_DOWN,
            body_limit: DEFAULT_ROUTE_BODY_LIMIT,
            max_json_depth: crate::parsed::DEFAULT_MAX_JSON_DEPTH,
        }
    }
}

impl<S> RouteBuilder<S> {
    /// An empty table: every model gets `404 not_found_error` until a route is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route: client models containing `pattern` (ASCII case ignored; `*` matches every
    /// model) go to `targets`, tried in order. Clones of one [`Target`] are one target (they
    /// share its cool-down), wherever they appear.
    #[must_use]
    pub fn route(mut self, pattern: &str, targets: impl IntoIterator<Item = Target<S>>) -> Self {
        let mut indices = Vec::new();
        for target in targets {
            let index = match self
                .targets
                .iter()
                .position(|t| t.shares_state_with(&target))
            {
                Some(index) => index,
                None => {
                    self.targets.push(target);
                    self.targets.len() - 1
                }
            };
            if !indices.contains(&index) {
                indices.push(index);
            }
        }
        self.rules.push(Rule {
            pattern: Pattern::new(pattern),
            targets: indices,
        });
        self
    }

    /// How long a target that failed (a fallback status, an error, a timeout) is skipped while
    /// another target of the route is available (default 30 s; zero turns skipping off).
    #[must_use]
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// The largest request body the route reads itself to find the model, when no layer
    /// further out left a [`ParsedBody`] (default 32 MiB); larger ones get `413`.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The deepest JSON nesting accepted in a body the route parses itself (default
    /// [`DEFAULT_MAX_JSON_DEPTH`](crate::parsed::DEFAULT_MAX_JSON_DEPTH)); deeper → `400`.
    #[must_use]
    pub fn max_json_depth(mut self, levels: usize) -> Self {
        self.max_json_depth = levels;
        self
    }

    /// The finished service.
    pub fn build(self) -> Route<S> {
        Route {
            targets: self.targets,
            table: Arc::new(Table {
                rules: self.rules,
                cool_down: self.cool_down,
                body_limit: self.body_limit,
                max_json_depth: self.max_json_depth,
            }),
        }
    }
}

/// Sends each request to the targets of the first route matching its `model`, falling back to
/// the next target when one fails before answering. See the [module docs](super).
#[derive(Debug)]
pub struct Route<S> {
    targets: Vec<Target<S>>,
    table: Arc<Table>,
}

impl<S: Clone> Clone for Route<S> {
    fn clone(&self) -> Self {
        Self {
            targets: self.targets.clone(),
            table: Arc::clone(&self.table),
        }
    }
}

impl<S> Route<S> {
    /// A [`RouteBuilder`].
    pub fn builder() -> RouteBuilder<S> {
        RouteBuilder::new()
    }

    /// Every target, each once, in the order first added.
    pub fn targets(&self) -> impl Iterator<Item = &Target<S>> {
        self.targets.iter()
    }

    /// The backends of the targets that serve `model`, in the order they would be tried now
    /// (cooling-down targets last); empty when no route matches.
    ///
    /// ```
    /// # use tower_llm_bridge::route::{Route, Target};
    /// # let service = tower::service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
    /// # });
    /// let route = Route::builder()
    ///     .route("haiku", [Target::new("local", service.clone()), Target::new("cloud", service)])
    ///     .build();
    /// assert_eq!(route.plan("claude-HAIKU-4-5"), ["local", "cloud"]);
    /// assert!(route.plan("claude-opus-4-1").is_empty());
    /// ```
    pub fn plan(&self, model: &str) -> Vec<&str> {
        self.table
            .order(model, &self.targets)
            .unwrap_or_default()
            .into_iter()
            .map(|i| self.targets[i].backend())
            .collect()
    }
}

impl Table {
    /// The targets to try for `model`: those not cooling down in route order, then the
    /// cooling ones (a route whose targets all failed recently still gets an answer from a
    /// backend, never a refusal made up here). `None`: no route matches.
    fn order<S>(&self, model: &str, targets: &[Target<S>]) -> Option<Vec<usize>> {
        let rule = self.rules.iter().find(|rule| rule.pattern.matches(model))?;
        let now = Instant::now();
        let (mut ready, cooling): (Vec<usize>, Vec<usize>) = rule
            .targets
            .iter()
            .partition(|&&i| !targets[i].health.is_cooling(now));
        ready.extend(cooling);
        Some(ready)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Route<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<RouteBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Which targets a request needs is known only once its model is: each target is
        // driven to readiness inside the future, when (and if) it is tried.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let targets = self.targets.clone();
        let table = Arc::clone(&self.table);
        ResponseFuture::new(route_call(targets, table, req))
    }
}

async fn route_call<S, ReqBody, ResBody>(
    mut targets: Vec<Target<S>>,
    table: Arc<Table>,
    req: Request<ReqBody>,
) -> Result<Response<RouteBody<ResBody>>, S::Error>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    // Parse once: a layer further out (the cache) may have read and parsed the body already;
    // otherwise the parsed form is left in the extensions for the targets' layers.
    let bytes = match parts.extensions.get::<ParsedBody>() {
        Some(parsed) => parsed.bytes().clone(),
        None => match read_json(body, table.body_limit, table.max_json_depth).await {
            Ok(parsed) => {
                let bytes = parsed.bytes().clone();
                parts.extensions.insert(parsed);
                bytes
            }
            Err(err) => return Ok(local_error(err)),
        },
    };
    let order = {
        let Some(parsed) = parts.extensions.get::<ParsedBody>() else {
            return Ok(local_error(ApiError::invalid_request(
                "request body is missing",
            )));
        };
        // For an outer metrics layer's model label (a no-op when a layer further out did it).
        crate::report::ModelSlot::note_parsed(&parts.extensions, parsed);
        let Some(model) = parsed.str_field("model") else {
            return Ok(local_error(ApiError::invalid_request(
                "model: Field required (a string)",
            )));
        };
        match table.order(&model, &targets) {
            Some(order) if !order.is_empty() => order,
            _ => {
                return Ok(local_error(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found_error",
                    format!("model: no route serves {model:?}"),
                )));
            }
        }
    };

    let mut attempts = UpstreamAttempts::default();
    let count = order.len();
    for (n, index) in order.into_iter().enumerate() {
        let last = n + 1 == count;
        // The future owns its clones of the targets: each is called at most once.
        let target = &mut targets[index];
        let req = Request::from_parts(parts.clone(), Full::new(bytes.clone()));
        let service = &mut target.service;
        let call = async {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(req).await
        };
        let result = match target.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.ok(),
            None => Some(call.await),
        };
        match result {
            Some(Ok(mut res)) => {
                if UpstreamAttempts::is_marked_none(&res) {
                    // The target refused the request itself (its backend was never called):
                    // nothing to count, and the next target would refuse it too.
                    res.extensions_mut().insert(attempts);
                    return Ok(res.map(RouteBody::backend));
                }
                let status = res.status();
                if is_fallback_status(status) {
                    target.health.failed(table.cool_down);
                    if !last {
                        tracing::warn!(backend = %target.backend, status = status.as_u16(), "backend failed, trying the next target");
                        attempts.push(Arc::clone(&target.backend), AttemptOutcome::Fallback);
                        // Dropping the response closes its body: nothing of it reached the client.
                        continue;
                    }
                } else if status.is_success() {
                    target.health.recovered();
                }
                let outcome = if status.is_success() {
                    AttemptOutcome::Ok
                } else {
                    AttemptOutcome::Error
                };
                attempts.push(Arc::clone(&target.backend), outcome);
                return Ok(finish(
                    res.map(RouteBody::backend),
                    &target.backend,
                    attempts,
                ));
            }
            Some(Err(err)) => {
                target.health.failed(table.cool_down);
                if last {
                    return Err(err);
                }
                tracing::warn!(backend = %target.backend, "backend call failed, trying the next target");
                attempts.push(Arc::clone(&target.backend), AttemptOutcome::Fallback);
            }
            None => {
                target.health.failed(table.cool_down);
                let secs = target.timeout.unwrap_or_default().as_secs_f32();
                if last {
                    attempts.push(Arc::clone(&target.backend), AttemptOutcome::Error);
                    let err = ApiError::gateway_timeout(format!(
                        "backend {} sent no response within {secs} s",
                        target.backend
                    ));
                    return Ok(finish(local_error(err), &target.backend, attempts));
                }
                tracing::warn!(backend = %target.backend, timeout_s = secs, "backend timed out, trying the next target");
                attempts.push(Arc::clone(&target.backend), AttemptOutcome::Fallback);
            }
        }
    }
    // `order` is never empty (checked above), and its last entry always returns.
    Ok(local_error(ApiError::bad_gateway("no backend answered")))
}

fn finish<B>(
    mut res: Response<RouteBody<B>>,
    backend: &str,
    attempts: UpstreamAttempts,
) -> Response<RouteBody<B>> {
    if let Ok(value) = HeaderValue::from_str(backend) {
        res.headers_mut().insert(BACKEND_HEADER, value);
    }
    res.extensions_mut().insert(attempts);
    res
}

fn local_error<B>(err: ApiError) -> Response<RouteBody<B>> {
    let mut res: Response<RouteBody<B>> = err.into_anthropic_response();
    // No backend was called: an outer metrics layer must not count one.
    UpstreamAttempts::mark_none(&mut res);
    res
}

async fn read_json<B>(body: B, limit: usize, max_depth: usize) -> Result<ParsedBody, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let bytes = collect_limited(body, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid_request("request body is empty"));
    }
    ParsedBody::parse_max_depth(bytes, max_depth)
        .map_err(|err| ApiError::invalid_request(format!("request body is not valid JSON: {err}")))
}
