//! Call ids: `c-` and 12 hex digits, made without a system call (a UUID v4 asks the kernel for
//! randomness each time, on every call's path).
//!
//! A per-process counter goes through a keyed bijection of 48-bit values, so the ids of one run
//! never repeat, and the random key makes a run's ids as unlikely to meet another run's as 48 bits
//! of a UUID were.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const MASK: u64 = (1 << 48) - 1;

/// A new call id.
pub fn call_id() -> String {
    static KEY: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let key = *KEY.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("c-{:012x}", mix48(n.wrapping_add(key)))
}

/// A bijection of the 48-bit values (each step is invertible modulo 2^48): xor-shifts and
/// multiplications by odd constants.
fn mix48(mut x: u64) -> u64 {
    x &= MASK;
    x ^= x >> 24;
    x = x.wrapping_mul(0x9E37_79B9_7F4B) & MASK;
    x ^= x >> 21;
    x = x.wrapping_mul(0xBF58_476D_1CE5) & MASK;
    x ^ (x >> 24)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_short_hex_and_never_repeat_within_a_run() {
        let ids: HashSet<String> = (0..200_000).map(|_| call_id()).collect();
        assert_eq!(ids.len(), 200_000);
        for id in ids.iter().take(100) {
            let hex = id.strip_prefix("c-").expect("prefix");
            assert_eq!(hex.len(), 12, "{id}");
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
    }

    #[test]
    fn the_mix_is_a_bijection_on_a_dense_range() {
        let mixed: HashSet<u64> = (0..1u64 << 18)
            .map(|n| mix48(n.wrapping_add(MASK - 7)))
            .collect();
        assert_eq!(mixed.len(), 1 << 18);
        assert!(mixed.iter().all(|x| *x <= MASK));
    }
}
