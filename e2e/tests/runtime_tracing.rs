//! Traces of `switchboard-runtime run`: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, each
//! handled message is a span whose parent is the record's `traceparent`, messages a
//! handler sends continue its span, the gateway continues a client's `traceparent`,
//! and the spans reach an OTLP/HTTP collector by the time the process exits on SIGTERM.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use switchboard_e2e::binary::{RuntimeProcess, free_port};
use switchboard_e2e::env::{kafka_bootstrap, unique_name};
use switchboard_e2e::wait::wait_for;

const RPC_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const EVENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One exported span with the resource attributes of the process that sent it.
#[derive(Debug, Clone)]
struct Exported {
    resource: HashMap<String, String>,
    span: Span,
}

impl Exported {
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let value = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Received = Arc<Mutex<Vec<Exported>>>;

/// `POST /v1/traces` (OTLP/HTTP protobuf): keeps every span.
async fn collect(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut all = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource: HashMap<String, String> = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), attr(std::slice::from_ref(kv), &kv.key)?)))
            .collect();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                all.push(Exported {
                    resource: resource.clone(),
                    span,
                });
            }
        }
    }
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], reply).into_response()
}

async fn start_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(collect))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

/// A `run` process exporting traces to `collector`; nothing is exported before
/// shutdown, so the spans must come from the flush on SIGTERM.
fn spawn_traced(name: &str, yaml: &str, http: SocketAddr, collector: SocketAddr) -> RuntimeProcess {
    let endpoint = format!("http://{collector}");
    RuntimeProcess::spawn_with_env(
        name,
        yaml,
        http,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    )
}

/// SIGTERM, then the exit status must be 0.
async fn terminate(p: &mut RuntimeProcess) {
    p.terminate();
    let exit = p.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit}; log:\n{}", p.log_text());
}

/// The chain of span ids from `span` up through its ancestors among `all`.
fn ancestry(span: &Exported, all: &[Exported]) -> Vec<Exported> {
    let by_id: HashMap<String, &Exported> = all.iter().map(|s| (s.span_id(), s)).collect();
    let mut chain = vec![span.clone()];
    while let Some(parent) = by_id.get(&chain.last().unwrap().parent_id()) {
        if chain.len() > 16 {
            break;
        }
        chain.push((*parent).clone());
    }
    chain
}

fn handled<'a>(all: &'a [Exported], trace: &str, agent_type: &str) -> &'a Exported {
    all.iter()
        .find(|s| {
            s.span.name == "switchboard.handle"
                && s.trace_id() == trace
                && s.attr("switchboard.agent.type").as_deref() == Some(agent_type)
        })
        .unwrap_or_else(|| panic!("no span of {agent_type} in trace {trace}: {all:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_across_processes_and_are_flushed_on_sigterm() {
    let (collector, received) = start_collector().await;
    let bootstrap = kafka_bootstrap();
    let prefix = unique_name("trace");
    let (a, b) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    // rt-front relays `in` events to `out`; rt-back echoes RPCs and counts `out` events.
    let front = format!(
        r#"
kafka: {{ bootstrapServers: "{bootstrap}", topicPrefix: {prefix} }}
runtime: {{ name: rt-front, partitions: 2 }}
agents:
  - {{ type: relay, builtin: relay, relay: {{ publish: {{ topicType: out }} }} }}
subscriptions:
  - {{ topicType: in, agentType: relay }}
http: {{ listen: "{a}" }}
"#
    );
    let back = format!(
        r#"
kafka: {{ bootstrapServers: "{bootstrap}", topicPrefix: {prefix} }}
runtime: {{ name: rt-back, partitions: 2 }}
agents:
  - {{ type: echo, builtin: echo }}
  - {{ type: counter, builtin: counter }}
subscriptions:
  - {{ topicType: out, agentType: counter }}
http: {{ listen: "{b}" }}
"#
    );
    let mut front = spawn_traced("rt-front", &front, a, collector);
    let mut back = spawn_traced("rt-back", &back, b, collector);
    front.wait_ready(Duration::from_secs(60)).await;
    back.wait_ready(Duration::from_secs(60)).await;

    // An RPC through rt-front's gateway to the echo agent rt-back hosts.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/agents/echo/k1", front.url()))
        .header("ce-type", "demo.Hi")
        .header("traceparent", format!("00-{RPC_TRACE}-{CLIENT_SPAN}-01"))
        .body(r#"{"hi":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // An event: gateway (rt-front) -> relay (rt-front) publishes -> counter (rt-back).
    // Published once: `/readyz` answers 200 only when the subscriptions are in effect.
    let r = http
        .post(format!("{}/v1/topics/in/k2", front.url()))
        .header("ce-type", "demo.Alert")
        .header("traceparent", format!("00-{EVENT_TRACE}-{CLIENT_SPAN}-01"))
        .body(r#"{"level":"high"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for(
        "the relayed event to reach counter/k2",
        Duration::from_secs(60),
        || {
            let (http, url) = (http.clone(), format!("{}/v1/agents", back.url()));
            async move {
                let agents: serde_json::Value =
                    http.get(&url).send().await.ok()?.json().await.ok()?;
                agents["agents"]
                    .as_array()?
                    .iter()
                    .any(|a| a == "counter/k2")
                    .then_some(())
            }
        },
    )
    .await;

    terminate(&mut front).await;
    terminate(&mut back).await;
    let all = received.lock().unwrap().clone();

    // The echo handler ran in rt-back, under rt-front's gateway span, under the client's.
    let echo = handled(&all, RPC_TRACE, "echo");
    assert_eq!(echo.resource["service.name"], "switchboard-runtime");
    assert_eq!(echo.resource["switchboard.runtime.name"], "rt-back");
    assert_eq!(
        echo.attr("switchboard.message.type").as_deref(),
        Some("demo.Hi")
    );
    assert_eq!(echo.attr("switchboard.agent.key").as_deref(), Some("k1"));
    assert_eq!(echo.attr("switchboard.outcome").as_deref(), Some("ok"));
    assert_eq!(
        echo.attr("messaging.destination.name"),
        Some(format!("{prefix}.rt-back.inbox"))
    );
    assert!(echo.attr("messaging.kafka.offset").is_some());
    let chain = ancestry(echo, &all);
    let top = chain.last().unwrap();
    assert_eq!(top.parent_id(), CLIENT_SPAN, "chain: {chain:#?}");
    assert_eq!(top.span.name, "switchboard.gateway.rpc");
    assert_eq!(top.resource["switchboard.runtime.name"], "rt-front");
    // The caller's process saw the reply as a child of the handler's span.
    assert!(
        all.iter()
            .any(|s| s.span.name == "switchboard.reply" && s.parent_id() == echo.span_id()),
        "no reply span under the echo span: {all:#?}"
    );

    // The event's chain: client -> gateway -> relay (rt-front) -> counter (rt-back).
    let counter = handled(&all, EVENT_TRACE, "counter");
    assert_eq!(counter.resource["switchboard.runtime.name"], "rt-back");
    assert_eq!(counter.attr("switchboard.topic").as_deref(), Some("out/k2"));
    let chain = ancestry(counter, &all);
    let names: Vec<&str> = chain.iter().map(|s| s.span.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "switchboard.handle",
            "switchboard.handle",
            "switchboard.gateway.publish"
        ],
        "chain: {chain:#?}"
    );
    assert_eq!(
        chain[1].attr("switchboard.agent.type").as_deref(),
        Some("relay")
    );
    assert_eq!(chain[1].resource["switchboard.runtime.name"], "rt-front");
    assert_eq!(chain[2].parent_id(), CLIENT_SPAN);
}
