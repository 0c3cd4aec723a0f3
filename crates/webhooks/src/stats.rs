//! Per-endpoint delivery statistics over its latest attempts.

use std::collections::BTreeMap;

use switchboard_core::Timestamp;
use switchboard_store::AttemptSample;

/// How many of the latest attempts the statistics cover.
pub const SAMPLE: u32 = 1000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    pub attempts: u64,
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    pub messages: BTreeMap<String, u64>,
}

pub fn summarise(samples: &[AttemptSample], messages: BTreeMap<String, u64>) -> EndpointStats {
    let mut durations: Vec<i64> = samples.iter().map(|s| s.duration_us).collect();
    durations.sort_unstable();
    let percentile = |p: f64| {
        if durations.is_empty() {
            return None;
        }
        let rank = ((p * durations.len() as f64).ceil() as usize).clamp(1, durations.len());
        Some(durations[rank - 1] as f64 / 1000.0)
    };
    let succeeded = samples.iter().filter(|s| s.succeeded).count();
    let last_failure = samples.iter().find(|s| !s.succeeded);
    EndpointStats {
        attempts: samples.len() as u64,
        success_rate: (!samples.is_empty()).then(|| succeeded as f64 / samples.len() as f64),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        last_error: last_failure.and_then(|s| s.error.clone()),
        last_error_at: last_failure.map(|s| s.created_at),
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates_come_from_the_samples() {
        let at = switchboard_core::from_micros(0);
        let mut samples: Vec<AttemptSample> = (1..=100)
            .map(|ms| AttemptSample { succeeded: true, duration_us: ms * 1000, error: None, created_at: at })
            .collect();
        samples[3] =
            AttemptSample { succeeded: false, duration_us: 4000, error: Some("HTTP 500".into()), created_at: at };
        let stats = summarise(&samples, BTreeMap::new());
        assert_eq!((stats.p50_ms, stats.p99_ms), (Some(50.0), Some(99.0)));
        assert_eq!(stats.success_rate, Some(0.99));
        assert_eq!(stats.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(summarise(&[], BTreeMap::new()).success_rate, None);
    }
}
