use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::layer::Policy;
use crate::error::ApiError;

/// Middleware that applies an origin and host policy; made by
/// [`OriginGuardLayer`](super::OriginGuardLayer), see the [module docs](super).
#[derive(Clone, Debug)]
pub struct OriginGuard<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> OriginGuard<S> {
    pub(crate) fn from_policy(inner: S, policy: Arc<Policy>) -> Self {
        Self { inner, policy }
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OriginGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let origin = req.headers().get(header::ORIGIN);
        // A value that is not text cannot be on the list.
        let allowed = origin.filter(|value| {
            value
                .to_str()
                .is_ok_and(|origin| self.policy.origin_allowed(origin))
        });
        let openai = req.uri().path() == "/v1/chat/completions";
        let is_preflight = req.method() == Method::OPTIONS
            && origin.is_some()
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let host = req
            .uri()
            .authority()
            .map(|authority| authority.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .map(|host| host.to_str().unwrap_or("\u{fffd}"))
            });
        let host_ok = host.is_none_or(|host| self.policy.host_allowed(host));

        if is_preflight {
            return match allowed {
                Some(origin) if host_ok || !self.policy.enforce => {
                    ResponseFuture::ready(preflight(origin.clone(), &req))
                }
                _ => ResponseFuture::ready(forbidden(openai, "origin is not allowed")),
            };
        }
        if self.policy.enforce {
            if !host_ok {
                return ResponseFuture::ready(forbidden(
                    openai,
                    "host is not allowed: only loopback names, the listen address and allowed \
                     hosts are served (DNS rebinding protection)",
                ));
            }
            if origin.is_some() && allowed.is_none() {
                return ResponseFuture::ready(forbidden(
                    openai,
                    "origin is not allowed: browsers may only call this service from an \
                     allowed origin",
                ));
            }
        }
        let cors = allowed.cloned();
        ResponseFuture::inner(self.inner.call(req), cors)
    }
}

fn forbidden(openai: bool, message: &str) -> Response<Bytes> {
    let err = ApiError::new(StatusCode::FORBIDDEN, "permission_error", message);
    if openai {
        err.into_openai_response()
    } else {
        err.into_anthropic_response()
    }
}

/// The `204` answer to a preflight from an allowed origin.
fn preflight<B>(origin: HeaderValue, req: &Request<B>) -> Response<Bytes> {
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let headers = res.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    // The origin is trusted: whatever headers its request needs (keys, anthropic-version…).
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    res
}
