//! `producer.KEY=VALUE` / `consumer.KEY=VALUE` arguments: librdkafka properties the
//! benchmarks apply to every client they create, ours and the raw baselines alike.

use switchboard_runtime::KafkaConfig;

/// Adds one `producer.KEY=VALUE` or `consumer.KEY=VALUE` setting to `kafka`.
pub fn apply(kafka: &mut KafkaConfig, setting: &str) -> Result<(), String> {
    let bad = || format!("{setting:?}: expected producer.KEY=VALUE or consumer.KEY=VALUE");
    let (client, rest) = setting.split_once('.').ok_or_else(bad)?;
    let (key, value) = rest.split_once('=').ok_or_else(bad)?;
    if key.is_empty() {
        return Err(bad());
    }
    let map = match client {
        "producer" => &mut kafka.producer,
        "consumer" => &mut kafka.consumer,
        _ => return Err(bad()),
    };
    map.insert(key.to_owned(), value.to_owned());
    Ok(())
}

/// The settings of `kafka` as arguments [`apply`] reads back (for a child process).
pub fn to_args(kafka: &KafkaConfig) -> Vec<String> {
    let producer = kafka
        .producer
        .iter()
        .map(|(k, v)| format!("producer.{k}={v}"));
    let consumer = kafka
        .consumer
        .iter()
        .map(|(k, v)| format!("consumer.{k}={v}"));
    producer.chain(consumer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_bad_ones_are_named() {
        let mut kafka = KafkaConfig::new("127.0.0.1:9092");
        apply(&mut kafka, "producer.linger.ms=5").unwrap();
        apply(&mut kafka, "consumer.fetch.wait.max.ms=10").unwrap();
        assert_eq!(
            kafka.producer.get("linger.ms").map(String::as_str),
            Some("5")
        );
        let mut copy = KafkaConfig::new("127.0.0.1:9092");
        for arg in to_args(&kafka) {
            apply(&mut copy, &arg).unwrap();
        }
        assert_eq!(copy.producer, kafka.producer);
        assert_eq!(copy.consumer, kafka.consumer);
        for bad in [
            "linger.ms=5",
            "admin.x=1",
            "producer.linger.ms",
            "producer.=1",
        ] {
            let err = apply(&mut kafka, bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
