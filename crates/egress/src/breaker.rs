//! Circuit breakers, one per provider host: after a burst of failures the host is left alone
//! for a while, then one probe decides whether it is back.
//!
//! A failure is what says the host is unwell: a connection error, a timeout or a 5xx. A 4xx
//! is the caller's problem and counts as a success here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use switchboard_core::{Clock, Timestamp};

#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Failures in a row (none older than `window`) that open the circuit.
    pub failure_threshold: u32,
    pub window: Duration,
    /// How long an open circuit refuses calls before letting one probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, window: Duration::from_secs(30), open_for: Duration::from_secs(30) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    /// One probe is allowed (or in flight); its outcome closes or reopens the circuit.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    pub host: String,
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// While open: when a probe will be let through.
    pub retry_at: Option<Timestamp>,
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
    pub retry_at: Timestamp,
}

#[derive(Debug)]
pub struct CircuitBreakers {
    clock: Arc<dyn Clock>,
    config: BreakerConfig,
    breakers: moka::sync::Cache<String, Arc<Mutex<Breaker>>>,
}

impl CircuitBreakers {
    pub fn new(clock: Arc<dyn Clock>, config: BreakerConfig) -> Self {
        // Bounded: hosts not called for an hour are forgotten, and never more than 10,000.
        let breakers =
            moka::sync::Cache::builder().max_capacity(10_000).time_to_idle(Duration::from_secs(3600)).build();
        Self { clock, config, breakers }
    }

    fn open_for(&self) -> TimeDelta {
        TimeDelta::from_std(self.config.open_for).unwrap_or(TimeDelta::MAX)
    }

    /// Whether a call to `host` may go out now.
    pub fn permit(&self, host: &str) -> Result<(), Open> {
        let Some(breaker) = self.breakers.get(host) else { return Ok(()) };
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

    pub fn record(&self, host: &str, success: bool) {
        if success {
            if let Some(breaker) = self.breakers.get(host) {
                *breaker.lock().unwrap_or_else(|p| p.into_inner()) = Breaker::default();
            }
            return;
        }
        let breaker = self.breakers.get_with_by_ref(host, Default::default);
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
            tracing::warn!(host, failures = b.failures, "circuit opened");
        }
    }

    pub fn snapshot(&self, host: &str) -> BreakerSnapshot {
        match self.breakers.get(host) {
            Some(breaker) => self.describe(host, &breaker.lock().unwrap_or_else(|p| p.into_inner())),
            None => self.describe(host, &Breaker::default()),
        }
    }

    /// Every host the breakers know: those called within the last hour.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        let mut all: Vec<BreakerSnapshot> = self
            .breakers
            .iter()
            .map(|(host, breaker)| self.describe(&host, &breaker.lock().unwrap_or_else(|p| p.into_inner())))
            .collect();
        all.sort_by(|a, b| a.host.cmp(&b.host));
        all
    }

    fn describe(&self, host: &str, b: &Breaker) -> BreakerSnapshot {
        let now = self.clock.now();
        let (state, retry_at) = match b.opened_at {
            None => (CircuitState::Closed, None),
            Some(opened) if now < opened + self.open_for() => (CircuitState::Open, Some(opened + self.open_for())),
            Some(_) => (CircuitState::HalfOpen, None),
        };
        BreakerSnapshot {
            host: host.to_string(),
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
            b.record("api.example.com", false);
        }
        assert!(b.permit("api.example.com").is_ok(), "two failures are below the threshold");
        b.record("api.example.com", false);
        let open = b.permit("api.example.com").unwrap_err();
        assert_eq!(open.retry_at, clock.now() + TimeDelta::seconds(30));
        assert_eq!(b.snapshot("api.example.com").state, CircuitState::Open);
        assert!(b.permit("other.example.com").is_ok(), "breakers are per host");

        clock.advance(TimeDelta::seconds(30));
        assert_eq!(b.snapshot("api.example.com").state, CircuitState::HalfOpen);
        assert!(b.permit("api.example.com").is_ok(), "the probe goes through");
        assert!(b.permit("api.example.com").is_err(), "only one probe at a time");
        b.record("api.example.com", false);
        assert_eq!(b.snapshot("api.example.com").state, CircuitState::Open, "a failed probe reopens");

        clock.advance(TimeDelta::seconds(30));
        assert!(b.permit("api.example.com").is_ok());
        b.record("api.example.com", true);
        assert_eq!(b.snapshot("api.example.com").state, CircuitState::Closed);
        assert!(b.permit("api.example.com").is_ok());
    }

    #[test]
    fn failures_spread_beyond_the_window_or_broken_by_a_success_do_not_open() {
        let (b, clock) = breakers();
        for _ in 0..10 {
            b.record("slow.example.com", false);
            clock.advance(TimeDelta::seconds(6));
        }
        assert!(b.permit("slow.example.com").is_ok(), "never three failures within 10 s");

        b.record("flaky.example.com", false);
        b.record("flaky.example.com", false);
        b.record("flaky.example.com", true);
        b.record("flaky.example.com", false);
        b.record("flaky.example.com", false);
        assert!(b.permit("flaky.example.com").is_ok(), "a success resets the count");
        b.record("flaky.example.com", false);
        assert!(b.permit("flaky.example.com").is_err());
    }
}
