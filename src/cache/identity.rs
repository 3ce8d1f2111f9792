//! Who is asking: the tenant part of a cache key.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Domain separation, so these hashes are useless as hashes of the bare credential.
const DOMAIN: &[u8] = b"tlb-caller/v1\0";

/// A static name: looked up without parsing the name on every request.
static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// The caller a cached answer belongs to, as a hash of their credential.
///
/// An authentication layer in front of the cache inserts it as a request extension once it
/// knows who is calling; when it is absent the cache derives it from the `x-api-key` or
/// `authorization` header. The raw credential is never kept, only its SHA-256 (hex).
///
/// ```
/// use tower_llm_bridge::cache::CallerIdentity;
///
/// let a = CallerIdentity::from_credential("sk-ant-secret");
/// assert_eq!(a, CallerIdentity::from_credential("sk-ant-secret"));
/// assert_ne!(a, CallerIdentity::from_credential("sk-ant-other"));
/// assert!(!a.as_str().contains("secret"));
/// assert_eq!(a.as_str().len(), 64);
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(a.clone());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity(Arc<str>);

impl CallerIdentity {
    /// The identity of whoever holds `credential` (an API key, a bearer token, a proxy key):
    /// its SHA-256 in lowercase hex.
    pub fn from_credential(credential: &str) -> Self {
        Self::from_credential_bytes(credential.as_bytes())
    }

    /// The identity of requests that carry no credential at all.
    ///
    /// ```
    /// # use tower_llm_bridge::cache::CallerIdentity;
    /// assert_eq!(CallerIdentity::anonymous().as_str(), "anonymous");
    /// ```
    pub fn anonymous() -> Self {
        Self(Arc::from("anonymous"))
    }

    /// The hashed identity (64 hex characters), or `anonymous`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_credential_bytes(credential: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update(credential);
        // `encode_to_slice` writes bytes; `hex::encode` would build the string a char at a
        // time (a tenth of a cache hit's instructions, measured).
        let mut hex = [0u8; 64];
        let _ = hex::encode_to_slice(hasher.finalize(), &mut hex);
        // Hex digits are ASCII, so this is always valid UTF-8.
        Self(Arc::from(std::str::from_utf8(&hex).unwrap_or_default()))
    }

    /// The identity of a request without the extension: `x-api-key` first, then
    /// `authorization`, else anonymous.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(&X_API_KEY)
            .or_else(|| headers.get(http::header::AUTHORIZATION))
            .map_or_else(Self::anonymous, |value| {
                Self::from_credential_bytes(value.as_bytes())
            })
    }
}

impl fmt::Debug for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallerIdentity").field(&&*self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn headers_give_the_same_identity_as_the_credential() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            CallerIdentity::from_headers(&headers),
            CallerIdentity::anonymous()
        );
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        assert_eq!(
            CallerIdentity::from_headers(&headers),
            CallerIdentity::from_credential("Bearer t")
        );
        // x-api-key wins over authorization.
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        assert_eq!(
            CallerIdentity::from_headers(&headers),
            CallerIdentity::from_credential("k")
        );
    }

    #[test]
    fn identity_never_shows_the_credential() {
        let id = CallerIdentity::from_credential("sk-very-secret");
        assert!(!format!("{id:?}").contains("secret"));
        assert!(id.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        // Domain-separated: not the plain SHA-256 of the key.
        assert_ne!(id.as_str(), hex::encode(Sha256::digest(b"sk-very-secret")));
        // The exact form (part of every cache key, so stored entries depend on it): lowercase
        // hex of SHA-256 over the domain tag and the credential.
        assert_eq!(
            id.as_str(),
            hex::encode(Sha256::digest([DOMAIN, b"sk-very-secret"].concat()))
        );
    }
}
