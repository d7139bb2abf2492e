//! Volumes as directories: ConfigMap and Secret volumes written out as files (once per
//! container start; later changes are not synced), projected volumes likewise, emptyDir
//! as an empty directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, ProjectedVolumeSource};

use super::env::{MountMap, Sources, field, required};

/// Writes every volume of `pod` under `<pod_dir>/volumes/<volume>/`.
///
/// # Errors
/// When a non-optional ConfigMap or Secret is missing, a volume type is not supported,
/// or the files cannot be written.
pub async fn materialise(
    pod: &Pod,
    pod_ip: &str,
    pod_dir: &Path,
    sources: &mut Sources,
) -> anyhow::Result<()> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in volumes {
        let dir = volume_dir(pod_dir, &v.name);
        let files = if let Some(cm) = &v.config_map {
            let data = sources.config_map(&cm.name).await?;
            let data = present(data, cm.optional, &v.name, "ConfigMap", &cm.name)?;
            select(&data, cm.items.as_deref())
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = sources.secret(&name).await?;
            let data = present(data, s.optional, &v.name, "Secret", &name)?;
            select(&data, s.items.as_deref())
        } else if let Some(p) = &v.projected {
            projected(pod, pod_ip, &v.name, p, sources).await?
        } else if v.empty_dir.is_some() {
            // Kept across container restarts, as kubelet keeps an emptyDir for the
            // pod's lifetime.
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            continue;
        } else {
            bail!(
                "volume {}: only configMap, secret, projected and emptyDir are supported",
                v.name
            );
        };
        write_files(&dir, &files)?;
    }
    Ok(())
}

/// `data` of a volume's source, or an error naming the volume (see [`required`]).
fn present(
    data: Option<BTreeMap<String, String>>,
    optional: Option<bool>,
    volume: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    required(data, optional, kind, name).map_err(|e| anyhow::anyhow!("volume {volume}: {e}"))
}

/// A projected volume (what the ServiceAccount admission plugin adds as
/// `kube-api-access-*`): ConfigMap, Secret, downward API and service account token
/// sources in one directory.
async fn projected(
    pod: &Pod,
    pod_ip: &str,
    volume: &str,
    p: &ProjectedVolumeSource,
    sources: &mut Sources,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for source in p.sources.iter().flatten() {
        if let Some(cm) = &source.config_map {
            let data = sources.config_map(&cm.name).await?;
            let data = present(data, cm.optional, volume, "ConfigMap", &cm.name)?;
            files.extend(select(&data, cm.items.as_deref()));
        } else if let Some(s) = &source.secret {
            let data = sources.secret(&s.name).await?;
            let data = present(data, s.optional, volume, "Secret", &s.name)?;
            files.extend(select(&data, s.items.as_deref()));
        } else if let Some(d) = &source.downward_api {
            for item in d.items.iter().flatten() {
                let Some(f) = &item.field_ref else {
                    bail!("volume {volume}: only fieldRef downward API items are supported");
                };
                files.push((item.path.clone(), field(pod, &f.field_path, pod_ip)?));
            }
        } else if let Some(t) = &source.service_account_token {
            files.push((t.path.clone(), sources.token(pod, t).await?));
        } else {
            bail!("volume {volume}: unsupported projected source");
        }
    }
    Ok(files)
}

/// The files of `data`: `items` (key -> path) when given, else one file per key.
fn select(data: &BTreeMap<String, String>, items: Option<&[KeyToPath]>) -> Vec<(String, String)> {
    match items {
        Some(items) => items
            .iter()
            .filter_map(|i| data.get(&i.key).map(|v| (i.path.clone(), v.clone())))
            .collect(),
        None => data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn write_files(dir: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (path, contents) in files {
        if path.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("volume file path {path:?} is not a relative path");
        }
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// Where volume `name` of the pod in `pod_dir` lives.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// The real directory of each of `container`'s `volumeMounts` (with `subPath`).
pub fn mounts(container: &Container, pod_dir: &Path) -> MountMap {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let mut dir = volume_dir(pod_dir, &m.name);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                dir = dir.join(sub);
            }
            (m.mount_path.clone(), dir)
        })
        .collect()
}
