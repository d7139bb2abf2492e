//! Lag-based autoscaling of a runtime's Deployment (`spec.autoscaling`), pure.
//!
//! The operator sizes the Deployment itself: `ceil(lag / lagPerReplica)` clamped to
//! `[minReplicas, maxReplicas]` and never above the inbox partition count (a pod
//! without a partition has nothing to consume). It scales up at once and down only
//! after a lower recommendation held for the stabilization window, then to the
//! highest recommendation seen during the window (one burst does not flap the pods).

use std::time::{Duration, Instant};

use switchboard_crds::agent_runtime::AutoscalingSpec;

/// `lagPerReplica` when the spec leaves it unset.
pub const DEFAULT_LAG_PER_REPLICA: i64 = 1000;

/// A scale-down waiting for its stabilization window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDown {
    /// When the recommendation first fell below the current replicas.
    pub since: Instant,
    /// Highest recommendation since then (what the Deployment will get).
    pub highest: i32,
}

/// Replicas the lag asks for, within the spec's bounds and the partition count.
pub fn recommend(spec: &AutoscalingSpec, lag: i64, partitions: i32) -> i32 {
    let per = spec
        .lag_per_replica
        .unwrap_or(DEFAULT_LAG_PER_REPLICA)
        .max(1);
    let lag = lag.max(0);
    let wanted = lag / per + i64::from(lag % per != 0);
    let upper = spec.max_replicas.min(partitions).max(1);
    let lower = spec.min_replicas.clamp(1, upper);
    i32::try_from(wanted.clamp(i64::from(lower), i64::from(upper))).unwrap_or(upper)
}

/// The replicas to run now, given the Deployment's `current` replicas (`None`: no
/// Deployment yet), this reconcile's recommendation and the pending scale-down.
/// Returns the replicas and the scale-down still pending.
pub fn decide(
    current: Option<i32>,
    recommended: i32,
    pending: Option<ScaleDown>,
    now: Instant,
    window: Duration,
) -> (i32, Option<ScaleDown>) {
    let Some(current) = current else {
        return (recommended, None);
    };
    if recommended >= current {
        return (recommended, None);
    }
    let pending = match pending {
        Some(p) => ScaleDown {
            since: p.since,
            highest: p.highest.max(recommended),
        },
        None => ScaleDown {
            since: now,
            highest: recommended,
        },
    };
    if now.saturating_duration_since(pending.since) >= window {
        (pending.highest, None)
    } else {
        (current, Some(pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: i32, max: i32, per: Option<i64>) -> AutoscalingSpec {
        AutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            lag_per_replica: per,
        }
    }

    #[test]
    fn the_recommendation_is_lag_over_target_rounded_up_within_bounds() {
        let s = spec(1, 10, Some(100));
        assert_eq!(recommend(&s, 0, 12), 1, "at least minReplicas");
        assert_eq!(recommend(&s, 100, 12), 1);
        assert_eq!(recommend(&s, 101, 12), 2, "rounded up");
        assert_eq!(recommend(&s, 950, 12), 10);
        assert_eq!(recommend(&s, 5_000, 12), 10, "at most maxReplicas");
        assert_eq!(recommend(&spec(2, 10, Some(100)), 0, 12), 2);
        assert_eq!(recommend(&s, -5, 12), 1, "negative lag is no lag");
    }

    #[test]
    fn the_default_target_is_a_thousand_records_per_pod() {
        let s = spec(1, 10, None);
        assert_eq!(recommend(&s, 1_000, 12), 1);
        assert_eq!(recommend(&s, 1_001, 12), 2);
    }

    #[test]
    fn never_more_pods_than_inbox_partitions() {
        assert_eq!(recommend(&spec(1, 10, Some(1)), 1_000, 3), 3);
        // Even a minimum above the partition count yields to it.
        assert_eq!(recommend(&spec(5, 10, Some(1)), 0, 3), 3);
    }

    #[test]
    fn scale_up_is_immediate() {
        let now = Instant::now();
        let pending = Some(ScaleDown {
            since: now,
            highest: 1,
        });
        assert_eq!(
            decide(Some(2), 5, pending, now, Duration::from_secs(300)),
            (5, None)
        );
        assert_eq!(
            decide(None, 3, None, now, Duration::from_secs(300)),
            (3, None)
        );
    }

    #[test]
    fn scale_down_waits_for_the_window_then_takes_the_highest_recommendation() {
        let w = Duration::from_secs(300);
        let t0 = Instant::now();
        let (r, p) = decide(Some(6), 2, None, t0, w);
        assert_eq!(r, 6, "no scale-down at once");
        let p1 = p.unwrap();
        assert_eq!(p1.since, t0);
        let (r, p) = decide(Some(6), 4, p, t0 + Duration::from_secs(100), w);
        assert_eq!(r, 6);
        assert_eq!(p.unwrap().highest, 4);
        let (r, p) = decide(Some(6), 1, p, t0 + Duration::from_secs(300), w);
        assert_eq!(
            (r, p),
            (4, None),
            "after the window: the highest seen in it"
        );
    }

    #[test]
    fn a_recommendation_back_at_the_current_size_cancels_the_scale_down() {
        let w = Duration::from_secs(300);
        let t0 = Instant::now();
        let (_, p) = decide(Some(6), 2, None, t0, w);
        assert_eq!(
            decide(Some(6), 6, p, t0 + Duration::from_secs(10), w),
            (6, None)
        );
        // A new drop starts a new window.
        let (r, p) = decide(Some(6), 2, None, t0 + Duration::from_secs(400), w);
        assert_eq!(r, 6);
        assert_eq!(p.unwrap().since, t0 + Duration::from_secs(400));
    }
}
