//! What crosses Kafka, defined once for the runtime and the operator alike
//! (DESIGN.md §1 "one definition of every wire type and topic name"):
//!
//! - [`topics`]: topic and consumer group names of a prefix, and how each topic is
//!   created (partitions, compaction).
//! - [`registry`]: keys and values of the registry topic's records.
//! - [`wire`]: the record format of RPCs, replies and events (CloudEvents, Kafka
//!   binding, binary mode).
//! - [`partitioner`]: which partition a key goes to (Java's murmur2, as Kafka's own
//!   clients do).
//!
//! Nothing here does I/O; the operator links this without the runtime's server.

pub mod partitioner;
pub mod registry;
pub mod topics;
pub mod wire;
