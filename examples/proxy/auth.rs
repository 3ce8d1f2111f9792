//! Proxy keys: which credential a client presented, and a constant-time comparison.

use http::header::{self, HeaderMap, HeaderName};

use super::config::Secret;

/// The header Anthropic clients send their key in (a constant: a `&str` name is parsed
/// again on every lookup).
pub(super) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The credentials a client presented: `x-api-key`, then `Authorization: Bearer`.
pub(super) fn presented_credentials(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let api_key = headers
        .get_all(X_API_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    api_key.chain(bearer).filter(|c| !c.is_empty())
}

/// The index in `keys` of the first presented credential that equals one of them, compared
/// in constant time.
pub(super) fn authenticate(keys: &[Secret], headers: &HeaderMap) -> Option<usize> {
    presented_credentials(headers).find_map(|presented| {
        // Check every key, without stopping at the first match, so timing says nothing
        // about which key matched or how much of a key was right: 1 + the index of the
        // (last) matching key, picked without a branch, or 0.
        let matched = keys.iter().enumerate().fold(0usize, |matched, (i, key)| {
            let equal = constant_time_eq(key.expose().as_bytes(), presented.as_bytes());
            matched.max(usize::from(equal) * (i + 1))
        });
        matched.checked_sub(1)
    })
}

/// Whether `a == b`, in time that depends on the length only, never on where the first
/// difference is (a length mismatch returns at once: key lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}
