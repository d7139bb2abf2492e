//! The secured test broker (`SWITCHBOARD_KAFKA_SECURITY=1 e2e/infra/kafka.sh`):
//! SASL_SSL/SCRAM-SHA-512 and mTLS listeners, ACLs enforced, no PLAINTEXT. Tests set
//! up principals through the broker's own tools (kafka.sh `add-user`, `acls`,
//! `client-cert`); the harness itself is the `admin` super user.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use switchboard_runtime::KafkaConfig;
use switchboard_runtime::config::{SaslCredentials, SaslMechanism, SecurityProtocol};

/// Set to `1` by `e2e/infra/with-infra.sh` when it started the secured broker.
pub const SECURED_VAR: &str = "SWITCHBOARD_TEST_KAFKA_SECURED";

/// Where the secured broker listens and what the harness needs to administer it.
#[derive(Debug, Clone)]
pub struct SecuredKafka {
    /// SASL_SSL listener, HOST:PORT.
    pub sasl_bootstrap: String,
    /// mTLS listener, HOST:PORT.
    pub mtls_bootstrap: String,
    /// The CA that signed the broker's certificate (PEM).
    pub ca_file: PathBuf,
    /// The harness's super user.
    pub admin_user: String,
    admin_password: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/kafka.sh")
}

/// Runs `kafka.sh ARGS` in secured mode with `stdin`; panics with its stderr on failure.
fn kafka_sh(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(script())
        .args(args)
        .env("SWITCHBOARD_KAFKA_SECURITY", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kafka.sh {args:?}: {e}"));
    // Dropping the pipe closes stdin, so a verb reading it sees the end.
    if let Some(mut pipe) = child.stdin.take()
        && let Some(text) = stdin
    {
        pipe.write_all(text.as_bytes())
            .expect("write kafka.sh stdin");
    }
    let out = child.wait_with_output().expect("wait for kafka.sh");
    assert!(
        out.status.success(),
        "kafka.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl SecuredKafka {
    /// The running secured broker.
    ///
    /// # Panics
    /// When with-infra did not start it, with instructions.
    pub fn get() -> &'static Self {
        static IT: OnceLock<SecuredKafka> = OnceLock::new();
        IT.get_or_init(|| {
            assert!(
                std::env::var(SECURED_VAR).is_ok_and(|v| v == "1"),
                "{SECURED_VAR} is not set: run the tests under e2e/infra/with-infra.sh (it starts \
                 the secured broker), or start it with `SWITCHBOARD_KAFKA_SECURITY=1 \
                 e2e/infra/kafka.sh start` and export {SECURED_VAR}=1"
            );
            let text = kafka_sh(&["env"], None);
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .unwrap_or_else(|| panic!("kafka.sh env printed no {k}: {text}"))
                    .to_owned()
            };
            let password_file = get("ADMIN_PASSWORD_FILE");
            let admin_password = std::fs::read_to_string(&password_file)
                .unwrap_or_else(|e| panic!("read {password_file}: {e}"))
                .trim()
                .to_owned();
            SecuredKafka {
                sasl_bootstrap: get("SASL_BOOTSTRAP"),
                mtls_bootstrap: get("MTLS_BOOTSTRAP"),
                ca_file: PathBuf::from(get("CA_FILE")),
                admin_user: get("ADMIN_USER"),
                admin_password,
            }
        })
    }

    /// Client settings for SCRAM-SHA-512 user `user` over SASL_SSL.
    pub fn scram_config(&self, user: &str, password: &str) -> KafkaConfig {
        let mut cfg = KafkaConfig::new(&self.sasl_bootstrap);
        cfg.security_protocol = SecurityProtocol::SaslSsl;
        cfg.sasl = Some(SaslCredentials {
            mechanism: SaslMechanism::ScramSha512,
            username: user.to_owned(),
            password: password.to_owned(),
        });
        cfg.ssl_ca_location = Some(self.ca_file.display().to_string());
        cfg
    }

    /// The harness's super user (topic set-up, checks).
    pub fn admin_config(&self) -> KafkaConfig {
        self.scram_config(&self.admin_user, &self.admin_password)
    }

    /// The admin password, for CLI calls made as the harness.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// Creates (or re-keys) SCRAM-SHA-512 user `user`.
    pub fn add_user(&self, user: &str, password: &str) {
        kafka_sh(&["add-user", user], Some(&format!("{password}\n")));
    }

    /// Issues a client certificate `CN=<cn>`; returns (certificate, key) paths.
    pub fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        let out = kafka_sh(&["client-cert", cn], None);
        let mut lines = out.lines();
        let cert = PathBuf::from(lines.next().expect("client-cert printed the cert path"));
        let key = PathBuf::from(lines.next().expect("client-cert printed the key path"));
        (cert, key)
    }

    /// Adds ACLs: one `kafka-acls` argument line (as `switchboard-runtime acls` prints).
    pub fn add_acl_line(&self, line: &str) {
        let args: Vec<&str> = std::iter::once("acls")
            .chain(line.split_whitespace())
            .collect();
        kafka_sh(&args, None);
    }
}
