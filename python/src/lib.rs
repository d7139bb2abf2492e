//! `switchboard._native`: the Switchboard runtime (Rust) inside a Python process.
//!
//! Layout, in reading order:
//! - [`runtime`]: `NativeRuntime`, one `KafkaAgentRuntime` per Python object; every
//!   method that touches Kafka returns an asyncio awaitable.
//! - [`bridge`]: `PyAgent`, Rust's `Agent` implemented by a Python "shell" object (see
//!   `switchboard/autogen/_shell.py`), and `HandlerContext`, the Rust message context
//!   handed to Python handlers so what they send is traced and checked as in Rust.
//! - [`dispatch`]: the queue that hands messages to the asyncio loop in batches.
//! - [`errors`]: `RuntimeError` -> `NativeError(kind, message)`; the Python layer maps
//!   kinds to AutoGen's exceptions.
//! - [`bench`]: RPC and publish loops driven from Rust (the benchmark's Rust figure).
//! - [`serve`]: config-file helpers (and `switchboard-runtime run` with Python agents).
//! - [`topic_tail`]: reads a topic from its beginning (dead letters; tests, debugging).
//!
//! The Kafka work (inbox, consumer groups, commits, registry, replies, state, dead
//! letters) is the runtime crate's; nothing here speaks the wire protocol.

mod bench;
mod bridge;
mod dispatch;
mod errors;
mod runtime;
mod serve;
mod topic_tail;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_tokio();
    m.add("NativeError", m.py().get_type::<errors::NativeError>())?;
    m.add_class::<runtime::NativeRuntime>()?;
    m.add_class::<bridge::HandlerContext>()?;
    m.add_function(wrap_pyfunction!(serve::load_config, m)?)?;
    m.add_function(wrap_pyfunction!(topic_tail::tail_topic, m)?)?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    m.add_function(wrap_pyfunction!(bench::bench_rpc, m)?)?;
    m.add_function(wrap_pyfunction!(bench::bench_publish, m)?)?;
    Ok(())
}

/// The Tokio runtime the Kafka runtime and the bridge run on. Worker threads:
/// `SWITCHBOARD_TOKIO_WORKERS`, default 2 (the asyncio loop is a thread of its own).
fn init_tokio() {
    let workers = std::env::var("SWITCHBOARD_TOKIO_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers).enable_all();
    pyo3_async_runtimes::tokio::init(builder);
}

/// Sends the Rust side's logs to stderr, filtered by `SWITCHBOARD_LOG` (or
/// `RUST_LOG`), else `default`. The first call in a process wins.
#[pyfunction]
fn init_logging(default: &str) {
    let filter = std::env::var("SWITCHBOARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    // A second import in the same process (or a host that set its own) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}
