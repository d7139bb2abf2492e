//! A Kafka protocol proxy on loopback that can make the broker answer Metadata
//! requests with no brokers, as a broker that is shutting down or starting does: the
//! answer after which librdkafka 2.12 drops every broker it knows, bootstrap servers
//! included, and never connects again (librdkafka issue #5301). Tests orphan clients
//! on demand with it.
//!
//! It forwards bytes both ways, reading the stream as Kafka frames (a 4-byte size,
//! then the frame): it notes each request's api key and version by correlation id and,
//! while [`MetadataProxy::set_zero_brokers`] is on, rewrites the brokers array of each
//! Metadata response (api key 3) to an empty one, every other byte unchanged. The
//! broker must advertise the proxy's address (`OwnBroker::start` with
//! `advertise_proxy`), or clients would leave the proxy after their first metadata.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Kafka's api key of Metadata.
const METADATA: i16 = 3;
/// The first Metadata version with flexible (compact, tagged) encoding.
const METADATA_FLEXIBLE: i16 = 9;
/// Larger frames are taken for a broken stream (Kafka's default limit is 100 MiB).
const MAX_FRAME: usize = 128 << 20;

/// A proxy bound to its port, not forwarding yet: the broker it forwards to has to
/// know the proxy's address first.
pub struct BoundProxy {
    listener: TcpListener,
    port: u16,
}

impl BoundProxy {
    /// Binds a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let port = listener.local_addr().expect("a bound address").port();
        Self { listener, port }
    }

    /// The address clients connect to, and the broker advertises: `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts forwarding every connection to `upstream` (`HOST:PORT`).
    pub fn forward_to(self, upstream: &str) -> MetadataProxy {
        let zero_brokers = Arc::new(AtomicBool::new(false));
        let rewritten = Arc::new(AtomicU64::new(0));
        let rewrite = Rewrite {
            zero_brokers: Arc::clone(&zero_brokers),
            rewritten: Arc::clone(&rewritten),
        };
        let address = self.address();
        let task = tokio::spawn(accept(self.listener, upstream.to_owned(), rewrite));
        MetadataProxy {
            address,
            zero_brokers,
            rewritten,
            task,
        }
    }
}

/// A running proxy; stops (with every connection through it) when dropped.
pub struct MetadataProxy {
    address: String,
    zero_brokers: Arc<AtomicBool>,
    rewritten: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MetadataProxy {
    /// The address clients bootstrap with.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// While on, Metadata responses list no brokers.
    pub fn set_zero_brokers(&self, on: bool) {
        self.zero_brokers.store(on, Ordering::SeqCst);
    }

    /// Metadata responses rewritten so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten.load(Ordering::SeqCst)
    }
}

impl Drop for MetadataProxy {
    fn drop(&mut self) {
        // The connection tasks are in the accept task's JoinSet: they go with it.
        self.task.abort();
    }
}

#[derive(Clone)]
struct Rewrite {
    zero_brokers: Arc<AtomicBool>,
    rewritten: Arc<AtomicU64>,
}

async fn accept(listener: TcpListener, upstream: String, rewrite: Rewrite) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(connection(client, upstream.clone(), rewrite.clone()));
                }
                Err(e) => eprintln!("metadata proxy: accept failed: {e}"),
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Requests in flight on one connection: correlation id -> (api key, version).
type InFlight = Arc<Mutex<HashMap<i32, (i16, i16)>>>;

async fn connection(client: TcpStream, upstream: String, rewrite: Rewrite) {
    let broker = match TcpStream::connect(&upstream).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("metadata proxy: cannot connect to {upstream}: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (broker_read, broker_write) = broker.into_split();
    let in_flight = InFlight::default();
    // Either direction ending (a side closed) ends the connection.
    tokio::select! {
        () = requests(client_read, broker_write, Arc::clone(&in_flight)) => {}
        () = responses(broker_read, client_write, in_flight, rewrite) => {}
    }
}

async fn read_frame(from: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    from.read_exact(&mut size).await.ok()?;
    let size = usize::try_from(i32::from_be_bytes(size)).ok()?;
    if size > MAX_FRAME {
        eprintln!("metadata proxy: a frame of {size} bytes; closing the connection");
        return None;
    }
    let mut frame = vec![0u8; size];
    from.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

async fn write_frame(to: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> Option<()> {
    let size = i32::try_from(frame.len()).ok()?;
    to.write_all(&size.to_be_bytes()).await.ok()?;
    to.write_all(frame).await.ok()
}

async fn requests(
    mut client: impl AsyncRead + Unpin,
    mut broker: impl AsyncWrite + Unpin,
    in_flight: InFlight,
) {
    while let Some(frame) = read_frame(&mut client).await {
        // Request header: api key (i16), api version (i16), correlation id (i32).
        if let (Some(key), Some(version), Some(id)) =
            (be_i16(&frame, 0), be_i16(&frame, 2), be_i32(&frame, 4))
        {
            lock(&in_flight).insert(id, (key, version));
        }
        if write_frame(&mut broker, &frame).await.is_none() {
            return;
        }
    }
}

async fn responses(
    mut broker: impl AsyncRead + Unpin,
    mut client: impl AsyncWrite + Unpin,
    in_flight: InFlight,
    rewrite: Rewrite,
) {
    while let Some(mut frame) = read_frame(&mut broker).await {
        let request = be_i32(&frame, 0).and_then(|id| lock(&in_flight).remove(&id));
        if let Some((METADATA, version)) = request
            && rewrite.zero_brokers.load(Ordering::SeqCst)
        {
            match without_brokers(&frame, version) {
                Some(new) => {
                    frame = new;
                    rewrite.rewritten.fetch_add(1, Ordering::SeqCst);
                }
                None => eprintln!(
                    "metadata proxy: cannot read a Metadata v{version} response; forwarded as is"
                ),
            }
        }
        if write_frame(&mut client, &frame).await.is_none() {
            return;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A reader over a response frame, for the encodings of the Kafka protocol.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    flexible: bool,
}

impl Cursor<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.b.len()).then(|| self.at = end)
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// An array's element count (compact: count + 1, 0 for null).
    fn array_len(&mut self) -> Option<usize> {
        if self.flexible {
            usize::try_from(self.uvarint()?.checked_sub(1)?).ok()
        } else {
            let n = be_i32(self.b, self.at)?;
            self.at += 4;
            usize::try_from(n).ok()
        }
    }

    /// A (nullable) string.
    fn skip_string(&mut self) -> Option<()> {
        let len = if self.flexible {
            match self.uvarint()? {
                0 => return Some(()), // null
                n => usize::try_from(n - 1).ok()?,
            }
        } else {
            let n = be_i16(self.b, self.at)?;
            self.at += 2;
            match usize::try_from(n) {
                Ok(n) => n,
                Err(_) => return Some(()), // -1: null
            }
        };
        self.skip(len)
    }

    /// Tagged fields (flexible versions only).
    fn skip_tags(&mut self) -> Option<()> {
        if !self.flexible {
            return Some(());
        }
        for _ in 0..self.uvarint()? {
            self.uvarint()?; // tag
            let size = usize::try_from(self.uvarint()?).ok()?;
            self.skip(size)?;
        }
        Some(())
    }
}

/// `frame`, a Metadata response of `version`, with an empty brokers array; `None`
/// when it cannot be read. Layout (Kafka protocol): correlation id, tagged fields
/// (v9+, response header v1), throttle_time_ms (v3+), then the brokers, each node_id,
/// host, port, rack (v1+), tagged fields (v9+); everything after is kept as is.
pub fn without_brokers(frame: &[u8], version: i16) -> Option<Vec<u8>> {
    let flexible = version >= METADATA_FLEXIBLE;
    let mut c = Cursor {
        b: frame,
        at: 4,
        flexible,
    };
    c.skip_tags()?;
    if version >= 3 {
        c.skip(4)?;
    }
    let brokers_at = c.at;
    for _ in 0..c.array_len()? {
        c.skip(4)?; // node_id
        c.skip_string()?; // host
        c.skip(4)?; // port
        if version >= 1 {
            c.skip_string()?; // rack
        }
        c.skip_tags()?;
    }
    let mut out = Vec::with_capacity(frame.len());
    out.extend_from_slice(&frame[..brokers_at]);
    if flexible {
        out.push(1); // compact array of 0 elements
    } else {
        out.extend_from_slice(&0i32.to_be_bytes());
    }
    out.extend_from_slice(&frame[c.at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::without_brokers;

    /// The tail of a response after the brokers: cluster id, controller id, topics...
    const REST: &[u8] = &[9, 9, 9, 9, 9];

    fn flexible_response(brokers: &[(i32, &str, i32, Option<&str>)]) -> Vec<u8> {
        let mut b = 7i32.to_be_bytes().to_vec(); // correlation id
        b.push(0); // header tags
        b.extend_from_slice(&0i32.to_be_bytes()); // throttle
        b.push(u8::try_from(brokers.len() + 1).unwrap());
        for (id, host, port, rack) in brokers {
            b.extend_from_slice(&id.to_be_bytes());
            b.push(u8::try_from(host.len() + 1).unwrap());
            b.extend_from_slice(host.as_bytes());
            b.extend_from_slice(&port.to_be_bytes());
            match rack {
                None => b.push(0),
                Some(r) => {
                    b.push(u8::try_from(r.len() + 1).unwrap());
                    b.extend_from_slice(r.as_bytes());
                }
            }
            // One tagged field of 2 bytes, to be skipped.
            b.extend_from_slice(&[1, 5, 2, 0xaa, 0xbb]);
        }
        b.extend_from_slice(REST);
        b
    }

    #[test]
    fn a_flexible_metadata_response_loses_its_brokers_and_keeps_the_rest() {
        let frame = flexible_response(&[(1, "127.0.0.1", 9092, None), (2, "h", 1, Some("r"))]);
        let out = without_brokers(&frame, 12).unwrap();
        let mut want = 7i32.to_be_bytes().to_vec();
        want.push(0);
        want.extend_from_slice(&0i32.to_be_bytes());
        want.push(1);
        want.extend_from_slice(REST);
        assert_eq!(out, want);
    }

    #[test]
    fn a_classic_metadata_response_loses_its_brokers_and_keeps_the_rest() {
        let mut frame = 7i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&0i32.to_be_bytes()); // throttle (v3+)
        frame.extend_from_slice(&1i32.to_be_bytes()); // one broker
        frame.extend_from_slice(&1i32.to_be_bytes());
        frame.extend_from_slice(&1i16.to_be_bytes());
        frame.push(b'h');
        frame.extend_from_slice(&9092i32.to_be_bytes());
        frame.extend_from_slice(&(-1i16).to_be_bytes()); // rack: null
        frame.extend_from_slice(REST);
        let out = without_brokers(&frame, 8).unwrap();
        let mut want = 7i32.to_be_bytes().to_vec();
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(REST);
        assert_eq!(out, want);
    }

    #[test]
    fn a_truncated_response_is_not_rewritten() {
        let frame = flexible_response(&[(1, "127.0.0.1", 9092, None)]);
        assert_eq!(without_brokers(&frame[..14], 12), None);
    }
}
