//! `NativeRuntime`: one [`KafkaAgentRuntime`] driven from Python.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use switchboard_runtime::agent::downcast_agent;
use switchboard_runtime::config_file::{Builtin, RuntimeConfigFile};
use switchboard_runtime::context::{OutgoingEvent, OutgoingRpc};
use switchboard_runtime::{
    AgentFactory, AgentId, AgentRuntime, KafkaAgentRuntime, Payload, RuntimeError, Subscription,
    TopicId, WorkerConfig,
};
use tokio_util::sync::CancellationToken;

use crate::bridge::{HandlerContext, PyAgent, SharedLocals};
use crate::dispatch::Dispatcher;
use crate::errors::{config_to_py, to_py};

/// What `stop` may take beyond the drain timeout (the steps after the drain, each
/// bounded by the broker's answer).
const STOP_SLACK: Duration = Duration::from_secs(10);

/// A Switchboard runtime in this process. Built from the runtime's config file format
/// (JSON or YAML text, the same fields `switchboard-runtime run` reads), so every
/// setting is validated once, by the Rust side, with errors naming the field.
#[pyclass(frozen, module = "switchboard._native")]
pub struct NativeRuntime {
    runtime: KafkaAgentRuntime,
    locals: SharedLocals,
    /// Where Python agents' messages queue for the asyncio loop.
    dispatcher: Arc<Py<Dispatcher>>,
    /// Class names of instance-registered agents, kept for the process's lifetime
    /// (the runtime wants `&'static str`; there is one per Python class).
    classes: Mutex<HashMap<String, &'static str>>,
    /// The config file, when built by `from_file` (what `serve` serves).
    file: Option<RuntimeConfigFile>,
    /// Cancelled by `request_shutdown`: ends `serve`.
    shutdown: CancellationToken,
}

/// Settings the config file has no field for (tests and the compat layer use them).
#[derive(Default)]
struct Overrides {
    instance_id: Option<String>,
    heartbeat_interval_ms: Option<u64>,
    liveness_timeout_ms: Option<u64>,
    drain_timeout_ms: Option<u64>,
}

fn lookup<'a>(secrets: &'a HashMap<String, String>) -> impl Fn(&str) -> Option<String> + Copy + 'a {
    move |k: &str| secrets.get(k).cloned().or_else(|| std::env::var(k).ok())
}

/// Parses the config text into a validated [`WorkerConfig`]. `secrets` holds SASL
/// credentials by their environment variable names (they never go into the file).
/// With `apply_env`, `SWITCHBOARD_*` variables override the file as for
/// `switchboard-runtime run` (serve); a library runtime takes the text as given.
pub(crate) fn worker_config(
    text: &str,
    secrets: &HashMap<String, String>,
    apply_env: bool,
) -> PyResult<(RuntimeConfigFile, WorkerConfig)> {
    let file = if apply_env {
        switchboard_runtime::serve::load_config(text, lookup(secrets))
    } else {
        RuntimeConfigFile::from_yaml(text).and_then(|f| f.validate().map(|()| f))
    }
    .map_err(config_to_py)?;
    let cfg = file.worker_config(lookup(secrets)).map_err(config_to_py)?;
    Ok((file, cfg))
}

fn ms(v: Option<u64>, into: &mut Duration) {
    if let Some(v) = v {
        *into = Duration::from_millis(v);
    }
}

fn agent_id(t: &str, k: &str) -> PyResult<AgentId> {
    AgentId::new(t, k).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn payload(type_name: String, content_type: String, data: &[u8]) -> Payload {
    Payload {
        type_name,
        content_type,
        data: Bytes::copy_from_slice(data),
    }
}

/// `(type_name, content_type, bytes)` of a reply, or `None`.
/// A reply as Python sees it: `None` or `(type_name, content_type, bytes)`.
fn reply_value(py: Python<'_>, reply: Option<Payload>) -> PyResult<Py<PyAny>> {
    match reply {
        None => Ok(py.None()),
        Some(p) => Ok((p.type_name, p.content_type, PyBytes::new(py, &p.data))
            .into_pyobject(py)?
            .into_any()
            .unbind()),
    }
}

impl NativeRuntime {
    /// The Rust runtime.
    pub(crate) fn kafka(&self) -> &KafkaAgentRuntime {
        &self.runtime
    }

    /// Python agents run on the running loop (the caller's): remembers it and has it
    /// watch the dispatcher. Idempotent; call on the loop.
    fn bind_loop(&self, py: Python<'_>) -> PyResult<()> {
        if self.locals.get().is_none() {
            let _ = self
                .locals
                .set(pyo3_async_runtimes::tokio::get_current_locals(py)?);
        }
        let locals = self
            .locals
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("no asyncio loop"))?;
        Dispatcher::install(self.dispatcher.bind(py), locals)
    }

    fn rt(&self) -> KafkaAgentRuntime {
        self.runtime.clone()
    }

    /// An asyncio future for `work`, run on Tokio. When the caller is on the runtime's
    /// loop (the usual case) the result comes back through the dispatcher, so the Tokio
    /// thread never takes the GIL; else through pyo3-async-runtimes. `cancel` is
    /// cancelled when the future is done, so a caller's cancellation ends the work.
    fn resolved_on_loop<'py, T: Send + 'static>(
        &self,
        py: Python<'py>,
        work: impl std::future::Future<Output = T> + Send + 'static,
        value: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
        cancel: Option<CancellationToken>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let event_loop = self
            .locals
            .get()
            .filter(|_| self.dispatcher.get().installed())
            .map(|l| l.event_loop(py))
            .filter(|l| {
                pyo3_async_runtimes::get_running_loop(py).is_ok_and(|running| running.is(l))
            });
        let Some(event_loop) = event_loop else {
            return pyo3_async_runtimes::tokio::future_into_py(py, async move {
                let out = work.await;
                Python::attach(|py| value(py, out))
            });
        };
        let future = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
        if let Some(token) = cancel {
            future.call_method1(
                pyo3::intern!(py, "add_done_callback"),
                (crate::dispatch::CancelOnDone { token },),
            )?;
        }
        let dispatcher = Arc::clone(&self.dispatcher);
        let handle = future.clone().unbind();
        pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let out = work.await;
            Dispatcher::complete(&dispatcher, handle, Box::new(move |py| value(py, out)));
        });
        Ok(future)
    }

    /// The `&'static` class name for instance registration (one leak per class).
    fn class_name(&self, name: String) -> &'static str {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        classes
            .entry(name)
            .or_insert_with_key(|n| Box::leak(format!("python:{n}").into_boxed_str()))
    }
}

#[pymethods]
impl NativeRuntime {
    /// `NativeRuntime(config_text, secrets={}, instance_id=None, heartbeat_interval_ms=None,
    /// liveness_timeout_ms=None, drain_timeout_ms=None)`.
    #[new]
    #[pyo3(signature = (config, secrets=HashMap::new(), instance_id=None, heartbeat_interval_ms=None, liveness_timeout_ms=None, drain_timeout_ms=None))]
    fn new(
        py: Python<'_>,
        config: &str,
        secrets: HashMap<String, String>,
        instance_id: Option<String>,
        heartbeat_interval_ms: Option<u64>,
        liveness_timeout_ms: Option<u64>,
        drain_timeout_ms: Option<u64>,
    ) -> PyResult<Self> {
        let o = Overrides {
            instance_id,
            heartbeat_interval_ms,
            liveness_timeout_ms,
            drain_timeout_ms,
        };
        let (_, mut cfg) = worker_config(config, &secrets, false)?;
        if let Some(id) = o.instance_id {
            cfg.instance_id = id;
        }
        ms(o.heartbeat_interval_ms, &mut cfg.heartbeat_interval);
        ms(o.liveness_timeout_ms, &mut cfg.liveness_timeout);
        ms(o.drain_timeout_ms, &mut cfg.drain_timeout);
        cfg.validate().map_err(config_to_py)?;
        Self::from_worker_config(py, cfg, None)
    }

    /// A runtime from a config file's text; with `apply_env`, `SWITCHBOARD_*`
    /// variables override it as for `switchboard-runtime run`. Keeps the file, so
    /// `serve` hosts its built-in and HTTP agents and serves its HTTP API.
    #[staticmethod]
    #[pyo3(signature = (text, apply_env=true, secrets=HashMap::new()))]
    fn from_file(
        py: Python<'_>,
        text: &str,
        apply_env: bool,
        secrets: HashMap<String, String>,
    ) -> PyResult<Self> {
        let (file, cfg) = worker_config(text, &secrets, apply_env)?;
        Self::from_worker_config(py, cfg, Some(file))
    }

    /// Serves like `switchboard-runtime run`: the file's agents besides the ones
    /// registered from Python, `/healthz`, `/readyz`, `/metrics` and the `/v1` API;
    /// starts the runtime if needed. Resolves after `request_shutdown` once the
    /// runtime stopped gracefully (in-flight work finished and committed).
    fn serve<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let file = self.file.clone().ok_or_else(|| {
            PyValueError::new_err("serve needs a runtime made by NativeRuntime.from_file")
        })?;
        self.bind_loop(py)?;
        let rt = self.rt();
        let shutdown = self.shutdown.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            switchboard_runtime::serve::run_hosting(file, rt, shutdown.cancelled_owned())
                .await
                .map_err(|e| match e {
                    switchboard_runtime::serve::ServeError::Runtime(e) => to_py(e),
                    switchboard_runtime::serve::ServeError::Config(e) => config_to_py(e),
                    other => crate::errors::NativeError::new_err(("serve", other.to_string(), "")),
                })
        })
    }

    /// Registers one of the runtime's built-in Rust agents (`echo`, `counter`) under
    /// `agent_type`: it runs without Python (benchmarks, interop).
    fn register_builtin<'py>(
        &self,
        py: Python<'py>,
        agent_type: String,
        builtin: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind = match builtin {
            "echo" => Builtin::Echo,
            "counter" => Builtin::Counter,
            other => {
                return Err(PyValueError::new_err(format!(
                    "builtin must be 'echo' or 'counter', got {other:?}"
                )));
            }
        };
        let factory =
            switchboard_runtime::builtins::factory(kind, None).map_err(PyValueError::new_err)?;
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            rt.register_factory(&agent_type, factory)
                .await
                .map_err(to_py)
        })
    }

    /// Ends `serve` (graceful stop); what a SIGTERM handler calls.
    fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The runtime's name (replicas share it).
    #[getter]
    fn runtime_name(&self) -> String {
        self.runtime.config().runtime_name.clone()
    }

    /// The topic prefix (the agent network).
    #[getter]
    fn topic_prefix(&self) -> String {
        self.runtime.config().topic_prefix.clone()
    }

    /// This process's instance id (names its reply channel).
    #[getter]
    fn instance_id(&self) -> String {
        self.runtime.config().instance_id.clone()
    }

    /// Whether the runtime serves (started, group joined, registry loaded).
    fn is_ready(&self) -> bool {
        self.runtime.is_ready()
    }

    /// Connects to Kafka and joins the network; Python handlers then run on the
    /// running asyncio loop (the caller's).
    fn start<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.bind_loop(py)?;
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(
            py,
            async move { rt.start().await.map_err(to_py) },
        )
    }

    /// Stops gracefully: in-flight handlers finish, offsets are committed, the last
    /// replica releases the runtime's agent types and subscriptions. Bounded by the
    /// drain timeout plus [`STOP_SLACK`]: with the broker unreachable, the steps after
    /// the drain (registry release, producer flush, reply channel deletion) would
    /// each wait for Kafka; past the bound they are given up with a warning (the
    /// registry records expire with the heartbeat, uncommitted records are replayed).
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt();
        let limit = rt.config().drain_timeout + STOP_SLACK;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match tokio::time::timeout(limit, rt.stop()).await {
                Ok(r) => r.map_err(to_py),
                Err(_) => {
                    tracing::warn!(after = ?limit, "runtime stop timed out (is Kafka reachable?); giving up on the rest");
                    Ok(())
                }
            }
        })
    }

    /// Registers `agent_type`; `make_shell(key)` makes each agent's Python shell.
    fn register_factory<'py>(
        &self,
        py: Python<'py>,
        agent_type: String,
        make_shell: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt();
        let dispatcher = Arc::clone(&self.dispatcher);
        let make_shell = Arc::new(make_shell);
        let factory = AgentFactory::new(move |id: &AgentId| {
            PyAgent::lazy(id.clone(), Arc::clone(&make_shell), Arc::clone(&dispatcher))
        });
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            rt.register_factory(&agent_type, factory)
                .await
                .map_err(to_py)
        })
    }

    /// Registers one agent (its shell) under `(agent_type, key)`; `class_name` is
    /// its Python class (instances of one type must share it).
    fn register_instance<'py>(
        &self,
        py: Python<'py>,
        agent_type: String,
        key: String,
        shell: Py<PyAny>,
        class_name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = agent_id(&agent_type, &key)?;
        let class = self.class_name(class_name);
        let agent = PyAgent::ready(id.clone(), shell, Arc::clone(&self.dispatcher));
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            rt.register_agent_instance_boxed(Box::new(agent), class, id)
                .await
                .map_err(to_py)
        })
    }

    /// Sends an RPC; resolves to `None` or `(type_name, content_type, bytes)`.
    /// `ctx`: the handler context when a handler sends (trace, self-RPC check).
    #[pyo3(signature = (type_name, content_type, data, recipient, sender=None, timeout=None, ctx=None, message_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn send<'py>(
        &self,
        py: Python<'py>,
        type_name: String,
        content_type: String,
        data: &[u8],
        recipient: (String, String),
        sender: Option<(String, String)>,
        timeout: Option<f64>,
        ctx: Option<Bound<'py, HandlerContext>>,
        message_id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let recipient = agent_id(&recipient.0, &recipient.1)?;
        let sender = sender.map(|(t, k)| agent_id(&t, &k)).transpose()?;
        let timeout = match timeout {
            Some(t) if !(t.is_finite() && t > 0.0) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a positive number of seconds, got {t}"
                )));
            }
            t => t.map(Duration::from_secs_f64),
        };
        let ctx = ctx.map(|c| c.get().ctx.clone());
        let on_behalf = ctx
            .as_ref()
            .filter(|c| sender.as_ref() == Some(&c.recipient));
        if let Some(c) = on_behalf
            && c.recipient == recipient
        {
            return Err(to_py(RuntimeError::SelfRpc(recipient)));
        }
        let rpc = OutgoingRpc {
            payload: payload(type_name, content_type, data),
            recipient,
            sender,
            timeout,
            // The handler's cancellation (its caller's deadline) ends this wait too.
            cancellation: Some(
                on_behalf.map_or_else(CancellationToken::new, |c| c.cancellation.child_token()),
            ),
            trace: on_behalf.map(|c| c.trace.clone()),
            message_id,
        };
        let rt = self.rt();
        let cancel = rpc.cancellation.clone();
        self.resolved_on_loop(
            py,
            async move { rt.transport().send(rpc).await },
            |py, reply| reply_value(py, reply.map_err(to_py)?),
            cancel,
        )
    }

    /// Publishes an event; resolves once Kafka has it.
    #[pyo3(signature = (type_name, content_type, data, topic, sender=None, ctx=None, message_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn publish<'py>(
        &self,
        py: Python<'py>,
        type_name: String,
        content_type: String,
        data: &[u8],
        topic: (String, String),
        sender: Option<(String, String)>,
        ctx: Option<Bound<'py, HandlerContext>>,
        message_id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let topic =
            TopicId::new(&topic.0, &topic.1).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let sender = sender.map(|(t, k)| agent_id(&t, &k)).transpose()?;
        let trace = ctx
            .map(|c| c.get().ctx.clone())
            .filter(|c| sender.as_ref() == Some(&c.recipient))
            .map(|c| c.trace);
        let event = OutgoingEvent {
            payload: payload(type_name, content_type, data),
            topic,
            sender,
            trace,
            message_id,
        };
        let rt = self.rt();
        self.resolved_on_loop(
            py,
            async move { rt.transport().publish(event).await },
            |py, done| {
                done.map_err(to_py)?;
                Ok(py.None())
            },
            None,
        )
    }

    /// Adds a subscription: `kind` is `type` or `prefix`; `id` becomes its id in the
    /// registry. Resolves to `False` when the network already has the same route
    /// (same kind, topic and agent type), which is then not added again.
    fn add_subscription<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        id: String,
        topic: String,
        agent_type: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let made = match kind {
            "type" => Subscription::for_type(&topic, &agent_type),
            "prefix" => Subscription::for_prefix(&topic, &agent_type),
            other => {
                return Err(PyValueError::new_err(format!(
                    "subscription kind must be 'type' or 'prefix', got {other:?}"
                )));
            }
        }
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let subscription = match made {
            Subscription::Type {
                topic_type,
                agent_type,
                ..
            } => Subscription::Type {
                id,
                topic_type,
                agent_type,
            },
            Subscription::TypePrefix {
                prefix, agent_type, ..
            } => Subscription::TypePrefix {
                id,
                prefix,
                agent_type,
            },
        };
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let added = switchboard_runtime::serve::ensure_subscriptions(&rt, vec![subscription])
                .await
                .map_err(to_py)?;
            Ok(added == 1)
        })
    }

    /// Removes the subscription with `id` from the network.
    fn remove_subscription<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            rt.remove_subscription(&id).await.map_err(to_py)
        })
    }

    /// Every subscription of the network: `(kind, id, topic, agent_type)` tuples.
    fn subscriptions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let subs = rt.subscriptions().await;
            Ok(subs
                .into_iter()
                .map(|s| match s {
                    Subscription::Type {
                        id,
                        topic_type,
                        agent_type,
                    } => ("type".to_owned(), id, topic_type, agent_type),
                    Subscription::TypePrefix {
                        id,
                        prefix,
                        agent_type,
                    } => ("prefix".to_owned(), id, prefix, agent_type),
                })
                .collect::<Vec<_>>())
        })
    }

    /// `(runtime, class, local)` of an agent whose type someone in the network hosts.
    fn agent_metadata<'py>(
        &self,
        py: Python<'py>,
        agent_type: String,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = agent_id(&agent_type, &key)?;
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let m = rt.agent_metadata(&id).await.map_err(to_py)?;
            Ok((m.runtime, m.class, m.local))
        })
    }

    /// The saved state of a local agent as JSON text (`null` when stateless).
    fn agent_save_state<'py>(
        &self,
        py: Python<'py>,
        agent_type: String,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = agent_id(&agent_type, &key)?;
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let state = rt.agent_save_state(&id).await.map_err(to_py)?;
            Ok(state.to_string())
        })
    }

    /// Loads JSON state into a local agent and persists it in the state topic.
    fn agent_load_state<'py>(
        &self,
        py: Python<'py>,
        agent_type: String,
        key: String,
        state: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = agent_id(&agent_type, &key)?;
        let state: serde_json::Value = serde_json::from_str(state)
            .map_err(|e| PyValueError::new_err(format!("state is not JSON: {e}")))?;
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            rt.agent_load_state(&id, state).await.map_err(to_py)
        })
    }

    /// The Python agent object of a local agent (made by its factory if needed).
    fn local_instance<'py>(
        &self,
        py: Python<'py>,
        agent_type: String,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = agent_id(&agent_type, &key)?;
        let rt = self.rt();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let (agent, class) = rt.local_agent(&id).await.map_err(to_py)?;
            let mut guard = downcast_agent::<PyAgent>(&id, agent, &class)
                .await
                .map_err(to_py)?;
            guard.instance().await
        })
    }

    /// Agents active in this process, as `(type, key)`.
    fn active_agents(&self) -> Vec<(String, String)> {
        self.runtime
            .active_agents()
            .into_iter()
            .map(|a| (a.agent_type().to_owned(), a.key().to_owned()))
            .collect()
    }

    /// Agent types of the network with their hosting runtime.
    fn agent_types(&self) -> Vec<(String, String)> {
        self.runtime.agent_types()
    }

    /// Counters: handled, failed, dead_lettered, active_agents, waiting_rpcs.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.runtime.stats();
        let d = PyDict::new(py);
        d.set_item("handled", s.handled)?;
        d.set_item("failed", s.failed)?;
        d.set_item("dead_lettered", s.dead_lettered)?;
        d.set_item("events_delivered_locally", s.events_delivered_locally)?;
        d.set_item("active_agents", s.active_agents)?;
        d.set_item("waiting_rpcs", s.waiting_rpcs)?;
        Ok(d)
    }
}

impl NativeRuntime {
    /// A runtime over `cfg` (validated by the runtime crate).
    fn from_worker_config(
        py: Python<'_>,
        cfg: WorkerConfig,
        file: Option<RuntimeConfigFile>,
    ) -> PyResult<Self> {
        // Inside the bridge's Tokio runtime: building may spawn helpers.
        let _guard = pyo3_async_runtimes::tokio::get_runtime().enter();
        let runtime = KafkaAgentRuntime::new(cfg).map_err(to_py)?;
        let locals: SharedLocals = Arc::new(OnceLock::new());
        let dispatcher = Dispatcher::new(Arc::clone(&locals))
            .map_err(|e| PyRuntimeError::new_err(format!("dispatcher socket pair: {e}")))?;
        let dispatcher = Py::new(py, dispatcher)?;
        Ok(Self {
            runtime,
            dispatcher: Arc::new(dispatcher),
            locals,
            classes: Mutex::default(),
            file,
            shutdown: CancellationToken::new(),
        })
    }
}
