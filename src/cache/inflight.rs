//! Request coalescing: one caller per key does the work, the others wait for its result.
//!
//! The first request for a key becomes the leader and gets a [`LeaderGuard`]; requests for the
//! same key that arrive while it is in flight get a receiver and wait for what the leader
//! publishes. The leader publishes the entry it stored (or found), or nothing when it has no
//! cacheable answer: dropping the guard without publishing (error, non-2xx, cut-off body,
//! cancelled request) releases the followers to call the inner service themselves.
//!
//! A leader answering with a stream publishes the live stream first ([`Slot::Live`]): a
//! streaming follower joins it and reads it as it is produced; a JSON follower keeps waiting
//! for the entry stored at the stream's clean end. The slot holds the live stream weakly, so
//! it never keeps an upstream stream alive that nobody reads.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::CacheEntry;

/// What a leader has published so far.
#[derive(Clone, Debug)]
enum Slot {
    Pending,
    /// The leader's stream, readable while it is produced (a type-erased shared stream).
    Live(Weak<dyn Any + Send + Sync>),
    Done(Option<CacheEntry>),
}

/// What a streaming follower gets from its leader.
pub(crate) enum Joined {
    /// The stored answer.
    Entry(CacheEntry),
    /// The leader's live stream.
    Live(Arc<dyn Any + Send + Sync>),
}

/// The keys currently being fetched.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    map: Mutex<HashMap<String, watch::Sender<Slot>>>,
    /// Flights ended so far (any key): a request that looked the backend up before joining
    /// looks again as leader only when a flight ended in between (and may have stored the
    /// answer it is about to fetch).
    ended: AtomicU64,
}

/// The outcome of [`Inflight::join`].
pub(crate) enum Join {
    /// Nobody is fetching this key: the caller does, and must publish through the guard.
    Leader(LeaderGuard),
    /// Someone else is: wait for their answer.
    Follower(Follower),
}

impl Inflight {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<Slot>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single calls).
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = self.lock();
        if let Some(tx) = map.get(key) {
            return Join::Follower(Follower { rx: tx.subscribe() });
        }
        let (tx, _) = watch::channel(Slot::Pending);
        map.insert(key.to_owned(), tx);
        Join::Leader(LeaderGuard {
            inflight: Arc::clone(self),
            key: key.to_owned(),
            published: false,
        })
    }

    /// Lets streaming followers of the flight for `key` (whose leader holds its guard) join
    /// `stream` while it is produced. Followers that wait for an entry keep waiting for
    /// [`LeaderGuard::publish`] or the guard's drop.
    pub(crate) fn publish_live(&self, key: &str, stream: Weak<dyn Any + Send + Sync>) {
        if let Some(tx) = self.lock().get(key) {
            tx.send_replace(Slot::Live(stream));
        }
    }

    /// How many flights have ended; see the field.
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Held by the one request fetching a key. Dropping it ends the flight.
#[derive(Debug)]
pub(crate) struct LeaderGuard {
    inflight: Arc<Inflight>,
    key: String,
    published: bool,
}

impl LeaderGuard {
    /// Hands `entry` to every follower, present and arriving, until the guard is dropped.
    pub(crate) fn publish(&mut self, entry: CacheEntry) {
        if let Some(tx) = self.inflight.lock().get(&self.key) {
            tx.send_replace(Slot::Done(Some(entry)));
        }
        self.published = true;
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let removed = self.inflight.lock().remove(&self.key);
        self.inflight.ended.fetch_add(1, Ordering::Release);
        if let (Some(tx), false) = (removed, self.published) {
            tx.send_replace(Slot::Done(None));
        }
    }
}

/// Waits for a leader's result.
#[derive(Debug)]
pub(crate) struct Follower {
    rx: watch::Receiver<Slot>,
}

impl Follower {
    /// The leader's entry, or `None` if it had none, vanished, or took longer than `limit`.
    pub(crate) async fn wait(self, limit: Duration) -> Option<CacheEntry> {
        match self.wait_until(limit, false).await? {
            Joined::Entry(entry) => Some(entry),
            Joined::Live(_) => None,
        }
    }

    /// The leader's entry or live stream, or `None` as for [`wait`](Self::wait) (or when the
    /// live stream is already gone).
    pub(crate) async fn wait_stream(self, limit: Duration) -> Option<Joined> {
        self.wait_until(limit, true).await
    }

    async fn wait_until(mut self, limit: Duration, live: bool) -> Option<Joined> {
        let done = self.rx.wait_for(|slot| match slot {
            Slot::Pending => false,
            Slot::Live(_) => live,
            Slot::Done(_) => true,
        });
        let waited = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::timeout(limit, done).await
        } else {
            // No Tokio timer outside its runtime: rely on the leader's guard, which always
            // reports (entry, nothing, or its drop).
            Ok(done.await)
        };
        match waited {
            Ok(Ok(slot)) => match &*slot {
                Slot::Done(entry) => entry.clone().map(Joined::Entry),
                Slot::Live(stream) => stream.upgrade().map(Joined::Live),
                Slot::Pending => None,
            },
            // Sender gone without a result, or too slow: fetch it ourselves.
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn entry(body: &'static str) -> CacheEntry {
        CacheEntry::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(body.as_bytes()),
        )
    }

    fn leader(j: Join) -> LeaderGuard {
        match j {
            Join::Leader(g) => g,
            Join::Follower(_) => panic!("expected leader"),
        }
    }

    fn follower(j: Join) -> Follower {
        match j {
            Join::Follower(f) => f,
            Join::Leader(_) => panic!("expected follower"),
        }
    }

    #[tokio::test]
    async fn followers_get_the_published_entry_even_after_the_leader_is_gone() {
        let inflight = Arc::new(Inflight::default());
        let mut guard = leader(inflight.join("k"));
        let early = follower(inflight.join("k"));
        // Another key is independent.
        let other = leader(inflight.join("other"));
        guard.publish(entry("x"));
        let late = follower(inflight.join("k"));
        drop(guard);
        assert_eq!(inflight.len(), 1);
        drop(other);
        assert_eq!(inflight.len(), 0);
        let wait = Duration::from_secs(5);
        assert_eq!(early.wait(wait).await.expect("entry").response_body, "x");
        assert_eq!(late.wait(wait).await.expect("entry").response_body, "x");
        // The flight is over: the next caller leads again.
        let _next = leader(inflight.join("k"));
    }

    #[tokio::test]
    async fn dropping_the_leader_unpublished_releases_followers_with_nothing() {
        let inflight = Arc::new(Inflight::default());
        let guard = leader(inflight.join("k"));
        let waiting = follower(inflight.join("k"));
        let task = tokio::spawn(waiting.wait(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        drop(guard);
        let got = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("released promptly")
            .expect("task");
        assert!(got.is_none());
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let inflight = Arc::new(Inflight::default());
        let _guard = leader(inflight.join("k"));
        let started = std::time::Instant::now();
        let got = follower(inflight.join("k"))
            .wait(Duration::from_millis(50))
            .await;
        assert!(got.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
