//! Per-endpoint rate limits, enforced by the delivery workers of this process.
//!
//! A generic limiter (governor) answers "now or not"; delivery needs more: a message that
//! must wait is handed back to the database with the time of a *reserved* slot, so a backlog
//! of a slow endpoint spreads over time instead of being claimed again and again, and the
//! workers stay free for other endpoints. Time comes from the injectable clock. This is the
//! generic cell rate algorithm with a burst of one second's worth of messages.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Duration;
use switchboard_core::{Id, Timestamp};

#[derive(Debug, Default)]
pub struct EndpointLimiter {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<Id, Bucket>,
    /// Slots reserved for messages handed back to wait: used when they come back.
    reserved: HashMap<Id, Timestamp>,
}

#[derive(Debug)]
struct Bucket {
    rate: u32,
    /// The theoretical arrival time of the next message at the allowed rate.
    next: Timestamp,
}

/// When a message may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Now,
    /// Wait until then; the slot is reserved for this message.
    At(Timestamp),
}

impl EndpointLimiter {
    pub fn reserve(&self, endpoint_id: &Id, message_id: &Id, rate: u32, now: Timestamp) -> Slot {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = state.reserved.get(message_id).copied() {
            if at <= now {
                state.reserved.remove(message_id);
                return Slot::Now;
            }
            return Slot::At(at);
        }
        let rate = rate.max(1);
        let interval = Duration::microseconds(1_000_000 / i64::from(rate));
        let burst = Duration::seconds(1) - interval;
        let bucket = state.buckets.entry(endpoint_id.clone()).or_insert(Bucket { rate, next: now });
        if bucket.rate != rate {
            *bucket = Bucket { rate, next: now };
        }
        let next = bucket.next.max(now);
        let allowed_at = next - burst;
        bucket.next = next + interval;
        if allowed_at <= now {
            return Slot::Now;
        }
        if state.reserved.len() > 100_000 {
            // Reservations of messages that never came back (finished elsewhere, or the
            // endpoint changed): forget the stale ones.
            state.reserved.retain(|_, at| *at > now);
        }
        state.reserved.insert(message_id.clone(), allowed_at);
        Slot::At(allowed_at)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::{IdKind, from_micros};

    use super::*;

    #[test]
    fn a_burst_of_one_second_passes_and_the_rest_gets_spread_slots() {
        let limiter = EndpointLimiter::default();
        let endpoint = Id::new(IdKind::Endpoint);
        let now = from_micros(1_000_000_000_000);
        let messages: Vec<Id> = (0..15).map(|_| Id::new(IdKind::Message)).collect();
        let slots: Vec<Slot> = messages.iter().map(|m| limiter.reserve(&endpoint, m, 10, now)).collect();
        assert!(slots[..10].iter().all(|s| *s == Slot::Now));
        for (k, slot) in slots[10..].iter().enumerate() {
            assert_eq!(*slot, Slot::At(now + Duration::milliseconds(100 * (k as i64 + 1))));
        }
        // A message that comes back at its slot goes without taking another one.
        let Slot::At(at) = slots[10] else { unreachable!() };
        assert_eq!(limiter.reserve(&endpoint, &messages[10], 10, at - Duration::milliseconds(1)), Slot::At(at));
        assert_eq!(limiter.reserve(&endpoint, &messages[10], 10, at), Slot::Now);
        // Another endpoint is unaffected.
        assert_eq!(limiter.reserve(&Id::new(IdKind::Endpoint), &Id::new(IdKind::Message), 1, now), Slot::Now);
    }
}
