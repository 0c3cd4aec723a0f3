//! When a failed message is tried again.

use std::time::Duration;

use rand::Rng;

/// The delays between attempts: after the n-th failure the message waits `delays[n-1]`
/// (with jitter) and is then tried again; after the last one it has failed for good.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    /// Each delay is scaled by a random factor in `[1 - jitter, 1 + jitter]`, so receivers
    /// that come back up are not hit by every retry at the same instant.
    pub jitter: f64,
    /// Timeouts and 429s wait at least this long: the receiver is overloaded.
    pub overload_floor: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            delays: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            jitter: 0.2,
            overload_floor: Duration::from_secs(60),
        }
    }
}

/// What the failed attempt said about when to come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureHints {
    /// The attempt timed out or was answered 429.
    pub overloaded: bool,
    /// A `Retry-After` from a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl RetrySchedule {
    /// The wait before the next attempt after the failure at `retry_index` (0 for the first
    /// failure), or `None` when the schedule is exhausted.
    pub fn next_delay(&self, retry_index: usize, hints: FailureHints, rng: &mut impl Rng) -> Option<Duration> {
        let base = *self.delays.get(retry_index)?;
        let factor = if self.jitter > 0.0 { rng.gen_range(1.0 - self.jitter..=1.0 + self.jitter) } else { 1.0 };
        let mut delay = base.mul_f64(factor);
        if let Some(asked) = hints.retry_after {
            // Honoured, within reason: never sooner than planned, never more than twice as late.
            delay = asked.clamp(delay, delay * 2);
        }
        if hints.overloaded {
            delay = delay.max(self.overload_floor);
        }
        Some(delay)
    }

    /// Parses a list like `5s,5m,30m,2h,5h,10h,10h`.
    pub fn parse_delays(text: &str) -> Result<Vec<Duration>, String> {
        text.split(',')
            .map(|part| {
                let part = part.trim();
                let split = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
                let (number, unit) = part.split_at(split);
                let n: u64 =
                    number.parse().map_err(|_| format!("{part:?} is not a number followed by s, m, h or d"))?;
                let seconds = match unit {
                    "s" | "" => n,
                    "m" => n * 60,
                    "h" => n * 3600,
                    "d" => n * 86_400,
                    _ => return Err(format!("{part:?} has an unknown unit; use s, m, h or d")),
                };
                Ok(Duration::from_secs(seconds))
            })
            .collect()
    }
}

/// A `Retry-After` header value: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn delays_follow_the_schedule_within_the_jitter_and_then_stop() {
        let schedule = RetrySchedule::default();
        let mut rng = StdRng::seed_from_u64(7);
        for (index, base) in schedule.delays.iter().enumerate() {
            for _ in 0..100 {
                let delay = schedule.next_delay(index, FailureHints::default(), &mut rng).unwrap();
                assert!(delay >= base.mul_f64(0.8) && delay <= base.mul_f64(1.2), "{index}: {delay:?}");
            }
        }
        assert_eq!(schedule.next_delay(7, FailureHints::default(), &mut rng), None);
    }

    #[test]
    fn retry_after_is_honoured_between_the_planned_delay_and_twice_it() {
        let schedule = RetrySchedule { jitter: 0.0, ..RetrySchedule::default() };
        let mut rng = StdRng::seed_from_u64(7);
        let at = |index, seconds| {
            let hints = FailureHints { overloaded: false, retry_after: Some(Duration::from_secs(seconds)) };
            schedule.next_delay(index, hints, &mut StdRng::seed_from_u64(1)).unwrap().as_secs()
        };
        assert_eq!(at(1, 400), 400, "within [300, 600]: as asked");
        assert_eq!(at(1, 10), 300, "sooner than planned: planned");
        assert_eq!(at(1, 86_400), 600, "far later: twice the plan");
        let overloaded = FailureHints { overloaded: true, retry_after: None };
        assert_eq!(schedule.next_delay(0, overloaded, &mut rng).unwrap().as_secs(), 60, "timeouts wait a minute");
    }

    #[test]
    fn schedules_and_retry_after_values_parse() {
        let parsed = RetrySchedule::parse_delays("5s,5m,30m,2h,5h,10h,10h").unwrap();
        assert_eq!(parsed, RetrySchedule::default().delays);
        assert!(RetrySchedule::parse_delays("5x").is_err());
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
