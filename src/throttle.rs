//! Brute-force throttling for sign-in and client authentication: failures are counted per key
//! (a username, a client id, an IP address); after a few free failures each further one blocks
//! the key for twice as long as the last (1 s, 2 s, 4 s ... up to 15 minutes). A blocked key is
//! answered 429 with `Retry-After` before any password or secret is checked. Memory is bounded:
//! entries idle for 15 minutes are forgotten, and at most `capacity` keys are tracked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before blocking starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest block, and how long an idle entry is remembered.
pub const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// The throttles the server keeps: one for sign-in, one for client authentication.
#[derive(Debug, Default)]
pub struct Throttles {
    pub login: Throttle,
    pub client_auth: Throttle,
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[derive(Debug)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::with_capacity(100_000)
    }
}

impl Throttle {
    pub fn with_capacity(capacity: usize) -> Throttle {
        Throttle { entries: Mutex::new(HashMap::new()), capacity }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Err(retry_after)` when any of `keys` is blocked at `now`.
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let entries = self.entries();
        let longest = keys
            .iter()
            .filter_map(|key| entries.get(key))
            .map(|entry| entry.blocked_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if longest.is_zero() { Ok(()) } else { Err(longest) }
    }

    /// Records a failed attempt for every key.
    pub fn failure(&self, keys: &[String], now: Instant) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity {
            entries.retain(|_, entry| now.saturating_duration_since(entry.last_failure) < MAX_BLOCK);
        }
        for key in keys {
            if !entries.contains_key(key) && entries.len() >= self.capacity {
                // Still full of recent failures: keep blocking those; this key goes untracked.
                continue;
            }
            let entry = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                blocked_until: now,
                last_failure: now,
            });
            if now.saturating_duration_since(entry.last_failure) >= MAX_BLOCK {
                entry.failures = 0; // forgiven after a long quiet spell
            }
            entry.failures += 1;
            entry.last_failure = now;
            if entry.failures > FREE_FAILURES {
                let exponent = (entry.failures - FREE_FAILURES - 1).min(20);
                let block = Duration::from_secs(1u64 << exponent).min(MAX_BLOCK);
                entry.blocked_until = now + block;
            }
        }
    }

    /// Forgets the failures of `keys` (a successful sign-in clears its username, not its IP).
    pub fn success(&self, keys: &[String]) {
        let mut entries = self.entries();
        for key in keys {
            entries.remove(key);
        }
    }

    pub fn tracked_keys(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_grow_after_the_free_failures_and_success_clears() {
        let throttle = Throttle::default();
        let keys = vec!["user:alice".to_owned()];
        let start = Instant::now();
        for _ in 0..FREE_FAILURES {
            throttle.failure(&keys, start);
            assert!(throttle.check(&keys, start).is_ok());
        }
        throttle.failure(&keys, start);
        assert_eq!(throttle.check(&keys, start), Err(Duration::from_secs(1)));
        throttle.failure(&keys, start);
        assert_eq!(throttle.check(&keys, start), Err(Duration::from_secs(2)));
        assert!(throttle.check(&keys, start + Duration::from_secs(2)).is_ok());
        throttle.success(&keys);
        throttle.failure(&keys, start);
        assert!(throttle.check(&keys, start).is_ok());
    }

    #[test]
    fn blocks_are_capped_and_memory_is_bounded() {
        let throttle = Throttle::with_capacity(10);
        let start = Instant::now();
        let key = vec!["ip:1".to_owned()];
        for _ in 0..100 {
            throttle.failure(&key, start);
        }
        assert_eq!(throttle.check(&key, start), Err(MAX_BLOCK));
        for i in 0..1000 {
            throttle.failure(&[format!("user:{i}")], start);
        }
        assert!(throttle.tracked_keys() <= 10);
        assert!(throttle.check(&key, start).is_err(), "a tracked block survives a flood of new keys");
    }
}
