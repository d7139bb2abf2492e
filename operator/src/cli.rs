//! The command line of `switchboard-operator`: the `run` command and its flags, each
//! with its environment fallback and default.
//!
//! Parsed by hand: ten `--name[=value]` flags do not need a parser crate in the
//! operator's dependency tree. [`FLAGS`] is the one table both the parser and the help
//! text read. Pure (arguments and environment passed in), hence tested here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// The runtime image when neither `--runtime-image` nor `SWITCHBOARD_RUNTIME_IMAGE` is set.
pub const DEFAULT_RUNTIME_IMAGE: &str = "ghcr.io/switchboard-dev/switchboard-runtime:latest";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Reconcile until SIGTERM.
    Run(RunArgs),
    /// Print this text (help or version) to stdout and exit 0.
    Print(String),
}

/// The flags of `run`, resolved: flag, else environment variable, else default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--namespace`, `SWITCHBOARD_WATCH_NAMESPACE`.
    pub namespace: Option<String>,
    /// `--runtime-image`, `SWITCHBOARD_RUNTIME_IMAGE`.
    pub runtime_image: String,
    /// `--leader-elect`.
    pub leader_elect: bool,
    /// `--lease-namespace`, `POD_NAMESPACE`.
    pub lease_namespace: String,
    /// `--lease-name`.
    pub lease_name: String,
    /// `--lease-duration-seconds`.
    pub lease_duration_seconds: u64,
    /// `--resync-seconds`.
    pub resync_seconds: u64,
    /// `--autoscale-interval-seconds`.
    pub autoscale_interval_seconds: u64,
    /// `--scale-down-window-seconds`.
    pub scale_down_window_seconds: u64,
    /// `--reply-gc-grace-seconds`, `SWITCHBOARD_REPLY_GC_GRACE_SECONDS` (0: off).
    pub reply_gc_grace_seconds: u64,
    /// `--metrics-addr`.
    pub metrics_addr: SocketAddr,
}

/// A command line the operator cannot run; printed after `error: `, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// No command given.
    #[error("a command is required: `run` (see --help)")]
    MissingCommand,
    /// A command other than `run`.
    #[error("unknown command {0:?}: the only command is `run` (see --help)")]
    UnknownCommand(String),
    /// An argument that is no flag of `run`.
    #[error("unexpected argument {0:?} (see `run --help`)")]
    UnexpectedArgument(String),
    /// A flag that takes a value, given none.
    #[error("--{0} needs a value")]
    MissingValue(&'static str),
    /// A switch given a value.
    #[error("--{0} takes no value")]
    UnexpectedValue(&'static str),
    /// A flag given twice.
    #[error("--{0} given more than once")]
    Repeated(&'static str),
    /// A value that does not parse; `origin` says where it came from when not the flag.
    #[error("invalid value for --{flag}{origin}: {value:?}: {reason}")]
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// " (from ENV)" when the value came from the environment, else empty.
        origin: String,
        /// The value.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// One flag of `run`.
#[derive(Debug)]
pub struct Flag {
    /// Name without the leading `--`.
    pub name: &'static str,
    /// Placeholder of the value in the help; `None` for a switch.
    pub value: Option<&'static str>,
    /// Environment variable read when the flag is absent.
    pub env: Option<&'static str>,
    /// Value when both flag and variable are absent.
    pub default: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
}

/// Every flag of `run`, in the order of the help text.
pub const FLAGS: &[Flag] = &[
    Flag {
        name: "kubeconfig",
        value: Some("PATH"),
        env: None,
        default: None,
        help: "Kubeconfig file (default: in-cluster, then KUBECONFIG, then ~/.kube/config)",
    },
    Flag {
        name: "namespace",
        value: Some("NAMESPACE"),
        env: Some("SWITCHBOARD_WATCH_NAMESPACE"),
        default: None,
        help: "Watch only this namespace (default: all namespaces)",
    },
    Flag {
        name: "runtime-image",
        value: Some("IMAGE"),
        env: Some("SWITCHBOARD_RUNTIME_IMAGE"),
        default: Some(DEFAULT_RUNTIME_IMAGE),
        help: "Image of the runtime pods when an AgentRuntime sets no spec.image",
    },
    Flag {
        name: "leader-elect",
        value: None,
        env: None,
        default: None,
        help: "Hold a Lease before reconciling, so several operator replicas are safe",
    },
    Flag {
        name: "lease-namespace",
        value: Some("NAMESPACE"),
        env: Some("POD_NAMESPACE"),
        default: Some("default"),
        help: "Namespace of the leader-election Lease",
    },
    Flag {
        name: "lease-name",
        value: Some("NAME"),
        env: None,
        default: Some("switchboard-operator"),
        help: "Name of the leader-election Lease",
    },
    Flag {
        name: "lease-duration-seconds",
        value: Some("SECONDS"),
        env: None,
        default: Some("15"),
        help: "Seconds the Lease stays valid without renewal: how long a standby waits after \
               a leader crashed (a gracefully stopped leader releases it at once)",
    },
    Flag {
        name: "resync-seconds",
        value: Some("SECONDS"),
        env: None,
        default: Some("60"),
        help: "Seconds between resyncs of every AgentRuntime (status.lag refresh, Kafka drift)",
    },
    Flag {
        name: "autoscale-interval-seconds",
        value: Some("SECONDS"),
        env: None,
        default: Some("15"),
        help: "Seconds between lag samples of autoscaled AgentRuntimes",
    },
    Flag {
        name: "scale-down-window-seconds",
        value: Some("SECONDS"),
        env: None,
        default: Some("300"),
        help: "Seconds a lower replica recommendation must hold before an autoscaled runtime \
               scales down",
    },
    Flag {
        name: "reply-gc-grace-seconds",
        value: Some("SECONDS"),
        env: Some("SWITCHBOARD_REPLY_GC_GRACE_SECONDS"),
        default: Some("300"),
        help: "Delete the reply-channel topic of a process this many seconds after its last \
               registry heartbeat expired (checked every resync; 0: never)",
    },
    Flag {
        name: "metrics-addr",
        value: Some("ADDR"),
        env: None,
        default: Some("0.0.0.0:8081"),
        help: "Address of /metrics and /healthz",
    },
];

const NAME: &str = "switchboard-operator";
const ABOUT: &str = "Kubernetes operator for Switchboard";
const RUN_ABOUT: &str = "Reconcile AgentRuntimes and AgentSubscriptions until SIGTERM.";

/// Parses the arguments after the program name; `env` reads an environment variable.
pub fn parse<I>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<Command, CliError>
where
    I: IntoIterator<Item = String>,
{
    let mut args = args.into_iter();
    match args.next().as_deref() {
        None => Err(CliError::MissingCommand),
        Some("-h" | "--help") => Ok(Command::Print(help())),
        Some("-V" | "--version") => Ok(Command::Print(version())),
        Some("help") => Ok(Command::Print(match args.next().as_deref() {
            Some("run") => run_help(),
            _ => help(),
        })),
        Some("run") => parse_run(args, env),
        Some(other) if other.starts_with('-') => {
            Err(CliError::UnexpectedArgument(other.to_owned()))
        }
        Some(other) => Err(CliError::UnknownCommand(other.to_owned())),
    }
}

/// The values given for `run`'s flags, by index into [`FLAGS`], before env and defaults.
fn parse_run(
    args: impl Iterator<Item = String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, CliError> {
    let mut given: Vec<Option<String>> = vec![None; FLAGS.len()];
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Print(run_help()));
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(CliError::UnexpectedArgument(arg));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        let Some(index) = FLAGS.iter().position(|f| f.name == name) else {
            return Err(CliError::UnexpectedArgument(arg));
        };
        let flag = &FLAGS[index];
        let value = match (flag.value, inline) {
            (None, None) => String::new(),
            (None, Some(_)) => return Err(CliError::UnexpectedValue(flag.name)),
            (Some(_), Some(value)) => value,
            // As clap does: the next argument is the value unless it is a flag.
            (Some(_), None) => match args.next_if(|next| !next.starts_with("--")) {
                Some(value) => value,
                None => return Err(CliError::MissingValue(flag.name)),
            },
        };
        if given[index].replace(value).is_some() {
            return Err(CliError::Repeated(flag.name));
        }
    }
    let resolved = Resolved { given, env };
    Ok(Command::Run(RunArgs {
        kubeconfig: resolved.optional::<PathBuf>("kubeconfig")?,
        namespace: resolved.optional("namespace")?,
        runtime_image: resolved.required("runtime-image")?,
        leader_elect: resolved.given("leader-elect").is_some(),
        lease_namespace: resolved.required("lease-namespace")?,
        lease_name: resolved.required("lease-name")?,
        lease_duration_seconds: resolved.required("lease-duration-seconds")?,
        resync_seconds: resolved.required("resync-seconds")?,
        autoscale_interval_seconds: resolved.required("autoscale-interval-seconds")?,
        scale_down_window_seconds: resolved.required("scale-down-window-seconds")?,
        reply_gc_grace_seconds: resolved.required("reply-gc-grace-seconds")?,
        metrics_addr: resolved.required("metrics-addr")?,
    }))
}

/// Flag values as given, resolved against the environment and the defaults.
struct Resolved<'a> {
    given: Vec<Option<String>>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolved<'_> {
    fn flag(name: &str) -> (usize, &'static Flag) {
        FLAGS
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
            // Only called with the names written in parse_run, all in FLAGS (a unit
            // test parses every flag).
            .unwrap_or_else(|| panic!("--{name} is not in FLAGS"))
    }

    fn given(&self, name: &str) -> Option<&str> {
        self.given[Self::flag(name).0].as_deref()
    }

    /// The value of `name` and where it came from (empty: the flag or the default).
    fn raw(&self, name: &str) -> Option<(String, String)> {
        let (index, flag) = Self::flag(name);
        if let Some(value) = &self.given[index] {
            return Some((value.clone(), String::new()));
        }
        if let Some(var) = flag.env
            && let Some(value) = (self.env)(var)
        {
            return Some((value, format!(" (from {var})")));
        }
        flag.default.map(|d| (d.to_owned(), String::new()))
    }

    fn optional<T>(&self, name: &'static str) -> Result<Option<T>, CliError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let Some((value, origin)) = self.raw(name) else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|e: T::Err| CliError::InvalidValue {
                flag: name,
                origin,
                value,
                reason: e.to_string(),
            })
    }

    fn required<T>(&self, name: &'static str) -> Result<T, CliError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name)? {
            Some(value) => Ok(value),
            // Every flag read with `required` has a default in FLAGS (tested).
            None => Err(CliError::MissingValue(Self::flag(name).1.name)),
        }
    }
}

/// `switchboard-operator 0.1.0`.
pub fn version() -> String {
    format!("{NAME} {}\n", env!("CARGO_PKG_VERSION"))
}

/// The top-level help.
pub fn help() -> String {
    format!(
        "{ABOUT}\n\n\
         Usage: {NAME} <COMMAND>\n\n\
         Commands:\n  \
           run   {RUN_ABOUT}\n  \
           help  Print this message or the help of the given command\n\n\
         Options:\n  \
           -h, --help     Print help\n  \
           -V, --version  Print version\n"
    )
}

/// The help of `run`: every flag with its value, environment variable and default.
pub fn run_help() -> String {
    let mut out = format!("{RUN_ABOUT}\n\nUsage: {NAME} run [OPTIONS]\n\nOptions:\n");
    for flag in FLAGS {
        let mut line = format!("      --{}", flag.name);
        if let Some(value) = flag.value {
            line.push_str(&format!(" <{value}>"));
        }
        out.push_str(&line);
        out.push_str("\n          ");
        out.push_str(flag.help);
        if let Some(var) = flag.env {
            out.push_str(&format!(" [env: {var}]"));
        }
        if let Some(default) = flag.default {
            out.push_str(&format!(" [default: {default}]"));
        }
        out.push('\n');
    }
    out.push_str("  -h, --help\n          Print help\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{CliError, Command, FLAGS, RunArgs, parse, run_help};

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, CliError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse(args.iter().map(|a| (*a).to_owned()), &|k| {
            env.get(k).cloned()
        })
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> RunArgs {
        match parse_with(args, env) {
            Ok(Command::Run(a)) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        assert_eq!(
            run(&["run"], &[]),
            RunArgs {
                kubeconfig: None,
                namespace: None,
                runtime_image: "ghcr.io/switchboard-dev/switchboard-runtime:latest".into(),
                leader_elect: false,
                lease_namespace: "default".into(),
                lease_name: "switchboard-operator".into(),
                lease_duration_seconds: 15,
                resync_seconds: 60,
                autoscale_interval_seconds: 15,
                scale_down_window_seconds: 300,
                reply_gc_grace_seconds: 300,
                metrics_addr: "0.0.0.0:8081".parse().unwrap(),
            }
        );
    }

    #[test]
    fn every_flag_in_both_spellings() {
        let values = [
            ("kubeconfig", "/k/config"),
            ("namespace", "apps"),
            ("runtime-image", "img:1"),
            ("lease-namespace", "ops"),
            ("lease-name", "lease"),
            ("lease-duration-seconds", "7"),
            ("resync-seconds", "8"),
            ("autoscale-interval-seconds", "9"),
            ("scale-down-window-seconds", "10"),
            ("reply-gc-grace-seconds", "11"),
            ("metrics-addr", "127.0.0.1:9000"),
        ];
        let want = RunArgs {
            kubeconfig: Some("/k/config".into()),
            namespace: Some("apps".into()),
            runtime_image: "img:1".into(),
            leader_elect: true,
            lease_namespace: "ops".into(),
            lease_name: "lease".into(),
            lease_duration_seconds: 7,
            resync_seconds: 8,
            autoscale_interval_seconds: 9,
            scale_down_window_seconds: 10,
            reply_gc_grace_seconds: 11,
            metrics_addr: "127.0.0.1:9000".parse().unwrap(),
        };
        let separate: Vec<String> = std::iter::once("run".to_owned())
            .chain(std::iter::once("--leader-elect".to_owned()))
            .chain(
                values
                    .iter()
                    .flat_map(|(k, v)| [format!("--{k}"), (*v).to_owned()]),
            )
            .collect();
        let separate: Vec<&str> = separate.iter().map(String::as_str).collect();
        assert_eq!(run(&separate, &[]), want);
        let joined: Vec<String> = std::iter::once("run".to_owned())
            .chain(values.iter().map(|(k, v)| format!("--{k}={v}")))
            .chain(std::iter::once("--leader-elect".to_owned()))
            .collect();
        let joined: Vec<&str> = joined.iter().map(String::as_str).collect();
        assert_eq!(run(&joined, &[]), want);
        // Every flag of the table was exercised.
        assert_eq!(values.len() + 1, FLAGS.len());
    }

    #[test]
    fn environment_fills_in_and_the_flag_wins() {
        let env = [
            ("SWITCHBOARD_WATCH_NAMESPACE", "from-env"),
            ("SWITCHBOARD_RUNTIME_IMAGE", "env:img"),
            ("POD_NAMESPACE", "pod-ns"),
            ("SWITCHBOARD_REPLY_GC_GRACE_SECONDS", "0"),
        ];
        let a = run(&["run"], &env);
        assert_eq!(a.reply_gc_grace_seconds, 0);
        assert_eq!(a.namespace.as_deref(), Some("from-env"));
        assert_eq!(a.runtime_image, "env:img");
        assert_eq!(a.lease_namespace, "pod-ns");
        let a = run(
            &[
                "run",
                "--namespace=flag",
                "--runtime-image",
                "flag:img",
                "--lease-namespace=flag-ns",
            ],
            &env,
        );
        assert_eq!(a.namespace.as_deref(), Some("flag"));
        assert_eq!(a.runtime_image, "flag:img");
        assert_eq!(a.lease_namespace, "flag-ns");
    }

    #[test]
    fn bad_values_name_the_flag_and_the_value() {
        let err = parse_with(&["run", "--resync-seconds", "soon"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for --resync-seconds: \"soon\": invalid digit found in string"
        );
        let err = parse_with(&["run", "--metrics-addr=8081"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for --metrics-addr: \"8081\": invalid socket address syntax"
        );
        let err = parse_with(&["run", "--lease-duration-seconds=-1"], &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid value for --lease-duration-seconds: \"-1\": "),
            "{err}"
        );
    }

    #[test]
    fn malformed_command_lines_are_refused() {
        let cases: &[(&[&str], CliError)] = &[
            (&[], CliError::MissingCommand),
            (&["serve"], CliError::UnknownCommand("serve".into())),
            (
                &["--namespace", "x"],
                CliError::UnexpectedArgument("--namespace".into()),
            ),
            (
                &["run", "--nope"],
                CliError::UnexpectedArgument("--nope".into()),
            ),
            (
                &["run", "stray"],
                CliError::UnexpectedArgument("stray".into()),
            ),
            (&["run", "--namespace"], CliError::MissingValue("namespace")),
            (
                &["run", "--namespace", "--leader-elect"],
                CliError::MissingValue("namespace"),
            ),
            (
                &["run", "--leader-elect=true"],
                CliError::UnexpectedValue("leader-elect"),
            ),
            (
                &["run", "--lease-name", "a", "--lease-name=b"],
                CliError::Repeated("lease-name"),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse_with(args, &[]).as_ref(), Err(want), "{args:?}");
        }
    }

    #[test]
    fn help_and_version() {
        let Ok(Command::Print(top)) = parse_with(&["--help"], &[]) else {
            panic!("--help prints")
        };
        assert!(
            top.contains("Usage: switchboard-operator <COMMAND>"),
            "{top}"
        );
        assert!(top.contains("run   Reconcile AgentRuntimes"), "{top}");
        for args in [
            &["run", "--help"][..],
            &["run", "--namespace=x", "-h"],
            &["help", "run"],
        ] {
            assert_eq!(
                parse_with(args, &[]),
                Ok(Command::Print(run_help())),
                "{args:?}"
            );
        }
        assert_eq!(
            parse_with(&["--version"], &[]),
            Ok(Command::Print(format!(
                "switchboard-operator {}\n",
                env!("CARGO_PKG_VERSION")
            )))
        );
    }

    /// The help lists every flag with its env fallback and default, and every flag it
    /// lists parses (a flag that only the help knows, or only the parser, fails here).
    #[test]
    fn run_help_lists_every_flag_and_each_parses() {
        let help = run_help();
        for flag in [
            "--kubeconfig <PATH>",
            "--namespace <NAMESPACE>",
            "--runtime-image <IMAGE>",
            "--leader-elect",
            "--lease-namespace <NAMESPACE>",
            "--lease-name <NAME>",
            "--lease-duration-seconds <SECONDS>",
            "--resync-seconds <SECONDS>",
            "--autoscale-interval-seconds <SECONDS>",
            "--scale-down-window-seconds <SECONDS>",
            "--metrics-addr <ADDR>",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
        for hint in [
            "[env: SWITCHBOARD_WATCH_NAMESPACE]",
            "[env: SWITCHBOARD_RUNTIME_IMAGE]",
            "[env: POD_NAMESPACE]",
            "[default: ghcr.io/switchboard-dev/switchboard-runtime:latest]",
            "[default: 0.0.0.0:8081]",
            "[default: 300]",
        ] {
            assert!(help.contains(hint), "{hint} missing from:\n{help}");
        }
        for listed in help.split_whitespace().filter(|w| w.starts_with("--")) {
            if listed == "--help" {
                continue;
            }
            let with_value = FLAGS
                .iter()
                .find(|f| listed == format!("--{}", f.name))
                .and_then(|f| f.value)
                .is_some();
            let args: &[&str] = if with_value {
                &["run", listed, "1"]
            } else {
                &["run", listed]
            };
            // A value of "1" may be invalid for the flag (an address), but the flag
            // itself must be known.
            let result = parse_with(args, &[]);
            assert!(
                !matches!(result, Err(CliError::UnexpectedArgument(_))),
                "{listed} is in the help but not accepted: {result:?}"
            );
        }
    }

    /// The Deployment of the chart and of the kustomize base passes these.
    #[test]
    fn the_manifests_arguments_parse() {
        let a = run(
            &[
                "run",
                "--namespace=apps",
                "--runtime-image=ghcr.io/switchboard-dev/switchboard-runtime:0.1.0",
                "--leader-elect",
                "--lease-namespace=switchboard-system",
                "--metrics-addr=0.0.0.0:8081",
            ],
            &[("POD_NAMESPACE", "ignored")],
        );
        assert!(a.leader_elect);
        assert_eq!(a.lease_namespace, "switchboard-system");
        assert_eq!(a.metrics_addr.port(), 8081);
    }
}
