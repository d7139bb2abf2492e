//! Measuring helpers for `python/bench`: the same runtime driven from Rust, so the
//! benchmark prints the Rust figure beside the Python one from the same run.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use switchboard_runtime::context::{OutgoingEvent, OutgoingRpc};
use switchboard_runtime::{AgentId, AgentRuntime, Payload, TopicId};

use crate::errors::to_py;
use crate::runtime::NativeRuntime;

fn value_err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Sends `count` RPCs one after the other from Rust; resolves to each one's
/// round trip in microseconds.
#[pyfunction]
pub fn bench_rpc<'py>(
    py: Python<'py>,
    runtime: PyRef<'py, NativeRuntime>,
    type_name: String,
    data: Vec<u8>,
    recipient: (String, String),
    count: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let recipient = AgentId::new(recipient.0, recipient.1).map_err(value_err)?;
    let payload = Payload {
        type_name,
        content_type: switchboard_runtime::message::JSON.to_owned(),
        data: Bytes::from(data),
    };
    let rt = runtime.kafka().clone();
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let start = Instant::now();
            rt.transport()
                .send(OutgoingRpc {
                    payload: payload.clone(),
                    recipient: recipient.clone(),
                    sender: None,
                    timeout: Some(Duration::from_secs(30)),
                    cancellation: None,
                    trace: None,
                    message_id: None,
                })
                .await
                .map_err(to_py)?;
            out.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        Ok(out)
    })
}

/// Publishes `count` events from Rust, round-robin over `keys` topic sources,
/// `in_flight` at a time; resolves to the seconds it took until Kafka had all.
#[pyfunction]
#[pyo3(signature = (runtime, type_name, data, topic_type, keys, count, in_flight=1000))]
#[allow(clippy::too_many_arguments)]
pub fn bench_publish<'py>(
    py: Python<'py>,
    runtime: PyRef<'py, NativeRuntime>,
    type_name: String,
    data: Vec<u8>,
    topic_type: String,
    keys: usize,
    count: usize,
    in_flight: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let topics = (0..keys.max(1))
        .map(|k| TopicId::new(&topic_type, format!("k{k}")).map_err(value_err))
        .collect::<PyResult<Vec<_>>>()?;
    let payload = Payload {
        type_name,
        content_type: switchboard_runtime::message::JSON.to_owned(),
        data: Bytes::from(data),
    };
    let rt = runtime.kafka().clone();
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let start = Instant::now();
        let sends = futures::stream::iter(0..count).map(|i| {
            let event = OutgoingEvent {
                payload: payload.clone(),
                topic: topics[i % topics.len()].clone(),
                sender: None,
                trace: None,
                message_id: None,
            };
            let rt = rt.clone();
            async move { rt.transport().publish(event).await }
        });
        let mut sends = sends.buffer_unordered(in_flight.max(1));
        while let Some(r) = sends.next().await {
            r.map_err(to_py)?;
        }
        Ok(start.elapsed().as_secs_f64())
    })
}
