//! What a node agent is told at start: one struct, validated once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::Ipv4Net;

/// Default `--image-pattern`: any registry and tag of a `switchboard-runtime` repository.
pub const DEFAULT_IMAGE_PATTERN: &str = "*switchboard-runtime";

/// A pod range for one test's node agent: a /24 in 127.100.0.0-127.199.255.255 picked
/// at random. It never overlaps the demo's default 127.0.1.0/24, and two tests running
/// at once pick the same range with probability 1/25600.
pub fn test_pod_cidr() -> String {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    format!("127.{}.{}.0/24", 100 + b[0] % 100, b[1])
}

/// Settings of one [`NodeAgent`](super::NodeAgent).
#[derive(Debug, Clone)]
pub struct NodeAgentConfig {
    /// Name of the Node object (and of its Lease).
    pub node_name: String,
    /// Loopback range the pods' IPs come from (`spec.podCIDR` of the Node).
    pub pod_cidr: Ipv4Net,
    /// The program that runs for a container whose `command[0]` is `switchboard-runtime`.
    pub runtime_bin: PathBuf,
    /// Root of the per-pod directories (`<state_dir>/pods/<ns>_<name>_<uid>/`).
    pub state_dir: PathBuf,
    /// Namespaces whose pods this agent takes; empty: all.
    pub namespaces: Vec<String>,
    /// Which container images this agent runs (see [`ImagePattern`]).
    pub image_pattern: ImagePattern,
    /// More images this agent runs, each from a directory standing in for the image's
    /// filesystem (see [`ImageRoot`]).
    pub image_roots: Vec<ImageRoot>,
    /// How often the node Lease is renewed.
    pub lease_interval: Duration,
    /// How often the Ready condition's heartbeat is refreshed.
    pub heartbeat_interval: Duration,
    /// First restart delay of a failed container; doubles per restart.
    pub backoff_initial: Duration,
    /// Cap of the restart delay.
    pub backoff_max: Duration,
    /// Longest the agent's own shutdown waits for pods' processes before SIGKILL.
    pub shutdown_grace: Duration,
}

impl NodeAgentConfig {
    /// Settings with defaults (all namespaces, [`DEFAULT_IMAGE_PATTERN`], lease every
    /// 10 s, heartbeat every 30 s, backoff 10 s -> 60 s, shutdown within 20 s).
    ///
    /// # Errors
    /// When the node name is empty or `pod_cidr` is not a range inside 127.0.0.0/8
    /// with room for at least one pod.
    pub fn new(
        node_name: impl Into<String>,
        pod_cidr: &str,
        runtime_bin: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> anyhow::Result<Self> {
        let node_name = node_name.into();
        if node_name.is_empty() {
            bail!("node name: must not be empty");
        }
        let pod_cidr: Ipv4Net = pod_cidr
            .parse()
            .with_context(|| format!("pod CIDR: {pod_cidr:?} is not an IPv4 CIDR"))?;
        if !pod_cidr.addr().is_loopback() || pod_cidr.prefix_len() < 8 {
            bail!("pod CIDR: {pod_cidr} must lie inside 127.0.0.0/8 (loopback only)");
        }
        if pod_cidr.prefix_len() > 29 {
            bail!("pod CIDR: {pod_cidr} is too small (at most /29)");
        }
        Ok(Self {
            node_name,
            pod_cidr: pod_cidr.trunc(),
            runtime_bin: runtime_bin.into(),
            state_dir: state_dir.into(),
            namespaces: Vec::new(),
            image_pattern: ImagePattern::new(DEFAULT_IMAGE_PATTERN),
            image_roots: Vec::new(),
            lease_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(20),
        })
    }

    /// Whether this agent runs containers of `image`.
    pub fn runs_image(&self, image: &str) -> bool {
        self.image_pattern.matches(image) || self.image_root(image).is_some()
    }

    /// The directory standing in for `image`'s filesystem, if one is configured.
    pub fn image_root(&self, image: &str) -> Option<&ImageRoot> {
        self.image_roots.iter().find(|r| r.pattern.matches(image))
    }

    /// Whether pods of `namespace` are this agent's.
    pub fn serves_namespace(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

/// An image without a container runtime: a directory whose top-level directories are
/// what the image has at `/` (`bin/`, `app/`, ...). A container of such an image gets
/// `<dir>/bin` first in its `PATH`, and an argument or env value under `/<top-level
/// dir>` is rewritten to the directory (as volume mounts are). `--image-root
/// 'PATTERN=DIR'` on the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRoot {
    /// Images this root stands for.
    pub pattern: ImagePattern,
    /// The directory.
    pub dir: PathBuf,
}

impl ImageRoot {
    /// From `PATTERN=DIR`; the directory must exist.
    ///
    /// # Errors
    /// When there is no `=` or `DIR` is not a directory.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (pattern, dir) = text
            .split_once('=')
            .with_context(|| format!("image root {text:?}: expected PATTERN=DIR"))?;
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("image root {text:?}: {} is not a directory", dir.display());
        }
        Ok(Self {
            pattern: ImagePattern::new(pattern),
            dir,
        })
    }

    /// `(/name, <dir>/name)` for every top-level directory of the root.
    pub fn mounts(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut mounts: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| (format!("/{}", e.file_name().to_string_lossy()), e.path()))
            .collect();
        mounts.sort();
        mounts
    }
}

/// A glob (`*` matches any run of characters) over an image's repository, that is the
/// image reference without its `:tag` and `@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePattern(String);

impl ImagePattern {
    /// A pattern such as `*switchboard-runtime` or `ghcr.io/acme/*`.
    pub fn new(glob: impl Into<String>) -> Self {
        Self(glob.into())
    }

    /// Whether `image` (e.g. `ghcr.io/x/switchboard-runtime:1.2`) matches.
    pub fn matches(&self, image: &str) -> bool {
        glob_match(&self.0, repository(image))
    }
}

/// The repository part of an image reference: no digest, no tag (a `:` after the last
/// `/` is a tag; before it, a registry port).
pub fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    }
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pattern_takes_any_registry_and_tag_of_the_runtime() {
        let p = ImagePattern::new(DEFAULT_IMAGE_PATTERN);
        assert!(p.matches("ghcr.io/switchboard-dev/switchboard-runtime:test"));
        assert!(p.matches("localhost:5000/switchboard-runtime"));
        assert!(p.matches("switchboard-runtime@sha256:abc"));
        assert!(!p.matches("nginx"));
        assert!(!p.matches("ghcr.io/x/switchboard-runtime-debug:1"));
        assert!(!p.matches("switchboard-runtime.example:5000/nginx:1"));
    }

    #[test]
    fn an_image_root_maps_its_top_level_directories() {
        let dir = std::env::temp_dir().join(format!("image-root-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join("README"), "not a dir").unwrap();
        let root = ImageRoot::parse(&format!("*switchboard-python={}", dir.display())).unwrap();
        assert!(root.pattern.matches("ghcr.io/x/switchboard-python:dev"));
        assert_eq!(
            root.mounts(),
            vec![
                ("/app".to_owned(), dir.join("app")),
                ("/bin".to_owned(), dir.join("bin"))
            ]
        );
        assert!(ImageRoot::parse("no-equals").is_err());
        assert!(ImageRoot::parse("x=/nonexistent/dir").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn globs_anchor_both_ends() {
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c", "abcd"));
        assert!(glob_match("*", ""));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn pod_cidr_must_be_loopback_with_room() {
        assert!(NodeAgentConfig::new("n", "127.0.1.0/24", "/bin/x", "/tmp").is_ok());
        assert!(NodeAgentConfig::new("n", "10.0.0.0/24", "/bin/x", "/tmp").is_err());
        assert!(NodeAgentConfig::new("n", "127.0.1.0/30", "/bin/x", "/tmp").is_err());
        assert!(NodeAgentConfig::new("", "127.0.1.0/24", "/bin/x", "/tmp").is_err());
    }
}
