//! Outbound rate limits per key (a connection, or a whole provider): the provider's documented
//! quota, paced with the generic cell rate algorithm, and whatever its responses say about
//! the remaining budget (`429` with `Retry-After`, `X-RateLimit-Remaining: 0` with a reset
//! time). Keys not used for an hour are forgotten, and at most 100,000 are kept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use reqwest::header::HeaderMap;
use switchboard_core::{Clock, Timestamp};

/// `requests` per `per`, with a burst of the whole quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period the quota covers.
    pub per: Duration,
}

/// Which response headers carry the provider's view of the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHeaders {
    /// The header that says how long to wait after a limited response (`retry-after`).
    pub retry_after: String,
    /// The header with the requests left (`x-ratelimit-remaining`), if the provider sends one.
    pub remaining: Option<String>,
    /// The header that says when the budget refills, read as `reset_is_epoch` says; `None` if none.
    pub reset: Option<String>,
    /// `true`: the reset header is a Unix time in seconds; `false`: seconds from now.
    pub reset_is_epoch: bool,
    /// Statuses that mean "limited" when the remaining budget is zero (GitHub's 403).
    pub also_limited_statuses: Vec<u16>,
}

impl Default for RateHeaders {
    fn default() -> Self {
        Self {
            retry_after: "retry-after".into(),
            remaining: None,
            reset: None,
            reset_is_epoch: true,
            also_limited_statuses: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Bucket {
    /// The theoretical arrival time of the next request (GCRA).
    next: Option<Timestamp>,
    /// The provider said to wait until then.
    blocked_until: Option<Timestamp>,
}

/// Every key's pace under its quota and any wait a provider asked for.
#[derive(Debug)]
pub struct RateLimits {
    clock: Arc<dyn Clock>,
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

impl RateLimits {
    /// Empty limits timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let buckets =
            moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(3600)).build();
        Self { clock, buckets }
    }

    /// Takes a slot for one request under `key`: `Ok(wait)` reserves it `wait` from now
    /// (zero: go now). If the wait would exceed `max_wait`, nothing is reserved and
    /// `Err(wait)` tells how long the caller would have had to wait.
    pub fn acquire(&self, key: &str, quota: Option<Quota>, max_wait: Duration) -> Result<Duration, Duration> {
        let bucket = self.buckets.get_with_by_ref(key, Default::default);
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let blocked_wait = b.blocked_until.filter(|until| *until > now).map(|until| until - now).unwrap_or_default();
        let Some(quota) = quota.filter(|q| q.requests > 0) else {
            return within(blocked_wait, max_wait);
        };
        let per = TimeDelta::from_std(quota.per).unwrap_or(TimeDelta::MAX);
        let interval = per / quota.requests as i32;
        let earliest = now + blocked_wait;
        let next = b.next.map_or(earliest, |n| n.max(earliest));
        // The burst is the whole quota: a request may start `per - interval` ahead of pace.
        let allowed_at = (next - (per - interval)).max(earliest);
        let wait = allowed_at - now;
        let result = within(wait, max_wait);
        if result.is_ok() {
            b.next = Some(next + interval);
        }
        result
    }

    /// Learns from a response: a limited status with `Retry-After`, or an exhausted budget
    /// with a reset time, blocks the key until then. Returns the block, if any.
    pub fn observe(&self, key: &str, status: u16, headers: &HeaderMap, spec: &RateHeaders) -> Option<Duration> {
        let now = self.clock.now();
        let number =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
        let exhausted = spec.remaining.as_deref().and_then(number).is_some_and(|left| left <= 0.0);
        let limited = status == 429 || (exhausted && spec.also_limited_statuses.contains(&status));
        let mut until: Option<Timestamp> = None;
        if limited {
            let retry_after = headers
                .get(spec.retry_after.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now));
            // A limit without a word on how long: back off for a second.
            until = Some(retry_after.unwrap_or(now + TimeDelta::seconds(1)));
        }
        if exhausted && let Some(reset) = spec.reset.as_deref().and_then(number) {
            let reset_at = if spec.reset_is_epoch {
                switchboard_core::from_micros((reset * 1_000_000.0) as i64)
            } else {
                now + TimeDelta::milliseconds((reset * 1000.0) as i64)
            };
            until = Some(until.map_or(reset_at, |u| u.max(reset_at)));
        }
        let until = until.filter(|u| *u > now)?;
        let bucket = self.buckets.get_with_by_ref(key, Default::default);
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        b.blocked_until = Some(b.blocked_until.map_or(until, |u| u.max(until)));
        (until - now).to_std().ok()
    }

    /// How many keys are tracked (for tests of the bound).
    pub fn tracked_keys(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

fn within(wait: TimeDelta, max_wait: Duration) -> Result<Duration, Duration> {
    let wait = wait.to_std().unwrap_or_default();
    if wait <= max_wait { Ok(wait) } else { Err(wait) }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Timestamp> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0).then(|| now + TimeDelta::milliseconds((seconds * 1000.0) as i64));
    }
    chrono::DateTime::parse_from_rfc2822(value).ok().map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use switchboard_core::ManualClock;

    use super::*;

    fn limits() -> (RateLimits, ManualClock) {
        let clock = ManualClock::new(switchboard_core::from_micros(1_700_000_000_000_000));
        (RateLimits::new(Arc::new(clock.clone())), clock)
    }

    #[test]
    fn the_quota_allows_a_burst_then_paces() {
        let (limits, clock) = limits();
        let quota = Some(Quota { requests: 5, per: Duration::from_secs(1) });
        for _ in 0..5 {
            assert_eq!(limits.acquire("conn_a", quota, Duration::ZERO), Ok(Duration::ZERO));
        }
        assert_eq!(limits.acquire("conn_a", quota, Duration::ZERO), Err(Duration::from_millis(200)));
        assert_eq!(limits.acquire("conn_b", quota, Duration::ZERO), Ok(Duration::ZERO), "keys are separate");
        assert_eq!(
            limits.acquire("conn_a", quota, Duration::from_secs(1)),
            Ok(Duration::from_millis(200)),
            "reserved ahead"
        );
        clock.advance(TimeDelta::seconds(1));
        assert_eq!(limits.acquire("conn_a", quota, Duration::ZERO), Ok(Duration::ZERO));
    }

    #[test]
    fn retry_after_and_an_exhausted_budget_block_the_key() {
        let (limits, clock) = limits();
        let spec = RateHeaders {
            remaining: Some("x-ratelimit-remaining".into()),
            reset: Some("x-ratelimit-reset".into()),
            also_limited_statuses: vec![403],
            ..RateHeaders::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("30"));
        assert_eq!(limits.observe("slack", 429, &headers, &spec), Some(Duration::from_secs(30)));
        assert_eq!(limits.acquire("slack", None, Duration::ZERO), Err(Duration::from_secs(30)));
        clock.advance(TimeDelta::seconds(30));
        assert_eq!(limits.acquire("slack", None, Duration::ZERO), Ok(Duration::ZERO));

        let reset = clock.now().timestamp() + 120;
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_str(&reset.to_string()).unwrap());
        assert_eq!(limits.observe("github", 403, &headers, &spec), Some(Duration::from_secs(120)));
        assert_eq!(limits.acquire("github", None, Duration::ZERO), Err(Duration::from_secs(120)));

        let mut fine = HeaderMap::new();
        fine.insert("x-ratelimit-remaining", HeaderValue::from_static("4999"));
        assert_eq!(limits.observe("other", 200, &fine, &spec), None);
        assert_eq!(limits.observe("other", 403, &HeaderMap::new(), &spec), None, "a plain 403 is not a limit");
    }

    #[test]
    fn keys_are_bounded() {
        let (limits, _) = limits();
        for i in 0..120_000 {
            let _ = limits.acquire(&format!("conn_{i}"), None, Duration::ZERO);
        }
        assert!(limits.tracked_keys() <= 100_000, "{} keys kept", limits.tracked_keys());
    }
}
