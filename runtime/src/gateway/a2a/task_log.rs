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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::model::{Task, TaskState};
use super::runner::now_ms;
use crate::config::KafkaConfig;
use crate::error::RuntimeError;

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

/// How much a stream subscriber may fall behind before it re-reads the task.
const CHANGES_CAPACITY: usize = 1024;

/// The tasks topic as this process has read it, and its writer.
pub struct TaskLog {
    producer: FutureProducer,
    consumer: Arc<StreamConsumer>,
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

impl TaskLog {
    /// Starts reading `topic` from the beginning and tailing it until `shutdown`.
    pub async fn load(
        kafka: &KafkaConfig,
        topic: &str,
        group_id: &str,
        timeout: Duration,
        shutdown: CancellationToken,
        on_cancel: OnCancel,
    ) -> Result<Self, RuntimeError> {
        let producer: FutureProducer = kafka.producer_config().create()?;
        let consumer: StreamConsumer = kafka.consumer_config(group_id).create()?;
        let consumer = Arc::new(consumer);
        let partitions = {
            let c = Arc::clone(&consumer);
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
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let shared = Arc::new(Shared {
            tasks: RwLock::default(),
            changes,
            running: Mutex::default(),
            on_cancel,
        });
        let (applied_tx, applied) = watch::channel(HashMap::new());
        let tail = tokio::spawn(tail(
            Arc::clone(&consumer),
            Arc::clone(&shared),
            applied_tx,
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
            .send_result(
                FutureRecord::to(&self.topic)
                    .key(&record.task.id)
                    .payload(&value),
            )
            .map_err(|(e, _)| RuntimeError::kafka(format!("producing to {}", self.topic), e))?;
        let topic = self.topic.clone();
        Ok(async move {
            match future.await {
                Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
                Ok(Err((e, _))) => Err(RuntimeError::kafka(format!("producing to {topic}"), e)),
                Err(_) => Err(RuntimeError::Stopped),
            }
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

    /// Waits until the tail reached the topic's end as of now.
    pub async fn sync(&self) -> Result<(), RuntimeError> {
        let ends = {
            let c = Arc::clone(&self.consumer);
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

/// Applies one record: the first terminal record of a task is final.
fn apply(shared: &Shared, record: TaskRecord) {
    let terminal = record.task.state.is_terminal();
    {
        let mut tasks = shared
            .tasks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tasks
            .get(&record.task.id)
            .is_some_and(|old| old.task.state.is_terminal())
        {
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

async fn tail(
    consumer: Arc<StreamConsumer>,
    shared: Arc<Shared>,
    applied: watch::Sender<HashMap<i32, i64>>,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "tasks topic consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(bytes) = message.payload() {
            match serde_json::from_slice::<TaskRecord>(bytes) {
                Ok(record) => apply(&shared, record),
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
                timestamp: rfc3339(0),
                artifacts: Vec::new(),
                history: Vec::new(),
            },
            agent_type: "echo".into(),
            instance: "i1".into(),
            deadline_ms: 0,
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
    fn the_first_terminal_record_wins_and_ends_the_local_wait() {
        let (changes, mut rx) = broadcast::channel(8);
        let interrupted = Arc::new(AtomicUsize::new(0));
        let seen_by_hook = Arc::clone(&interrupted);
        let shared = Shared {
            tasks: RwLock::default(),
            changes,
            running: Mutex::default(),
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
