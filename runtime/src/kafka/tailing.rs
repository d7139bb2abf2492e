//! Reading a topic outside a consumer loop (the registry, the reply channel, the
//! events group's start position): tailing with errors waited out, and start-up calls
//! retried while a just-created topic settles.

use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;

/// The next record of a tailing consumer, or `None` once `shutdown` fires. Consumer
/// errors (broker restarts, rebalances) are logged and waited out.
pub(crate) async fn next_record<'a>(
    consumer: &'a StreamConsumer,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<BorrowedMessage<'a>> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            m = consumer.recv() => match m {
                Ok(m) => return Some(m),
                Err(e) => tracing::warn!(error = %e, "{what} consumer error"),
            },
        }
    }
}

/// Runs a blocking Kafka call until it succeeds or `timeout` passes. A topic created
/// a moment ago can answer "unknown topic" or "not leader" for a short while.
pub(crate) fn retry_blocking<T>(
    timeout: Duration,
    mut call: impl FnMut() -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "retrying a Kafka call");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
