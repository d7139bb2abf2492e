//! The `llm` agent kind in real `switchboard-runtime run` processes on the real
//! broker, against the test model server (`switchboard_e2e::model_server`):
//! tool calls to a built-in agent and to another `llm` agent, memory across a
//! restart, durable steps across a SIGKILL (and the repeat without them), and bad
//! input (model errors, malformed completions, unknown tools, endless tool loops).

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use switchboard_e2e::binary::{RuntimeProcess, free_port};
use switchboard_e2e::model_server::{ModelServer, Reply, Rule};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{
    AgentId, AgentRuntime, KafkaAgentRuntime, Payload, RuntimeError, SendOptions, TopicNames,
};

const READY: Duration = Duration::from_secs(60);

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A runtime config file: `agents` is YAML list items, `runtime` extra keys.
fn config(net: &TestNet, name: &str, runtime: &str, agents: &str, http: SocketAddr) -> String {
    format!(
        "kafka: {{ bootstrapServers: \"{}\", topicPrefix: {} }}\n\
         runtime: {{ name: {name}, partitions: 2, rpcTimeoutMs: 30000{runtime} }}\n\
         agents:\n{agents}\
         http: {{ listen: \"{http}\" }}\n",
        net.bootstrap, net.prefix
    )
}

async fn client(net: &TestNet) -> KafkaAgentRuntime {
    KafkaAgentRuntime::start_client(net.config("caller"))
        .await
        .unwrap()
}

async fn ask(
    rt: &KafkaAgentRuntime,
    agent: &str,
    text: &str,
    timeout: Duration,
) -> Result<Value, RuntimeError> {
    let reply = rt
        .send_payload(
            Payload::json("demo.Ask", &json!({ "content": text })),
            &agent.parse::<AgentId>().unwrap(),
            SendOptions {
                timeout: Some(timeout),
                ..SendOptions::default()
            },
        )
        .await?;
    Ok(reply.unwrap().decode_json::<Value>().unwrap())
}

async fn count_of(rt: &KafkaAgentRuntime, key: &str) -> u64 {
    let reply = rt
        .send_payload(
            Payload::json("demo.Any", &json!({})),
            &AgentId::new("counter", key).unwrap(),
            SendOptions::default(),
        )
        .await
        .unwrap()
        .unwrap();
    reply.decode_json::<Value>().unwrap()["count"]
        .as_u64()
        .unwrap()
}

/// The `tool` messages of a recorded request.
fn tool_messages(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_agent_calls_two_tools_and_remembers_the_previous_turn_across_a_restart() {
    let net = TestNet::new();
    let model = ModelServer::start(vec![
        Rule::at(
            "what is 2+2",
            0,
            Reply::ToolCalls(vec![
                ("echo".into(), json!({"q": "2+2"})),
                ("helper".into(), json!({"content": "help me add"})),
            ]),
        ),
        Rule::at("what is 2+2", 1, Reply::Text("It is 4.".into())),
        Rule::at("help me add", 0, Reply::Text("add the numbers".into())),
        Rule::at("and the last answer?", 0, Reply::Text("It was 4.".into())),
    ])
    .await;
    let endpoint = model.endpoint();
    let agents = [
        "  - { type: echo, builtin: echo }".to_owned(),
        format!(
            "  - {{ type: helper, llm: {{ model: {{ endpoint: \"{endpoint}\", model: small }} }} }}"
        ),
        "  - type: assistant".to_owned(),
        "    llm:".to_owned(),
        format!("      model: {{ endpoint: \"{endpoint}\", model: big, apiKeyEnv: TEST_LLM_KEY }}"),
        "      systemPrompt: You add numbers.".to_owned(),
        "      tools: [{ agent: echo }, { agent: helper }]".to_owned(),
        "      temperature: 0.5".to_owned(),
        String::new(),
    ]
    .join("\n");
    let http = addr();
    let yaml = config(&net, "asst", "", &agents, http);
    let env = [("TEST_LLM_KEY", "sk-test-123")];
    let mut rt = RuntimeProcess::spawn_with_env("llm-asst", &yaml, http, &env);
    rt.wait_ready(READY).await;
    let caller = client(&net).await;

    let answer = ask(
        &caller,
        "assistant/alice",
        "what is 2+2",
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", rt.log_text()));
    assert_eq!(answer["content"], "It is 4.");
    assert_eq!(answer["modelCalls"], 2);
    assert_eq!(answer["usage"]["promptTokens"], 20);
    let seen = model.seen();
    let first = seen
        .iter()
        .find(|s| s.user == "what is 2+2" && s.step == 0)
        .unwrap();
    assert_eq!(first.authorization.as_deref(), Some("Bearer sk-test-123"));
    assert_eq!(first.body["model"], "big");
    assert_eq!(first.body["temperature"], 0.5);
    assert_eq!(
        first.body["messages"][0],
        json!({"role": "system", "content": "You add numbers."})
    );
    let names: Vec<&str> = first.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "helper"]);
    let helper = seen.iter().find(|s| s.user == "help me add").unwrap();
    assert_eq!(helper.body["model"], "small");
    assert_eq!(helper.authorization, None, "no key configured for helper");
    let second = seen
        .iter()
        .find(|s| s.user == "what is 2+2" && s.step == 1)
        .unwrap();
    let tools = tool_messages(&second.body);
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&tools[0]).unwrap(),
        json!({"q": "2+2"})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&tools[1]).unwrap()["content"],
        "add the numbers"
    );
    assert_eq!(second.body["messages"][3]["tool_call_id"], "call_0_0");

    // Restart the process: the conversation is in the agent's state.
    rt.terminate();
    rt.wait_exit(Duration::from_secs(60)).await;
    let mut rt = RuntimeProcess::spawn_with_env("llm-asst-2", &yaml, http, &env);
    rt.wait_ready(READY).await;
    let answer = ask(
        &caller,
        "assistant/alice",
        "and the last answer?",
        Duration::from_secs(40),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", rt.log_text()));
    assert_eq!(answer["content"], "It was 4.");
    let third = model
        .seen()
        .into_iter()
        .find(|s| s.user == "and the last answer?")
        .unwrap();
    let roles: Vec<&str> = third.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "user"
        ],
        "the previous turn, then the new message"
    );
    assert_eq!(third.body["messages"][5]["content"], "It is 4.");
    // Another key has its own memory.
    let bob = ask(
        &caller,
        "assistant/bob",
        "and the last answer?",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(bob["content"], "It was 4.");
    let bobs = model
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.user == "and the last answer?")
        .unwrap();
    assert_eq!(
        bobs.body["messages"].as_array().unwrap().len(),
        2,
        "system + user only"
    );
    caller.stop().await.unwrap();
    rt.terminate();
    rt.wait_exit(Duration::from_secs(60)).await;
}

/// Replies on the caller's reply channel so far.
fn replies_on(net: &TestNet, instance: &str) -> usize {
    let topic = TopicNames::new(&net.prefix).unwrap().reply(instance);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &net.bootstrap)
        .set("group.id", "llm-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .unwrap();
    if high <= low {
        return 0;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            n += 1;
            if rdkafka::Message::offset(&m) + 1 >= high {
                break;
            }
        }
    }
    n
}

/// Journal keys in runtime `runtime`'s state topic: `(written, still live)` — live
/// means the latest record of the key is not a tombstone.
fn journal_keys(net: &TestNet, runtime: &str) -> (usize, usize) {
    let topic = TopicNames::new(&net.prefix).unwrap().state(runtime);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &net.bootstrap)
        .set("group.id", "llm-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut latest = std::collections::HashMap::new();
    for p in 0..2 {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                use rdkafka::Message as _;
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                if key.contains("#step/") {
                    latest.insert(key, m.payload().is_some());
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
        }
    }
    (latest.len(), latest.values().filter(|live| **live).count())
}

/// A three-model-call turn (model, counter, model [held, SIGKILL], counter, model):
/// what the model server and the counter saw after the hosting process was killed
/// during the second model call and a new process handled the redelivered message.
struct CrashOutcome {
    model_calls_per_step: [usize; 3],
    counter_calls: u64,
    replies: usize,
    /// Journal keys written, and still live a while after the reply.
    journal: (usize, usize),
}

async fn crash_during_a_turn(durable: bool) -> CrashOutcome {
    let net = TestNet::new();
    let model = ModelServer::start(vec![
        Rule::at(
            "go",
            0,
            Reply::ToolCalls(vec![("counter".into(), json!({"n": 1}))]),
        ),
        Rule::at(
            "go",
            1,
            Reply::ToolCalls(vec![("counter".into(), json!({"n": 2}))]),
        )
        .held(),
        Rule::at("go", 2, Reply::Text("done".into())),
    ])
    .await;
    // The tool agent lives in another process, which is not killed.
    let tools_http = addr();
    let tools_yaml = config(
        &net,
        "tools",
        "",
        "  - { type: counter, builtin: counter }\n",
        tools_http,
    );
    let mut tools = RuntimeProcess::spawn("llm-tools", &tools_yaml, tools_http);
    tools.wait_ready(READY).await;
    let agents = format!(
        "  - {{ type: assistant, llm: {{ model: {{ endpoint: \"{}\", model: m }}, tools: [{{ agent: counter }}] }} }}\n",
        model.endpoint()
    );
    let http = addr();
    let extra = if durable { "" } else { ", durableSteps: false" };
    let yaml = config(&net, "asst", extra, &agents, http);
    let mut first = RuntimeProcess::spawn("llm-crash-1", &yaml, http);
    first.wait_ready(READY).await;
    let caller = client(&net).await;
    let instance = caller.config().instance_id.clone();

    let turn = {
        let caller = caller.clone();
        tokio::spawn(
            async move { ask(&caller, "assistant/bob", "go", Duration::from_secs(120)).await },
        )
    };
    let start = Instant::now();
    while model.holding() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the second model call never came; log:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(model.count_at("go", 0), 1);
    first.kill_hard().await;
    model.release();
    let http2 = addr();
    let yaml2 = config(&net, "asst", extra, &agents, http2);
    let mut second = RuntimeProcess::spawn("llm-crash-2", &yaml2, http2);
    second.wait_ready(READY).await;
    let answer = turn
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", second.log_text()));
    assert_eq!(answer["content"], "done");
    let replies = replies_on(&net, &instance);
    // The input is committed within the commit interval; its journal is then dropped.
    let start = Instant::now();
    let mut journal = journal_keys(&net, "asst");
    while journal.1 > 0 && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        journal = journal_keys(&net, "asst");
    }
    let outcome = CrashOutcome {
        model_calls_per_step: [0, 1, 2].map(|s| model.count_at("go", s)),
        // This call counts too.
        counter_calls: count_of(&caller, "bob").await - 1,
        replies,
        journal,
    };
    caller.stop().await.unwrap();
    for p in [&mut second, &mut tools] {
        p.terminate();
        p.wait_exit(Duration::from_secs(60)).await;
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_steps_make_each_completed_model_and_tool_call_once_across_a_sigkill() {
    let o = crash_during_a_turn(true).await;
    assert_eq!(
        o.model_calls_per_step,
        [1, 2, 1],
        "the first model call replayed from the journal; the interrupted second one ran again"
    );
    assert_eq!(o.counter_calls, 2, "each completed tool call was made once");
    assert_eq!(o.replies, 1, "the caller got one reply");
    // model/0, tool/0 (first process), model/1, tool/1, model/2 (second).
    assert_eq!(
        o.journal,
        (5, 0),
        "five steps journaled, all dropped after the commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_steps_disabled_repeat_the_completed_calls_after_a_sigkill() {
    let o = crash_during_a_turn(false).await;
    assert_eq!(
        o.model_calls_per_step,
        [2, 2, 1],
        "without a journal the first call is made again"
    );
    assert_eq!(o.counter_calls, 3, "and the first tool call too");
    assert_eq!(o.replies, 1);
    assert_eq!(o.journal, (0, 0), "nothing journaled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_agent_bad_input_fails_clearly_and_the_runtime_keeps_serving() {
    let net = TestNet::new();
    let model = ModelServer::start(vec![
        Rule::always("flaky", Reply::Text("finally".into())),
        Rule::always("down", Reply::Status(503, None)),
        Rule::always("garbled", Reply::Malformed),
        Rule::at(
            "unknown",
            0,
            Reply::ToolCalls(vec![("nope".into(), json!({}))]),
        ),
        Rule::at("unknown", 1, Reply::Text("recovered".into())),
        Rule::always(
            "loop",
            Reply::ToolCalls(vec![("echo".into(), json!({"again": true}))]),
        ),
    ])
    .await;
    let agents = format!(
        "  - {{ type: echo, builtin: echo }}\n  - {{ type: assistant, llm: {{ model: {{ endpoint: \"{}\", model: m, retries: 2 }}, tools: [{{ agent: echo }}], maxIterations: 3 }} }}\n",
        model.endpoint()
    );
    let http = addr();
    let mut rt = RuntimeProcess::spawn("llm-bad", &config(&net, "asst", "", &agents, http), http);
    rt.wait_ready(READY).await;
    let caller = client(&net).await;
    let t = Duration::from_secs(30);

    // Two 429s with Retry-After: 1, then an answer: retried, and the wait honoured.
    model.fail_first(2, Reply::Status(429, Some(1)));
    let start = Instant::now();
    let a = ask(&caller, "assistant/k1", "flaky", t).await.unwrap();
    assert_eq!(a["content"], "finally");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(model.count_at("flaky", 0), 3);

    let e = ask(&caller, "assistant/k2", "down", t)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("503") && e.contains("3 attempt"), "{e}");
    assert_eq!(model.count_at("down", 0), 3, "1 + 2 retries");

    let e = ask(&caller, "assistant/k3", "garbled", t)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("malformed"), "{e}");
    assert_eq!(
        model.count_at("garbled", 0),
        1,
        "a malformed completion is not retried"
    );

    let a = ask(&caller, "assistant/k4", "unknown", t).await.unwrap();
    assert_eq!(a["content"], "recovered");
    let next = model
        .seen()
        .into_iter()
        .find(|s| s.user == "unknown" && s.step == 1)
        .unwrap();
    let tools = tool_messages(&next.body);
    assert!(
        tools[0].contains("unknown tool \\\"nope\\\"") && tools[0].contains("echo"),
        "{tools:?}"
    );

    let e = ask(&caller, "assistant/k5", "loop", t)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("maxIterations=3") && e.contains("echo"), "{e}");
    assert_eq!(
        model.count_at("loop", 0) + model.count_at("loop", 1) + model.count_at("loop", 2),
        3
    );

    // The runtime still serves: the same agent, and others.
    let a = ask(&caller, "assistant/k1", "flaky", t).await.unwrap();
    assert_eq!(a["content"], "finally");
    let echo = caller
        .send_payload(
            Payload::json("demo.Hi", &json!(1)),
            &AgentId::new("echo", "x").unwrap(),
            SendOptions::default(),
        )
        .await
        .unwrap();
    assert!(echo.is_some());
    caller.stop().await.unwrap();
    rt.terminate();
    rt.wait_exit(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_agent_uses_mcp_publish_and_typed_agent_tools_within_its_budgets() {
    let net = TestNet::new();
    let http = addr();
    let model = ModelServer::start(vec![
        Rule::at(
            "use every tool",
            0,
            Reply::ToolCalls(vec![
                (
                    "counter".into(),
                    json!({"message": {"n": 1}, "key": "via-mcp"}),
                ),
                ("publish_notes".into(), json!({"text": "remember this"})),
                ("search".into(), json!({"q": "kafka"})),
            ]),
        ),
        Rule::at("use every tool", 1, Reply::Text("all done".into())),
        Rule::at(
            "too many",
            0,
            Reply::ToolCalls(vec![
                ("search".into(), json!({"q": "a"})),
                ("search".into(), json!({"q": "b"})),
            ]),
        ),
    ])
    .await;
    let endpoint = model.endpoint();
    let schema = r#"{ type: object, properties: { q: { type: string } }, required: [q] }"#;
    let agents = [
        "  - { type: counter, builtin: counter }".to_owned(),
        format!("  - {{ type: search, builtin: echo, messageTypes: [{{ name: demo.Search, schema: {schema} }}] }}"),
        "  - type: assistant".to_owned(),
        "    llm:".to_owned(),
        format!("      model: {{ endpoint: \"{endpoint}\", model: big }}"),
        "      tools: [{ mcp: { server: self, tool: counter } }, { publish: { topicType: notes } }, { agent: search }]".to_owned(),
        "      maxToolCalls: 3".to_owned(),
        "  - type: frugal".to_owned(),
        "    llm:".to_owned(),
        format!("      model: {{ endpoint: \"{endpoint}\", model: small }}"),
        "      tools: [{ agent: search }]".to_owned(),
        "      maxToolCalls: 1".to_owned(),
        String::new(),
    ]
    .join("\n");
    // The MCP server is this runtime's own /mcp (each hosted type is a tool there).
    let yaml = format!(
        "{}subscriptions:\n  - {{ topicType: notes, agentType: counter }}\n\
         mcpServers:\n  - {{ name: self, url: \"http://{http}/mcp\" }}\n",
        config(&net, "tools", "", &agents, http)
    );
    let mut rt = RuntimeProcess::spawn_with_env("llm-tools", &yaml, http, &[]);
    rt.wait_ready(READY).await;
    let caller = client(&net).await;

    let answer = ask(
        &caller,
        "assistant/alice",
        "use every tool",
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", rt.log_text()));
    assert_eq!(answer["content"], "all done");
    assert_eq!(answer["toolCalls"], 3);
    let seen = model.seen();
    let first = seen
        .iter()
        .find(|s| s.user == "use every tool" && s.step == 0)
        .unwrap();
    let tools = first.body["tools"].as_array().unwrap();
    let by_name = |n: &str| {
        tools
            .iter()
            .find(|t| t["function"]["name"] == n)
            .unwrap_or_else(|| panic!("no tool {n} in {tools:?}"))["function"]
            .clone()
    };
    // The MCP tool's schema is what the server lists; the agent tool's is declared.
    assert_eq!(
        by_name("counter")["parameters"]["required"],
        json!(["message"]),
        "{tools:?}"
    );
    assert_eq!(by_name("search")["parameters"]["required"], json!(["q"]));
    assert_eq!(by_name("publish_notes")["parameters"]["type"], "object");
    let second = seen
        .iter()
        .find(|s| s.user == "use every tool" && s.step == 1)
        .unwrap();
    let results: Vec<Value> = tool_messages(&second.body)
        .iter()
        .map(|t| serde_json::from_str(t).unwrap_or_else(|_| json!(t)))
        .collect();
    assert_eq!(results[0]["count"], 1, "counter via MCP: {results:?}");
    assert_eq!(results[1]["published"]["topicType"], "notes", "{results:?}");
    assert_eq!(
        results[2],
        json!({"q": "kafka"}),
        "echo of the typed message"
    );
    // The MCP call reached counter/via-mcp; the published note reached counter/alice
    // through the subscription (the RPC below counts too).
    assert_eq!(count_of(&caller, "via-mcp").await, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count_of(&caller, "alice").await;
        if n >= 2 {
            assert_eq!(n, 2, "one published note, one query");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the published note never arrived"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // maxToolCalls: two calls asked, one allowed; the turn fails before calling.
    let e = ask(&caller, "frugal/bob", "too many", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("maxToolCalls=1"), "{e}");
    assert_eq!(model.count_at("too many", 1), 0, "no call after the stop");

    // The figures of both, by agent type and model.
    let ok =
        "switchboard_llm_model_calls_total{agent_type=\"assistant\",model=\"big\",outcome=\"ok\"}";
    assert_eq!(rt.metric(ok).await, Some(2.0));
    let tokens =
        "switchboard_llm_tokens_total{agent_type=\"assistant\",model=\"big\",kind=\"prompt\"}";
    assert!(rt.metric(tokens).await.unwrap() > 0.0);
    for tool in ["counter", "publish_notes", "search"] {
        let line = format!(
            "switchboard_llm_tool_calls_total{{agent_type=\"assistant\",tool=\"{tool}\",outcome=\"ok\"}}"
        );
        assert_eq!(rt.metric(&line).await, Some(1.0), "{line}");
    }
    let stopped =
        "switchboard_llm_turns_stopped_total{agent_type=\"frugal\",reason=\"max_tool_calls\"}";
    assert_eq!(rt.metric(stopped).await, Some(1.0));
    caller.stop().await.unwrap();
    rt.terminate();
    rt.wait_exit(Duration::from_secs(60)).await;
}
