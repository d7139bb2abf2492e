//! Handing messages to the asyncio loop in batches.
//!
//! Each Python handler runs as an asyncio task on the loop `start` was called from.
//! Messages are queued here and the loop is woken through a socket pair it watches
//! (`loop.add_reader`): a Rust thread never takes the GIL to hand over a message
//! (waiting for it while the loop runs Python would stall that thread for up to the
//! interpreter's switch interval), and one wake-up drains everything queued
//! meanwhile. The shell hands the outcome to a [`Completion`], which sends it on a
//! oneshot channel to the waiting Rust side.
//!
//! The other direction goes the same way: an RPC or publish a Python caller awaits
//! ends on a Tokio thread, which queues the result ([`Dispatcher::complete`]) and wakes
//! the loop; the drain sets the asyncio future's result there. So no Tokio thread
//! takes the GIL for a reply (pyo3-async-runtimes' futures do, twice per reply).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3_async_runtimes::TaskLocals;
use switchboard_runtime::{MessageContext, Payload};
use tokio::sync::oneshot;

use crate::bridge::HandlerContext;

/// What `AgentShell.handle` returned: `(status, a, b, data, state)`.
pub(crate) type Outcome = (
    u8,
    Option<String>,
    Option<String>,
    Option<Bytes>,
    Option<String>,
);

/// A shell slot: filled on the loop thread the first time the agent gets a message.
pub(crate) type ShellSlot = Arc<OnceLock<Py<PyAny>>>;

/// One message for a Python agent.
pub(crate) struct Job {
    pub(crate) slot: ShellSlot,
    /// Makes the shell (`make_shell(key)`) when the slot is empty.
    pub(crate) make_shell: Option<Arc<Py<PyAny>>>,
    pub(crate) key: String,
    pub(crate) payload: Payload,
    pub(crate) ctx: MessageContext,
    pub(crate) done: oneshot::Sender<Result<Outcome, String>>,
}

/// Turns a finished Rust operation into the Python value of its future (or the
/// exception it raises); runs on the loop, with the GIL.
pub(crate) type MakeResult = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A finished operation whose asyncio future is to be resolved on the loop.
struct Done {
    future: Py<PyAny>,
    make: MakeResult,
}

/// The queue between the Rust runtime's threads and the asyncio loop.
#[pyclass(frozen, module = "switchboard._native")]
pub struct Dispatcher {
    queue: Mutex<Vec<Job>>,
    done: Mutex<Vec<Done>>,
    /// A wake-up is pending (set by the first push after a drain).
    scheduled: AtomicBool,
    locals: Arc<OnceLock<TaskLocals>>,
    /// Written by `push` (one byte per wake-up), watched by the loop.
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    installed: AtomicBool,
}

impl Dispatcher {
    pub(crate) fn new(locals: Arc<OnceLock<TaskLocals>>) -> std::io::Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Self {
            queue: Mutex::default(),
            done: Mutex::default(),
            scheduled: AtomicBool::new(false),
            locals,
            wake_tx,
            wake_rx,
            installed: AtomicBool::new(false),
        })
    }

    /// Makes the loop of `locals` watch the wake-up socket (once; call on the loop).
    pub(crate) fn install(me: &Bound<'_, Dispatcher>, locals: &TaskLocals) -> PyResult<()> {
        let this = me.get();
        if this.installed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let py = me.py();
        let drain = me.getattr(intern!(py, "drain"))?;
        locals
            .event_loop(py)
            .call_method1(intern!(py, "add_reader"), (this.wake_rx.as_raw_fd(), drain))?;
        Ok(())
    }

    pub(crate) fn locals(&self) -> Option<&TaskLocals> {
        self.locals.get()
    }

    /// Whether the loop watches the wake-up socket (futures can be resolved there).
    pub(crate) fn installed(&self) -> bool {
        self.installed.load(Ordering::Acquire)
    }

    /// Queues the result of the operation behind `future` (made by
    /// `loop.create_future()`) and wakes the loop, which resolves it. No GIL here.
    pub(crate) fn complete(me: &Py<Dispatcher>, future: Py<PyAny>, make: MakeResult) {
        let this = me.get();
        this.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Done { future, make });
        if let Err(e) = this.wake() {
            // Only when the loop is gone (stopped): nobody awaits the future then.
            tracing::debug!(error = %e, "could not wake the asyncio loop for a reply");
        }
    }

    /// Wakes the loop unless a drain is pending already.
    fn wake(&self) -> Result<(), String> {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if !self.installed.load(Ordering::Acquire) {
            self.scheduled.store(false, Ordering::Release);
            return Err(
                "the runtime is not started (no asyncio loop for Python agents)".to_owned(),
            );
        }
        match (&self.wake_tx).write(&[1]) {
            Ok(_) => Ok(()),
            // Full: bytes are waiting, so a wake-up is already due.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                self.scheduled.store(false, Ordering::Release);
                Err(format!("could not wake the asyncio loop: {e}"))
            }
        }
    }

    /// Queues `job`; wakes the loop when no drain is pending. `me` is this
    /// dispatcher as a Python object (what the loop calls back).
    pub(crate) fn push(me: &Py<Dispatcher>, job: Job) -> Result<(), String> {
        // No GIL here: see the module doc.
        let this = me.get();
        this.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        this.wake()
    }
}

#[pymethods]
impl Dispatcher {
    /// Runs on the loop: resolves finished operations' futures, starts a task per
    /// queued message.
    fn drain(&self, py: Python<'_>) {
        let mut sink = [0u8; 256];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        // Cleared before taking: a push racing with us schedules another wake-up.
        self.scheduled.store(false, Ordering::Release);
        let finished = std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()));
        for Done { future, make } in finished {
            resolve(py, future.bind(py), make);
        }
        let jobs = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(locals) = self.locals.get() else {
            return;
        };
        let event_loop = locals.event_loop(py);
        for job in jobs {
            let Job {
                slot,
                make_shell,
                key,
                payload,
                ctx,
                done,
            } = job;
            let mut done = Some(done);
            let started = (|| -> PyResult<()> {
                let shell = match slot.get() {
                    Some(s) => s.bind(py).clone(),
                    None => {
                        let make = make_shell.as_ref().ok_or_else(|| {
                            pyo3::exceptions::PyRuntimeError::new_err("agent has no shell")
                        })?;
                        let made = make.bind(py).call1((key.as_str(),))?;
                        let _ = slot.set(made.clone().unbind());
                        made
                    }
                };
                let sender = ctx
                    .sender
                    .as_ref()
                    .map(|s| (s.agent_type().to_owned(), s.key().to_owned()));
                let topic = ctx
                    .topic
                    .as_ref()
                    .map(|t| (t.topic_type().to_owned(), t.source().to_owned()));
                let (is_rpc, message_id) = (ctx.is_rpc, ctx.message_id.clone());
                let coro = shell.call_method1(
                    intern!(py, "handle"),
                    (
                        payload.type_name,
                        payload.content_type,
                        PyBytes::new(py, &payload.data),
                        sender,
                        topic,
                        is_rpc,
                        message_id,
                        HandlerContext { ctx },
                        Completion {
                            done: Mutex::new(done.take()),
                        },
                    ),
                )?;
                // `handle` reports through the Completion itself (no done-callback
                // round through the loop); the task only runs it.
                event_loop.call_method1(intern!(py, "create_task"), (coro,))?;
                Ok(())
            })();
            if let (Err(e), Some(done)) = (started, done) {
                // The shell could not be made or called: the handler's error.
                let _ = done.send(Err(crate::bridge::python_error_text(py, &e)));
            }
        }
    }
}

/// Sets `future`'s result from `make` (or its exception), unless the caller cancelled
/// it meanwhile.
fn resolve(py: Python<'_>, future: &Bound<'_, PyAny>, make: MakeResult) {
    let outcome = (|| -> PyResult<()> {
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match make(py) {
            Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
            Err(e) => future.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        Ok(())
    })();
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not resolve an asyncio future");
    }
}

/// Done-callback of a future resolved through the dispatcher: cancels the Rust
/// operation when the caller cancelled the future (`asyncio.wait_for`, AutoGen's
/// `CancellationToken.link_future`); a no-op once the operation finished.
#[pyclass(frozen, module = "switchboard._native")]
pub struct CancelOnDone {
    pub(crate) token: tokio_util::sync::CancellationToken,
}

#[pymethods]
impl CancelOnDone {
    fn __call__(&self, _future: Bound<'_, PyAny>) {
        self.token.cancel();
    }
}

/// The done-callback of one handler task: sends its outcome to the waiting Rust side.
#[pyclass(frozen, module = "switchboard._native")]
pub struct Completion {
    done: Mutex<Option<oneshot::Sender<Result<Outcome, String>>>>,
}

#[pymethods]
impl Completion {
    /// `completion(outcome)`: the handler's outcome tuple; `completion(None, error)`:
    /// the shell itself failed with `error` (text).
    #[pyo3(signature = (outcome, error=None))]
    fn __call__(&self, outcome: Option<Bound<'_, PyAny>>, error: Option<String>) {
        let result = match (outcome, error) {
            (_, Some(e)) => Err(e),
            (None, None) => Err("the Python shell returned no outcome".to_owned()),
            (Some(o), None) => o
                .extract::<(
                    u8,
                    Option<String>,
                    Option<String>,
                    Option<Bound<'_, PyBytes>>,
                    Option<String>,
                )>()
                .map(|(c, a, b, d, s)| {
                    (c, a, b, d.map(|d| Bytes::copy_from_slice(d.as_bytes())), s)
                })
                .map_err(|e| format!("the Python shell returned a bad result: {e}")),
        };
        if let Some(done) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = done.send(result);
        }
    }
}
