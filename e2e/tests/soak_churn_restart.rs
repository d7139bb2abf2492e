//! A bounded soak for losses under membership churn and a broker restart (issue 18:
//! a loss of 1,274 events was seen once during churn work and never explained).
//! Rounds of `membership::churn` (replicas of one runtime join and leave in quick
//! succession while 24 keys publish every 5 ms) run on a broker of the test's own,
//! which is restarted (controlled shutdown, data kept) in the middle of each round.
//! `TurnLog` checks every key's events: handled for the first time in send order with
//! no gap, never two turns at once; and the first-time count must equal the published
//! count. Any gap, overlap or shortfall fails the run, naming the keys and sequence
//! numbers. The rounds share one `TurnLog` and each publishes to keys of its own
//! (`r<round>-key<k>`), so a round's records that reach the next one (handled, not
//! committed: a replica whose assignment was lost stopped before it came back, the
//! documented redelivery bound) count as handled again, not as a key's sequence
//! starting over (until 2026-12 the rounds reused the keys and restarted their
//! numbers, and such a redelivery failed the run as a gap). Ignored in `make test`
//! (it runs up to 5 minutes): `make soak`.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_e2e::agents::TurnLog;
use switchboard_e2e::env::unique_name;
use switchboard_e2e::faults::OwnBroker;
use switchboard_e2e::membership::churn_round;
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{AgentRuntime, KafkaAgentRuntime};

/// Rounds at most; the soak stops starting rounds after [`BUDGET`].
const ROUNDS: usize = 4;
/// Time after which no new round starts (each round takes 30-70 s).
const BUDGET: Duration = Duration::from_secs(180);
/// When in a round the broker goes down, and for how long.
const RESTART_AFTER: Duration = Duration::from_secs(6);
const DOWN_FOR: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak, up to 5 minutes: `make soak`"]
async fn soak_churn_with_broker_restart_loses_no_event() {
    switchboard_e2e::env::init_test_logs();
    let broker = Arc::new(OwnBroker::start("soak-restart", None));
    let net = TestNet {
        bootstrap: broker.bootstrap.clone(),
        prefix: unique_name("t"),
    };
    let publisher = KafkaAgentRuntime::start_with(net.config("publisher"))
        .await
        .unwrap();
    let log = Arc::new(TurnLog::default());
    let started = Instant::now();
    let mut problems = Vec::new();
    let mut rounds = 0;
    while rounds < ROUNDS && started.elapsed() < BUDGET {
        rounds += 1;
        let restart = {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move {
                tokio::time::sleep(RESTART_AFTER).await;
                let b = Arc::clone(&broker);
                tokio::task::spawn_blocking(move || b.stop()).await.unwrap();
                tokio::time::sleep(DOWN_FOR).await;
                tokio::task::spawn_blocking(move || broker.start_again())
                    .await
                    .unwrap();
            })
        };
        let keys = format!("r{rounds}-key");
        let report = churn_round(|name| net.config(name), &publisher, &log, &keys).await;
        restart.await.unwrap();
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("round {rounds}: {e:#}"));
                break;
            }
        };
        let first_time = report.handled - report.replays;
        println!(
            "{}",
            serde_json::json!({
                "round": rounds,
                "published": report.published,
                "handled": report.handled,
                "replays": report.replays,
                "lost": report.published.saturating_sub(first_time),
                "violations": report.violations.len(),
                "commit_failures": report.commit_failures,
            })
        );
        if !report.violations.is_empty() {
            problems.push(format!(
                "round {rounds}: {} violations, first: {:?}",
                report.violations.len(),
                &report.violations[..report.violations.len().min(5)]
            ));
        }
        if first_time != report.published {
            problems.push(format!(
                "round {rounds}: {} published, {first_time} handled for the first time",
                report.published
            ));
        }
    }
    publisher.stop().await.unwrap();
    println!("soak: {rounds} rounds in {:?}", started.elapsed());
    assert!(problems.is_empty(), "{problems:#?}");
}
