//! `tail_topic`: the records of one topic, from its beginning (dead letters, for
//! tests and debugging). Reading only; everything else Kafka is the runtime's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One record: `(partition, offset, key, value, headers)`.
type Record = (
    i32,
    i64,
    Option<Py<PyBytes>>,
    Option<Py<PyBytes>>,
    HashMap<String, String>,
);

/// Reads `topic` from the beginning until `count` records are read or `timeout`
/// seconds pass; returns what it read.
#[pyfunction]
#[pyo3(signature = (bootstrap_servers, topic, count, timeout=10.0))]
pub fn tail_topic(
    py: Python<'_>,
    bootstrap_servers: &str,
    topic: &str,
    count: usize,
    timeout: f64,
) -> PyResult<Vec<Record>> {
    let err = |e: rdkafka::error::KafkaError| PyValueError::new_err(format!("{topic}: {e}"));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", "switchboard-tail")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    let raw = py.detach(|| -> Result<Vec<_>, rdkafka::error::KafkaError> {
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let mut tpl = TopicPartitionList::new();
        for t in meta.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        while out.len() < count && Instant::now() < deadline {
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m?;
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                            (h.key.to_owned(), v.unwrap_or_default())
                        })
                        .collect::<HashMap<_, _>>()
                })
                .unwrap_or_default();
            out.push((
                m.partition(),
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                headers,
            ));
        }
        Ok(out)
    });
    let raw = raw.map_err(err)?;
    Ok(raw
        .into_iter()
        .map(|(p, o, k, v, h)| {
            (
                p,
                o,
                k.map(|k| PyBytes::new(py, &k).unbind()),
                v.map(|v| PyBytes::new(py, &v).unbind()),
                h,
            )
        })
        .collect())
}
