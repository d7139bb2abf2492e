//! A consumed record kept after the poll that read it, for dead letters (key, value
//! and headers exactly as they came) and spans (where it was read).

use std::ops::Range;

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::message::Headers;

/// Where a header's name and value are in [`Original`]'s buffer.
type HeaderAt = (Range<usize>, Option<Range<usize>>);

/// Bytes of name and value per header to reserve: our records' headers average
/// about 35 (a dozen or so per record, ids and trace context the longest).
const HEADER_BYTES_GUESS: usize = 48;

/// One consumed record copied into a single buffer. librdkafka's own copy
/// (`BorrowedMessage::detach`) allocates once per header, and every record carries a
/// dozen; this is one allocation for the bytes and one for the header index.
pub(crate) struct Original {
    partition: i32,
    offset: i64,
    /// The topic name, key, value, then each header's name and value.
    bytes: Bytes,
    topic: Range<usize>,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    headers: Box<[HeaderAt]>,
}

impl Original {
    /// Copies `message`.
    pub(crate) fn new(message: &impl Message) -> Self {
        // One pass over the headers: each one read from librdkafka is a C call, a
        // `strlen` and a UTF-8 check, so they are not read once to size the buffer
        // and again to copy. The buffer is sized for typical header bytes instead and
        // grows (rarely) when a record carries more.
        let headers = message.headers();
        let count = headers.map_or(0, |h| h.count());
        let (key, value) = (message.key(), message.payload());
        let mut bytes = Vec::with_capacity(
            message.topic().len()
                + key.map_or(0, <[u8]>::len)
                + value.map_or(0, <[u8]>::len)
                + count * HEADER_BYTES_GUESS,
        );
        let mut put = |b: &[u8]| {
            let start = bytes.len();
            bytes.extend_from_slice(b);
            start..bytes.len()
        };
        let topic = put(message.topic().as_bytes());
        let key = key.map(&mut put);
        let value = value.map(&mut put);
        let mut index = Vec::with_capacity(count);
        if let Some(h) = headers {
            index.extend(
                h.iter()
                    .map(|h| (put(h.key.as_bytes()), h.value.map(&mut put))),
            );
        }
        Self {
            partition: message.partition(),
            offset: message.offset(),
            bytes: Bytes::from(bytes),
            topic,
            key,
            value,
            headers: index.into_boxed_slice(),
        }
    }

    fn str(&self, range: &Range<usize>) -> &str {
        // Copied from `&str`s, so always UTF-8.
        std::str::from_utf8(&self.bytes[range.clone()]).unwrap_or_default()
    }

    /// The topic it was read from.
    pub(crate) fn topic(&self) -> &str {
        self.str(&self.topic)
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.offset
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.key.clone().map(|r| &self.bytes[r])
    }

    pub(crate) fn payload(&self) -> Option<&[u8]> {
        self.value.clone().map(|r| &self.bytes[r])
    }

    /// The value, sharing this copy's buffer (empty when the record has none).
    pub(crate) fn payload_bytes(&self) -> Bytes {
        self.value
            .clone()
            .map(|r| self.bytes.slice(r))
            .unwrap_or_default()
    }

    /// Header names and values, in record order.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers
            .iter()
            .map(|(name, value)| (self.str(name), value.clone().map(|r| &self.bytes[r])))
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;

    #[test]
    fn keeps_every_part_of_the_record() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("1"),
            })
            .insert(Header::<&[u8]> {
                key: "empty",
                value: None,
            })
            .insert(Header {
                key: "ce_id",
                value: Some("2"),
            });
        let message = OwnedMessage::new(
            Some(b"{\"n\":1}".to_vec()),
            Some(b"k".to_vec()),
            "p.events".into(),
            Timestamp::NotAvailable,
            2,
            41,
            Some(headers),
        );
        let o = Original::new(&message);
        assert_eq!(o.topic(), "p.events");
        assert_eq!((o.partition(), o.offset()), (2, 41));
        assert_eq!(o.key(), Some(&b"k"[..]));
        assert_eq!(o.payload(), Some(&b"{\"n\":1}"[..]));
        assert_eq!(&o.payload_bytes()[..], b"{\"n\":1}");
        let h: Vec<_> = o.headers().collect();
        assert_eq!(
            h,
            vec![
                ("ce_id", Some(&b"1"[..])),
                ("empty", None),
                ("ce_id", Some(&b"2"[..]))
            ]
        );
    }

    #[test]
    fn a_record_without_key_value_or_headers() {
        let message =
            OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        let o = Original::new(&message);
        assert_eq!((o.key(), o.payload()), (None, None));
        assert!(o.payload_bytes().is_empty());
        assert_eq!(o.headers().count(), 0);
    }
}
