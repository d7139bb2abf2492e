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

/// Environment variable that, set to `1`, makes the end-to-end suite drive a real
/// cluster (e2e/kind/run.sh) instead of starting the operator and a node agent itself.
pub const EXTERNAL_VAR: &str = "SWITCHBOARD_E2E_EXTERNAL";

/// Whether the end-to-end suite runs against a real cluster whose operator (installed
/// by the chart) and kubelets manage the runtime pods: `SWITCHBOARD_E2E_EXTERNAL=1`.
/// Otherwise (`make test`) the suite starts the operator binary and a node agent.
pub fn external_cluster() -> bool {
    std::env::var(EXTERNAL_VAR).is_ok_and(|v| v.trim() == "1")
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

/// The kubectl to run: `$KUBECTL`, else the one `e2e/infra/cluster.sh` built (the
/// API server's own version).
///
/// # Panics
/// When `cluster.sh bindir` fails.
pub fn kubectl() -> &'static std::path::Path {
    static KUBECTL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KUBECTL.get_or_init(|| {
        if let Some(k) = std::env::var_os("KUBECTL") {
            return PathBuf::from(k);
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/cluster.sh");
        let out = std::process::Command::new(&script)
            .arg("bindir")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} bindir failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("kubectl")
    })
}

/// Creates a fresh namespace named after `stem` and returns its name.
///
/// # Panics
/// When the API server refuses it.
pub async fn create_namespace(client: &kube::Client, stem: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;
    let name = unique_name(stem);
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    kube::Api::<Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

/// Sends this process's logs to the test output, filtered by `RUST_LOG` (default:
/// warnings). Safe to call more than once.
pub fn init_test_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
