//! An injectable clock, so that lease expiry, retry schedules and token expiry can be tested
//! without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{Duration, Utc};

use crate::{Timestamp, from_micros, to_micros};

/// The source of the current time; services take one so that tests can use a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time, at the stored precision (microseconds).
    fn now(&self) -> Timestamp;
}

/// The system's UTC time, truncated to microseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // Truncate to the stored precision so that a value read back equals the value written.
        from_micros(to_micros(Utc::now()))
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `start` (truncated to microseconds).
    pub fn new(start: Timestamp) -> Self {
        Self { micros: Arc::new(AtomicI64::new(to_micros(start))) }
    }

    /// Moves this clock and every clone forward by `by` (backward if negative).
    pub fn advance(&self, by: Duration) {
        let step = by.num_microseconds().unwrap_or(i64::MAX);
        self.micros.fetch_add(step, Ordering::SeqCst);
    }

    /// Sets this clock and every clone to `to`.
    pub fn set(&self, to: Timestamp) {
        self.micros.store(to_micros(to), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        from_micros(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let start = from_micros(1_700_000_000_000_000);
        let clock = ManualClock::new(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(Duration::seconds(90));
        assert_eq!(clock.now(), start + Duration::seconds(90));
    }
}
