//! Infrastructure the fault tests own: a broker of their own (so restarting it does
//! not disturb the suite's broker, which `with-infra.sh` owns and other tests share),
//! and Toxiproxy, a real TCP fault proxy, in front of one of its listeners. Both are
//! started by the scripts in `e2e/infra` with their own state dir and free loopback
//! ports, and stopped by their pid files when dropped, whatever the test's outcome.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::binary::free_port;

fn infra_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("infra")
        .join(name)
}

/// A state dir for `what`, beside the suite's (`SWITCHBOARD_STATE_DIR`, else the
/// repository's `.state`), unique to this run; `with-infra.sh` stops what is left in
/// `owned/` if a test process dies without dropping its guards.
fn own_state_dir(what: &str) -> PathBuf {
    let root = std::env::var_os("SWITCHBOARD_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.state"));
    let dir = root.join("owned").join(crate::env::unique_name(what));
    std::fs::create_dir_all(&dir).expect("create a state dir");
    dir
}

/// Runs `script verb` with `env`; panics with its output when it fails.
/// For `Drop`: `script stop` with `env`, then removes `state`; never panics (it may
/// run during a test's unwinding), says so when the stop failed and keeps `state`.
fn stop_owned(script: &str, env: &[(String, String)], state: &Path, what: &str) {
    let stopped = Command::new(infra_script(script))
        .arg("stop")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .is_ok_and(|o| o.status.success());
    if stopped {
        let _ = std::fs::remove_dir_all(state);
    } else {
        eprintln!("could not stop {what} in {}", state.display());
    }
}

fn run_script(script: &str, verb: &str, env: &[(String, String)]) {
    let out = Command::new(infra_script(script))
        .arg(verb)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script} {verb}: {e}"));
    assert!(
        out.status.success(),
        "{script} {verb} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Kafka broker of the test's own (`e2e/infra/kafka.sh` on free ports, data kept
/// across restarts). Stopped when dropped.
pub struct OwnBroker {
    env: Vec<(String, String)>,
    state: PathBuf,
    /// The PLAINTEXT bootstrap address.
    pub bootstrap: String,
    /// The port of the PROXIED listener, when the broker has one.
    pub proxied_port: Option<u16>,
}

impl OwnBroker {
    /// Starts a broker; with `advertise_proxy` (a fault proxy's `HOST:PORT`) it also
    /// listens on a PROXIED listener advertised as that address, so clients that
    /// bootstrap through the proxy stay behind it (see `kafka.sh`).
    ///
    /// # Panics
    /// When the broker does not start.
    pub fn start(name: &str, advertise_proxy: Option<&str>) -> Self {
        let state = own_state_dir(name);
        let port = free_port();
        let mut env = vec![
            (
                "SWITCHBOARD_STATE_DIR".to_owned(),
                state.display().to_string(),
            ),
            ("SWITCHBOARD_KAFKA_PORT".to_owned(), port.to_string()),
            (
                "SWITCHBOARD_KAFKA_CONTROLLER_PORT".to_owned(),
                free_port().to_string(),
            ),
            ("SWITCHBOARD_KAFKA_KEEP_DATA".to_owned(), "1".to_owned()),
        ];
        let proxied_port = advertise_proxy.map(|at| {
            let p = free_port();
            env.push(("SWITCHBOARD_KAFKA_PROXIED_PORT".to_owned(), p.to_string()));
            env.push((
                "SWITCHBOARD_KAFKA_PROXIED_ADVERTISED".to_owned(),
                at.to_owned(),
            ));
            p
        });
        let broker = Self {
            env,
            state,
            bootstrap: format!("127.0.0.1:{port}"),
            proxied_port,
        };
        // From here on a failure still stops whatever started (Drop).
        run_script("kafka.sh", "start", &broker.env);
        broker
    }

    /// Stops the broker (controlled shutdown; data kept).
    pub fn stop(&self) {
        run_script("kafka.sh", "stop", &self.env);
    }

    /// Starts it again on the same ports and data.
    pub fn start_again(&self) {
        run_script("kafka.sh", "start", &self.env);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        stop_owned("kafka.sh", &self.env, &self.state, "the broker");
    }
}

/// A Toxiproxy server (`e2e/infra/toxiproxy.sh`) on a free port, driven through its
/// HTTP API. Stopped when dropped.
pub struct Toxiproxy {
    env: Vec<(String, String)>,
    state: PathBuf,
    api: String,
    http: reqwest::Client,
}

impl Toxiproxy {
    /// Builds (first time only, from the Go module proxy) and starts the server.
    ///
    /// # Panics
    /// When it does not build or start.
    pub fn start() -> Self {
        let state = own_state_dir("toxiproxy");
        let port = free_port();
        let env = vec![
            (
                "SWITCHBOARD_STATE_DIR".to_owned(),
                state.display().to_string(),
            ),
            ("SWITCHBOARD_TOXIPROXY_PORT".to_owned(), port.to_string()),
        ];
        let proxy = Self {
            env,
            state,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        };
        run_script("toxiproxy.sh", "start", &proxy.env);
        proxy
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.api));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("toxiproxy {method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "toxiproxy {method} {path} {body:?}: {status} {text}"
        );
    }

    /// A proxy `name` listening on `listen` (`HOST:PORT`) forwarding to `upstream`.
    pub async fn create(&self, name: &str, listen: &str, upstream: &str) {
        let body = json!({ "name": name, "listen": listen, "upstream": upstream, "enabled": true });
        self.call(reqwest::Method::POST, "/proxies", Some(body))
            .await;
    }

    /// Adds toxic `toxic` of `kind` (`latency`, `timeout`, `reset_peer`, ...) with
    /// `attributes` on both directions of proxy `proxy`.
    pub async fn add_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        kind: &str,
        attributes: serde_json::Value,
    ) {
        for stream in ["upstream", "downstream"] {
            let body = json!({
                "name": format!("{toxic}_{stream}"),
                "type": kind,
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            });
            self.call(
                reqwest::Method::POST,
                &format!("/proxies/{proxy}/toxics"),
                Some(body),
            )
            .await;
        }
    }

    /// Removes toxic `toxic` (both directions) from proxy `proxy`.
    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) {
        for stream in ["upstream", "downstream"] {
            self.call(
                reqwest::Method::DELETE,
                &format!("/proxies/{proxy}/toxics/{toxic}_{stream}"),
                None,
            )
            .await;
        }
    }

    /// Enables or disables proxy `proxy`: disabled, it closes every connection
    /// through it and refuses new ones (a cut link).
    pub async fn set_enabled(&self, proxy: &str, enabled: bool) {
        let body = json!({ "enabled": enabled });
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}"),
            Some(body),
        )
        .await;
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        stop_owned("toxiproxy.sh", &self.env, &self.state, "toxiproxy");
    }
}
