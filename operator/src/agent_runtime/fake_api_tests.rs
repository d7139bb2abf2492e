//! Reconcile error paths against a scripted fake API server (tower-test): each
//! scenario lists the exact requests it expects; a missing one fails within 1 s,
//! an unexpected extra one fails too.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use switchboard_runtime::admin::{TopicChange, TopicSpec};
use tower_test::mock::{self, Handle};

use super::*;
use crate::agent_runtime::build::BuildSettings;
use crate::kafka::{KafkaBackend, KafkaConnection, TopicReport};
use crate::metrics::Metrics;

/// Kafka that works, or fails every request.
struct FakeKafka {
    fail: bool,
}

#[async_trait::async_trait]
impl KafkaBackend for FakeKafka {
    async fn ensure_topics(
        &self,
        _: &KafkaConnection,
        specs: &[TopicSpec],
    ) -> Result<Vec<TopicReport>> {
        if self.fail {
            return Err(Error::Kafka("broker unreachable".into()));
        }
        Ok(specs
            .iter()
            .map(|s| TopicReport {
                name: s.name.clone(),
                partitions: s.partitions,
                change: TopicChange::Unchanged,
                config_changed: false,
            })
            .collect())
    }
    async fn delete_topics(&self, _: &KafkaConnection, _: &[String]) -> Result<()> {
        Ok(())
    }
    async fn consumer_lag(&self, _: &KafkaConnection, _: &str, _: &str, _: i32) -> Result<i64> {
        Ok(0)
    }
    async fn source_read(
        &self,
        _: &KafkaConnection,
        _: &str,
        _: &str,
    ) -> Result<crate::kafka::SourceRead> {
        Ok(crate::kafka::SourceRead::Missing)
    }
    async fn reply_channels(
        &self,
        _: &KafkaConnection,
        _: &switchboard_runtime::TopicNames,
    ) -> Result<(
        Vec<String>,
        std::collections::HashMap<String, crate::reply_gc::LastBeat>,
    )> {
        Ok(Default::default())
    }
    async fn write_record(
        &self,
        _: &KafkaConnection,
        _: &str,
        _: &str,
        _: Option<&[u8]>,
    ) -> Result<()> {
        Ok(())
    }
}

/// Path fragment of Event writes.
const EVENTS: &str = "/namespaces/ns/events";

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn context(fail_kafka: bool) -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Context::new(
        client,
        Arc::new(FakeKafka { fail: fail_kafka }),
        Arc::new(Metrics::default()),
        BuildSettings {
            default_image: "img".into(),
        },
    );
    (Arc::new(ctx), handle)
}

fn runtime() -> Arc<AgentRuntime> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentRuntime",
            "metadata": { "name": "rt1", "namespace": "ns", "uid": "u-1", "generation": 1, "resourceVersion": "7" },
            "spec": { "kafka": { "bootstrapServers": "kafka:9092" }, "agents": [{ "type": "echo", "builtin": "echo" }] },
        }))
        .unwrap(),
    )
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code })
}

/// Answers the expected requests in order, then checks nothing else arrives.
async fn serve(mut handle: ApiHandle, script: Vec<(Method, &'static str, u16, Value)>) {
    for (method, path, code, body) in script {
        let (req, send) = tokio::time::timeout(Duration::from_secs(1), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("expected {method} {path}, got no request"))
            .expect("client dropped");
        if path == EVENTS {
            // The recorder creates an Event or patches a series of it.
            assert!(
                req.uri().path().contains(EVENTS),
                "expected an event, got {}",
                req.uri()
            );
        } else {
            assert_eq!(req.method(), method, "{}", req.uri());
            assert!(
                req.uri().path().ends_with(path),
                "expected {path}, got {}",
                req.uri()
            );
        }
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

#[tokio::test]
async fn a_server_error_stops_the_reconcile_and_is_counted_as_kube_server() {
    let (ctx, handle) = context(false);
    let server = tokio::spawn(serve(
        handle,
        vec![(
            Method::GET,
            "/api/v1/namespaces/ns/serviceaccounts/rt1",
            503,
            status(503, "ServiceUnavailable"),
        )],
    ));
    let err = reconcile(runtime(), Arc::clone(&ctx)).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube_server", "{err}");
    assert_eq!(
        error_policy(runtime(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    server.await.unwrap();
    assert!(
        ctx.metrics
            .encode()
            .unwrap()
            .contains("error=\"kube_server\"")
    );
}

#[tokio::test]
async fn an_apply_conflict_is_retried_soon_not_overwritten() {
    let (ctx, handle) = context(false);
    let server = tokio::spawn(serve(
        handle,
        vec![
            (
                Method::GET,
                "/api/v1/namespaces/ns/serviceaccounts/rt1",
                404,
                status(404, "NotFound"),
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/ns/serviceaccounts/rt1",
                409,
                status(409, "Conflict"),
            ),
        ],
    ));
    let err = reconcile(runtime(), Arc::clone(&ctx)).await.unwrap_err();
    assert_eq!(err.metric_label(), "kube_conflict", "{err}");
    assert!(err.backoff() < Duration::from_secs(1));
    server.await.unwrap();
    assert_eq!(
        ctx.metrics.writes_total(),
        1,
        "one apply attempted, no retry inside the reconcile"
    );
}

#[tokio::test]
async fn kafka_down_is_reported_in_status_once_and_retried_later() {
    let (ctx, handle) = context(true);
    let mut stored = serde_json::to_value(&*runtime()).unwrap();
    stored["status"] = json!({});
    let mut script = vec![(
        Method::PATCH,
        "/namespaces/ns/agentruntimes/rt1/status",
        200,
        stored,
    )];
    // One Event per condition that appeared: Ready, TopicsReady, Degraded.
    for _ in 0..3 {
        script.push((Method::POST, EVENTS, 201, json!({})));
    }
    let server = tokio::spawn(serve(handle, script));
    let err = reconcile(runtime(), Arc::clone(&ctx)).await.unwrap_err();
    assert_eq!(err.metric_label(), "kafka");
    assert_eq!(err.backoff(), Duration::from_secs(10));
    server.await.unwrap();
}

#[tokio::test]
async fn a_missing_llm_api_key_secret_is_named_in_status() {
    let (ctx, mut handle) = context(false);
    let mut ar = (*runtime()).clone();
    ar.spec.agents = serde_json::from_value(json!([{ "type": "assistant", "llm": {
        "model": { "endpoint": "http://m/v1", "model": "m", "apiKeySecretRef": { "name": "openai-key" } } } }]))
    .unwrap();
    let stored = serde_json::to_value(&ar).unwrap();
    let server = tokio::spawn(async move {
        let (req, send) = tokio::time::timeout(Duration::from_secs(1), handle.next_request())
            .await
            .unwrap()
            .unwrap();
        assert!(
            req.uri()
                .path()
                .ends_with("/api/v1/namespaces/ns/secrets/openai-key"),
            "{}",
            req.uri()
        );
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(
                    serde_json::to_vec(&status(404, "NotFound")).unwrap(),
                ))
                .unwrap(),
        );
        let mut status_body = None;
        // The status write, then Events: answer them all, keep the status body.
        while let Ok(Some((req, send))) =
            tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
        {
            if req.uri().path().ends_with("/agentruntimes/rt1/status") {
                let bytes = req.into_body().collect_bytes().await.unwrap();
                status_body = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&stored).unwrap()))
                    .unwrap(),
            );
        }
        status_body.expect("a status write")
    });
    let err = reconcile(Arc::new(ar), Arc::clone(&ctx)).await.unwrap_err();
    assert_eq!(err.metric_label(), "secret", "{err}");
    let body = server.await.unwrap();
    assert!(
        body.contains("SecretNotFound") && body.contains("openai-key"),
        "{body}"
    );
}
