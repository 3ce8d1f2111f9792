use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tower_layer::Layer;

use super::service::OriginGuard;

/// [`Layer`] that applies the origin and host policy of the [module docs](super).
///
/// ```
/// use tower_llm_bridge::origin::OriginGuardLayer;
///
/// let layer = OriginGuardLayer::new()
///     .allow_origins(["https://app.example.com", "http://localhost:5173"])
///     .allow_host("proxy.internal")
///     .listen_addr("192.168.1.20:3000".parse().unwrap());
/// assert!(layer.is_origin_allowed("http://LOCALHOST:5173"));
/// assert!(!layer.is_origin_allowed("null"));
/// assert!(layer.is_host_allowed("192.168.1.20:3000"));
/// assert!(layer.is_host_allowed("proxy.internal"));
/// assert!(layer.is_host_allowed("[::1]:3000"));
/// assert!(!layer.is_host_allowed("rebind.evil.example"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct OriginGuardLayer {
    policy: Arc<Policy>,
}

#[derive(Clone, Debug)]
pub(crate) struct Policy {
    /// `scheme://host[:port]`, lowercased, without a trailing slash.
    origins: Vec<String>,
    /// Host names (or IP literals) without port, lowercased.
    hosts: Vec<String>,
    pub(crate) enforce: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            hosts: Vec::new(),
            enforce: true,
        }
    }
}

impl OriginGuardLayer {
    /// Enforcing, with no origin allowed and only loopback hosts.
    pub fn new() -> Self {
        Self::default()
    }

    fn policy_mut(&mut self) -> &mut Policy {
        Arc::make_mut(&mut self.policy)
    }

    /// Allows requests (and preflights) carrying `Origin: origin`, e.g.
    /// `https://app.example.com` (scheme, host and port, as browsers send it).
    #[must_use]
    pub fn allow_origin(mut self, origin: impl AsRef<str>) -> Self {
        let origin = normalize_origin(origin.as_ref());
        if !origin.is_empty() {
            self.policy_mut().origins.push(origin);
        }
        self
    }

    /// [`allow_origin`](Self::allow_origin) for each of `origins`.
    #[must_use]
    pub fn allow_origins<I, O>(self, origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: AsRef<str>,
    {
        origins
            .into_iter()
            .fold(self, |layer, origin| layer.allow_origin(origin))
    }

    /// Accepts `Host: host` (any port) besides the loopback names and the listen address.
    #[must_use]
    pub fn allow_host(mut self, host: impl AsRef<str>) -> Self {
        let host = host_name(host.as_ref()).to_ascii_lowercase();
        if !host.is_empty() {
            self.policy_mut().hosts.push(host);
        }
        self
    }

    /// [`allow_host`](Self::allow_host) for each of `hosts`.
    #[must_use]
    pub fn allow_hosts<I, H>(self, hosts: I) -> Self
    where
        I: IntoIterator<Item = H>,
        H: AsRef<str>,
    {
        hosts
            .into_iter()
            .fold(self, |layer, host| layer.allow_host(host))
    }

    /// Accepts the address the server listens on as a `Host` (an unspecified address such as
    /// `0.0.0.0` names no host and adds nothing).
    #[must_use]
    pub fn listen_addr(self, addr: SocketAddr) -> Self {
        if addr.ip().is_unspecified() {
            return self;
        }
        self.allow_host(addr.ip().to_string())
    }

    /// Whether unlisted origins and hosts are refused (default `true`). Turn it off when
    /// every request must present a key anyway; preflights are still only answered for
    /// allowed origins.
    #[must_use]
    pub fn enforce(mut self, enforce: bool) -> Self {
        self.policy_mut().enforce = enforce;
        self
    }

    /// Whether `origin` is on the allow-list.
    pub fn is_origin_allowed(&self, origin: &str) -> bool {
        self.policy.origin_allowed(origin)
    }

    /// Whether a request with `Host: host` is accepted.
    pub fn is_host_allowed(&self, host: &str) -> bool {
        self.policy.host_allowed(host)
    }
}

impl Policy {
    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/');
        self.origins
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }

    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host.trim());
        let name = name.strip_suffix('.').unwrap_or(name);
        is_loopback_name(name) || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The host part of a `Host` value or authority: no port, IPv6 brackets kept off.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        // One colon: `name:port`. More would be a bare IPv6 literal, kept whole.
        Some((name, _port)) if !name.contains(':') => name,
        _ => host,
    }
}

fn is_loopback_name(name: &str) -> bool {
    if name.eq_ignore_ascii_case("localhost")
        || name
            .get(name.len().saturating_sub(".localhost".len())..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
    {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl<S> Layer<S> for OriginGuardLayer {
    type Service = OriginGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginGuard::from_policy(inner, Arc::clone(&self.policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_parsed_from_host_values() {
        for (value, name) in [
            ("localhost:3000", "localhost"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]:3000", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("example.com", "example.com"),
        ] {
            assert_eq!(host_name(value), name, "{value}");
        }
    }

    #[test]
    fn loopback_names() {
        let policy = Policy::default();
        for host in [
            "localhost",
            "LOCALHOST:80",
            "localhost.",
            "app.localhost:3000",
            "127.0.0.1:3000",
            "127.1.2.3",
            "[::1]:1",
        ] {
            assert!(policy.host_allowed(host), "{host}");
        }
        for host in [
            "",
            "localhost.evil.example",
            "evillocalhost",
            "0.0.0.0:3000",
            "192.168.1.2",
            "[::2]",
            "127.0.0.1.nip.io",
        ] {
            assert!(!policy.host_allowed(host), "{host}");
        }
    }
}
