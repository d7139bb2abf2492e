//! Waiting for something to become true, with a bound (tests never hang).

use std::future::Future;
use std::time::{Duration, Instant};

/// `what` did not happen within `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub limit: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.limit, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// Polls `check` every 250 ms until it returns `Some`; [`TimedOut`] after `limit`.
/// For programs (the benchmarks); tests use [`wait_for`].
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() >= limit {
            return Err(TimedOut {
                what: what.to_owned(),
                limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `check` every 250 ms until it returns `Some`, panicking after `limit` with
/// `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(what, limit, check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Resident memory of process `pid` (this process when `None`) in KiB, from /proc.
pub fn rss_kib(pid: Option<u32>) -> u64 {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |p| format!("/proc/{p}/status"),
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{TimedOut, poll_until};

    #[tokio::test]
    async fn poll_until_returns_the_first_some() {
        let mut calls = 0;
        let got = poll_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got, Ok(3));
    }

    #[tokio::test]
    async fn poll_until_gives_up_after_the_limit_naming_what() {
        let limit = Duration::from_millis(300);
        let err = poll_until("never", limit, || async { None::<()> })
            .await
            .unwrap_err();
        assert_eq!(
            err,
            TimedOut {
                what: "never".into(),
                limit
            }
        );
        assert_eq!(err.to_string(), "timed out after 300ms waiting for never");
    }
}
