//! Python agents behind Rust's [`Agent`] trait.
//!
//! A [`PyAgent`] holds a Python *shell* (`switchboard.autogen._shell.AgentShell`):
//! the object that makes the AutoGen agent (inside `AgentInstantiationContext`),
//! decodes payloads with AutoGen's serialization registry, calls `on_message` and
//! encodes the reply. Messages reach it through the [`Dispatcher`] (one asyncio task
//! each, started in batches); the Rust side awaits the outcome like any other
//! handler, so ordering, commits, state and dead letters are the runtime's as for
//! Rust agents.
//!
//! The factory closure runs under the runtime's agent table lock, so it must not take
//! the GIL: agents are made empty and get their shell on the loop, with their first
//! message.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use serde_json::Value;
use switchboard_runtime::message::CodecError;
use switchboard_runtime::{AgentError, AgentId, HandlerResult, MessageContext, Payload};
use tokio::sync::oneshot;

use crate::dispatch::{Dispatcher, Job, ShellSlot};

/// The asyncio loop (and contextvars) Python handlers run on; set by `start`.
pub(crate) type SharedLocals = Arc<OnceLock<TaskLocals>>;

/// Status codes of `AgentShell.handle` (kept in sync with `_shell.py`).
mod status {
    pub const NO_REPLY: u8 = 0;
    pub const REPLY: u8 = 1;
    pub const HANDLER_ERROR: u8 = 2;
    pub const DECODE_ERROR: u8 = 3;
    pub const UNKNOWN_TYPE: u8 = 4;
    pub const FACTORY_ERROR: u8 = 5;
}

/// One Python agent, as the Rust runtime holds it.
pub(crate) struct PyAgent {
    id: AgentId,
    slot: ShellSlot,
    /// `make_shell(key)` of a factory-registered type; `None` for instances.
    make_shell: Option<Arc<Py<PyAny>>>,
    dispatcher: Arc<Py<Dispatcher>>,
    /// The state the last handler left, computed in the same Python call as the
    /// handler; `save_state` right after `on_message` (what the runtime does) takes it
    /// instead of crossing into Python again.
    pending_state: Option<Option<Value>>,
}

impl PyAgent {
    /// An agent of a factory-registered type; its shell is made on first use.
    pub(crate) fn lazy(
        id: AgentId,
        make_shell: Arc<Py<PyAny>>,
        dispatcher: Arc<Py<Dispatcher>>,
    ) -> Self {
        Self {
            id,
            slot: Arc::new(OnceLock::new()),
            make_shell: Some(make_shell),
            dispatcher,
            pending_state: None,
        }
    }

    /// An agent registered as an instance, with its shell.
    pub(crate) fn ready(id: AgentId, shell: Py<PyAny>, dispatcher: Arc<Py<Dispatcher>>) -> Self {
        let slot = Arc::new(OnceLock::new());
        let _ = slot.set(shell);
        Self {
            id,
            slot,
            make_shell: None,
            dispatcher,
            pending_state: None,
        }
    }

    fn shell<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(s) = self.slot.get() {
            return Ok(s.bind(py).clone());
        }
        let make = self
            .make_shell
            .as_ref()
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("agent has no shell"))?;
        let made = make.bind(py).call1((self.id.key(),))?;
        let _ = self.slot.set(made.clone().unbind());
        Ok(made)
    }

    fn locals(&self) -> PyResult<&TaskLocals> {
        self.dispatcher
            .get()
            .locals()
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("the runtime is not started"))
    }

    /// Calls `shell.<method>(*args)` on the asyncio loop and awaits its result (the
    /// rare calls: state, instance; messages go through the dispatcher).
    async fn call<A>(&mut self, method: &'static str, args: A) -> PyResult<Py<PyAny>>
    where
        A: for<'py> pyo3::call::PyCallArgs<'py>,
    {
        let fut = Python::attach(|py| {
            let shell = self.shell(py)?;
            let coro = shell.call_method1(method, args)?;
            pyo3_async_runtimes::into_future_with_locals(self.locals()?, coro)
        })?;
        fut.await
    }

    /// The Python agent (made if needed), e.g. for `try_get_underlying_agent_instance`.
    pub(crate) async fn instance(&mut self) -> PyResult<Py<PyAny>> {
        self.call("instance", ()).await
    }

    /// Asks the shell to cancel the handler's `CancellationToken` (on the loop).
    fn cancel_current(&self) {
        let r = Python::attach(|py| -> PyResult<()> {
            let shell = self.shell(py)?;
            let cancel = shell.getattr(intern!(py, "cancel_current"))?;
            self.locals()?
                .event_loop(py)
                .call_method1(intern!(py, "call_soon_threadsafe"), (cancel,))?;
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(agent = %self.id, error = %e, "could not cancel the Python handler");
        }
    }
}

fn agent_error(py: Python<'_>, e: &PyErr) -> AgentError {
    AgentError::new(python_error_text(py, e))
}

/// `ValueError: boom`, as Python prints the last line of a traceback.
pub(crate) fn python_error_text(py: Python<'_>, e: &PyErr) -> String {
    let name = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    let text = e.value(py).str().map(|s| s.to_string()).unwrap_or_default();
    if text.is_empty() {
        name
    } else {
        format!("{name}: {text}")
    }
}

fn decode_state(text: Option<String>) -> Result<Option<Value>, AgentError> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| AgentError::new(format!("save_state returned invalid JSON: {e}")))
    })
    .transpose()
}

#[async_trait]
impl switchboard_runtime::Agent for PyAgent {
    async fn on_message(&mut self, message: Payload, ctx: &MessageContext) -> HandlerResult {
        let type_name = message.type_name.clone();
        let (done, outcome) = oneshot::channel();
        let job = Job {
            slot: Arc::clone(&self.slot),
            make_shell: self.make_shell.clone(),
            key: self.id.key().to_owned(),
            payload: message,
            ctx: ctx.clone(),
            done,
        };
        Dispatcher::push(&self.dispatcher, job).map_err(AgentError::new)?;
        tokio::pin!(outcome);
        let out = tokio::select! {
            r = &mut outcome => r,
            () = ctx.cancellation.cancelled() => {
                // The caller gave up (deadline) or the runtime stops: tell the handler
                // through its CancellationToken, then let it finish.
                self.cancel_current();
                outcome.await
            }
        };
        let (code, a, b, data, state) = out
            .map_err(|_| AgentError::new("the Python handler task was dropped"))?
            .map_err(AgentError::new)?;
        self.pending_state = Some(decode_state(state)?);
        match code {
            status::NO_REPLY => Ok(None),
            status::REPLY => Ok(Some(Payload {
                type_name: a.unwrap_or_default(),
                content_type: b.unwrap_or_else(|| switchboard_runtime::message::JSON.to_owned()),
                data: data.unwrap_or_default(),
            })),
            status::DECODE_ERROR => Err(AgentError::from(CodecError::Invalid {
                type_name,
                reason: a.unwrap_or_default(),
            })),
            status::UNKNOWN_TYPE => Err(AgentError::unknown_message_type(&type_name)),
            status::HANDLER_ERROR => Err(AgentError::new(a.unwrap_or_default())),
            // The agent could not be made: every retry would fail the same way, so
            // an RPC's input is dead-lettered too.
            status::FACTORY_ERROR => Err(AgentError::new(a.unwrap_or_default()).keep_input()),
            other => Err(AgentError::new(format!(
                "the Python shell returned unknown status {other}"
            ))),
        }
    }

    async fn save_state(&mut self) -> Result<Option<Value>, AgentError> {
        if let Some(state) = self.pending_state.take() {
            return Ok(state);
        }
        let out = self
            .call("save_state", ())
            .await
            .map_err(|e| Python::attach(|py| agent_error(py, &e)))?;
        let text = Python::attach(|py| out.bind(py).extract::<Option<String>>())
            .map_err(|e| AgentError::new(format!("save_state: {e}")))?;
        decode_state(text)
    }

    async fn load_state(&mut self, state: Value) -> Result<(), AgentError> {
        self.pending_state = None;
        self.call("load_state", (state.to_string(),))
            .await
            .map(drop)
            .map_err(|e| Python::attach(|py| agent_error(py, &e)))
    }
}

/// The Rust context of the message a Python handler is handling. What the handler
/// sends or publishes with it is a child of the message's trace, and an RPC to the
/// handling agent itself fails fast (it would wait for its own turn).
#[pyclass(frozen, module = "switchboard._native")]
pub struct HandlerContext {
    pub(crate) ctx: MessageContext,
}

#[pymethods]
impl HandlerContext {
    /// The handling agent as `(type, key)`.
    #[getter]
    fn recipient(&self) -> (String, String) {
        (
            self.ctx.recipient.agent_type().to_owned(),
            self.ctx.recipient.key().to_owned(),
        )
    }

    /// The W3C `traceparent` of the handling span.
    #[getter]
    fn traceparent(&self) -> String {
        self.ctx.trace.traceparent()
    }

    /// Starts durable step `name` (`switchboard.step`): `(n, journaled JSON text or
    /// None)`; with `None`, run the work and pass its result to `step_record`.
    fn step_begin(&self, name: &str) -> PyResult<(u32, Option<String>)> {
        let (n, journaled) = self.ctx.begin_step(name).map_err(crate::errors::to_py)?;
        Ok((n, journaled.map(|v| v.to_string())))
    }

    /// Journals the JSON text `result` as call `n` of step `name`; resolves once the
    /// journal record is acknowledged by Kafka. Steps are rare and slow by nature, so
    /// this resolves through pyo3-async-runtimes (one GIL acquisition on a Tokio thread)
    /// rather than the dispatcher's batch path.
    fn step_record<'py>(
        &self,
        py: Python<'py>,
        name: String,
        n: u32,
        result: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value: Value = serde_json::from_str(result).map_err(|e| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "the result of step {name:?} is not JSON: {e}"
            ))
        })?;
        let ctx = self.ctx.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            ctx.record_step(&name, n, &value)
                .await
                .map_err(crate::errors::to_py)
        })
    }
}
