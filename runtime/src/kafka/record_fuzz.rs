//! Property-based fuzzing of record decoding: random records (headers and values, most
//! of them valid records with a few mutations, some entirely random) through the path a
//! consumed record takes — `Original::new`, `classify::inbox_record` /
//! `classify::events_record` (CloudEvents header parsing, RPC request and event
//! decoding), the reply channel's `Envelope::decode` and the registry's
//! `RegistryRecord::decode`. Properties: no panic; every record ends in a verdict, and a
//! dead letter names the header or limit at fault; an unmutated record decodes to what
//! was encoded.
//!
//! A hand-rolled generator (SplitMix64), bounded: `SWITCHBOARD_FUZZ_CASES` (default
//! 100,000, what `make test` runs) and `SWITCHBOARD_FUZZ_SECONDS` (no bound by default);
//! `SWITCHBOARD_FUZZ_SEED` replays a run (a failure prints its seed and case).
//!
//! It is over 500 lines, one idea: the generator, its mutations and the oracle that checks
//! each verdict against what the mutation broke belong together (test code only).
//! `make fuzz` runs many more cases, release-built with overflow checks on.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::{Message, Timestamp};

use super::classify::{self, EventsRecord, InboxRecord};
use crate::error::RuntimeError;
use crate::ids::{AgentId, TopicId};
use crate::message::Payload;
use crate::protocol::registry::RegistryRecord;
use crate::protocol::wire::{Body, Envelope, RpcFailure, header};
use crate::trace::TraceContext;

/// A small, fast, seedable generator (SplitMix64): reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A string from `alphabet`, 1..=max_len characters.
    fn string(&mut self, alphabet: &[&str], max_len: usize) -> String {
        let len = 1 + self.below(max_len);
        (0..len).map(|_| *self.pick(alphabet)).collect()
    }
}

const ID_CHARS: &[&str] = &[
    "a", "b", "z", "A", "0", "9", "_", "-", ".", "/", ":", "=", " ", "~", "%",
];
/// Characters ids may not contain (still valid UTF-8).
const BAD_CHARS: &[&str] = &["é", "\u{0}", "\n", "\u{7f}", "😀", ",", "\t"];

/// The header names decoding reads, the markers it checks, and a few it does not.
static NAMES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut names = header::DECODED.to_vec();
    names.extend([
        header::HANDOFF,
        header::DLQ_REASON,
        "ce_datacontenttype",
        "CE_ID",
        "x-custom",
        "",
    ]);
    names
});

/// Header values that have broken parsers before, or might.
const TRICKY: &[&str] = &[
    "",
    " ",
    "1.0",
    "1.0 ",
    "0.3",
    "publish",
    "rpc_request",
    "rpc_response",
    "error",
    "gossip",
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e3",
    "0000-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59.999Z",
    "99999999999-01-01T00:00:00Z",
    "-9223372036854775808-01-01T00:00:00Z",
    "2026-13-45T25:61:61.9999Z",
    "2026-11-18T18446744073709551615:00:00Z",
    "2026-11-18T11:06:40.é",
    "T",
    "Z",
    "--T::Z",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "00---",
    "echo",
    "echo/a",
    "counter,relay,,",
    ",,,",
    "a/b/c",
    "{}",
    "{\"kind\":\"handler\"}",
];

/// One generated record.
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// What was encoded, when the record is an unmutated encoding of it.
    intact: Option<Envelope>,
}

impl Record {
    fn message(&self, topic: &str, offset: i64) -> OwnedMessage {
        let headers = self
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |acc, (name, value)| {
                acc.insert(Header {
                    key: name.as_str(),
                    value: value.as_deref(),
                })
            });
        OwnedMessage::new(
            self.value.clone(),
            self.key.clone(),
            topic.to_owned(),
            Timestamp::NotAvailable,
            (offset % 7) as i32,
            offset,
            (!self.headers.is_empty()).then_some(headers),
        )
    }
}

/// Mostly valid ids (so decoding gets past them), sometimes not.
fn id_part(rng: &mut Rng, agent_type: bool) -> String {
    if rng.chance(12) {
        let mut s = rng.string(ID_CHARS, 8);
        s.push_str(rng.pick::<&str>(BAD_CHARS));
        return s;
    }
    if rng.chance(40) {
        return "x".repeat(if agent_type { 64 } else { 256 });
    }
    if agent_type {
        rng.pick(&["echo", "counter", "relay", "other", "a.b-c_d"])
            .to_string()
    } else {
        rng.string(ID_CHARS, 12)
    }
}

fn agent(rng: &mut Rng) -> Option<AgentId> {
    AgentId::new(id_part(rng, true), id_part(rng, false)).ok()
}

fn payload(rng: &mut Rng) -> Payload {
    let data = if rng.chance(3) {
        rng.bytes(64)
    } else {
        format!("{{\"n\":{}}}", rng.next() % 1000).into_bytes()
    };
    Payload {
        type_name: rng.string(ID_CHARS, 10),
        content_type: rng
            .pick(&["application/json", "application/octet-stream", ""])
            .to_string(),
        data: Bytes::from(data),
    }
}

/// A valid envelope of a random kind.
fn envelope(rng: &mut Rng, now_ms: u64) -> Envelope {
    let body = match rng.below(5) {
        0 | 1 => Body::Event {
            topic: TopicId::new(
                rng.pick(&["alerts", "news", "a:b=c"]).to_string(),
                id_part(rng, false),
            )
            .unwrap_or_else(|_| TopicId::new("alerts", "k").expect("valid topic")),
            sender: agent(rng),
            recipient_types: match rng.below(3) {
                0 => vec![],
                1 => vec!["echo".into()],
                _ => vec!["counter".into(), "relay".into(), "other".into()],
            },
            payload: payload(rng),
        },
        2 => Body::Request {
            request_id: rng.string(ID_CHARS, 36),
            recipient: agent(rng).unwrap_or_else(|| AgentId::new("echo", "a").expect("valid id")),
            sender: agent(rng),
            reply_to: rng.string(ID_CHARS, 20),
            // Past, near and far future deadlines.
            deadline_ms: match rng.below(3) {
                0 => now_ms - 1 - rng.next() % 1_000_000,
                1 => now_ms + rng.next() % 60_000,
                _ => rng.next(),
            },
            payload: payload(rng),
        },
        3 => Body::Response {
            request_id: rng.string(ID_CHARS, 36),
            payload: rng.chance(2).then(|| payload(rng)),
        },
        _ => Body::Error {
            request_id: rng.string(ID_CHARS, 36),
            failure: RpcFailure {
                kind: "handler".into(),
                error: rng.string(ID_CHARS, 20),
                message_type: None,
            },
        },
    };
    let source = match &body {
        Body::Event { topic, .. } => topic.source().to_owned(),
        _ => rng.string(ID_CHARS, 20),
    };
    // From the generator (not `new_root`), so a case replays exactly from its seed.
    let trace = rng.chance(2).then(|| TraceContext {
        trace_id: (rng.next() as u128 | 1 | (u128::from(rng.next()) << 64)).to_be_bytes(),
        span_id: (rng.next() | 1).to_be_bytes(),
        flags: rng.next() as u8,
        tracestate: rng.chance(3).then(|| rng.string(ID_CHARS, 20)),
    });
    Envelope {
        id: rng.string(ID_CHARS, 36),
        source,
        // Times the encoder writes are whole milliseconds since 1970.
        time_ms: rng.chance(4).then(|| rng.next() % 253_402_300_800_000),
        trace,
        body,
    }
}

fn header_value(rng: &mut Rng) -> Option<Vec<u8>> {
    match rng.below(6) {
        0 => None,
        1 => Some(rng.bytes(40)),
        2 => Some(rng.string(ID_CHARS, 30).into_bytes()),
        _ => Some(rng.pick(TRICKY).as_bytes().to_vec()),
    }
}

fn header_name(rng: &mut Rng) -> String {
    if rng.chance(8) {
        rng.string(ID_CHARS, 12)
    } else {
        rng.pick(&NAMES).to_string()
    }
}

/// A record: an encoded envelope with 0-4 mutations, or random headers and value.
fn record(rng: &mut Rng, now_ms: u64) -> Record {
    if rng.chance(10) {
        let headers = (0..rng.below(12))
            .map(|_| (header_name(rng), header_value(rng)))
            .collect();
        return Record {
            key: rng.chance(2).then(|| rng.bytes(16)),
            value: rng.chance(4).then(|| rng.bytes(128)),
            headers,
            intact: None,
        };
    }
    let env = envelope(rng, now_ms);
    let (encoded, value) = env.encode();
    let mut headers: Vec<(String, Option<Vec<u8>>)> = encoded
        .iter()
        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        .collect();
    let mut value = Some(value.to_vec());
    let mutations = [0, 0, 1, 1, 2, 3, 4][rng.below(7)];
    for _ in 0..mutations {
        let at = rng.below(headers.len().max(1));
        match rng.below(8) {
            0 if !headers.is_empty() => {
                headers.remove(at);
            }
            1 if !headers.is_empty() => {
                let (name, _) = headers[at].clone();
                headers.insert(rng.below(headers.len() + 1), (name, header_value(rng)));
            }
            2 if !headers.is_empty() => headers[at].1 = header_value(rng),
            3 if !headers.is_empty() => headers[at].0 = header_name(rng),
            4 => headers.insert(
                rng.below(headers.len() + 1),
                (header_name(rng), header_value(rng)),
            ),
            5 => value = rng.chance(3).then(|| rng.bytes(256)),
            6 if !headers.is_empty() => {
                let other = rng.below(headers.len());
                headers.swap(at, other);
            }
            _ => {
                if let Some((_, Some(v))) = headers.get_mut(at) {
                    v.truncate(rng.below(v.len() + 1));
                }
            }
        }
    }
    Record {
        key: rng.chance(2).then(|| rng.bytes(16)),
        value,
        headers,
        intact: (mutations == 0).then_some(env),
    }
}

/// Whether a dead-letter reason says what is wrong: a header decoding reads, or the
/// size limit, or the kind of record.
fn names_its_cause(reason: &str) -> bool {
    let cause = reason
        .strip_prefix("undecodable record: ")
        .or_else(|| reason.strip_prefix("undecodable event: "));
    match cause {
        Some(c) => {
            (c.starts_with("missing header ") || c.starts_with("invalid header "))
                && header::DECODED.iter().any(|n| c.contains(n))
        }
        None => {
            reason.contains("exceeds maxMessageBytes")
                || reason == "an RPC reply does not belong in an inbox"
        }
    }
}

const HOSTED: &[&str] = &["echo", "counter"];

fn hosts(t: &str) -> bool {
    HOSTED.contains(&t)
}

/// The events worker's subscription lookup: `alerts` goes to this runtime's `echo`
/// and `counter`, `news` to `counter`, everything else elsewhere.
fn recipient_types(topic_type: &str) -> Vec<String> {
    match topic_type {
        "alerts" => vec!["echo".into(), "counter".into()],
        "news" => vec!["counter".into()],
        _ => vec![],
    }
}

/// Runs one record through every decode path and checks the properties; returns the
/// verdicts, for the tally.
fn check(rec: &Record, offset: i64, now_ms: u64, max_bytes: usize) -> [&'static str; 2] {
    let message = rec.message("p.rt.inbox", offset);
    let pairs: Vec<(&str, Option<&[u8]>)> = rec
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_deref()))
        .collect();
    let decoded = Envelope::decode_pairs(
        pairs.iter().copied(),
        Bytes::from(rec.value.clone().unwrap_or_default()),
    );
    if let Some(env) = &rec.intact {
        assert_eq!(decoded.as_ref(), Ok(env), "an intact record round-trips");
    }
    // The reply channel decodes through librdkafka's header view; same answer.
    let via_headers = Envelope::decode(message.headers(), rec.value.as_deref());
    assert_eq!(via_headers, decoded, "both decode paths agree");

    let inbox = match classify::inbox_record(&message, max_bytes, now_ms, hosts) {
        InboxRecord::Marker(m) => {
            assert_eq!(rec.headers[0].0, header::HANDOFF);
            assert_eq!(Some(m), rec.headers[0].1.as_deref());
            "marker"
        }
        InboxRecord::Event(event, original) => {
            assert_eq!(original.offset(), offset);
            let Ok(Envelope {
                body: Body::Event { topic, .. },
                ..
            }) = &decoded
            else {
                panic!("an event verdict for a record that is not an event: {decoded:?}");
            };
            assert_eq!(&event.topic, topic);
            "inbox event"
        }
        InboxRecord::Request(request, _) => {
            assert!(hosts(request.recipient.agent_type()));
            assert!(request.deadline_ms >= now_ms);
            assert!(rec.value.as_ref().map_or(0, Vec::len) <= max_bytes);
            "request"
        }
        InboxRecord::Reject(rejection, _) => {
            match &rejection.error {
                RuntimeError::Timeout { .. } => {}
                RuntimeError::UnknownAgentType(t) => assert!(!hosts(t)),
                other => panic!("unexpected rejection {other:?}"),
            }
            "reject"
        }
        InboxRecord::DeadLetter {
            original,
            reason,
            rejection,
        } => {
            assert!(names_its_cause(&reason), "reason names no cause: {reason}");
            // The dead letter keeps the record exactly as it came.
            assert_eq!(original.payload(), rec.value.as_deref());
            assert_eq!(original.key(), rec.key.as_deref());
            let kept: Vec<_> = original.headers().collect();
            assert_eq!(kept, pairs);
            if rejection.is_some() {
                assert!(matches!(
                    decoded,
                    Ok(Envelope {
                        body: Body::Request { .. },
                        ..
                    })
                ));
            }
            "dead letter"
        }
    };

    let events = match classify::events_record(&message, recipient_types) {
        EventsRecord::NotOurs => "not ours",
        EventsRecord::NotAnEvent => {
            assert!(matches!(&decoded, Ok(e) if !matches!(e.body, Body::Event { .. })));
            "not an event"
        }
        EventsRecord::DeadLetter { reason, .. } => {
            assert!(decoded.is_err());
            assert!(names_its_cause(&reason), "reason names no cause: {reason}");
            "events dead letter"
        }
        EventsRecord::Deliver { delivery, key, .. } => {
            let Body::Event {
                topic,
                recipient_types,
                ..
            } = &delivery.body
            else {
                panic!("a delivery that is not an event");
            };
            assert!(!recipient_types.is_empty());
            assert_eq!(key, topic.source().as_bytes());
            "deliver"
        }
    };

    // The registry decodes keys and JSON values of any shape without panicking.
    let _ = RegistryRecord::decode(rec.key.as_deref().unwrap_or_default(), rec.value.as_deref());
    [inbox, events]
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?} is not a number: {e}")),
    )
}

#[test]
fn random_records_are_handled_or_dead_lettered_never_a_panic() {
    let cases = env_number("SWITCHBOARD_FUZZ_CASES").unwrap_or(100_000);
    let time_bound = env_number("SWITCHBOARD_FUZZ_SECONDS").map(Duration::from_secs);
    let seed = env_number("SWITCHBOARD_FUZZ_SEED").unwrap_or(0x5EED_2026);
    let now_ms = 1_795_000_000_000;
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ran = 0;
    for case in 0..cases {
        if time_bound.is_some_and(|t| started.elapsed() >= t) {
            break;
        }
        // Each case from its own generator state, so one case replays alone.
        let case_seed = rng.next();
        let mut case_rng = Rng(case_seed);
        let rec = record(&mut case_rng, now_ms);
        let max_bytes = *case_rng.pick(&[16, 1024, 1 << 20]);
        let verdicts = std::panic::catch_unwind(AssertUnwindSafe(|| {
            check(&rec, case as i64, now_ms, max_bytes)
        }))
        .unwrap_or_else(|_| {
            panic!(
                "case {case} (SWITCHBOARD_FUZZ_SEED={seed}, case seed {case_seed}) failed; \
                     headers {:?}, value {:?}",
                rec.headers, rec.value
            )
        });
        for v in verdicts {
            *tally.entry(v).or_default() += 1;
        }
        ran += 1;
    }
    println!(
        "record fuzz: {ran} cases in {:.1?} (seed {seed}): {tally:?}",
        started.elapsed()
    );
    // The generator reaches every verdict, or the fuzzing proves less than it says.
    if ran >= 10_000 {
        for verdict in [
            "marker",
            "inbox event",
            "request",
            "reject",
            "dead letter",
            "not ours",
            "not an event",
            "events dead letter",
            "deliver",
        ] {
            assert!(
                tally.contains_key(verdict),
                "no case reached {verdict}: {tally:?}"
            );
        }
    }
}

#[test]
fn times_and_numbers_past_any_calendar_are_dead_letters_or_ignored_not_panics() {
    // Found by the fuzzer: `ce_time` before 1970 or with huge fields overflowed.
    let env = Envelope {
        time_ms: None,
        ..envelope(&mut Rng(1), 1_795_000_000_000)
    };
    let (encoded, value) = env.encode();
    for time in TRICKY {
        let headers = encoded.clone().insert(Header {
            key: header::TIME,
            value: Some(*time),
        });
        let decoded = Envelope::decode(Some(&headers), Some(&value)).expect("time is optional");
        assert_eq!(decoded.body, env.body, "{time}");
    }
}
