//! Durable steps: `ctx.step(name, async { .. })` runs a piece of a handler once per
//! message, even when the message is handled again after a crash or a partition move.
//!
//! The runtime delivers at least once: a handler that did not finish (its process died,
//! its partition moved) runs again from the start. A step's result is written to a
//! [`StepJournal`] before the handler continues; when the same message (same
//! `ctx.message_id`, which is stable across redelivery) reaches the same agent again,
//! each step that completed returns its journaled result instead of running.
//!
//! Steps are numbered per name in the order a handler calls them (`model/0`,
//! `model/1`, ...), so a handler must call its steps in the same order each time it
//! handles the same message (as a deterministic handler does). What is and is not
//! guaranteed is in docs/protocol.md ("Durable steps"). The Kafka runtime journals in
//! the agent's state partition (`kafka::journal`); the in-memory runtime has no
//! journal and simply runs every step (nothing survives its process anyway).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::ConfigError;
use crate::error::RuntimeError;
use crate::ids::AgentId;

/// Where completed steps of the message being handled are kept.
#[async_trait]
pub trait StepJournal: Send + Sync + 'static {
    /// The journaled result of step `name` number `n`, if it completed before.
    fn lookup(&self, name: &str, n: u32) -> Option<Value>;
    /// Journals the result of step `name` number `n`; returns once it is durable.
    async fn record(&self, name: &str, n: u32, value: &Value) -> Result<(), RuntimeError>;
}

/// The steps of one handled message: its journal (if any) and how many times each
/// step name was called so far.
#[derive(Clone, Default)]
pub(crate) struct Steps {
    journal: Option<Arc<dyn StepJournal>>,
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Steps {
    /// Steps journaled in `journal`.
    pub(crate) fn journaled(journal: Arc<dyn StepJournal>) -> Self {
        Self {
            journal: Some(journal),
            calls: Arc::default(),
        }
    }

    fn next_number(&self, name: &str) -> u32 {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let n = calls.entry(name.to_owned()).or_insert(0);
        let current = *n;
        *n += 1;
        current
    }
}

/// Step names end up in Kafka record keys: keep them short and printable.
fn check_name(name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Config(ConfigError::invalid(
            "step name",
            name,
            "must be 1-128 characters of A-Z a-z 0-9 - _ . :",
        )))
    }
}

impl Steps {
    /// Starts step `name`: its number and, when it completed before, its journaled
    /// result (`None` without a journal).
    pub(crate) fn begin(&self, name: &str) -> Result<(u32, Option<Value>), RuntimeError> {
        check_name(name)?;
        let n = self.next_number(name);
        Ok((n, self.journal.as_ref().and_then(|j| j.lookup(name, n))))
    }

    /// The journaled result of call `n` of step `name`, if it completed before (`None`
    /// without a journal); for hosts that number calls themselves.
    pub(crate) fn lookup(&self, name: &str, n: u32) -> Result<Option<Value>, RuntimeError> {
        check_name(name)?;
        Ok(self.journal.as_ref().and_then(|j| j.lookup(name, n)))
    }

    /// Journals the result of step `name` number `n` (nothing without a journal).
    pub(crate) async fn record(
        &self,
        name: &str,
        n: u32,
        value: &Value,
    ) -> Result<(), RuntimeError> {
        match &self.journal {
            Some(j) => j.record(name, n, value).await,
            None => Ok(()),
        }
    }

    /// Runs `work` as step `name` of message `message_id` handled by `agent`: see
    /// [`MessageContext::step`](crate::context::MessageContext::step).
    pub(crate) async fn run<T, E, F>(
        &self,
        agent: &AgentId,
        message_id: &str,
        name: &str,
        work: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<RuntimeError>,
        F: Future<Output = Result<T, E>>,
    {
        let (n, journaled) = self.begin(name)?;
        if let Some(value) = journaled {
            tracing::debug!(step = name, n, message_id, "step replayed from the journal");
            return serde_json::from_value(value).map_err(|e| {
                E::from(RuntimeError::Handler {
                    agent: agent.to_string(),
                    message: format!("journaled result of step {name}/{n} does not decode: {e}"),
                })
            });
        }
        let result = work.await?;
        if self.journal.is_none() {
            return Ok(result);
        }
        let value = serde_json::to_value(&result).map_err(|e| RuntimeError::Handler {
            agent: agent.to_string(),
            message: format!("result of step {name}/{n} does not encode: {e}"),
        })?;
        self.record(name, n, &value).await?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct MapJournal(Mutex<HashMap<(String, u32), Value>>);
    #[async_trait]
    impl StepJournal for MapJournal {
        fn lookup(&self, name: &str, n: u32) -> Option<Value> {
            self.0.lock().unwrap().get(&(name.to_owned(), n)).cloned()
        }
        async fn record(&self, name: &str, n: u32, value: &Value) -> Result<(), RuntimeError> {
            self.0
                .lock()
                .unwrap()
                .insert((name.to_owned(), n), value.clone());
            Ok(())
        }
    }

    /// The steps of one delivery of message `m1` to `a/k`.
    fn delivery(journal: Option<Arc<MapJournal>>) -> Steps {
        match journal {
            Some(j) => Steps::journaled(j),
            None => Steps::default(),
        }
    }

    async fn handler(steps: &Steps, runs: &AtomicU32, fail_second: bool) -> Vec<u32> {
        let agent = AgentId::new("a", "k").unwrap();
        let mut out = Vec::new();
        for i in 0..2u32 {
            let r: Result<u32, RuntimeError> = steps
                .run(&agent, "m1", "call", async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    if fail_second && i == 1 {
                        return Err(RuntimeError::Stopped);
                    }
                    Ok(i * 10)
                })
                .await;
            match r {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn completed_steps_replay_and_failed_ones_run_again() {
        let journal = Arc::new(MapJournal::default());
        let runs = AtomicU32::new(0);
        // First attempt: step 0 completes, step 1 fails (as if the process died there).
        assert_eq!(
            handler(&delivery(Some(journal.clone())), &runs, true).await,
            [0]
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Redelivery: step 0 is replayed, only step 1 runs.
        assert_eq!(
            handler(&delivery(Some(journal.clone())), &runs, false).await,
            [0, 10]
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3, "step 0 did not run again");
        // A third delivery runs nothing.
        assert_eq!(
            handler(&delivery(Some(journal)), &runs, false).await,
            [0, 10]
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn without_a_journal_every_step_runs() {
        let runs = AtomicU32::new(0);
        handler(&delivery(None), &runs, false).await;
        handler(&delivery(None), &runs, false).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn bad_step_names_and_undecodable_journal_entries_fail() {
        let agent = AgentId::new("a", "k").unwrap();
        let r: Result<u32, RuntimeError> = delivery(None)
            .run(&agent, "m1", "a/b", async { Ok(1) })
            .await;
        assert!(r.is_err());
        let journal = Arc::new(MapJournal::default());
        journal
            .record("s", 0, &Value::String("not a number".into()))
            .await
            .unwrap();
        let r: Result<u32, RuntimeError> = delivery(Some(journal))
            .run(&agent, "m1", "s", async { Ok(1) })
            .await;
        assert!(matches!(r, Err(RuntimeError::Handler { .. })), "{r:?}");
    }
}
