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

/// The broker's process id, when given (`--broker-pid`): its CPU time is reported too.
pub static BROKER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// CPU time (user + system) used so far by this process and by the broker, in clock
/// ticks. A rate on a shared 2-core machine swings ±30% run to run; CPU per event is
/// the steadier figure for comparing two builds.
#[derive(Debug, Clone, Copy)]
pub struct CpuTicks {
    process: u64,
    broker: Option<u64>,
}

impl CpuTicks {
    /// Reads both clocks now.
    pub fn now() -> Self {
        Self {
            process: ticks("self").unwrap_or(0),
            broker: BROKER_PID.get().and_then(|p| ticks(&p.to_string())),
        }
    }

    /// `process_cpu_us_per_event` (and `broker_cpu_us_per_event`) since `self`.
    pub fn per_event(&self, events: usize) -> serde_json::Value {
        let later = Self::now();
        // USER_HZ is 100 on Linux: one tick is 10 ms.
        let us = |t: u64| round3(t as f64 * 10_000.0 / events.max(1) as f64);
        let mut v = serde_json::json!({
            "process_cpu_us_per_event": us(later.process.saturating_sub(self.process)),
        });
        if let (Some(a), Some(b)) = (self.broker, later.broker) {
            v["broker_cpu_us_per_event"] = serde_json::json!(us(b.saturating_sub(a)));
        }
        v
    }
}

/// utime + stime of `/proc/<pid>/stat` (fields 14 and 15; the command name, field 2,
/// may hold spaces, so count from its closing parenthesis).
fn ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(utime + stime)
}
