use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use super::record::Tracker;

/// Middleware recording the metrics of every request; made by
/// [`MetricsLayer`](super::MetricsLayer), see the [module docs](super).
#[derive(Clone, Debug)]
pub struct Metrics<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Metrics<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&super::MetricsLayer::new(), inner)
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let tracker = Tracker::start(Arc::clone(&self.config), &mut req);
        ResponseFuture::new(self.inner.call(req), tracker)
    }
}
