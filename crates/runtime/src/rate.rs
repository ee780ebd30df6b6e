//! Per-key request buckets: a GCRA bucket (`governor`) of `n` per minute for each key, whose
//! burst is the whole minute's allowance. In memory, per process: with several replicas a key
//! gets up to replicas × its limit. Used for the gateway's per-tenant limit and job-intake's
//! per-subscription plan limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Buckets by key, each with the per-minute limit it was sized for.
pub struct PerMinuteLimits<K> {
    buckets: Mutex<HashMap<K, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl<K> Default for PerMinuteLimits<K> {
    fn default() -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> PerMinuteLimits<K> {
    /// Takes one request from `key`'s bucket of `per_minute` per minute (0 counts as 1); a
    /// changed limit starts a fresh bucket. Errors with the wait before the next request is
    /// allowed: whole seconds, at least 1, for `Retry-After` (RFC 9110 §10.2.3).
    pub fn take(&self, key: K, per_minute: u32) -> Result<(), u64> {
        let bucket = {
            // The map stays consistent whatever panicked while it was held.
            let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = buckets
                .entry(key)
                .or_insert_with(|| (per_minute, Arc::new(bucket(per_minute))));
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(bucket(per_minute)));
            }
            entry.1.clone()
        };
        bucket.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

/// A bucket of `per_minute` per minute whose burst is the whole minute's allowance.
fn bucket(per_minute: u32) -> DefaultDirectRateLimiter {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_minute(n).allow_burst(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minutes_allowance_then_the_wait_per_key_and_a_new_limit_starts_afresh() {
        let limits = PerMinuteLimits::default();
        assert_eq!(limits.take("a", 2), Ok(()));
        assert_eq!(limits.take("a", 2), Ok(()));
        let wait = limits.take("a", 2).expect_err("third within the minute");
        assert!((1..=30).contains(&wait), "{wait}");
        assert_eq!(
            limits.take("b", 2),
            Ok(()),
            "another key has its own bucket"
        );
        assert_eq!(
            limits.take("a", 3),
            Ok(()),
            "a changed limit starts a fresh bucket"
        );
    }
}
