//! Opaque random identifiers (`msg_…`, `toolu_…`, `req_…`) without a random-number crate.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Returns `prefix` followed by 24 lowercase hex characters, unique within the process and
/// unpredictable across processes (std's `RandomState` is seeded from the OS).
pub(crate) fn new_id(prefix: &str) -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let high = hasher.finish();
    hasher.write_u64(high);
    let low = hasher.finish() as u32;
    format!("{prefix}{high:016x}{low:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_differ() {
        let a = new_id("msg_");
        let b = new_id("msg_");
        assert!(a.starts_with("msg_"));
        assert_eq!(a.len(), 4 + 24);
        assert_ne!(a, b);
    }
}
