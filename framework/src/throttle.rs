//! Warnings said at most once per [`EVERY_MS`] per kind, with how many were held back since: a
//! fold that meets 20,000 hostile records must not write 20,000 lines (each reader folds them
//! again after every restart), yet an operator still learns that they are there, and how many.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How often one kind of warning is said at most.
pub const EVERY_MS: i64 = 10_000;

/// One kind of warning's last saying, and how many were held back since.
#[derive(Debug)]
pub struct Throttle {
    last_ms: AtomicI64,
    held: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            last_ms: AtomicI64::new(i64::MIN),
            held: AtomicU64::new(0),
        }
    }

    /// Whether to say the warning now: `Some(n)`, with `n` held back since the last one said;
    /// `None` (and counted) within [`EVERY_MS`] of it.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(crate::clock::now_ms())
    }

    /// [`Throttle::allow`] at `now_ms`.
    pub fn allow_at(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= EVERY_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_said_once_per_period_with_the_count_held_back() {
        let t = Throttle::new();
        assert_eq!(t.allow_at(1_000), Some(0));
        // 20,000 more in the next second: none said, all counted.
        assert!((0..20_000).all(|i| t.allow_at(1_000 + i / 20).is_none()));
        assert_eq!(t.allow_at(1_000 + EVERY_MS), Some(20_000));
        assert_eq!(t.allow_at(1_001 + EVERY_MS), None);
    }
}
