//! Proves the test broker is a real Kafka: topics made through the admin API,
//! consumer groups that split partitions, per-key order.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, TopicPartitionList};
use switchboard_e2e::env;
use switchboard_runtime::KafkaConfig;
use switchboard_runtime::admin::{TopicAdmin, TopicChange, TopicSpec};

const RECORDS: usize = 1_000;
const KEYS: usize = 20;

/// (consumer index, key, per-key sequence number) for each record seen.
type Seen = Vec<(usize, String, usize)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_share_partitions_and_see_every_record_once() {
    let cfg = KafkaConfig::new(env::kafka_bootstrap());
    let topic = env::unique_name("smoke");
    let group = env::unique_name("smoke-group");

    let admin = TopicAdmin::new(&cfg, Duration::from_secs(10)).unwrap();
    let changes = admin
        .ensure_topics(&[TopicSpec::new(&topic, 3, 1)])
        .await
        .unwrap();
    assert_eq!(changes, vec![(topic.clone(), TopicChange::Created)]);
    let counts = admin
        .partition_counts(std::slice::from_ref(&topic))
        .await
        .unwrap();
    assert_eq!(
        counts.get(&topic),
        Some(&3),
        "the admin API must have made 3 partitions"
    );

    // Both consumers must hold partitions before anything is produced, so that no
    // rebalance hands a partition over mid-stream (which could replay records).
    let consumers: Vec<Arc<StreamConsumer>> = (0..2)
        .map(|_| {
            let c: StreamConsumer = cfg.consumer_config(&group).create().unwrap();
            c.subscribe(&[&topic]).unwrap();
            Arc::new(c)
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = consumers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(read_until_done(
                i,
                Arc::clone(c),
                Arc::clone(&done),
                Arc::clone(&received),
            ))
        })
        .collect();
    let started = Instant::now();
    loop {
        let held: Vec<usize> = consumers.iter().map(|c| assigned(c)).collect();
        if held.iter().all(|&n| n > 0) && held.iter().sum::<usize>() == 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "group never split 3 partitions: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let producer: FutureProducer = cfg.producer_config().create().unwrap();
    let mut next_seq = [0usize; KEYS];
    let mut sends = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let k = i % KEYS;
        let (key, value) = (format!("key-{k}"), format!("{}", next_seq[k]));
        next_seq[k] += 1;
        sends.push(
            producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
                .unwrap(),
        );
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait for all records, then a little longer so that duplicates would show.
    while received.load(Ordering::SeqCst) < RECORDS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::SeqCst);
    let mut seen: Seen = Vec::new();
    for r in readers {
        seen.extend(r.await.unwrap());
    }

    assert_eq!(
        seen.len(),
        RECORDS,
        "every record exactly once across the group"
    );
    let mut by_key: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (consumer, key, seq) in &seen {
        by_key
            .entry(key.clone())
            .or_default()
            .push((*consumer, *seq));
    }
    assert_eq!(by_key.len(), KEYS);
    for (key, seqs) in &by_key {
        let expected: Vec<usize> = (0..RECORDS / KEYS).collect();
        let got: Vec<usize> = seqs.iter().map(|(_, s)| *s).collect();
        assert_eq!(got, expected, "{key}: records out of order or missing");
        assert!(
            seqs.iter().all(|(c, _)| *c == seqs[0].0),
            "{key} was read by both consumers"
        );
    }
    let per_consumer: HashMap<usize, usize> =
        seen.iter().fold(HashMap::new(), |mut m, (c, _, _)| {
            *m.entry(*c).or_default() += 1;
            m
        });
    assert_eq!(
        per_consumer.len(),
        2,
        "both consumers must have received records: {per_consumer:?}"
    );

    admin.delete_topics(&[topic]).await.unwrap();
}

fn assigned(c: &StreamConsumer) -> usize {
    c.assignment()
        .map(|tpl: TopicPartitionList| tpl.count())
        .unwrap_or(0)
}

async fn read_until_done(
    index: usize,
    consumer: Arc<StreamConsumer>,
    done: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
) -> Seen {
    let mut seen = Vec::new();
    while !done.load(Ordering::SeqCst) {
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(msg)) => {
                let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
                let seq: usize = std::str::from_utf8(msg.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                seen.push((index, key, seq));
                received.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Err(e)) => panic!("consumer {index}: {e}"),
            Err(_) => {}
        }
    }
    seen
}
