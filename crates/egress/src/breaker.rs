//! Circuit breakers, one per tenant and provider API: after a burst of failures the API is
//! left alone for a while, then one probe decides whether it is back.
//!
//! A failure is what says the API is unwell: a connection error, a timeout or a 5xx. A 4xx
//! (401, 403, 404, 422…) is the caller's problem: it never counts as a failure, and it shows
//! the API answering. Each tenant has breakers of its own ([`BreakerKey`]), so one tenant's
//! failing calls (to a base URL it configured, or calls a provider fails on) never refuse
//! another tenant's; and an API is its base URL, not its host, so providers sharing a host
//! (the sandbox's simulators) do not share a breaker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use switchboard_core::{Clock, Timestamp};

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Failures in a row (none older than `window`) that open the circuit.
    pub failure_threshold: u32,
    /// How long a run of failures may last, from its first: a failure after that starts a new run.
    pub window: Duration,
    /// How long an open circuit refuses calls before letting one probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, window: Duration::from_secs(30), open_for: Duration::from_secs(30) }
    }
}

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until `open_for` has passed since it opened.
    Open,
    /// One probe is allowed (or in flight); its outcome closes or reopens the circuit.
    HalfOpen,
}

impl CircuitState {
    /// The state's name in snapshots and metrics (`closed`, `open`, `half_open`).
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Whose circuit a call counts against: one tenant's view of one provider API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BreakerKey {
    /// The tenant making the calls.
    pub scope: String,
    /// The API: its base URL (`https://api.github.com`, `http://127.0.0.1:9000/slack`).
    pub target: String,
}

impl BreakerKey {
    /// The key of `scope`'s calls to the API at `url`: its origin and path, without query.
    pub fn new(scope: impl Into<String>, url: &url::Url) -> Self {
        let path = url.path().trim_end_matches('/');
        Self { scope: scope.into(), target: format!("{}{path}", url.origin().ascii_serialization()) }
    }
}

/// One circuit as it stands now, for the tenant it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    /// The API (never the tenant: snapshots are shown to the tenant itself).
    pub target: String,
    /// Closed, open or half-open, as of now.
    pub state: CircuitState,
    /// Failures in the current run, counted toward `failure_threshold`; a success resets it.
    pub consecutive_failures: u32,
    /// While open: when a probe will be let through.
    pub retry_at: Option<Timestamp>,
    /// When the circuit opened (or a failed probe reopened it); `None` while closed.
    pub opened_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    first_failure_at: Option<Timestamp>,
    opened_at: Option<Timestamp>,
    /// When the probe of a half-open circuit was let through.
    probe_started_at: Option<Timestamp>,
}

/// A refused call: the circuit is open until `retry_at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Open {
    /// The earliest a call may go out, as the probe.
    pub retry_at: Timestamp,
}

/// Every circuit breaker, by [`BreakerKey`]; breakers idle for an hour are forgotten, and at
/// most 10,000 are kept.
#[derive(Debug)]
pub struct CircuitBreakers {
    clock: Arc<dyn Clock>,
    config: BreakerConfig,
    breakers: moka::sync::Cache<BreakerKey, Arc<Mutex<Breaker>>>,
}

impl CircuitBreakers {
    /// Breakers that open and close by `config`, timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>, config: BreakerConfig) -> Self {
        // Bounded: APIs not called for an hour are forgotten, and never more than 10,000.
        let breakers =
            moka::sync::Cache::builder().max_capacity(10_000).time_to_idle(Duration::from_secs(3600)).build();
        Self { clock, config, breakers }
    }

    fn open_for(&self) -> TimeDelta {
        TimeDelta::from_std(self.config.open_for).unwrap_or(TimeDelta::MAX)
    }

    /// Whether a call counted against `key` may go out now.
    pub fn permit(&self, key: &BreakerKey) -> Result<(), Open> {
        let Some(breaker) = self.breakers.get(key) else { return Ok(()) };
        let mut b = breaker.lock().unwrap_or_else(|p| p.into_inner());
        let Some(opened_at) = b.opened_at else { return Ok(()) };
        let now = self.clock.now();
        let retry_at = opened_at + self.open_for();
        if now < retry_at {
            return Err(Open { retry_at });
        }
        // Half-open: one probe at a time; a probe that never reported back (its caller gave
        // up) is replaced after another `open_for`.
        match b.probe_started_at {
            Some(started) if now < started + self.open_for() => Err(Open { retry_at: started + self.open_for() }),
            _ => {
                b.probe_started_at = Some(now);
                Ok(())
            }
        }
    }

    /// Reports the outcome of a call counted against `key`: a success closes the circuit; a
    /// failure counts toward opening it, or reopens it if it was the probe.
    pub fn record(&self, key: &BreakerKey, success: bool) {
        if success {
            if let Some(breaker) = self.breakers.get(key) {
                *breaker.lock().unwrap_or_else(|p| p.into_inner()) = Breaker::default();
            }
            return;
        }
        let breaker = self.breakers.get_with_by_ref(key, Default::default);
        let mut b = breaker.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        if b.opened_at.is_some() {
            // A failed probe (or a straggler from before opening): stay open from now.
            b.opened_at = Some(now);
            b.probe_started_at = None;
            return;
        }
        let window = TimeDelta::from_std(self.config.window).unwrap_or(TimeDelta::MAX);
        if b.first_failure_at.is_none_or(|first| now - first > window) {
            b.failures = 0;
            b.first_failure_at = Some(now);
        }
        b.failures += 1;
        if b.failures >= self.config.failure_threshold {
            b.opened_at = Some(now);
            tracing::warn!(target = %key.target, tenant = %key.scope, failures = b.failures, "circuit opened");
        }
    }

    /// The state of `key`'s circuit now (closed if it never failed).
    pub fn snapshot(&self, key: &BreakerKey) -> BreakerSnapshot {
        match self.breakers.get(key) {
            Some(breaker) => self.describe(&key.target, &breaker.lock().unwrap_or_else(|p| p.into_inner())),
            None => self.describe(&key.target, &Breaker::default()),
        }
    }

    /// How many breakers are in each state (those called within the last hour), for metrics
    /// that name no tenant and no API.
    pub fn count_by_state(&self) -> [(CircuitState, u64); 3] {
        let mut counts = [(CircuitState::Closed, 0), (CircuitState::Open, 0), (CircuitState::HalfOpen, 0)];
        for (_, breaker) in self.breakers.iter() {
            let state = self.describe("", &breaker.lock().unwrap_or_else(|p| p.into_inner())).state;
            if let Some((_, n)) = counts.iter_mut().find(|(s, _)| *s == state) {
                *n += 1;
            }
        }
        counts
    }

    fn describe(&self, target: &str, b: &Breaker) -> BreakerSnapshot {
        let now = self.clock.now();
        let (state, retry_at) = match b.opened_at {
            None => (CircuitState::Closed, None),
            Some(opened) if now < opened + self.open_for() => (CircuitState::Open, Some(opened + self.open_for())),
            Some(_) => (CircuitState::HalfOpen, None),
        };
        BreakerSnapshot {
            target: target.to_string(),
            state,
            consecutive_failures: b.failures,
            retry_at,
            opened_at: b.opened_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::ManualClock;

    use super::*;

    fn key(target: &str) -> BreakerKey {
        BreakerKey { scope: "ten_a".into(), target: target.into() }
    }

    fn breakers() -> (CircuitBreakers, ManualClock) {
        let clock = ManualClock::new(switchboard_core::from_micros(1_700_000_000_000_000));
        let config =
            BreakerConfig { failure_threshold: 3, window: Duration::from_secs(10), open_for: Duration::from_secs(30) };
        (CircuitBreakers::new(Arc::new(clock.clone()), config), clock)
    }

    #[test]
    fn a_burst_of_failures_opens_then_one_probe_closes_or_reopens() {
        let (b, clock) = breakers();
        for _ in 0..2 {
            b.record(&key("api.example.com"), false);
        }
        assert!(b.permit(&key("api.example.com")).is_ok(), "two failures are below the threshold");
        b.record(&key("api.example.com"), false);
        let open = b.permit(&key("api.example.com")).unwrap_err();
        assert_eq!(open.retry_at, clock.now() + TimeDelta::seconds(30));
        assert_eq!(b.snapshot(&key("api.example.com")).state, CircuitState::Open);
        assert!(b.permit(&key("other.example.com")).is_ok(), "breakers are per API");
        let other_tenant = BreakerKey { scope: "ten_b".into(), target: "api.example.com".into() };
        assert!(b.permit(&other_tenant).is_ok(), "and per tenant");

        clock.advance(TimeDelta::seconds(30));
        assert_eq!(b.snapshot(&key("api.example.com")).state, CircuitState::HalfOpen);
        assert!(b.permit(&key("api.example.com")).is_ok(), "the probe goes through");
        assert!(b.permit(&key("api.example.com")).is_err(), "only one probe at a time");
        b.record(&key("api.example.com"), false);
        assert_eq!(b.snapshot(&key("api.example.com")).state, CircuitState::Open, "a failed probe reopens");

        clock.advance(TimeDelta::seconds(30));
        assert!(b.permit(&key("api.example.com")).is_ok());
        b.record(&key("api.example.com"), true);
        assert_eq!(b.snapshot(&key("api.example.com")).state, CircuitState::Closed);
        assert!(b.permit(&key("api.example.com")).is_ok());
    }

    #[test]
    fn failures_spread_beyond_the_window_or_broken_by_a_success_do_not_open() {
        let (b, clock) = breakers();
        for _ in 0..10 {
            b.record(&key("slow.example.com"), false);
            clock.advance(TimeDelta::seconds(6));
        }
        assert!(b.permit(&key("slow.example.com")).is_ok(), "never three failures within 10 s");

        b.record(&key("flaky.example.com"), false);
        b.record(&key("flaky.example.com"), false);
        b.record(&key("flaky.example.com"), true);
        b.record(&key("flaky.example.com"), false);
        b.record(&key("flaky.example.com"), false);
        assert!(b.permit(&key("flaky.example.com")).is_ok(), "a success resets the count");
        b.record(&key("flaky.example.com"), false);
        assert!(b.permit(&key("flaky.example.com")).is_err());
    }
}
