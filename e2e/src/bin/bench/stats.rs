//! Latency percentiles.

use std::time::Duration;

/// p50/p90/p99/max in milliseconds of `samples` (sorted here).
pub fn latency_ms(samples: &mut [Duration]) -> serde_json::Value {
    samples.sort();
    let at = |p: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        round3(samples[i].as_secs_f64() * 1e3)
    };
    serde_json::json!({ "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0) })
}

/// Rounds to three decimals for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
