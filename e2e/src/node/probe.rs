//! Readiness and liveness probes (`httpGet` only) with kubelet's thresholds.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Delay before the first probe when the probe sets no `initialDelaySeconds`: gives the
/// process a moment to bind before its first (certain) failure.
const MIN_INITIAL_DELAY: Duration = Duration::from_secs(1);

/// One probe of a container, resolved to a URL and timings.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// `http://<podIP>:<port><path>`.
    pub url: String,
    /// Before the first probe.
    pub initial_delay: Duration,
    /// Between probes.
    pub period: Duration,
    /// Per request.
    pub timeout: Duration,
    /// Consecutive failures that flip the result to failed.
    pub failure_threshold: u32,
    /// Consecutive successes that flip the result to succeeded.
    pub success_threshold: u32,
}

impl HttpProbe {
    /// The probe `p` against `ip`; `None` when it is not an `httpGet` probe or names
    /// a port the container does not declare.
    pub fn resolve(p: &Probe, ip: Ipv4Addr, ports: &[ContainerPort]) -> Option<Self> {
        let get = p.http_get.as_ref()?;
        let port = match &get.port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => {
                ports
                    .iter()
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))?
                    .container_port
            }
        };
        let secs = |v: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
        };
        let threshold =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Some(Self {
            url: format!("http://{ip}:{port}{}", get.path.as_deref().unwrap_or("/")),
            initial_delay: secs(p.initial_delay_seconds, 0).max(MIN_INITIAL_DELAY),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            failure_threshold: threshold(p.failure_threshold, 3),
            success_threshold: threshold(p.success_threshold, 1),
        })
    }

    /// One request: 2xx and 3xx succeed, anything else (refused, timeout) fails.
    pub async fn check(&self, http: &reqwest::Client) -> bool {
        match http.get(&self.url).timeout(self.timeout).send().await {
            Ok(r) => r.status().is_success() || r.status().is_redirection(),
            Err(_) => false,
        }
    }
}

/// The result of a probe over time: it flips only after `threshold` consecutive
/// results the other way.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    passing: bool,
    streak: u32,
    failure_threshold: u32,
    success_threshold: u32,
}

impl ProbeResult {
    /// Starting at `passing` (readiness starts failed, liveness passing).
    pub fn new(passing: bool, probe: &HttpProbe) -> Self {
        Self {
            passing,
            streak: 0,
            failure_threshold: probe.failure_threshold,
            success_threshold: probe.success_threshold,
        }
    }

    /// Records one outcome; returns the (possibly flipped) result.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok == self.passing {
            self.streak = 0;
        } else {
            self.streak += 1;
            let needed = if ok {
                self.success_threshold
            } else {
                self.failure_threshold
            };
            if self.streak >= needed {
                self.passing = ok;
                self.streak = 0;
            }
        }
        self.passing
    }

    /// The current result.
    pub fn passing(&self) -> bool {
        self.passing
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn probe() -> HttpProbe {
        let p: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": { "path": "/readyz", "port": "http" },
            "periodSeconds": 10, "failureThreshold": 3, "successThreshold": 2,
        }))
        .unwrap();
        let ports: Vec<ContainerPort> =
            serde_json::from_value(serde_json::json!([{ "name": "http", "containerPort": 8080 }]))
                .unwrap();
        HttpProbe::resolve(&p, "127.0.1.2".parse().unwrap(), &ports).unwrap()
    }

    #[test]
    fn resolves_named_ports_and_defaults() {
        let p = probe();
        assert_eq!(p.url, "http://127.0.1.2:8080/readyz");
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.initial_delay, MIN_INITIAL_DELAY);
        assert_eq!(p.timeout, Duration::from_secs(1));
    }

    #[test]
    fn flips_only_after_consecutive_results() {
        let mut r = ProbeResult::new(false, &probe());
        assert!(!r.record(true));
        assert!(!r.record(false));
        assert!(!r.record(true));
        assert!(r.record(true));
        assert!(r.record(false) && r.record(false));
        assert!(!r.record(false));
    }
}
