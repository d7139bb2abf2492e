//! The `switchboard-runtime` command line: `run`, `send`, `publish`, `acls`. `main.rs` parses
//! and calls [`main`]; everything else lives here, where tests reach it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::{AgentRuntime, SendOptions};
use crate::config::KafkaConfig;
use crate::error::RuntimeError;
use crate::ids::{AgentId, TopicId};
use crate::kafka::{KafkaAgentRuntime, WorkerConfig};
use crate::message::{Payload, is_json};
use crate::serve::{self, ServeError};
use crate::telemetry::{self, LogOutput};

/// Exit code of a handler error, a rejected message or any other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad arguments or configuration (clap's own code for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of an RPC that timed out.
pub const EXIT_TIMEOUT: u8 = 3;

/// How long `send`/`publish` wait for their runtime to stop (leave groups, delete
/// their reply channel) after the work is done.
const CLIENT_STOP_LIMIT: Duration = Duration::from_secs(10);

/// Hosts AutoGen-style agents on Kafka, and talks to them.
#[derive(Debug, Parser)]
#[command(name = "switchboard-runtime", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Host the agents a config file declares and serve the HTTP API, until SIGTERM.
    ///
    /// SWITCHBOARD_* environment variables override the file (bootstrap servers,
    /// topic prefix, runtime name, createTopics, HTTP listen address and token).
    Run {
        /// The YAML config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Send one RPC and print the reply's data on stdout.
    ///
    /// Exit codes: 0 reply printed (`null` for an empty reply); 1 handler error or
    /// other failure; 2 bad arguments; 3 timeout. Errors go to stderr.
    Send {
        #[command(flatten)]
        network: Network,
        /// The recipient, TYPE/KEY.
        #[arg(long, value_name = "TYPE/KEY")]
        to: String,
        /// The message type.
        #[arg(long = "type", value_name = "MSGTYPE")]
        message_type: String,
        /// The message data, JSON.
        #[arg(long, value_name = "JSON")]
        data: String,
        /// How long to wait for the reply (e.g. 10s, 500ms, 2m).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Publish one event to a topic.
    Publish {
        #[command(flatten)]
        network: Network,
        /// The topic, TYPE/SOURCE.
        #[arg(long, value_name = "TYPE/SOURCE")]
        topic: String,
        /// The message type.
        #[arg(long = "type", value_name = "MSGTYPE")]
        message_type: String,
        /// The message data, JSON.
        #[arg(long, value_name = "JSON")]
        data: String,
    },
    /// Print the Kafka ACLs a runtime (or, with --operator, the operator) needs.
    ///
    /// Derived from the same topic and group names the code uses; docs/security.md
    /// explains each rule. Apply the kafka-acls lines with
    /// `kafka-acls.sh --bootstrap-server B --command-config admin.properties LINE`.
    Acls {
        /// Topic prefix of the agent network.
        #[arg(long, value_name = "P")]
        prefix: String,
        /// The runtime's name.
        #[arg(
            long,
            value_name = "R",
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        runtime: Option<String>,
        /// The operator's ACLs instead of a runtime's.
        #[arg(long)]
        operator: bool,
        /// The principal to allow, User:<name> (SCRAM user name or certificate CN).
        #[arg(long, value_name = "User:NAME")]
        principal: String,
        /// A runtime whose agents this runtime sends RPCs to (repeatable).
        #[arg(long, value_name = "RUNTIME", conflicts_with = "operator")]
        calls: Vec<String>,
        /// The runtime creates its own topics (createTopics: true, no operator).
        #[arg(long, conflicts_with = "operator")]
        create_topics: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = AclFormat::KafkaAcls)]
        format: AclFormat,
    },
}

/// Output format of `acls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AclFormat {
    /// One `kafka-acls` argument list per line (after --bootstrap-server and
    /// --command-config).
    KafkaAcls,
    /// A JSON array of rules, each with the reason it is needed.
    Json,
}

/// Which agent network to talk to.
#[derive(Debug, clap::Args)]
pub struct Network {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SWITCHBOARD_BOOTSTRAP_SERVERS", value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// Topic prefix of the agent network.
    #[arg(long, env = "SWITCHBOARD_TOPIC_PREFIX", value_name = "P")]
    pub prefix: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Parses `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    if secs <= 0.0 || !secs.is_finite() {
        return Err(format!("{text:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A failed command, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or configuration.
    #[error("{0}")]
    Usage(String),
    /// `run` failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A runtime call failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Serve(ServeError::Config(_)) => EXIT_USAGE,
            Self::Runtime(RuntimeError::Timeout { .. }) => EXIT_TIMEOUT,
            _ => EXIT_FAILURE,
        }
    }
}

/// Runs one command until done (or, for `run`, until SIGTERM/SIGINT).
pub async fn main(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run { config, log_format } => {
            let text = std::fs::read_to_string(&config)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", config.display())))?;
            let env = |k: &str| std::env::var(k).ok();
            let file = serve::load_config(&text, env).map_err(|e| {
                CliError::Usage(format!("invalid configuration {}: {e}", config.display()))
            })?;
            let output = match log_format {
                LogFormat::Json => LogOutput::Json,
                LogFormat::Text => LogOutput::Text,
            };
            let telemetry = telemetry::init(output, "info", Some(&file.runtime.name));
            let served = serve::run(file, env, termination()).await;
            // After the runtime stopped: the spans of the last messages are exported too.
            telemetry.shutdown().await;
            Ok(served?)
        }
        Command::Send {
            network,
            to,
            message_type,
            data,
            timeout,
        } => {
            init_logging_quiet();
            let recipient = parse_pair(&to, "--to", AgentId::new)?;
            let payload = json_payload(&message_type, &data)?;
            let runtime = client_runtime(&network, timeout).await?;
            let options = SendOptions {
                timeout: Some(timeout),
                ..SendOptions::default()
            };
            let reply = runtime.send_payload(payload, &recipient, options).await;
            stop_client(&runtime).await;
            match reply? {
                None => println!("null"),
                Some(p) => println!("{}", String::from_utf8_lossy(&p.data)),
            }
            Ok(())
        }
        Command::Publish {
            network,
            topic,
            message_type,
            data,
        } => {
            init_logging_quiet();
            let topic = parse_pair(&topic, "--topic", TopicId::new)?;
            let payload = json_payload(&message_type, &data)?;
            let runtime = client_runtime(&network, Duration::from_secs(30)).await?;
            let published = runtime.publish_payload(payload, &topic, None).await;
            stop_client(&runtime).await;
            Ok(published?)
        }
        Command::Acls {
            prefix,
            runtime,
            operator,
            principal,
            calls,
            create_topics,
            format,
        } => {
            let access = crate::acls::RuntimeAccess {
                calls,
                create_topics,
            };
            let who = if operator {
                None
            } else {
                // clap requires --runtime unless --operator.
                runtime.as_deref().map(|r| (r, access))
            };
            if who.is_none() && !operator {
                return Err(CliError::Usage(
                    "--runtime or --operator is required".into(),
                ));
            }
            print_acls(&prefix, who, &principal, format)
        }
    }
}

/// `acls`: the rules, printed in `format`.
fn print_acls(
    prefix: &str,
    who: Option<(&str, crate::acls::RuntimeAccess)>,
    principal: &str,
    format: AclFormat,
) -> Result<(), CliError> {
    let usage = |e: crate::config::ConfigError| CliError::Usage(e.to_string());
    let names = crate::protocol::topics::TopicNames::new(prefix).map_err(usage)?;
    let acls = match who {
        Some((runtime, access)) => {
            crate::acls::runtime_acls(&names, runtime, principal, &access).map_err(usage)?
        }
        None => crate::acls::operator_acls(&names, principal).map_err(usage)?,
    };
    let text = match format {
        AclFormat::KafkaAcls => crate::acls::to_kafka_acls(&acls),
        AclFormat::Json => {
            serde_json::to_string_pretty(&acls)
                .map_err(|e| CliError::Usage(format!("cannot encode the ACLs: {e}")))?
                + "\n"
        }
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// `send`/`publish` print only their result and errors, not the runtime's info logs.
fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn parse_pair<T, E: std::fmt::Display>(
    text: &str,
    flag: &str,
    make: impl Fn(String, String) -> Result<T, E>,
) -> Result<T, CliError> {
    let (a, b) = text
        .split_once('/')
        .ok_or_else(|| CliError::Usage(format!("{flag} {text:?}: expected TYPE/KEY")))?;
    make(a.to_owned(), b.to_owned()).map_err(|e| CliError::Usage(format!("{flag} {text:?}: {e}")))
}

fn json_payload(message_type: &str, data: &str) -> Result<Payload, CliError> {
    if message_type.trim().is_empty() {
        return Err(CliError::Usage("--type must not be empty".into()));
    }
    let value: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| CliError::Usage(format!("--data is not valid JSON: {e}")))?;
    let payload = Payload::json(message_type, &value);
    debug_assert!(is_json(&payload.content_type));
    Ok(payload)
}

/// A client runtime (hosts nothing) under a throwaway name, to send and publish
/// with. It never creates the network's topics: a typo in `--prefix` fails instead of
/// making a new network.
async fn client_runtime(
    network: &Network,
    rpc_timeout: Duration,
) -> Result<KafkaAgentRuntime, CliError> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let mut kafka = KafkaConfig::new(&network.bootstrap);
    // Security only from the environment: a password never goes on the command line.
    kafka
        .security_from_lookup(|k| std::env::var(k).ok())
        .map_err(|e| CliError::Usage(format!("invalid Kafka security settings: {e}")))?;
    let mut cfg = WorkerConfig::new(kafka, &network.prefix, format!("cli-{}", &suffix[..8]));
    cfg.create_topics = false;
    cfg.rpc_timeout = rpc_timeout;
    cfg.validate()
        .map_err(|e| CliError::Usage(format!("invalid arguments: {e}")))?;
    Ok(KafkaAgentRuntime::start_client(cfg).await?)
}

/// Stops the client runtime (bounded); it deletes its reply channel.
async fn stop_client(runtime: &KafkaAgentRuntime) {
    match tokio::time::timeout(CLIENT_STOP_LIMIT, runtime.stop()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "client runtime stopped with an error"),
        Err(_) => tracing::warn!("client runtime did not stop in time"),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_command_line_has_the_documented_shape() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "switchboard-runtime",
            "send",
            "--bootstrap",
            "127.0.0.1:9092",
            "--prefix",
            "demo",
            "--to",
            "echo/a",
            "--type",
            "demo.Hi",
            "--data",
            r#"{"x":1}"#,
        ])
        .unwrap();
        match cli.command {
            Command::Send { to, timeout, .. } => {
                assert_eq!(to, "echo/a");
                assert_eq!(timeout, Duration::from_secs(10));
            }
            other => panic!("parsed as {other:?}"),
        }
        let err = Cli::try_parse_from(["switchboard-runtime", "run"]).unwrap_err();
        assert!(err.to_string().contains("--config"), "{err}");
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        let e = parse_pair("echo", "--to", AgentId::new).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(json_payload("t", "{nope").is_err());
        let timeout = CliError::Runtime(RuntimeError::Timeout {
            agent: AgentId::new("echo", "a").unwrap(),
            after: Duration::from_secs(1),
        });
        assert_eq!(timeout.exit_code(), EXIT_TIMEOUT);
    }
}
