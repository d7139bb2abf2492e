//! `switchboard-runtime run`: host the agents a config file declares, serve the HTTP
//! API, and stop gracefully on a signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agent::AgentFactory;
use crate::api::AgentRuntime;
use crate::config::ConfigError;
use crate::config_file::RuntimeConfigFile;
use crate::error::RuntimeError;
use crate::gateway::Gateway;
use crate::gateway::catalog::AgentInfo;
use crate::kafka::KafkaAgentRuntime;
use crate::subscription::Subscription;
use crate::{a2a_agent, builtins, http_agent, llm, mcp_client};

/// How long stopping waits for HTTP requests in flight (RPCs end at their deadline).
const HTTP_DRAIN: Duration = Duration::from_secs(15);
/// Added to the runtime's drain timeout to bound `stop` as a whole (registry
/// release, producer flush, reply channel deletion).
const STOP_SLACK: Duration = Duration::from_secs(20);
/// Longest wait between two Kafka access checks at start.
const ACCESS_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long one access check waits for the brokers.
const ACCESS_TIMEOUT: Duration = Duration::from_secs(10);
/// How often loading the A2A tasks topic is retried when it failed at start.
const TASKS_RETRY: Duration = Duration::from_secs(10);

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid; names the field and value.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The runtime could not start or serve.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A signal arrived before the runtime finished starting.
    #[error("interrupted while starting")]
    Interrupted,
    /// The HTTP API could not bind or serve.
    #[error("http api on {listen}: {reason}")]
    Http {
        /// The listen address.
        listen: String,
        /// What failed.
        reason: String,
    },
}

/// Loads `path`, applies `SWITCHBOARD_*` overrides read through `env`, validates.
pub fn load_config(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<RuntimeConfigFile, ConfigError> {
    let mut file = RuntimeConfigFile::from_yaml(text)?;
    file.apply_env(env)?;
    file.validate()?;
    Ok(file)
}

/// The agent factories the file declares, by type, in file order; `code: {}` entries
/// have none (the hosting program registers them). Bearer tokens of `a2a` and `mcp`
/// agents and MCP servers, and API keys of `llm` agents are read from the environment;
/// `llm` agents count their calls in `hosting.llm_metrics`, HTTP agents journal durable
/// steps through `hosting.http_steps`.
pub fn factories(
    file: &RuntimeConfigFile,
    hosting: &Hosting,
) -> Result<Vec<(String, AgentFactory)>, ConfigError> {
    factories_with_env(file, |k| std::env::var(k).ok(), hosting)
}

/// What the factories of one process share with its HTTP API.
#[derive(Debug, Default, Clone)]
pub struct Hosting {
    /// Figures of the `llm` agents (on `/metrics`).
    pub llm_metrics: Arc<llm::LlmMetrics>,
    /// Durable steps of HTTP agents (`/v1/steps/...`).
    pub http_steps: Arc<crate::http_steps::StepSessions>,
}

/// [`factories`], reading tokens and API keys through `env`.
pub fn factories_with_env(
    file: &RuntimeConfigFile,
    env: impl Fn(&str) -> Option<String>,
    hosting: &Hosting,
) -> Result<Vec<(String, AgentFactory)>, ConfigError> {
    let client = http_agent::client()
        .map_err(|e| ConfigError::invalid("agents", "", format!("http client: {e}")))?;
    let servers = file
        .mcp_servers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let token = match &m.token_env {
                None => None,
                Some(var) => Some(env(var).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("mcpServers[{i}].tokenEnv"),
                        var,
                        "names an environment variable that is not set",
                    )
                })?),
            };
            Ok(llm::McpServer {
                entry: m.clone(),
                token,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    file.agents
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.is_code())
        .map(|(i, a)| {
            let token = |kind: &str, var: &Option<String>| match var {
                None => Ok(None),
                Some(var) => env(var).map(Some).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("agents[{i}].{kind}.tokenEnv"),
                        var,
                        "names an environment variable that is not set",
                    )
                }),
            };
            if let Some(l) = &a.llm {
                let key = match &l.model.api_key_env {
                    None => None,
                    Some(var) => Some(env(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                        ConfigError::invalid(
                            format!("agents[{i}].llm.model.apiKeyEnv"),
                            var,
                            "names an environment variable that is not set",
                        )
                    })?),
                };
                let tools = llm::Tools::new(&client, l, &file.agents, &servers);
                return Ok((
                    a.agent_type.clone(),
                    llm::factory(
                        client.clone(),
                        &a.agent_type,
                        l.clone(),
                        key,
                        tools,
                        Arc::clone(&hosting.llm_metrics),
                    ),
                ));
            }
            let factory = match (&a.builtin, &a.http, &a.a2a, &a.mcp) {
                (None, None, None, Some(tool)) => {
                    let token = token("mcp", &tool.token_env)?;
                    mcp_client::factory(client.clone(), tool.clone(), token)
                }
                (None, None, Some(remote), _) => {
                    let token = token("a2a", &remote.token_env)?;
                    a2a_agent::factory(client.clone(), remote.clone(), token)
                }
                (Some(b), _, _, _) => {
                    builtins::factory(*b, a.relay.as_ref().map(|r| r.publish.topic_type.as_str()))
                        .map_err(|e| {
                        ConfigError::invalid(format!("agents[{i}].builtin"), format!("{b:?}"), e)
                    })?
                }
                (None, Some(h), _, _) => {
                    http_agent::factory(client.clone(), h.clone(), Arc::clone(&hosting.http_steps))
                }
                (None, None, None, None) => {
                    return Err(ConfigError::invalid(
                        format!("agents[{i}].builtin"),
                        "",
                        "one of builtin, http, code, llm, a2a or mcp is required",
                    ));
                }
            };
            Ok((a.agent_type.clone(), factory))
        })
        .collect()
}

/// The base URL HTTP agents reach this process's HTTP listener at, for their durable
/// steps: `SWITCHBOARD_HTTP_ADVERTISE` (`host:port`) when set; else the listen address,
/// with the pod's address (`POD_IP`, set by the operator) or 127.0.0.1 for an
/// unspecified IP.
pub fn steps_base(local: std::net::SocketAddr, env: impl Fn(&str) -> Option<String>) -> String {
    if let Some(a) = env("SWITCHBOARD_HTTP_ADVERTISE").filter(|a| !a.is_empty()) {
        return format!("http://{a}");
    }
    let port = local.port();
    if !local.ip().is_unspecified() {
        return format!("http://{local}");
    }
    match env("POD_IP").and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V6(ip)) => format!("http://[{ip}]:{port}"),
        Some(ip) => format!("http://{ip}:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    }
}

/// Every `code: {}` entry must have been registered by the program before serving (a
/// declared type nobody hosts would leave its RPCs unanswered); a type the program
/// registers without declaring it works but is logged, since the operator, its status
/// and `AgentSubscription` validation do not know it.
pub fn check_program_agents(
    file: &RuntimeConfigFile,
    hosted: &[String],
) -> Result<(), ConfigError> {
    for (i, a) in file.agents.iter().enumerate() {
        if a.is_code() && !hosted.contains(&a.agent_type) {
            return Err(ConfigError::invalid(
                format!("agents[{i}].code"),
                &a.agent_type,
                "is declared but the program did not register it",
            ));
        }
    }
    for t in hosted {
        if !file.agents.iter().any(|a| &a.agent_type == t) {
            tracing::warn!(
                agent_type = %t,
                "the program registers an agent type the config file does not declare \
                 (add `{{type: {t}, code: {{}}}}` to the AgentRuntime's agents)"
            );
        }
    }
    Ok(())
}

/// Adds the subscriptions that the network does not have yet (same topic matcher and
/// agent type, whatever the id), so restarts and replicas do not pile up copies.
pub async fn ensure_subscriptions(
    runtime: &impl AgentRuntime,
    wanted: Vec<Subscription>,
) -> Result<usize, RuntimeError> {
    let existing = runtime.subscriptions().await;
    let mut added = 0;
    for s in wanted {
        if !existing.iter().any(|e| same_route(e, &s)) {
            runtime.add_subscription(s).await?;
            added += 1;
        }
    }
    Ok(added)
}

/// Whether two subscriptions route the same topic types to the same agent type.
pub(crate) fn same_route(a: &Subscription, b: &Subscription) -> bool {
    match (a, b) {
        (
            Subscription::Type {
                topic_type: t1,
                agent_type: a1,
                ..
            },
            Subscription::Type {
                topic_type: t2,
                agent_type: a2,
                ..
            },
        ) => t1 == t2 && a1 == a2,
        (
            Subscription::TypePrefix {
                prefix: p1,
                agent_type: a1,
                ..
            },
            Subscription::TypePrefix {
                prefix: p2,
                agent_type: a2,
                ..
            },
        ) => p1 == p2 && a1 == a2,
        _ => false,
    }
}

/// Checks the broker accepts this runtime's credentials and ACLs, retrying with
/// bounded backoff (1 s doubling to [`ACCESS_RETRY_MAX`]) while it does not: the
/// process stays up, not ready, and says why in its log and on `/readyz`, instead of
/// exiting into a crash loop. Returns once access works (the caller's shutdown
/// select ends the wait on a signal).
async fn wait_for_access(runtime: &KafkaAgentRuntime, gateway: &Gateway) -> Result<(), ServeError> {
    let config = runtime.config();
    let names = crate::protocol::topics::TopicNames::new(&config.topic_prefix)?;
    let rt = &config.runtime_name;
    let check = crate::access::AccessCheck {
        topics: vec![
            names.registry(),
            names.events(),
            names.inbox(rt),
            names.state(rt),
        ],
        groups: vec![
            (names.inbox_group(rt), names.inbox(rt)),
            (names.events_group(rt), names.events()),
        ],
    };
    let mut backoff = Duration::from_secs(1);
    let mut failures = 0u32;
    loop {
        match crate::access::check(&config.kafka, check.clone(), ACCESS_TIMEOUT).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "kafka access works now");
                }
                gateway.set_problem(None);
                return Ok(());
            }
            Err(e) => {
                failures += 1;
                tracing::error!(reason = e.reason(), error = %e, retry_in = ?backoff, "cannot use kafka; retrying");
                gateway.set_problem(Some(format!("{}: {e}", e.reason())));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCESS_RETRY_MAX);
            }
        }
    }
}

/// Runs the runtime `file` describes until `shutdown` resolves, then stops: readiness
/// off and new API work refused, HTTP requests in flight finish (bounded), the
/// runtime drains, commits, leaves its groups and deletes its reply channel.
pub async fn run(
    file: RuntimeConfigFile,
    env: impl Fn(&str) -> Option<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if let Some(i) = file.agents.iter().position(|a| a.is_code()) {
        return Err(ConfigError::invalid(
            format!("agents[{i}].code"),
            &file.agents[i].agent_type,
            "is registered by a program (e.g. python -m switchboard serve); \
             switchboard-runtime run hosts only builtin, http and llm agents",
        )
        .into());
    }
    let worker = file.worker_config(env)?;
    let runtime = KafkaAgentRuntime::new(worker)?;
    run_hosting(file, runtime, shutdown).await
}

/// As [`run`], on a runtime the caller built from `file` and may have registered agents
/// on already (a program hosting its own agents, e.g. `python -m switchboard serve`);
/// the file's own agents are added here.
pub async fn run_hosting(
    file: RuntimeConfigFile,
    runtime: KafkaAgentRuntime,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let stop_limit = runtime.config().drain_timeout + STOP_SLACK;
    let hosting = Hosting::default();
    for (agent_type, factory) in factories(&file, &hosting)? {
        runtime.register_factory(&agent_type, factory).await?;
    }
    check_program_agents(&file, &runtime.hosted_types())?;
    // Bound before starting, so a taken port fails before anything touches Kafka.
    let listen = file.http.listen.clone();
    let http_error = |reason: String| ServeError::Http {
        listen: listen.clone(),
        reason,
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| http_error(e.to_string()))?;
    let local = listener
        .local_addr()
        .map_err(|e| http_error(e.to_string()))?;

    let stopping = CancellationToken::new();
    let gateway = Gateway::new(
        runtime.clone(),
        file.http.bearer_token.clone(),
        stopping.clone(),
    )
    .with_agents(file.agents.iter().map(AgentInfo::from_entry).collect())
    .with_llm_metrics(Arc::clone(&hosting.llm_metrics))
    .with_http_steps(Arc::clone(&hosting.http_steps));
    hosting
        .http_steps
        .set_base(steps_base(local, |k| std::env::var(k).ok()));
    let server = {
        let stopping = stopping.clone();
        tokio::spawn(
            axum::serve(listener, gateway.router())
                .with_graceful_shutdown(async move { stopping.cancelled().await })
                .into_future(),
        )
    };
    // Health and readiness answer while the runtime starts.
    tracing::info!(listen = %local, "http api listening");
    // Owned here: ended by `stopping`, awaited below.
    let mut tasks_loader: Option<tokio::task::JoinHandle<()>> = None;
    let loader_slot = &mut tasks_loader;
    let started = async {
        let tasks_loader = loader_slot;
        wait_for_access(&runtime, &gateway).await?;
        runtime.start().await?;
        let added = ensure_subscriptions(&runtime, file.subscriptions()?).await?
            + runtime
                .ensure_source_subscriptions(file.source_subscriptions()?)
                .await?;
        // After start, which created the runtime's topics (or found them). Without its
        // tasks topic (an operator that has not created it yet) the runtime still
        // serves everything else, A2A task methods say why, and loading is retried.
        let retention = Duration::from_millis(file.runtime.task_retention_ms);
        if let Err(e) = gateway.load_tasks(retention, stopping.clone()).await {
            tracing::warn!(error = %e, "A2A tasks unavailable; retrying every 10 s");
            let (gateway, stopping) = (gateway.clone(), stopping.clone());
            *tasks_loader = Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stopping.cancelled() => return,
                        () = tokio::time::sleep(TASKS_RETRY) => {}
                    }
                    match gateway.load_tasks(retention, stopping.clone()).await {
                        Ok(()) => return tracing::info!("A2A tasks loaded"),
                        Err(e) => tracing::debug!(error = %e, "A2A tasks still unavailable"),
                    }
                }
            }));
        }
        // Only now: an event read before its subscription is known is not delivered.
        gateway.set_up();
        tracing::info!(
            agents = file.agents.len(),
            subscriptions_added = added,
            "serving"
        );
        Ok::<(), ServeError>(())
    };
    let server_failed = |r: Result<std::io::Result<()>, tokio::task::JoinError>| {
        http_error(match r {
            Ok(Ok(())) => "stopped unexpectedly".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        })
    };
    tokio::pin!(shutdown);
    tokio::pin!(server);
    let outcome = tokio::select! {
        r = started => r,
        () = &mut shutdown => Err(ServeError::Interrupted),
        r = &mut server => Err(server_failed(r)),
    };
    let outcome = match outcome {
        Ok(()) => tokio::select! {
            () = &mut shutdown => Ok(()),
            r = &mut server => Err(server_failed(r)),
        },
        Err(ServeError::Interrupted) => Ok(()),
        Err(e) => Err(e),
    };
    tracing::info!("stopping");
    stopping.cancel();
    if let Some(loader) = tasks_loader {
        let _ = loader.await;
    }
    if !server.is_finished() && tokio::time::timeout(HTTP_DRAIN, &mut server).await.is_err() {
        tracing::warn!(after = ?HTTP_DRAIN, "http requests still open; closing them");
        server.abort();
    }
    if !gateway.drain(HTTP_DRAIN).await {
        tracing::warn!("gateway RPCs still waiting; they end at their deadline");
    }
    match tokio::time::timeout(stop_limit, runtime.stop()).await {
        Ok(Ok(())) => tracing::info!("stopped"),
        Ok(Err(e)) => tracing::warn!(error = %e, "runtime stopped with an error"),
        Err(_) => tracing::warn!(after = ?stop_limit, "runtime stop timed out"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryRuntime;

    #[tokio::test]
    async fn subscriptions_are_added_once() {
        let rt = InMemoryRuntime::default();
        let wanted = || {
            vec![
                Subscription::for_type("alerts", "counter").unwrap(),
                Subscription::for_prefix("team.", "relay").unwrap(),
            ]
        };
        assert_eq!(ensure_subscriptions(&rt, wanted()).await.unwrap(), 2);
        assert_eq!(ensure_subscriptions(&rt, wanted()).await.unwrap(), 0);
        let other = vec![Subscription::for_type("alerts", "relay").unwrap()];
        assert_eq!(ensure_subscriptions(&rt, other).await.unwrap(), 1);
        assert_eq!(rt.subscriptions().await.len(), 3);
    }

    #[test]
    fn config_errors_name_the_field() {
        let base = "kafka: { bootstrapServers: \"127.0.0.1:9\", topicPrefix: demo }\n\
                    runtime: { name: rt1 }\n\
                    agents:\n  - { type: py, http: { url: \"http://127.0.0.1:1/a\" } }\n";
        load_config(base, |_| None).unwrap();
        let e = load_config(&base.replace("http://", "ftp://"), |_| None).unwrap_err();
        assert_eq!(e.field, "agents[0].http.url");
        let e = load_config(base, |k| {
            (k == "SWITCHBOARD_TOPIC_PREFIX").then(|| "bad prefix".to_owned())
        })
        .unwrap_err();
        assert_eq!(e.field, "kafka.topicPrefix");
    }

    #[test]
    fn http_agents_reach_the_pod_address_for_their_steps() {
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(steps_base(any, |_| None), "http://127.0.0.1:8080");
        let pod = |k: &str| (k == "POD_IP").then(|| "10.1.2.3".to_owned());
        assert_eq!(steps_base(any, pod), "http://10.1.2.3:8080");
        let local: std::net::SocketAddr = "127.0.0.5:9000".parse().unwrap();
        assert_eq!(steps_base(local, pod), "http://127.0.0.5:9000");
        let adv = |k: &str| (k == "SWITCHBOARD_HTTP_ADVERTISE").then(|| "rt.svc:8080".to_owned());
        assert_eq!(steps_base(any, adv), "http://rt.svc:8080");
    }

    #[test]
    fn an_llm_agent_needs_the_api_key_variable_it_names() {
        let text = "kafka: { bootstrapServers: \"127.0.0.1:9\", topicPrefix: demo }\n\
                    runtime: { name: rt1 }\n\
                    agents:\n  - { type: a, llm: { model: { endpoint: \"http://127.0.0.1:9/v1\", model: m, apiKeyEnv: KEY_A } } }\n";
        let file = load_config(text, |_| None).unwrap();
        let Err(e) = factories_with_env(&file, |_| None, &Hosting::default()) else {
            panic!("an unset key variable was accepted")
        };
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("agents[0].llm.model.apiKeyEnv", "KEY_A")
        );
        let set = factories_with_env(
            &file,
            |k| (k == "KEY_A").then(|| "sk-1".to_owned()),
            &Default::default(),
        );
        assert_eq!(set.map(|f| f.len()).ok(), Some(1));
    }

    #[tokio::test]
    async fn code_agents_come_from_the_program_not_the_binary() {
        let text = "kafka: { bootstrapServers: \"127.0.0.1:9\", topicPrefix: demo }\n\
                    runtime: { name: rt1 }\n\
                    agents:\n  - { type: echo, builtin: echo }\n  - { type: planner, code: {} }\n";
        let file = load_config(text, |_| None).unwrap();
        assert_eq!(
            factories(&file, &Hosting::default()).unwrap().len(),
            1,
            "no factory for code: {{}}"
        );
        let Err(ServeError::Config(e)) = run(file.clone(), |_| None, std::future::ready(())).await
        else {
            panic!("switchboard-runtime run accepted a code agent")
        };
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("agents[1].code", "planner")
        );
        let hosted = |types: &[&str]| types.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        let e = check_program_agents(&file, &hosted(&["echo"])).unwrap_err();
        assert_eq!(e.field, "agents[1].code");
        check_program_agents(&file, &hosted(&["echo", "planner"])).unwrap();
        check_program_agents(&file, &hosted(&["echo", "planner", "extra"])).unwrap();
    }
}
