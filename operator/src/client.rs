//! Building a Kubernetes client: in-cluster, from `KUBECONFIG`, or from a named file.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What went wrong.
        source: kube::config::KubeconfigError,
    },
    /// No usable configuration was found.
    #[error("no Kubernetes configuration found (in-cluster or KUBECONFIG): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The configuration could not produce a client (e.g. bad TLS material).
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster in `kubeconfig`, or the inferred one (in-cluster service
/// account, then `KUBECONFIG`, then `~/.kube/config`) when `None`.
pub async fn from_kubeconfig(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
