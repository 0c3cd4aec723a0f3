//! Token buckets by key (an API key, a connection, a source address), for the limits callers
//! are held to.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A token bucket per key, refilled at a fixed rate. Idle keys are forgotten by
/// [`KeyedRateLimiter::forget_idle`], so memory stays bounded by the keys active lately.
pub struct KeyedRateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl KeyedRateLimiter {
    /// Allows each key `per_second` calls a second, with a burst of as many.
    pub fn new(per_second: NonZeroU32) -> Self {
        Self { limiter: governor::RateLimiter::keyed(Quota::per_second(per_second)) }
    }

    /// Takes a slot for `key`, or says how long until one frees up.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the state of keys whose buckets are full again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket() {
        let limiter = KeyedRateLimiter::new(NonZeroU32::new(2).unwrap());
        assert!(limiter.take("a").is_ok() && limiter.take("a").is_ok());
        let wait = limiter.take("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limiter.take("b").is_ok(), "another key is not held back");
    }
}
