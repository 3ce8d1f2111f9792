//! Test support for the Redis tier: a real `redis-server` on a free 127.0.0.1 port (killed
//! on drop), or the server named by `REDIS_URL`; plus a small local tier for `TieredCache`.
//!
//! A missing `redis-server` binary is a test failure when `CI=true` and a printed skip
//! elsewhere. `REDIS_SERVER_BIN` overrides the binary's path.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tower_llm_bridge::cache::{CacheBackend, CacheEntry};

const START_DEADLINE: Duration = Duration::from_secs(10);

fn binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

/// `CI=true` (or `1`): a missing `redis-server` is then a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Called when no `redis-server` can be run: fails in CI, prints a skip notice elsewhere.
fn missing(test: &str, why: &str) {
    assert!(
        !in_ci(),
        "CI=true but redis-server cannot be run ({why}); install it (apt-get install redis-server)"
    );
    eprintln!("SKIPPED {test}: redis-server cannot be run ({why}); install redis-server to run it");
}

/// A `redis-server` child process on 127.0.0.1, killed (and reaped) on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port; `None` (after a skip notice) when the binary is
    /// missing outside CI.
    pub fn start(test: &str) -> Option<Self> {
        let mut last_error = String::new();
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            match Self::start_on(port) {
                Ok(server) => return Some(server),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    missing(test, &format!("{}: {e}", binary()));
                    return None;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// Starts a server on `port` and waits (bounded) until it answers `PING`.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let child = Command::new(binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self {
            port,
            child: Some(child),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(std::io::Error::other(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                )));
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(std::io::Error::other(format!(
            "redis-server on port {} did not answer PING within {START_DEADLINE:?}",
            self.port
        )))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server and waits until the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + START_DEADLINE;
        while ping(self.port) {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let started = Self::start_on(self.port).expect("restart redis-server on the same port");
        self.child = started.child_take();
    }

    fn child_take(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis to test against: `REDIS_URL` when set, else an own server.
pub struct TestRedis {
    pub url: String,
    _server: Option<RedisServer>,
}

impl TestRedis {
    /// `None` (after a skip notice) when neither is available outside CI.
    pub fn get(test: &str) -> Option<Self> {
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.is_empty()
        {
            return Some(Self { url, _server: None });
        }
        let server = RedisServer::start(test)?;
        Some(Self {
            url: server.url(),
            _server: Some(server),
        })
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// `PING` over a plain socket, bounded: true on `+PONG`.
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A key prefix no other test (or earlier run against a shared `REDIS_URL`) uses.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "tlbtest:{test}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain async connection for inspecting and planting raw values.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw redis connection")
}

/// An entry with the given body, created `age` ago.
pub fn entry_with(body: impl Into<Bytes>, age: Duration) -> CacheEntry {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    CacheEntry {
        response_body: body.into(),
        model: "claude-test".into(),
        created_at: Instant::now() - age,
        ttl_secs: None,
        status: StatusCode::OK,
        headers,
    }
}

/// A local tier for `TieredCache` tests: a map with per-entry expiry that records every put
/// (key, ttl). `get` reports the remaining TTL, like the Redis tier.
#[derive(Default)]
pub struct MapCache {
    map: Mutex<HashMap<String, (CacheEntry, Instant)>>,
    puts: Mutex<Vec<(String, u64)>>,
}

impl MapCache {
    pub fn puts(&self) -> Vec<(String, u64)> {
        self.puts.lock().unwrap().clone()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|(_, expires)| Instant::now() < *expires)
    }
}

impl CacheBackend for MapCache {
    async fn get(&self, key: &str) -> Option<CacheEntry> {
        let map = self.map.lock().unwrap();
        let (entry, expires) = map.get(key)?;
        let remaining = expires.checked_duration_since(Instant::now())?;
        let mut entry = entry.clone();
        entry.ttl_secs = Some(remaining.as_secs());
        Some(entry)
    }

    async fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) {
        self.puts.lock().unwrap().push((key.to_owned(), ttl_secs));
        let expires = Instant::now() + Duration::from_secs(ttl_secs);
        self.map
            .lock()
            .unwrap()
            .insert(key.to_owned(), (entry, expires));
    }
}
