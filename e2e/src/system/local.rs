//! Local mode: the operator binary and a node agent (pods as local processes), both
//! scoped to the suite's namespace, started and stopped by the suite.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio_util::sync::CancellationToken;

use super::LOCAL_IMAGE;
use crate::binary::{operator_binary, runtime_binary};
use crate::env;
use crate::node::{NodeAgent, NodeAgentConfig, test_pod_cidr};

/// What the suite runs itself when no real cluster manages pods.
pub(super) struct Local {
    operator: tokio::process::Child,
    operator_log: PathBuf,
    node_stop: CancellationToken,
    node_task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Local {
    /// Starts the operator binary and a node agent, both watching only `ns`.
    pub(super) async fn start(client: &Client, ns: &str) -> Self {
        let operator_log = std::env::temp_dir().join(env::unique_name("e2e-operator-log"));
        let operator = tokio::process::Command::new(operator_binary())
            .arg("run")
            .arg("--kubeconfig")
            .arg(env::kubeconfig_path())
            .args(["--namespace", ns, "--runtime-image", LOCAL_IMAGE])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&operator_log).expect("create the operator log"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard-operator");
        let state_dir = std::env::temp_dir().join(env::unique_name("e2e-node"));
        let mut config = NodeAgentConfig::new(
            env::unique_name("e2e-node"),
            &test_pod_cidr(),
            runtime_binary(),
            &state_dir,
        )
        .unwrap_or_else(|e| panic!("node agent config: {e:#}"));
        config.namespaces = vec![ns.to_owned()];
        eprintln!(
            "[e2e] namespace {ns}; operator log {}; pods under {} ({})",
            operator_log.display(),
            state_dir.join("pods").display(),
            config.pod_cidr
        );
        let node_stop = CancellationToken::new();
        let node_task = tokio::spawn(NodeAgent::new(client.clone(), config).run(node_stop.clone()));
        Self {
            operator,
            operator_log,
            node_stop,
            node_task,
        }
    }

    /// Stops the node agent (it must return Ok) and the operator (SIGTERM, exit 0).
    pub(super) async fn stop(mut self) {
        self.node_stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(60), self.node_task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the node agent did not stop cleanly: {result:?}"
        );
        let pid = self.operator.id().expect("the operator still runs");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.operator.wait()).await;
        assert!(
            matches!(exit, Ok(Ok(s)) if s.success()),
            "operator did not exit 0 on SIGTERM: {exit:?}\n{}",
            std::fs::read_to_string(&self.operator_log).unwrap_or_default()
        );
    }
}

/// Local mode: the process ids the node agent reports (`process://PID`).
pub fn process_ids(pods: &[Pod]) -> Vec<u32> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| {
            c.container_id
                .as_deref()?
                .strip_prefix("process://")?
                .parse()
                .ok()
        })
        .collect()
}
