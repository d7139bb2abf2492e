//! Durable steps for HTTP agents: while the runtime waits for an HTTP agent's answer,
//! the agent may journal steps of the message through the runtime, with the same
//! journal and guarantees as Rust's `ctx.step` (docs/protocol.md, "Durable steps").
//!
//! Each request to an HTTP agent carries `switchboard-steps: <url>`, a URL on the
//! runtime's HTTP listener valid while that request is in flight (a random token;
//! no bearer token needed, the URL is the capability):
//!
//! - `POST <url>/<name>` starts the next call of step `name` in this request:
//!   `{"n": 0, "done": true, "value": ...}` when it completed when the message was
//!   handled before (use `value`, skip the work), else `{"n": 0, "done": false}`;
//! - `PUT <url>/<name>/<n>` with the step's result (JSON) as the body journals it;
//!   `204` once Kafka acknowledged it.
//!
//! Calls are numbered per name within one request (a retried request starts again at
//! 0, as a redelivered message does), so an agent calls its steps in the same order
//! each time. An unknown or expired token is `404`, a bad name or a body that is not
//! JSON `400`, a journal write that failed `503`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::context::MessageContext;

/// The request header carrying the steps URL.
pub const STEPS_HEADER: &str = "switchboard-steps";

/// One request in flight: the message's context and its step counters.
struct Session {
    ctx: MessageContext,
    calls: HashMap<String, u32>,
}

/// The open sessions of this process, and the base URL agents reach it at.
#[derive(Default)]
pub struct StepSessions {
    base: OnceLock<String>,
    open: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for StepSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepSessions")
            .field("base", &self.base.get())
            .finish_non_exhaustive()
    }
}

/// An open session; closed when dropped.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Arc<StepSessions>,
    token: String,
    /// `<base>/v1/steps/<token>`.
    pub url: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.token);
    }
}

/// What starting a step found.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// The call's number.
    pub n: u32,
    /// The journaled result, when it completed before.
    pub value: Option<serde_json::Value>,
}

/// Why a step request failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// No request with this token is in flight.
    #[error(
        "no HTTP agent request with this steps token is in flight (it ended, or never existed)"
    )]
    UnknownToken,
    /// The step name (or number) is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The journal write failed.
    #[error("the step could not be journaled: {0}")]
    Journal(String),
}

impl StepSessions {
    /// Sets the base URL (`http://host:port`) agents reach this runtime's HTTP
    /// listener at; until then no session opens (requests carry no steps URL).
    pub fn set_base(&self, base: String) {
        let _ = self.base.set(base);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for one request to an HTTP agent handling `ctx`'s message.
    pub fn open(self: &Arc<Self>, ctx: &MessageContext) -> Option<SessionGuard> {
        let base = self.base.get()?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.lock().insert(
            token.clone(),
            Session {
                ctx: ctx.clone(),
                calls: HashMap::new(),
            },
        );
        Some(SessionGuard {
            sessions: Arc::clone(self),
            url: format!("{base}/v1/steps/{token}"),
            token,
        })
    }

    /// `POST <url>/<name>`.
    pub fn begin(&self, token: &str, name: &str) -> Result<Started, StepError> {
        let mut open = self.lock();
        let session = open.get_mut(token).ok_or(StepError::UnknownToken)?;
        let value = session
            .ctx
            .journaled_step(name, *session.calls.get(name).unwrap_or(&0))
            .map_err(|e| StepError::Invalid(e.to_string()))?;
        let n = session.calls.entry(name.to_owned()).or_insert(0);
        let started = Started { n: *n, value };
        *n += 1;
        Ok(started)
    }

    /// `PUT <url>/<name>/<n>`: journals `value`; returns once it is durable.
    pub async fn record(
        &self,
        token: &str,
        name: &str,
        n: u32,
        value: &serde_json::Value,
    ) -> Result<(), StepError> {
        let ctx = {
            let open = self.lock();
            let session = open.get(token).ok_or(StepError::UnknownToken)?;
            if session.calls.get(name).is_none_or(|c| n >= *c) {
                return Err(StepError::Invalid(format!(
                    "step {name}/{n} was not started in this request (POST .../{name} first)"
                )));
            }
            session.ctx.clone()
        };
        ctx.record_step(name, n, value)
            .await
            .map_err(|e| StepError::Journal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tokens_and_unstarted_steps_are_refused() {
        let sessions = StepSessions::default();
        assert!(matches!(
            sessions.begin("nope", "a"),
            Err(StepError::UnknownToken)
        ));
        // No base URL yet: no session opens, requests carry no steps URL.
        assert!(sessions.base.get().is_none());
        sessions.set_base("http://127.0.0.1:8080".into());
        assert_eq!(sessions.base.get().unwrap(), "http://127.0.0.1:8080");
    }
}
