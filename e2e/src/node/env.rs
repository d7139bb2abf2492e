//! A container's environment and arguments as kubelet computes them: `envFrom`, then
//! `env` in order (`value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef`), `$(VAR)`
//! expanded against the variables defined before; then paths under a `mountPath`
//! rewritten to where the volume really is on this machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, Secret, ServiceAccount, ServiceAccountTokenProjection,
};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

/// Reads ConfigMaps and Secrets of one namespace, each at most once per container start.
pub struct Sources {
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    accounts: Api<ServiceAccount>,
    cm_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
    secret_cache: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    /// Sources of `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            config_maps: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client.clone(), namespace),
            accounts: Api::namespaced(client, namespace),
            cm_cache: BTreeMap::new(),
            secret_cache: BTreeMap::new(),
        }
    }

    /// The data of ConfigMap `name` (text and binary keys), `None` when it is missing.
    pub async fn config_map(
        &mut self,
        name: &str,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        if !self.cm_cache.contains_key(name) {
            let cm = self
                .config_maps
                .get_opt(name)
                .await
                .context("reading a ConfigMap")?;
            let data = cm.map(|cm| {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                data
            });
            self.cm_cache.insert(name.to_owned(), data);
        }
        Ok(self.cm_cache.get(name).cloned().flatten())
    }

    /// The decoded data of Secret `name`, `None` when it is missing.
    pub async fn secret(&mut self, name: &str) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        if !self.secret_cache.contains_key(name) {
            let s = self
                .secrets
                .get_opt(name)
                .await
                .context("reading a Secret")?;
            let data = s.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            });
            self.secret_cache.insert(name.to_owned(), data);
        }
        Ok(self.secret_cache.get(name).cloned().flatten())
    }
}

impl Sources {
    /// A token of the pod's ServiceAccount for a projected volume, bound to the pod.
    pub async fn token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> anyhow::Result<String> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "spec": {
                "audiences": projection.audience.iter().collect::<Vec<_>>(),
                "expirationSeconds": projection.expiration_seconds.unwrap_or(3600),
                "boundObjectRef": { "apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid() },
            },
        }))?;
        let issued = self
            .accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token of ServiceAccount {account:?}"))?;
        Ok(issued.status.and_then(|s| s.token).unwrap_or_default())
    }
}

/// Where each `mountPath` of a container really is: `(mountPath, directory)`.
pub type MountMap = Vec<(String, PathBuf)>;

/// The environment of `container`, in definition order, names unique (later wins).
///
/// # Errors
/// When a referenced ConfigMap, Secret or key is missing and not `optional`, or the
/// API cannot be read.
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    sources: &mut Sources,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            let data = sources.config_map(&r.name).await?;
            required(data, r.optional, "ConfigMap", &r.name)?
        } else if let Some(r) = &from.secret_ref {
            let data = sources.secret(&r.name).await?;
            required(data, r.optional, "Secret", &r.name)?
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            set(&mut vars, format!("{prefix}{k}"), v);
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            let found = if let Some(r) = &from.config_map_key_ref {
                let data = sources.config_map(&r.name).await?;
                key_of(data, &r.key, r.optional, "ConfigMap", &r.name)?
            } else if let Some(r) = &from.secret_key_ref {
                let data = sources.secret(&r.name).await?;
                key_of(data, &r.key, r.optional, "Secret", &r.name)?
            } else if let Some(f) = &from.field_ref {
                Some(field(pod, &f.field_path, pod_ip)?)
            } else {
                bail!(
                    "env {}: only configMapKeyRef, secretKeyRef and fieldRef are supported",
                    e.name
                );
            };
            match found {
                Some(v) => v,
                None => continue,
            }
        } else {
            expand(e.value.as_deref().unwrap_or_default(), &vars)
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

fn set(vars: &mut Vec<(String, String)>, name: String, value: String) {
    vars.retain(|(n, _)| *n != name);
    vars.push((name, value));
}

/// `data` when present; empty when the reference is optional; else an error naming it.
pub(super) fn required(
    data: Option<BTreeMap<String, String>>,
    optional: Option<bool>,
    kind: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    match data {
        Some(d) => Ok(d),
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => bail!("{kind} {name:?} not found"),
    }
}

fn key_of(
    data: Option<BTreeMap<String, String>>,
    key: &str,
    optional: Option<bool>,
    kind: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    match data.and_then(|mut d| d.remove(key)) {
        Some(v) => Ok(Some(v)),
        None if optional == Some(true) => Ok(None),
        None => bail!("key {key:?} of {kind} {name:?} not found"),
    }
}

/// The value of a `fieldRef` path of `pod`.
pub fn field(pod: &Pod, path: &str, pod_ip: &str) -> anyhow::Result<String> {
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "status.podIP" => pod_ip.to_owned(),
        "status.hostIP" => "127.0.0.1".to_owned(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        other => bail!("fieldRef {other:?} is not supported"),
    })
}

/// Kubelet's `$(VAR)` expansion: a defined variable is replaced, an undefined one is
/// left as written, `$$` is a literal `$`.
pub fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(close) = rest.strip_prefix("$(").and_then(|r| r.find(')')) {
            let name = &rest[2..2 + close];
            match vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[..close + 3]),
            }
            rest = &rest[close + 3..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `value` with a leading `mountPath` (the longest that matches at a path boundary)
/// replaced by the directory that volume is materialised in; other values unchanged.
pub fn rewrite_mount_path(value: &str, mounts: &MountMap) -> String {
    mounts
        .iter()
        .filter(|(mount, _)| {
            let mount = mount.trim_end_matches('/');
            value == mount || value.starts_with(&format!("{mount}/"))
        })
        .max_by_key(|(mount, _)| mount.len())
        .map_or_else(
            || value.to_owned(),
            |(mount, dir)| {
                let tail = value[mount.trim_end_matches('/').len()..].trim_start_matches('/');
                join(dir, tail)
            },
        )
}

fn join(dir: &Path, tail: &str) -> String {
    if tail.is_empty() {
        dir.display().to_string()
    } else {
        dir.join(tail).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn expands_like_kubelet() {
        let v = vars(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("x$(A)y$(B)", &v), "x1ytwo");
        assert_eq!(expand("$(MISSING)/$(A)", &v), "$(MISSING)/1");
        assert_eq!(expand("$$(A) costs $5", &v), "$(A) costs $5");
        assert_eq!(expand("open $(A", &v), "open $(A");
    }

    #[test]
    fn rewrites_only_paths_under_a_mount() {
        let mounts: MountMap = vec![
            ("/etc/switchboard".into(), "/s/pod/volumes/config".into()),
            ("/etc/switchboard/tls".into(), "/s/pod/volumes/ca".into()),
            ("/tmp/".into(), "/s/pod/volumes/tmp".into()),
        ];
        let r = |v| rewrite_mount_path(v, &mounts);
        assert_eq!(
            r("/etc/switchboard/runtime.yaml"),
            "/s/pod/volumes/config/runtime.yaml"
        );
        assert_eq!(r("/etc/switchboard/tls/ca.crt"), "/s/pod/volumes/ca/ca.crt");
        assert_eq!(r("/tmp"), "/s/pod/volumes/tmp");
        assert_eq!(r("/etc/switchboardx"), "/etc/switchboardx");
        assert_eq!(r("run"), "run");
    }
}
