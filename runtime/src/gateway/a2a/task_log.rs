//! A2A tasks, durable in Kafka: the compacted topic `P.<runtime>.tasks`
//! ([`TopicNames::tasks`](crate::protocol::topics::TopicNames::tasks)) keyed by task id,
//! holding each task's latest [`TaskRecord`]. Every replica reads the topic from the
//! beginning and tails it into memory, so any replica answers `GetTask`, after restarts
//! too.
//!
//! Log order decides: a task's records are applied in the order of its partition, and the
//! first terminal record wins (a later `completed` after a client's `canceled`, or the
//! reverse, is ignored), so every replica ends with the same answer. A writer therefore
//! does not trust what it wrote: it waits until its tail has applied its own record and
//! answers from the log's view ([`TaskLog::write_and_read`]). A read first waits until
//! the tail reached the topic's end as of the read ([`TaskLog::sync`]), so a task written
//! by another replica a moment ago is seen.
//!
//! Expiry: a task is kept for the retention (`runtime.taskRetentionMs`) after it ended
//! (its terminal record's timestamp; a task left `working` ends at its deadline plus
//! [`STALE_AFTER`]). Then the replica that waited for it (`instance`) writes a tombstone
//! (a null value: compaction deletes the key) and drops it; every replica drops it when
//! it reads the tombstone, or itself [`SWEEP_GRACE`] sweeps later (the waiter is gone)
//! and writes the tombstone then. Records read that are already expired are not kept,
//! so a replica that starts holds only live tasks whatever the topic still has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::model::{Task, TaskState};
use crate::config::KafkaConfig;
use crate::error::RuntimeError;
use crate::kafka::guard::ClientKind;
use crate::kafka::producer::{GuardedProducer, Record};
use crate::kafka::tailing::{CurrentConsumer, Tail};

/// One record of the tasks topic: a task and who runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    /// The task as A2A shows it.
    pub task: Task,
    /// The agent type the task's RPC went to (its key is the task's context id).
    pub agent_type: String,
    /// The process waiting for the RPC's reply.
    pub instance: String,
    /// When that process stops waiting, ms since the Unix epoch.
    pub deadline_ms: u64,
}

impl TaskRecord {
    /// The message id of the task's current RPC: the task id for its first message,
    /// `<task id>/<n>` for the n-th (a reply to `input-required`), so each turn has its
    /// own id (durable steps are journaled by message id) and a cancel finds it.
    pub fn rpc_message_id(&self) -> String {
        match self.task.history.len() {
            0 | 1 => self.task.id.clone(),
            n => format!("{}/{n}", self.task.id),
        }
    }
}

/// How long past its deadline a `working` task whose waiter wrote nothing shows as failed.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// Now, ms since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How much a stream subscriber may fall behind before it re-reads the task.
const CHANGES_CAPACITY: usize = 1024;
/// Longest pause between two sweeps for expired tasks.
const MAX_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How many sweeps after a task expired a replica other than its waiter tombstones it.
const SWEEP_GRACE: u32 = 2;

/// Parses the RFC 3339 UTC timestamps this server writes (`2026-12-01T17:02:03.456Z`);
/// `None` for any other shape.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Howard Hinnant's days-from-civil, the inverse of `model::rfc3339`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs * 1000 + ms).ok()
}

/// When `record` may be forgotten, ms since the epoch.
fn expires_at(record: &TaskRecord, retention: Duration) -> u64 {
    let ended = if record.task.state.is_running() {
        record
            .deadline_ms
            .saturating_add(STALE_AFTER.as_millis() as u64)
    } else {
        // Ended, or waiting for a client's input since then.
        parse_rfc3339(&record.task.timestamp).unwrap_or(record.deadline_ms)
    };
    ended.saturating_add(retention.as_millis() as u64)
}

/// The tasks topic as this process has read it, and its writer.
pub struct TaskLog {
    producer: GuardedProducer,
    consumer: CurrentConsumer,
    topic: String,
    partitions: Vec<i32>,
    timeout: Duration,
    shared: Arc<Shared>,
    /// Per partition: the next offset to apply.
    applied: watch::Receiver<HashMap<i32, i64>>,
    tail: JoinHandle<()>,
}

struct Shared {
    tasks: RwLock<HashMap<String, TaskRecord>>,
    changes: broadcast::Sender<TaskRecord>,
    /// Tasks whose RPC this process waits for: a terminal record (a client's cancel,
    /// from any replica) ends the wait.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// How long an ended task is kept.
    retention: Duration,
    /// Called with the first terminal `canceled` record of a task whose RPC is still
    /// within its deadline: interrupts the handler if it runs in this process.
    on_cancel: OnCancel,
}

/// What [`TaskLog::load`] calls for a canceled task still in flight.
pub type OnCancel = Box<dyn Fn(&TaskRecord) + Send + Sync>;

impl Drop for TaskLog {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

fn unavailable(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Unavailable(what.to_string())
}

/// How a [`TaskLog`] forgets ended tasks.
pub struct Expiry {
    /// How long an ended task is kept.
    pub retention: Duration,
    /// This process: it tombstones the tasks it waited for at once, others' later.
    pub instance: String,
}

impl TaskLog {
    /// Starts reading `topic` from the beginning and tailing it until `shutdown`.
    pub async fn load(
        kafka: &KafkaConfig,
        topic: &str,
        group_id: &str,
        timeout: Duration,
        expiry: Expiry,
        shutdown: CancellationToken,
        on_cancel: OnCancel,
    ) -> Result<Self, RuntimeError> {
        let Expiry {
            retention,
            instance,
        } = expiry;
        let producer = GuardedProducer::create(&kafka.producer_config(), topic)?;
        let mut tail = Tail::create(&kafka.consumer_config(group_id), ClientKind::Tail, topic)?;
        let partitions = {
            let c = tail.current().get();
            let topic = topic.to_owned();
            // Metadata calls block: keep them off the async threads.
            tokio::task::spawn_blocking(move || -> Result<Vec<i32>, RuntimeError> {
                let md = c.fetch_metadata(Some(&topic), timeout)?;
                let t = md
                    .topics()
                    .iter()
                    .find(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                    .ok_or_else(|| {
                        unavailable(format!(
                            "tasks topic {topic} does not exist (the operator creates it; \
                             or start a runtime with createTopics)"
                        ))
                    })?;
                Ok(t.partitions().iter().map(|p| p.id()).collect())
            })
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??
        };
        let starts: Vec<(i32, Offset)> =
            partitions.iter().map(|p| (*p, Offset::Beginning)).collect();
        tail.assign(&starts)?;
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let shared = Arc::new(Shared {
            tasks: RwLock::default(),
            changes,
            running: Mutex::default(),
            retention,
            on_cancel,
        });
        let (applied_tx, applied) = watch::channel(HashMap::new());
        let consumer = tail.current();
        let applying = Arc::clone(&shared);
        let tail = tokio::spawn(tail.run(shutdown.clone(), move |m| {
            on_record(&applying, &applied_tx, m);
        }));
        tokio::spawn(sweep(
            producer.clone(),
            topic.to_owned(),
            Arc::clone(&shared),
            instance,
            shutdown,
        ));
        Ok(Self {
            producer,
            consumer,
            topic: topic.to_owned(),
            partitions,
            timeout,
            shared,
            applied,
            tail,
        })
    }

    /// Appends `record`; resolves once Kafka acknowledged it, with its partition and
    /// offset. The record is enqueued before this returns its future, so two writes of
    /// one task made in order are in the log in that order.
    pub fn write(
        &self,
        record: &TaskRecord,
    ) -> Result<impl Future<Output = Result<(i32, i64), RuntimeError>> + use<>, RuntimeError> {
        let value = serde_json::to_vec(record).map_err(|e| RuntimeError::Task(e.to_string()))?;
        let future = self
            .producer
            .send_now(Record {
                topic: &self.topic,
                key: Some(record.task.id.as_bytes()),
                value: Some(&value),
                ..Record::default()
            })
            .map_err(|e| RuntimeError::kafka(format!("producing to {}", self.topic), e))?;
        let topic = self.topic.clone();
        Ok(async move {
            future
                .await
                .map_err(|e| RuntimeError::kafka(format!("producing to {topic}"), e))
        })
    }

    /// Writes `record`, waits until the tail applied it, and returns the task as the
    /// log decided it (another replica's terminal record may have come first).
    pub async fn write_and_read(&self, record: &TaskRecord) -> Result<TaskRecord, RuntimeError> {
        let (partition, offset) = self.write(record)?.await?;
        self.wait_applied(&HashMap::from([(partition, offset + 1)]))
            .await?;
        self.local(&record.task.id)
            .ok_or_else(|| unavailable(format!("task {} was not read back", record.task.id)))
    }

    /// Writes the terminal `record` of a task this process waits for (registered with
    /// [`TaskLog::running`] under `decided`) and returns the task as the log decided it.
    /// Unlike [`TaskLog::write_and_read`] it does not wait for the acknowledgement and
    /// then for the read-back in turn: the tail applying the task's first terminal
    /// record fires `decided`, and the tail reads only records below the high
    /// watermark, i.e. as replicated as an acknowledged write. So the answer is as
    /// durable and as decided by the log as before, one round trip sooner. A failed
    /// write is still reported.
    pub async fn write_decided(
        &self,
        record: &TaskRecord,
        decided: &CancellationToken,
    ) -> Result<TaskRecord, RuntimeError> {
        let ack = self.write(record)?;
        let id = &record.task.id;
        let read_back = || {
            self.local(id)
                .filter(|r| r.task.state.is_terminal())
                .ok_or_else(|| unavailable(format!("task {id} was not read back")))
        };
        let wait = async {
            tokio::pin!(ack);
            let mut acked = false;
            loop {
                tokio::select! {
                    () = decided.cancelled() => return read_back(),
                    r = &mut ack, if !acked => {
                        r?;
                        acked = true;
                    }
                }
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "task {id}'s final record was not read back from {} within {:?}",
                    self.topic, self.timeout
                ))
            })?
    }

    /// Waits until the tail reached the topic's end as of now.
    pub async fn sync(&self) -> Result<(), RuntimeError> {
        let ends = {
            let c = self.consumer.get();
            let (topic, parts, timeout) =
                (self.topic.clone(), self.partitions.clone(), self.timeout);
            tokio::task::spawn_blocking(move || -> Result<HashMap<i32, i64>, RuntimeError> {
                let mut ends = HashMap::new();
                for p in parts {
                    let (_, high) = c.fetch_watermarks(&topic, p, timeout)?;
                    ends.insert(p, high);
                }
                Ok(ends)
            })
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??
        };
        self.wait_applied(&ends).await
    }

    async fn wait_applied(&self, wanted: &HashMap<i32, i64>) -> Result<(), RuntimeError> {
        let mut applied = self.applied.clone();
        let reached = applied.wait_for(|done| {
            wanted
                .iter()
                .all(|(p, end)| *end <= 0 || done.get(p).is_some_and(|d| d >= end))
        });
        match tokio::time::timeout(self.timeout, reached).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(RuntimeError::Stopped),
            Err(_) => Err(unavailable(format!(
                "the tasks topic {} was not read to its end within {:?}",
                self.topic, self.timeout
            ))),
        }
    }

    /// The task as last read, without waiting for the log.
    pub fn local(&self, id: &str) -> Option<TaskRecord> {
        read(&self.shared.tasks).get(id).cloned()
    }

    /// The task after [`TaskLog::sync`].
    pub async fn get(&self, id: &str) -> Result<Option<TaskRecord>, RuntimeError> {
        self.sync().await?;
        Ok(self.local(id))
    }

    /// Every task after [`TaskLog::sync`], in no order.
    pub async fn all(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        self.sync().await?;
        Ok(read(&self.shared.tasks).values().cloned().collect())
    }

    /// Every record applied from now on.
    pub fn changes(&self) -> broadcast::Receiver<TaskRecord> {
        self.shared.changes.subscribe()
    }

    /// This process waits for task `id`'s reply until `token` fires; a terminal
    /// record of the task read from the log fires it.
    pub fn running(&self, id: &str, token: CancellationToken) {
        lock(&self.shared.running).insert(id.to_owned(), token);
    }

    /// The wait for task `id` ended.
    pub fn finished(&self, id: &str) {
        lock(&self.shared.running).remove(id);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock leaves a map that is still consistent
    // (inserts are single calls), so a poisoned lock is used as is.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Applies one record: the first terminal record of a task is final; an expired one
/// is not kept.
fn apply(shared: &Shared, record: TaskRecord) {
    let terminal = record.task.state.is_terminal();
    {
        let mut tasks = write(&shared.tasks);
        if tasks
            .get(&record.task.id)
            .is_some_and(|old| old.task.state.is_terminal())
        {
            return;
        }
        if expires_at(&record, shared.retention) <= now_ms() {
            tasks.remove(&record.task.id);
            drop(tasks);
            // A waiter this far behind learns at once that the task is gone.
            if terminal && let Some(token) = lock(&shared.running).remove(&record.task.id) {
                token.cancel();
            }
            return;
        }
        tasks.insert(record.task.id.clone(), record.clone());
    }
    if terminal && let Some(token) = lock(&shared.running).remove(&record.task.id) {
        token.cancel();
    }
    // Replaying old tasks at start interrupts nothing: their deadlines are past.
    if record.task.state == TaskState::Canceled && record.deadline_ms > now_ms() {
        (shared.on_cancel)(&record);
    }
    // No subscriber is fine.
    let _ = shared.changes.send(record);
}

/// Applies one record of the tasks topic (a tombstone: the task expired).
fn on_record(
    shared: &Shared,
    applied: &watch::Sender<HashMap<i32, i64>>,
    message: &BorrowedMessage<'_>,
) {
    if message.payload().is_none()
        && let Some(Ok(id)) = message.key_view::<str>()
    {
        write(&shared.tasks).remove(id);
    }
    if let Some(bytes) = message.payload() {
        match serde_json::from_slice::<TaskRecord>(bytes) {
            Ok(record) => apply(shared, record),
            Err(e) => tracing::warn!(
                offset = message.offset(),
                error = %e,
                "skipping an unreadable record of the tasks topic"
            ),
        }
    }
    let (partition, next) = (message.partition(), message.offset() + 1);
    applied.send_modify(|m| {
        m.insert(partition, next);
    });
}

/// Forgets expired tasks and tombstones them in the topic, until `shutdown`.
async fn sweep(
    producer: GuardedProducer,
    topic: String,
    shared: Arc<Shared>,
    instance: String,
    shutdown: CancellationToken,
) {
    let every = (shared.retention / 4).clamp(Duration::from_millis(100), MAX_SWEEP_EVERY);
    let grace = (every * SWEEP_GRACE).as_millis() as u64;
    // Replicas started together sweep at different moments.
    let jitter =
        Duration::from_millis((uuid::Uuid::new_v4().as_u128() % (every.as_millis().max(1))) as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + jitter, every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let expired: Vec<String> = {
            let mut tasks = write(&shared.tasks);
            let ids: Vec<String> = tasks
                .values()
                .filter(|r| {
                    let at = expires_at(r, shared.retention);
                    at <= now && (r.instance == instance || at.saturating_add(grace) <= now)
                })
                .map(|r| r.task.id.clone())
                .collect();
            for id in &ids {
                tasks.remove(id);
            }
            ids
        };
        if expired.is_empty() {
            continue;
        }
        tracing::debug!(tasks = expired.len(), "A2A tasks expired");
        // Enqueued at once; a failed tombstone only leaves the record to compaction's
        // view (every replica still drops it when read: it is expired).
        let sends: Vec<_> = expired
            .iter()
            .filter_map(|id| {
                producer
                    .send_now(Record {
                        topic: &topic,
                        key: Some(id.as_bytes()),
                        ..Record::default()
                    })
                    .map_err(|e| tracing::warn!(error = %e, "tombstoning an expired task"))
                    .ok()
            })
            .collect();
        for s in sends {
            if let Err(e) = s.await {
                tracing::warn!(error = %e, "tombstoning an expired task");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::rfc3339;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn record(state: TaskState) -> TaskRecord {
        TaskRecord {
            task: Task {
                id: "t1".into(),
                context_id: "c1".into(),
                state,
                status_message: None,
                timestamp: rfc3339(now_ms()),
                artifacts: Vec::new(),
                history: Vec::new(),
            },
            agent_type: "echo".into(),
            instance: "i1".into(),
            deadline_ms: now_ms() + 60_000,
        }
    }

    /// The record docs/protocol.md shows is one this server reads and writes alike.
    #[test]
    fn docs_protocol_md_shows_a_task_record_as_stored() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let block: String = doc
            .split("```json task-record\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .expect("docs/protocol.md has a task-record block")
            .to_owned();
        let record: TaskRecord = serde_json::from_str(&block).unwrap();
        assert_eq!(record.task.state, TaskState::Completed);
        assert_eq!(record.agent_type, "counter");
        let again: serde_json::Value = serde_json::to_value(&record).unwrap();
        let shown: serde_json::Value = serde_json::from_str(&block).unwrap();
        assert_eq!(
            again, shown,
            "the document shows every field the writer writes"
        );
    }

    #[test]
    fn timestamps_parse_back_and_tasks_expire_after_the_retention() {
        for ms in [0, 1_796_144_553_456, 951_782_400_000 + 86_399_999] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms), "{}", rfc3339(ms));
        }
        assert_eq!(parse_rfc3339("2026-12-01T17:02:03Z"), None);
        let hour = Duration::from_secs(3600);
        let mut done = record(TaskState::Completed);
        done.task.timestamp = rfc3339(10_000);
        done.deadline_ms = 99_000_000;
        assert_eq!(
            expires_at(&done, hour),
            10_000 + 3_600_000,
            "from when it ended"
        );
        let mut working = record(TaskState::Working);
        working.deadline_ms = 50_000;
        assert_eq!(
            expires_at(&working, hour),
            50_000 + STALE_AFTER.as_millis() as u64 + 3_600_000,
            "a task left working ends at its deadline"
        );
        let (changes, _rx) = broadcast::channel(8);
        let shared = Shared {
            tasks: RwLock::default(),
            changes,
            running: Mutex::default(),
            retention: hour,
            on_cancel: Box::new(|_| {}),
        };
        apply(&shared, done);
        assert!(
            read(&shared.tasks).is_empty(),
            "an expired record is not kept"
        );
        let mut fresh = record(TaskState::Completed);
        fresh.task.timestamp = rfc3339(now_ms());
        apply(&shared, fresh);
        assert_eq!(read(&shared.tasks).len(), 1);
    }

    #[test]
    fn the_first_terminal_record_wins_and_ends_the_local_wait() {
        let (changes, mut rx) = broadcast::channel(8);
        let interrupted = Arc::new(AtomicUsize::new(0));
        let seen_by_hook = Arc::clone(&interrupted);
        let shared = Shared {
            tasks: RwLock::default(),
            changes,
            running: Mutex::default(),
            retention: Duration::from_secs(3600),
            on_cancel: Box::new(move |_| {
                seen_by_hook.fetch_add(1, Ordering::Relaxed);
            }),
        };
        let token = CancellationToken::new();
        lock(&shared.running).insert("t1".into(), token.clone());
        apply(&shared, record(TaskState::Working));
        assert!(!token.is_cancelled());
        let mut canceled = record(TaskState::Canceled);
        canceled.deadline_ms = now_ms() + 60_000;
        apply(&shared, canceled.clone());
        assert!(
            token.is_cancelled(),
            "a cancel read from the log ends the wait"
        );
        assert_eq!(
            interrupted.load(Ordering::Relaxed),
            1,
            "a cancel within the deadline interrupts the handler"
        );
        apply(&shared, canceled);
        assert_eq!(
            interrupted.load(Ordering::Relaxed),
            1,
            "only the first terminal record counts"
        );
        apply(&shared, record(TaskState::Completed));
        assert_eq!(read(&shared.tasks)["t1"].task.state, TaskState::Canceled);
        let seen: Vec<TaskState> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| r.task.state)
            .collect();
        assert_eq!(seen, [TaskState::Working, TaskState::Canceled]);
    }
}
