//! The one definition of each default a user can override: the library's
//! [`crate::WorkerConfig::new`], the runtime config file (`config_file`), the
//! operator's ConfigMaps and [`crate::InMemoryRuntime`] all read them from here.

use std::time::Duration;

/// Handlers running at once in one process.
pub const MAX_CONCURRENCY: usize = 256;
/// How long an RPC waits for its reply unless the caller says otherwise.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an A2A task is kept after it ended (in memory and in the tasks topic).
pub const TASK_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Records with a larger value are dead-lettered.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Partitions of the topics a runtime creates itself (`createTopics`).
pub const PARTITIONS: i32 = 3;
/// An inbox or events partition pauses at this many records in flight (and resumes at
/// half). librdkafka drops a paused partition's prefetched records and fetches them
/// again only after resume, which took 0.5–1 s here: the records left in flight must
/// keep the agents busy for that long. At 1,000 they covered ~25 ms of a Python agent's
/// pace, so its partitions stood idle most of the time (6k events/s; 19–28k at 10,000,
/// bench/results/2026-12-02-python-4.json). Memory: records in flight are decoded
/// events in mailboxes, a few hundred bytes each for small messages.
pub const MAX_IN_FLIGHT_PER_PARTITION: usize = 10_000;
/// How often each replica writes its heartbeat to the registry.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// A runtime with no heartbeat for this long loses its agent types.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(15);
/// How long stop and revocation wait for in-flight handlers.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often finished offsets are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
