//! The operator against the secured broker (SASL_SSL/SCRAM, ACLs enforced) and the
//! real API server: it reads the SASL password and the CA from Secrets, creates the
//! runtime's topics under exactly the ACLs `switchboard-runtime acls --operator`
//! prints, and names a wrong password in the AgentRuntime's status.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

mod operator_support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use operator_support::{Operator, namespace, runtime, runtime_condition, wait_topics_ready};
use serde_json::json;
use switchboard_crds::AgentRuntime;
use switchboard_e2e::binary::cli;
use switchboard_e2e::crds::{FIELD_MANAGER, install_crds};
use switchboard_e2e::env;
use switchboard_e2e::secured::SecuredKafka;
use switchboard_e2e::wait::wait_for;
use switchboard_runtime::admin::TopicAdmin;
use switchboard_runtime::protocol::topics::TopicNames;

async fn secret(api: &Api<Secret>, name: &str, data: &[(&str, &str)]) {
    let mut s = Secret::default();
    s.metadata.name = Some(name.to_owned());
    s.string_data = Some(
        data.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    );
    api.create(&PostParams::default(), &s).await.unwrap();
}

fn secured_spec(kafka: &SecuredKafka, prefix: &str, user_secret: &str) -> serde_json::Value {
    json!({ "kafka": {
        "bootstrapServers": kafka.sasl_bootstrap, "topicPrefix": prefix,
        "security": { "protocol": "SASL_SSL",
            "sasl": { "mechanism": "SCRAM-SHA-512", "secretRef": { "name": user_secret } },
            "tls": { "caSecretRef": { "name": "kafka-ca" } } },
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sasl_password_from_a_secret_creates_topics_and_a_wrong_one_is_named_in_status() {
    let kafka = SecuredKafka::get();
    let client = env::kube_client().await;
    install_crds(&client, FIELD_MANAGER).await.unwrap();
    let ns = namespace(&client, "op-sasl").await;
    let prefix = env::unique_name("opsec");

    let user = env::unique_name("operator");
    let password = uuid::Uuid::new_v4().simple().to_string();
    kafka.add_user(&user, &password);
    let out = cli(
        &[
            "acls",
            "--prefix",
            &prefix,
            "--operator",
            "--principal",
            &format!("User:{user}"),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for line in out.stdout.lines() {
        kafka.add_acl_line(line);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secret(
        &secrets,
        "kafka-user",
        &[("username", &user), ("password", &password)],
    )
    .await;
    secret(
        &secrets,
        "kafka-user-bad",
        &[("username", &user), ("password", "not-the-password")],
    )
    .await;
    let ca = std::fs::read_to_string(&kafka.ca_file).unwrap();
    secret(&secrets, "kafka-ca", &[("ca.crt", &ca)]).await;

    let op = Operator::start(&client, &ns).await;
    let runtimes: Api<AgentRuntime> = Api::namespaced(client.clone(), &ns);
    runtimes
        .create(
            &PostParams::default(),
            &runtime("good", &prefix, secured_spec(kafka, &prefix, "kafka-user")),
        )
        .await
        .unwrap();
    runtimes
        .create(
            &PostParams::default(),
            &runtime(
                "badpw",
                &prefix,
                secured_spec(kafka, &prefix, "kafka-user-bad"),
            ),
        )
        .await
        .unwrap();

    wait_topics_ready(&runtimes, "good").await;
    let names = TopicNames::new(&prefix).unwrap();
    let admin = TopicAdmin::new(&kafka.admin_config(), Duration::from_secs(20)).unwrap();
    let wanted = [
        names.inbox("good"),
        names.state("good"),
        names.registry(),
        names.events(),
    ];
    let counts = admin.partition_counts(&wanted).await.unwrap();
    for t in &wanted {
        assert!(
            counts.contains_key(t),
            "the operator did not create {t}: {counts:?}"
        );
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = maps.get("good-config").await.unwrap();
    let text = serde_json::to_string(&cm.data).unwrap();
    assert!(
        !text.contains(&password),
        "the password reached the ConfigMap"
    );

    wait_for(
        "badpw reports KafkaAuthenticationFailed",
        Duration::from_secs(120),
        || async {
            (runtime_condition(&runtimes, "badpw", "TopicsReady")
                .await?
                .1
                == "KafkaAuthenticationFailed")
                .then_some(())
        },
    )
    .await;
    let st = runtimes.get("badpw").await.unwrap().status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "TopicsReady")
        .unwrap();
    assert!(
        c.message.contains(&user) && !c.message.contains("not-the-password"),
        "{}",
        c.message
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True")
    );
    op.stop().await;
}
