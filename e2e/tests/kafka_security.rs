//! Kafka security for real: `switchboard-runtime run` processes against the secured
//! broker (SASL_SSL/SCRAM-SHA-512 and mTLS listeners, StandardAuthorizer with
//! `allow.everyone.if.no.acl.found=false`), each principal holding exactly the ACLs
//! `switchboard-runtime acls` prints. Wrong credentials, an untrusted CA and missing
//! ACLs are reported by cause while the process keeps retrying.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use switchboard_e2e::binary::{RuntimeProcess, cli, free_port};
use switchboard_e2e::env::unique_name;
use switchboard_e2e::secured::SecuredKafka;
use switchboard_runtime::admin::TopicAdmin;
use switchboard_runtime::protocol::topics::TopicNames;

const READY: Duration = Duration::from_secs(90);
const CLI_LIMIT: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Applies exactly what `switchboard-runtime acls` prints for `runtime`/`principal`.
async fn grant_runtime_acls(kafka: &SecuredKafka, prefix: &str, runtime: &str, principal: &str) {
    let out = cli(
        &[
            "acls",
            "--prefix",
            prefix,
            "--runtime",
            runtime,
            "--principal",
            principal,
            "--create-topics",
        ],
        CLI_LIMIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.lines().count() >= 5, "{out:?}");
    for line in out.stdout.lines() {
        kafka.add_acl_line(line);
    }
}

/// A new SCRAM user holding exactly runtime `rt1`'s ACLs on `prefix`: (user, password).
async fn rt1_user(kafka: &SecuredKafka, prefix: &str) -> (String, String) {
    let user = unique_name("rt-user");
    let pw = password();
    kafka.add_user(&user, &pw);
    grant_runtime_acls(kafka, prefix, "rt1", &format!("User:{user}")).await;
    (user, pw)
}

/// A runtime config hosting echo and counter (alerts -> counter) on `prefix`.
fn config(prefix: &str, name: &str, bootstrap: &str, security: &str, http: SocketAddr) -> String {
    format!(
        r#"
kafka:
  bootstrapServers: "{bootstrap}"
  topicPrefix: {prefix}
  security: {security}
runtime: {{ name: {name}, createTopics: true, partitions: 2, rpcTimeoutMs: 20000 }}
agents:
  - {{ type: echo,    builtin: echo }}
  - {{ type: counter, builtin: counter }}
subscriptions:
  - {{ topicType: alerts, agentType: counter }}
http: {{ listen: "{http}" }}
"#
    )
}

fn scram_security(kafka: &SecuredKafka) -> String {
    format!(
        "{{ protocol: SASL_SSL, saslMechanism: SCRAM-SHA-512, caLocation: \"{}\" }}",
        kafka.ca_file.display()
    )
}

/// RPC to echo, three events to the counter, then an RPC to the counter: everything
/// the runtime's principal needs (inbox, reply channel, events, registry, state).
async fn rpc_and_publish_work(p: &RuntimeProcess) {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/agents/echo/a", p.url()))
        .header("ce-type", "demo.Hi")
        .body(r#"{"hi":1}"#)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "echo RPC: {body}; log:\n{}", p.log_text());
    assert!(body.contains("\"hi\""), "{body}");
    for _ in 0..3 {
        let r = http
            .post(format!("{}/v1/topics/alerts/k1", p.url()))
            .header("ce-type", "demo.Alert")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    let handled = r#"switchboard_messages_handled_total{agent_type="counter"}"#;
    let start = Instant::now();
    loop {
        let n = p.metric(handled).await.unwrap_or(0.0);
        if n >= 3.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the counter got {n} of 3 events; log:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count(p).await, 4, "3 events + this RPC");
}

async fn readyz(p: &RuntimeProcess) -> (u16, String) {
    match reqwest::get(format!("{}/readyz", p.url())).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until `/readyz` says 503 with `reason`, the log names `cause`, and the
/// process has retried at least twice without exiting.
async fn not_ready_because(p: &mut RuntimeProcess, reason: &str, cause: &str) {
    let start = Instant::now();
    loop {
        let (status, body) = readyz(p).await;
        let log = p.log_text();
        let retries = log.matches("cannot use kafka; retrying").count();
        if status == 503 && body.contains(reason) && log.contains(cause) && retries >= 2 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "expected not ready with {reason} ({cause}), retrying; readyz {status} {body:?}, \
             {retries} retries; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_runtime_under_exactly_its_acls_serves_rpc_and_publish() {
    let kafka = SecuredKafka::get();
    let prefix = unique_name("sec");
    let (user, pw) = rt1_user(kafka, &prefix).await;

    let http = loopback();
    let yaml = config(
        &prefix,
        "rt1",
        &kafka.sasl_bootstrap,
        &scram_security(kafka),
        http,
    );
    let env = [
        ("SWITCHBOARD_SASL_USERNAME", user.as_str()),
        ("SWITCHBOARD_SASL_PASSWORD", pw.as_str()),
    ];
    let mut p = RuntimeProcess::spawn_with_env("sec-scram", &yaml, http, &env);
    p.wait_ready(READY).await;
    rpc_and_publish_work(&p).await;
    assert!(!p.log_text().contains(&pw), "the password reached the log");
    assert!(!std::fs::read_to_string(&p.config).unwrap().contains(&pw));

    // The CLI connects with SCRAM from the environment (here as the harness's user,
    // since a CLI process names itself `cli-<random>`).
    let mut cmd = tokio::process::Command::new(switchboard_e2e::binary::runtime_binary());
    cmd.args([
        "send",
        "--bootstrap",
        &kafka.sasl_bootstrap,
        "--prefix",
        &prefix,
    ])
    .args([
        "--to",
        "echo/b",
        "--type",
        "demo.Hi",
        "--data",
        r#"{"via":"cli"}"#,
    ])
    .env("SWITCHBOARD_SECURITY_PROTOCOL", "SASL_SSL")
    .env("SWITCHBOARD_SASL_MECHANISM", "SCRAM-SHA-512")
    .env("SWITCHBOARD_SASL_USERNAME", &kafka.admin_user)
    .env("SWITCHBOARD_SASL_PASSWORD", kafka.admin_password())
    .env("SWITCHBOARD_SSL_CA_LOCATION", &kafka.ca_file)
    .kill_on_drop(true);
    let out = tokio::time::timeout(CLI_LIMIT, cmd.output())
        .await
        .expect("send hung")
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("cli"),
        "{out:?}"
    );

    p.terminate();
    assert!(p.wait_exit(Duration::from_secs(60)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_runtime_under_exactly_its_acls_serves_rpc_and_publish() {
    let kafka = SecuredKafka::get();
    let prefix = unique_name("sec");
    let cn = unique_name("rt-cert");
    let (cert, key) = kafka.client_cert(&cn);
    grant_runtime_acls(kafka, &prefix, "rt1", &format!("User:{cn}")).await;

    let http = loopback();
    let security = format!(
        "{{ protocol: SSL, caLocation: \"{}\", certLocation: \"{}\", keyLocation: \"{}\" }}",
        kafka.ca_file.display(),
        cert.display(),
        key.display()
    );
    let yaml = config(&prefix, "rt1", &kafka.mtls_bootstrap, &security, http);
    let mut p = RuntimeProcess::spawn("sec-mtls", &yaml, http);
    p.wait_ready(READY).await;
    rpc_and_publish_work(&p).await;
    p.terminate();
    assert!(p.wait_exit(Duration::from_secs(60)).await.success());
}

/// A self-signed CA that did not sign the broker's certificate.
fn untrusted_ca(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let (crt, key) = (dir.join("other-ca.crt"), dir.join("other-ca.key"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not-the-broker-ca", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl failed");
    crt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_wrong_password_untrusted_ca_and_missing_acl_are_named_and_retried() {
    let kafka = SecuredKafka::get();
    let prefix = unique_name("sec");
    let user = unique_name("rt-user");
    let (good, wrong) = (password(), password());
    kafka.add_user(&user, &good);
    grant_runtime_acls(kafka, &prefix, "rt1", &format!("User:{user}")).await;
    let creds = |pw: &str| {
        vec![
            ("SWITCHBOARD_SASL_USERNAME".to_owned(), user.clone()),
            ("SWITCHBOARD_SASL_PASSWORD".to_owned(), pw.to_owned()),
        ]
    };
    let spawn = |name: &str, security: String, env: Vec<(String, String)>| {
        let http = loopback();
        let yaml = config(&prefix, "rt1", &kafka.sasl_bootstrap, &security, http);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        RuntimeProcess::spawn_with_env(name, &yaml, http, &env)
    };

    // Wrong password: named, not ready, retrying; fixed on the broker -> ready.
    let mut bad_pw = spawn("sec-badpw", scram_security(kafka), creds(&wrong));
    // Untrusted CA: the TLS handshake fails.
    let dir = std::env::temp_dir().join(unique_name("other-ca"));
    let other_ca = untrusted_ca(&dir);
    let bad_ca = format!(
        "{{ protocol: SASL_SSL, saslMechanism: SCRAM-SHA-512, caLocation: \"{}\" }}",
        other_ca.display()
    );
    let mut bad_tls = spawn("sec-badca", bad_ca, creds(&good));
    // A valid user with no ACLs at all.
    let bare = unique_name("no-acl");
    let bare_pw = password();
    kafka.add_user(&bare, &bare_pw);
    let mut no_acl = spawn(
        "sec-noacl",
        scram_security(kafka),
        vec![
            ("SWITCHBOARD_SASL_USERNAME".to_owned(), bare.clone()),
            ("SWITCHBOARD_SASL_PASSWORD".to_owned(), bare_pw.clone()),
        ],
    );

    // A user with the topic ACLs of the acls output but none of its group ACLs.
    let no_group = unique_name("no-group");
    let no_group_pw = password();
    kafka.add_user(&no_group, &no_group_pw);
    let out = cli(
        &["acls", "--prefix", &prefix, "--runtime", "rt1"],
        CLI_LIMIT,
    )
    .await;
    assert_ne!(out.code, Some(0), "--principal is required: {out:?}");
    let out = cli(
        &[
            "acls",
            "--prefix",
            &prefix,
            "--runtime",
            "rt1",
            "--principal",
            &format!("User:{no_group}"),
            "--create-topics",
        ],
        CLI_LIMIT,
    )
    .await;
    for line in out.stdout.lines().filter(|l| !l.contains("--group")) {
        kafka.add_acl_line(line);
    }
    let mut no_group_acl = spawn(
        "sec-nogroup",
        scram_security(kafka),
        vec![
            ("SWITCHBOARD_SASL_USERNAME".to_owned(), no_group.clone()),
            ("SWITCHBOARD_SASL_PASSWORD".to_owned(), no_group_pw.clone()),
        ],
    );

    not_ready_because(
        &mut bad_pw,
        "KafkaAuthenticationFailed",
        "SASL authentication failed",
    )
    .await;
    not_ready_because(&mut bad_tls, "KafkaTlsHandshakeFailed", "TLS handshake").await;
    not_ready_because(
        &mut no_acl,
        "KafkaTopicAuthorizationFailed",
        "not authorized for topic",
    )
    .await;
    not_ready_because(
        &mut no_group_acl,
        "KafkaGroupAuthorizationFailed",
        "not authorized for consumer group",
    )
    .await;
    for p in [&bad_pw, &bad_tls, &no_acl, &no_group_acl] {
        assert!(!p.log_text().contains(&wrong) && !p.log_text().contains(&good));
    }

    // The operator of the cluster fixes the password: the runtime's next attempt works.
    kafka.add_user(&user, &wrong);
    bad_pw.wait_ready(READY).await;
    bad_pw.terminate();
    assert!(bad_pw.wait_exit(Duration::from_secs(60)).await.success());
    for mut p in [bad_tls, no_acl, no_group_acl] {
        p.terminate();
        assert!(
            p.wait_exit(Duration::from_secs(30)).await.success(),
            "{}",
            p.log_text()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_second_runtime_principal_is_refused_on_the_first_ones_inbox_and_state() {
    let kafka = SecuredKafka::get();
    let prefix = unique_name("sec");
    let names = TopicNames::new(&prefix).unwrap();
    // rt-a's topics exist (made by the harness); rt-b's principal has rt-b's ACLs.
    let admin = TopicAdmin::new(&kafka.admin_config(), Duration::from_secs(20)).unwrap();
    admin
        .ensure_topics(&names.runtime_specs("rt-a", 2, Some(1)))
        .await
        .unwrap();
    let user_b = unique_name("rt-b-user");
    let pw_b = password();
    kafka.add_user(&user_b, &pw_b);
    grant_runtime_acls(kafka, &prefix, "rt-b", &format!("User:{user_b}")).await;
    let b = kafka.scram_config(&user_b, &pw_b);

    // B can use the shared registry (its ACLs work at all) ...
    let producer: FutureProducer = b.producer_config().create().unwrap();
    let ok = producer
        .send(
            FutureRecord::to(&names.events()).key("k").payload("{}"),
            Duration::from_secs(20),
        )
        .await;
    assert!(ok.is_ok(), "B may publish to the events topic: {ok:?}");
    // ... but not produce into A's inbox or state,
    for topic in [names.inbox("rt-a"), names.state("rt-a")] {
        let r = producer
            .send(
                FutureRecord::to(&topic).key("k").payload("{}"),
                Duration::from_secs(20),
            )
            .await;
        let code = r.err().and_then(|(e, _)| e.rdkafka_error_code());
        assert_eq!(
            code,
            Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "producing to {topic}"
        );
    }
    // ... nor consume them (in its own group: the group is not what refuses).
    for topic in [names.inbox("rt-a"), names.state("rt-a")] {
        let topic_for_thread = topic.clone();
        let cfg = b.consumer_config(&names.inbox_group("rt-b"));
        let code = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = cfg.create().unwrap();
            // Its metadata is refused: B does not even learn the partitions.
            let md = consumer
                .fetch_metadata(Some(&topic_for_thread), Duration::from_secs(20))
                .unwrap();
            let err = md.topics().first().and_then(|t| t.error());
            assert_eq!(
                err.map(RDKafkaErrorCode::from),
                Some(RDKafkaErrorCode::TopicAuthorizationFailed),
                "metadata of {topic_for_thread}"
            );
            consumer.subscribe(&[&topic_for_thread]).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
                    return e.rdkafka_error_code();
                }
            }
            None
        })
        .await
        .unwrap();
        assert_eq!(
            code,
            Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "consuming {topic}"
        );
    }
    // ... nor join A's inbox group.
    let cfg = b.consumer_config(&names.inbox_group("rt-a"));
    let inbox_b = names.inbox("rt-b");
    let code = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cfg.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&inbox_b, 0);
        let fetched = consumer.committed_offsets(tpl, Duration::from_secs(10));
        if let Err(e) = &fetched
            && e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed)
        {
            return Some(RDKafkaErrorCode::GroupAuthorizationFailed);
        }
        // librdkafka retries the coordinator look-up until the timeout and queues the
        // refusal as a consumer error.
        (0..20).find_map(|_| match consumer.poll(Duration::from_millis(100)) {
            Some(Err(e)) => e.rdkafka_error_code(),
            _ => None,
        })
    })
    .await
    .unwrap();
    assert_eq!(code, Some(RDKafkaErrorCode::GroupAuthorizationFailed));
}

/// RPC to `counter/k1`; the count it answers.
async fn count(p: &RuntimeProcess) -> u64 {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/agents/counter/k1", p.url()))
        .header("ce-type", "demo.Count")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "counter RPC: {body}; log:\n{}", p.log_text());
    let v: Value = serde_json::from_str(&body).unwrap();
    v["count"].as_u64().unwrap()
}

/// Waits until `series` reads `want` (by `cmp`), with the log when it does not.
async fn metric_reaches(p: &RuntimeProcess, series: &str, want: f64, cmp: fn(f64, f64) -> bool) {
    let start = Instant::now();
    loop {
        let v = p.metric(series).await.unwrap_or(-1.0);
        if cmp(v, want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{series} is {v}, expected {want}; log:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A restarted runtime whose state topic its principal may not read (a deny ACL, as an
/// operator's mistake or a broker-side outage of that topic would do) must not handle
/// its agents' messages against empty state: the counter's RPC waits, unanswered,
/// while the read is refused and retried; once the ACL is gone the state is read and
/// the waiting RPC is answered from the saved count (4, not 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_state_holds_the_partition_until_it_can_be_read() {
    let kafka = SecuredKafka::get();
    let prefix = unique_name("sec-state");
    let (user, pw) = rt1_user(kafka, &prefix).await;
    let principal = format!("User:{user}");
    let http = loopback();
    // A long RPC timeout: the RPC sent while the state is unreadable is still awaited
    // when the state becomes readable (retries back off to 5 s).
    let yaml = config(
        &prefix,
        "rt1",
        &kafka.sasl_bootstrap,
        &scram_security(kafka),
        http,
    )
    .replace("rpcTimeoutMs: 20000", "rpcTimeoutMs: 90000");
    let env = [
        ("SWITCHBOARD_SASL_USERNAME", user.as_str()),
        ("SWITCHBOARD_SASL_PASSWORD", pw.as_str()),
    ];
    let mut first = RuntimeProcess::spawn_with_env("sec-state-1", &yaml, http, &env);
    first.wait_ready(READY).await;
    for n in 1..=3 {
        assert_eq!(count(&first).await, n);
    }
    first.terminate();
    assert!(first.wait_exit(Duration::from_secs(60)).await.success());

    let state = TopicNames::new(&prefix).unwrap().state("rt1");
    let deny = format!("--deny-principal {principal} --operation Read --topic {state}");
    kafka.add_acl_line(&format!("--add {deny}"));
    let mut second = RuntimeProcess::spawn_with_env("sec-state-2", &yaml, http, &env);
    second.wait_ready(READY).await;
    metric_reaches(
        &second,
        "switchboard_state_restore_failures_total",
        1.0,
        |v, w| v >= w,
    )
    .await;
    let url = second.url();
    let waiting = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/agents/counter/k1"))
            .header("ce-type", "demo.Count")
            .body("{}")
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !waiting.is_finished(),
        "the counter answered while its state could not be read: {:?}; log:\n{}",
        waiting.await.unwrap(),
        second.log_text()
    );
    assert_eq!(
        second
            .metric(r#"switchboard_messages_handled_total{agent_type="counter"}"#)
            .await
            .unwrap_or(0.0),
        0.0,
        "nothing is handled against empty state"
    );
    metric_reaches(
        &second,
        "switchboard_inbox_partitions_awaiting_state",
        1.0,
        |v, w| v >= w,
    )
    .await;

    kafka.add_acl_line(&format!("--remove --force {deny}"));
    let (status, body) = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the waiting RPC was answered once the state was readable")
        .unwrap();
    assert_eq!(status, 200, "{body}; log:\n{}", second.log_text());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"], 4, "answered from the saved count: {body}");
    assert_eq!(count(&second).await, 5);
    metric_reaches(
        &second,
        "switchboard_inbox_partitions_awaiting_state",
        0.0,
        |v, w| v == w,
    )
    .await;
    second.terminate();
    assert!(second.wait_exit(Duration::from_secs(60)).await.success());
}
