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
    // By hand: `format!` with padded hex costs several times this on every response.
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    push_hex(&mut id, high, 16);
    push_hex(&mut id, u64::from(low), 8);
    id
}

/// Appends the `digits` low hex digits of `value`, most significant first.
fn push_hex(out: &mut String, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..digits).rev() {
        out.push(char::from(HEX[((value >> (shift * 4)) & 0xf) as usize]));
    }
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
        assert!(
            a[4..]
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        );
    }

    #[test]
    fn hex_is_zero_padded_and_lowercase() {
        let mut out = String::new();
        push_hex(&mut out, 0xab, 16);
        push_hex(&mut out, 0xdead_beef, 8);
        assert_eq!(out, "00000000000000abdeadbeef");
    }
}
