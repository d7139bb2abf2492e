//! Volumes as directories: ConfigMap and Secret volumes written out as files (once per
//! container start; later changes are not synced), emptyDir as an empty directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};

use super::env::{MountMap, Sources};

/// Writes every volume of `pod` under `<pod_dir>/volumes/<volume>/`.
///
/// # Errors
/// When a non-optional ConfigMap or Secret is missing, a volume type is not supported,
/// or the files cannot be written.
pub async fn materialise(pod: &Pod, pod_dir: &Path, sources: &mut Sources) -> anyhow::Result<()> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in volumes {
        let dir = volume_dir(pod_dir, &v.name);
        if let Some(cm) = &v.config_map {
            let data = sources.config_map(&cm.name).await?;
            let data = match data {
                Some(d) => d,
                None if cm.optional == Some(true) => BTreeMap::new(),
                None => bail!("volume {}: ConfigMap {:?} not found", v.name, cm.name),
            };
            write_files(&dir, &data, cm.items.as_deref())?;
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = match sources.secret(&name).await? {
                Some(d) => d,
                None if s.optional == Some(true) => BTreeMap::new(),
                None => bail!("volume {}: Secret {name:?} not found", v.name),
            };
            write_files(&dir, &data, s.items.as_deref())?;
        } else if v.empty_dir.is_some() {
            // Kept across container restarts, as kubelet keeps an emptyDir for the
            // pod's lifetime.
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        } else {
            bail!(
                "volume {}: only configMap, secret and emptyDir are supported",
                v.name
            );
        }
    }
    Ok(())
}

fn write_files(
    dir: &Path,
    data: &BTreeMap<String, String>,
    items: Option<&[KeyToPath]>,
) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files: Vec<(&str, &str)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|i| data.get(&i.key).map(|v| (i.path.as_str(), v.as_str())))
            .collect(),
        None => data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
    };
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
