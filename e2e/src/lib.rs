//! Harness for Switchboard's integration and end-to-end tests.
//!
//! Tests find the real infrastructure through the environment, which `make test`
//! sets after starting it (`e2e/infra/with-infra.sh`). When it is missing a test
//! fails with instructions: a test that skips would pass without testing anything.
//!
//! # Layout
//! - Finding the infrastructure: [`env`] (broker and API server from the environment),
//!   [`client_settings`] (librdkafka settings the benchmarks apply to every client),
//!   [`secured`] (the SASL_SSL/mTLS broker with ACLs, and setting up its principals).
//! - Runtime tests: [`net`] (an agent network with a fresh prefix per test), [`agents`]
//!   (the test agents and messages), [`binary`] (the `switchboard-runtime` binary as
//!   a subprocess), [`model_server`] (an OpenAI Chat Completions server with scripted
//!   replies, for the `llm` agent), [`membership`] (replicas joining and leaving under
//!   RPC and event load: stalls, partition take-over times, replays).
//! - Fault tests: [`faults`] (a broker of the test's own, to restart; Toxiproxy in
//!   front of one of its listeners), [`metadata_proxy`] (a Kafka protocol proxy whose
//!   Metadata responses can list no brokers: librdkafka's orphaned clients on demand).
//! - Cluster tests: [`system`] (the end-to-end suite's system under test), [`crds`]
//!   (installing the CRDs), [`node`] (the pods-as-processes node agent).
//! - [`wait`]: bounded waits, so no test hangs.

pub mod agents;
pub mod binary;
pub mod client_settings;
pub mod crds;
pub mod env;
pub mod faults;
pub mod membership;
pub mod metadata_proxy;
pub mod model_server;
pub mod net;
pub mod node;
pub mod secured;
pub mod system;
pub mod wait;
