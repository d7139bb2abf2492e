//! Harness for Switchboard's integration and end-to-end tests.
//!
//! Tests find the real infrastructure through the environment, which `make test`
//! sets after starting it (`e2e/infra/with-infra.sh`). When it is missing a test
//! fails with instructions: a test that skips would pass without testing anything.

pub mod agents;
pub mod binary;
pub mod client_settings;
pub mod crds;
pub mod env;
pub mod net;
pub mod node;
pub mod system;
pub mod wait;
