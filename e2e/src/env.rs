//! Where the real broker and API server are, from the environment.

use std::path::PathBuf;

/// Environment variable holding the Kafka bootstrap address for tests.
pub const KAFKA_VAR: &str = "SWITCHBOARD_TEST_KAFKA";

const HOW_TO_START: &str = "start the test infrastructure first: `make test` does it all, or run \
     `e2e/infra/kafka.sh start && e2e/infra/cluster.sh start` and export \
     SWITCHBOARD_TEST_KAFKA=$(e2e/infra/kafka.sh bootstrap) KUBECONFIG=$(e2e/infra/cluster.sh kubeconfig)";

/// The bootstrap address of the test broker.
///
/// # Panics
/// When `SWITCHBOARD_TEST_KAFKA` is unset, with instructions to start the broker.
pub fn kafka_bootstrap() -> String {
    match std::env::var(KAFKA_VAR) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("{KAFKA_VAR} is not set: {HOW_TO_START}"),
    }
}

/// The kubeconfig of the test cluster.
///
/// # Panics
/// When `KUBECONFIG` is unset or names a missing file, with instructions.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("KUBECONFIG").map(PathBuf::from) {
        Some(p) if p.is_file() => p,
        Some(p) => panic!(
            "KUBECONFIG names {} which does not exist: {HOW_TO_START}",
            p.display()
        ),
        None => panic!("KUBECONFIG is not set: {HOW_TO_START}"),
    }
}

/// A kube client for the test cluster.
///
/// # Panics
/// When the kubeconfig is missing or unusable.
pub async fn kube_client() -> kube::Client {
    let path = kubeconfig_path();
    switchboard_operator::client::from_kubeconfig(Some(&path))
        .await
        .unwrap_or_else(|e| panic!("cannot build a client from {}: {e:#}", path.display()))
}

/// A name unique to this test run, for topics and namespaces that must not collide
/// with a previous run's leftovers.
pub fn unique_name(stem: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{stem}-{}", &id[..8])
}
