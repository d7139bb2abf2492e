//! `operator-scale`: the `switchboard-operator` binary as a subprocess (so its RSS
//! is its own), N AgentRuntimes applied at once in a fresh namespace: seconds until
//! all report TopicsReady=True, then API writes during a quiet minute (the promise
//! is 0) read from the operator's own /metrics, and its RSS. Cleans up the namespace
//! and every topic it made.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use switchboard_crds::AgentRuntime;
use switchboard_e2e::crds::install_crds;
use switchboard_e2e::wait::rss_kib;
use switchboard_runtime::admin::TopicAdmin;
use switchboard_runtime::{KafkaConfig, TopicNames};
use tokio::process::{Child, Command};

use crate::stats::round3;

/// Variable naming the operator binary (default: next to this one).
const BIN_VAR: &str = "SWITCHBOARD_OPERATOR_BIN";
/// Longest the scenario waits for all runtimes (a failed run, not a figure).
const READY_LIMIT: Duration = Duration::from_secs(600);
/// The quiet period in which no writes are expected.
const QUIET: Duration = Duration::from_secs(60);

fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_VAR) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let p = exe
        .parent()
        .context("bench binary has no directory")?
        .join("switchboard-operator");
    if !p.is_file() {
        bail!(
            "{} not found: build it (`cargo build --release -p switchboard-operator`) or set {BIN_VAR}",
            p.display()
        );
    }
    Ok(p)
}

/// Sum of the `switchboard_operator_{name}` counter samples in the operator's /metrics.
async fn counter(http: &reqwest::Client, addr: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let prefix = format!("switchboard_operator_{name}");
    let mut sum = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&prefix)
            && (rest.starts_with('{') || rest.starts_with(' '))
            && let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
        {
            sum += v;
        }
    }
    Ok(sum.round() as u64)
}

/// Reconcile failures by error class, from the operator's /metrics.
async fn failures_by_class(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<Value> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut by_class = serde_json::Map::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("switchboard_operator_reconcile_failures_total{") else {
            continue;
        };
        let class = rest
            .split("error=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let entry = by_class.entry(class.to_owned()).or_insert(json!(0));
        *entry = json!(entry.as_f64().unwrap_or(0.0) + n);
    }
    Ok(Value::Object(by_class))
}

/// Peak resident memory (VmHWM) of `pid` in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

struct OperatorProcess {
    child: Child,
    addr: SocketAddr,
}

impl OperatorProcess {
    async fn start(kubeconfig: &Path, ns: &str, log: &Path) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let log = std::fs::File::create(log)?;
        let child = Command::new(operator_binary()?)
            .args(["run", "--namespace", ns, "--metrics-addr"])
            .arg(addr.to_string())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // The operator logs to stdout.
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting switchboard-operator")?;
        let http = reqwest::Client::new();
        let start = Instant::now();
        while http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err()
        {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("switchboard-operator did not serve /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM, as Kubernetes stops it; SIGKILL if it does not stop in 30 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn agent_runtime(name: &str, bootstrap: &str, prefix: &str) -> anyhow::Result<AgentRuntime> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": { "name": name },
        "spec": {
            "kafka": { "bootstrapServers": bootstrap, "topicPrefix": prefix },
            "agents": [{ "type": format!("{name}-echo"), "builtin": "echo" }],
        },
    }))?)
}

fn topics_ready(ar: &AgentRuntime) -> bool {
    ar.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "TopicsReady" && c.status == "True")
    })
}

/// Runs the scenario with `count` runtimes.
pub async fn operator_scale(
    bootstrap: &str,
    kubeconfig: &Path,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Value> {
    let client = switchboard_operator::client::from_kubeconfig(Some(kubeconfig)).await?;
    install_crds(&client, "switchboard-bench").await?;
    let ns_name = prefix.to_owned();
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns_name } }))?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.create(&PostParams::default(), &ns).await?;
    let names: Vec<String> = (0..count).map(|i| format!("rt-{i:03}")).collect();
    let log = std::env::temp_dir().join(format!("{prefix}-operator.log"));
    let result = measure(
        &client, bootstrap, kubeconfig, &ns_name, prefix, &names, &log,
    )
    .await;

    // Clean up whatever happened: the namespace (runtimes use deletionPolicy Retain,
    // so no finalizer waits for the operator) and every topic of the prefix.
    let _ = namespaces.delete(&ns_name, &DeleteParams::default()).await;
    let topic_names = TopicNames::new(prefix)?;
    let mut topics: Vec<String> = topic_names.shared().to_vec();
    for n in &names {
        topics.extend(topic_names.per_runtime(n));
    }
    let admin = TopicAdmin::new(&KafkaConfig::new(bootstrap), Duration::from_secs(60))?;
    for chunk in topics.chunks(100) {
        if let Err(e) = admin.delete_topics(chunk).await {
            eprintln!("bench: deleting topics: {e}");
        }
    }
    let mut v = result?;
    v["config"]["operator_log"] = json!(log.display().to_string());
    Ok(v)
}

async fn measure(
    client: &Client,
    bootstrap: &str,
    kubeconfig: &Path,
    ns: &str,
    prefix: &str,
    names: &[String],
    log: &Path,
) -> anyhow::Result<Value> {
    let op = OperatorProcess::start(kubeconfig, ns, log).await?;
    let http = reqwest::Client::new();
    let api: Api<AgentRuntime> = Api::namespaced(client.clone(), ns);
    let idle_rss_kib = rss_kib(Some(op.pid()));

    let start = Instant::now();
    futures::stream::iter(names.iter().map(|n| {
        let api = api.clone();
        async move {
            let ar = agent_runtime(n, bootstrap, prefix)?;
            api.create(&PostParams::default(), &ar).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<()>>()
    .await?;
    let applied_s = start.elapsed().as_secs_f64();
    let mut ready = 0;
    while ready < names.len() {
        if start.elapsed() > READY_LIMIT {
            bail!(
                "only {ready}/{} runtimes TopicsReady after {READY_LIMIT:?}",
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        ready = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|ar| topics_ready(ar))
            .count();
    }
    let ready_s = start.elapsed().as_secs_f64();
    let writes_to_ready = counter(&http, op.addr, "api_writes_total").await?;

    // Deployments and their status keep changing for a while after TopicsReady
    // (controller-manager); the quiet minute starts once the operator's writes
    // stopped for 10 s.
    let mut last = writes_to_ready;
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(10) {
        if start.elapsed() > READY_LIMIT {
            bail!("the operator kept writing for {READY_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counter(&http, op.addr, "api_writes_total").await?;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    let settled_s = start.elapsed().as_secs_f64() - 10.0;
    let writes_before = counter(&http, op.addr, "api_writes_total").await?;
    let reconciles_before = counter(&http, op.addr, "reconciles_total").await?;
    tokio::time::sleep(QUIET).await;
    let writes_quiet = counter(&http, op.addr, "api_writes_total").await? - writes_before;
    let reconciles_quiet = counter(&http, op.addr, "reconciles_total").await? - reconciles_before;
    let failures = counter(&http, op.addr, "reconcile_failures_total").await?;
    let failures_by_class = failures_by_class(&http, op.addr).await?;
    let rss = rss_kib(Some(op.pid()));
    let peak = peak_rss_kib(op.pid());
    op.stop().await;
    let mib = |kib: u64| round3(kib as f64 / 1024.0);
    Ok(json!({
        "runtimes": names.len(),
        "applied_s": round3(applied_s),
        "ready_s": round3(ready_s),
        "settled_s": round3(settled_s),
        "writes_to_ready": writes_to_ready,
        "writes_quiet_minute": writes_quiet,
        "reconciles_quiet_minute": reconciles_quiet,
        "reconcile_failures": failures,
        "reconcile_failures_by_class": failures_by_class,
        "operator_rss_mib": mib(rss),
        "operator_peak_rss_mib": mib(peak),
        "operator_idle_rss_mib": mib(idle_rss_kib),
        "config": {
            "topics_per_runtime": 4,
            "partitions": 3,
            "shared_topics": 2,
            "quiet_s": QUIET.as_secs(),
        },
    }))
}
