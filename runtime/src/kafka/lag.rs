//! Consumer lag read on demand, for `/metrics`: the group's committed offsets and the
//! partitions' end offsets (two requests), end minus committed per assigned
//! partition, as librdkafka's statistics computed it. Not those statistics
//! (`statistics.interval.ms`): they cost a JSON document built on librdkafka's thread
//! and parsed on the poll thread every interval, about half of an idle runtime's
//! instructions, whether or not anyone looks.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

/// Reads one consumer's lag on `topic` when asked. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LagReader {
    topic: String,
    consumer: Arc<dyn ReadLag>,
}

impl LagReader {
    /// Reads the lag of whichever consumer `current` points to (weak: its owner closes
    /// it when it stops; a read in progress only delays that until the read returns;
    /// a loop replaces its consumer when librdkafka orphaned it, see `consumer_loop`).
    pub(crate) fn follow<C: ConsumerContext + 'static>(
        topic: &str,
        current: Arc<RwLock<Weak<BaseConsumer<C>>>>,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            consumer: current,
        }
    }

    /// The topic whose lag this reads.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Lag (records) per assigned partition with a committed offset, waiting up to
    /// `timeout` for each request; empty once the consumer is closed. Blocks: call
    /// from a blocking context.
    pub(crate) fn read(&self, timeout: Duration) -> Result<Vec<(i32, i64)>, KafkaError> {
        self.consumer.read_lag(&self.topic, timeout)
    }
}

/// The consumer behind a [`LagReader`], without its context type.
trait ReadLag: Send + Sync {
    fn read_lag(&self, topic: &str, timeout: Duration) -> Result<Vec<(i32, i64)>, KafkaError>;
}

impl<C: ConsumerContext + 'static> ReadLag for RwLock<Weak<BaseConsumer<C>>> {
    fn read_lag(&self, topic: &str, timeout: Duration) -> Result<Vec<(i32, i64)>, KafkaError> {
        let consumer = self.read().unwrap_or_else(|e| e.into_inner()).clone();
        consumer.read_lag(topic, timeout)
    }
}

impl<C: ConsumerContext + 'static> ReadLag for Weak<BaseConsumer<C>> {
    fn read_lag(&self, topic: &str, timeout: Duration) -> Result<Vec<(i32, i64)>, KafkaError> {
        let Some(consumer) = self.upgrade() else {
            return Ok(Vec::new());
        };
        let assignment = consumer.assignment()?;
        let committed = consumer.committed_offsets(assignment.clone(), timeout)?;
        // "Offsets for time" OFFSET_END asks ListOffsets for each partition's end: one
        // request per leader, where `fetch_watermarks` sends two per partition.
        let mut ends = assignment;
        ends.set_all_offsets(Offset::End)?;
        let ends = consumer.offsets_for_times(ends, timeout)?;
        let ends: Vec<(i32, Offset)> = ends
            .elements_for_topic(topic)
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        let committed: Vec<(i32, Offset)> = committed
            .elements_for_topic(topic)
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        Ok(lags(&committed, &ends))
    }
}

/// End minus committed for each partition that has both (nothing committed yet
/// means the lag is unknown, as librdkafka's statistics said with -1).
fn lags(committed: &[(i32, Offset)], ends: &[(i32, Offset)]) -> Vec<(i32, i64)> {
    committed
        .iter()
        .filter_map(|(p, c)| {
            let Offset::Offset(done) = c else {
                return None;
            };
            let end = ends.iter().find_map(|(q, e)| match e {
                Offset::Offset(end) if q == p => Some(*end),
                _ => None,
            })?;
            Some((*p, (end - done).max(0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_end_minus_committed_where_both_are_known() {
        let committed = [
            (0, Offset::Offset(10)),
            (1, Offset::Invalid),
            (2, Offset::Offset(7)),
            (3, Offset::Offset(5)),
        ];
        let ends = [
            (0, Offset::Offset(25)),
            (1, Offset::Offset(3)),
            (2, Offset::Offset(7)),
        ];
        assert_eq!(lags(&committed, &ends), vec![(0, 15), (2, 0)]);
    }
}
