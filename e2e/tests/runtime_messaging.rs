//! RPC, publish/subscribe and subscription lifecycles of the Kafka runtime
//! (AutoGen's worker-runtime scenarios), against the real broker.

#![allow(clippy::unwrap_used)] // a test's helpers fail loudly, like its body

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_e2e::agents::{
    Cascade, CascadingAgent, Fail, Ping, Pong, Quiet, Recorder, Responder, SeenLog, Sleep,
};
use switchboard_e2e::net::TestNet;
use switchboard_runtime::{
    AgentId, AgentRuntime, AgentRuntimeExt, Payload, RuntimeError, SendOptions, Subscription,
    TopicId,
};

/// Polls `check` until true or `limit`; returns whether it became true.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_replies_errors_empty_replies_unknown_types_and_timeouts() {
    let net = TestNet::new();
    let host = net.start("host").await.unwrap();
    let caller = net.start("caller").await.unwrap();
    host.register("responder", Responder::new).await.unwrap();
    let to = AgentId::new("responder", "r1").unwrap();

    let reply = caller
        .send_message(&Ping { n: 41 }, &to)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        reply.decode::<Pong>().unwrap(),
        Pong {
            n: 41,
            by: "responder/r1".into()
        }
    );

    let err = caller
        .send_message(
            &Fail {
                reason: "no luck".into(),
            },
            &to,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RuntimeError::Handler {
            agent: "responder/r1".into(),
            message: "no luck".into()
        }
    );

    assert_eq!(
        caller.send_message(&Quiet, &to).await.unwrap(),
        None,
        "no value: empty reply"
    );

    let unknown = Payload::json("test.Nope", &serde_json::json!({}));
    let err = caller
        .send_payload(unknown, &to, SendOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::UnknownMessageType { .. }),
        "{err:?}"
    );

    let started = Instant::now();
    let err = caller
        .send_message(&Ping { n: 1 }, &AgentId::new("nobody", "x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err, RuntimeError::UnknownAgentType("nobody".into()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "unknown types fail fast: {:?}",
        started.elapsed()
    );

    let opts = SendOptions {
        timeout: Some(Duration::from_millis(800)),
        ..Default::default()
    };
    let started = Instant::now();
    let err = caller
        .send_payload(Payload::encode(&Sleep { ms: 3_000 }).unwrap(), &to, opts)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout, not the handler, ended the call"
    );

    // The agent is still serving after all that.
    let reply = caller
        .send_message(&Ping { n: 2 }, &to)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.decode::<Pong>().unwrap().n, 2);
    caller.stop().await.unwrap();
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_context_is_populated_for_rpcs_and_events() {
    let net = TestNet::new();
    let rt = net.start("rt").await.unwrap();
    let log: SeenLog = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt.register("rec", move |id: &AgentId| Recorder::new(id, l.clone()))
        .await
        .unwrap();
    rt.add_subscription(Subscription::for_type("news", "rec").unwrap())
        .await
        .unwrap();

    let sender = AgentId::new("caller", "c1").unwrap();
    let opts = SendOptions {
        sender: Some(sender.clone()),
        ..Default::default()
    };
    let to = AgentId::new("rec", "k1").unwrap();
    rt.send_payload(Payload::encode(&Ping { n: 1 }).unwrap(), &to, opts)
        .await
        .unwrap();
    let topic = TopicId::new("news", "k1").unwrap();
    rt.publish_payload(
        Payload::encode(&Quiet).unwrap(),
        &topic,
        Some(sender.clone()),
    )
    .await
    .unwrap();

    assert!(eventually(Duration::from_secs(10), || log.lock().unwrap().len() == 2).await);
    let seen = log.lock().unwrap().clone();
    let (rpc, event) = (&seen[0], &seen[1]);
    assert!(rpc.is_rpc && !event.is_rpc);
    assert_eq!(
        (rpc.recipient.clone(), rpc.sender.clone(), rpc.topic.clone()),
        (to.clone(), Some(sender.clone()), None)
    );
    assert_eq!(
        (
            event.recipient.clone(),
            event.sender.clone(),
            event.topic.clone()
        ),
        (to, Some(sender), Some(topic))
    );
    assert!(!rpc.message_id.is_empty() && !event.message_id.is_empty());
    assert_ne!(rpc.message_id, event.message_id);
    rt.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascading_publish_across_instance_and_factory_agents() {
    // The instance agent handles round 1 by RPC and publishes rounds 2..=5 to
    // `cascade`, to which it and the factory-made observer both subscribe: the
    // instance handles 5 rounds, the observer 4 (AutoGen's instance_factory_messaging).
    let net = TestNet::new();
    let rt1 = net.start("rt1").await.unwrap();
    let rt2 = net.start("rt2").await.unwrap();
    let instance_calls = Arc::new(AtomicUsize::new(0));
    let factory_calls = Arc::new(AtomicUsize::new(0));
    let instance_id = AgentId::new("cascader", "k").unwrap();
    let agent = CascadingAgent::new(instance_calls.clone(), 5, Some("cascade"));
    rt1.register_agent_instance(agent, instance_id.clone())
        .await
        .unwrap();
    let f = factory_calls.clone();
    rt2.register("observer", move |_: &AgentId| {
        CascadingAgent::new(f.clone(), 5, None)
    })
    .await
    .unwrap();
    rt1.add_subscription(Subscription::for_type("cascade", "cascader").unwrap())
        .await
        .unwrap();
    rt2.add_subscription(Subscription::for_type("cascade", "observer").unwrap())
        .await
        .unwrap();

    rt2.send_message(&Cascade { round: 1 }, &instance_id)
        .await
        .unwrap();
    let settled = eventually(Duration::from_secs(20), || {
        instance_calls.load(Ordering::SeqCst) >= 5 && factory_calls.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert!(settled, "cascade did not finish");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(instance_calls.load(Ordering::SeqCst), 5);
    assert_eq!(factory_calls.load(Ordering::SeqCst), 4);
    rt2.stop().await.unwrap();
    rt1.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_each_subscribed_type_once_and_no_other_key() {
    let net = TestNet::new();
    let (rt1, rt2) = (
        net.start("rt1").await.unwrap(),
        net.start("rt2").await.unwrap(),
    );
    let log: SeenLog = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2) = (log.clone(), log.clone());
    rt1.register("a", move |id: &AgentId| Recorder::new(id, l1.clone()))
        .await
        .unwrap();
    rt2.register("b", move |id: &AgentId| Recorder::new(id, l2.clone()))
        .await
        .unwrap();
    rt1.add_subscription(Subscription::for_type("alerts", "a").unwrap())
        .await
        .unwrap();
    rt2.add_subscription(Subscription::for_type("alerts", "b").unwrap())
        .await
        .unwrap();
    // Re-adding an equivalent subscription must not double deliveries.
    rt2.add_subscription(Subscription::for_type("alerts", "b").unwrap())
        .await
        .unwrap();

    rt1.publish_message(&Quiet, &TopicId::new("alerts", "k1").unwrap())
        .await
        .unwrap();
    rt1.publish_message(&Quiet, &TopicId::new("unrelated", "k1").unwrap())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || log.lock().unwrap().len() >= 2).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut recipients: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.recipient.to_string())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        vec!["a/k1", "b/k1"],
        "each subscribed type once, only key k1"
    );
    rt2.stop().await.unwrap();
    rt1.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_propagate_are_removable_and_leave_with_their_runtime() {
    let net = TestNet::new();
    let rt1 = net.start("rt1").await.unwrap();
    let rt2 = net.start("rt2").await.unwrap();
    let log: SeenLog = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    rt1.register("worker", move |id: &AgentId| Recorder::new(id, l.clone()))
        .await
        .unwrap();
    let sub = Subscription::for_type("jobs", "worker").unwrap();
    rt1.add_subscription(sub.clone()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || true).await);
    let seen_by_rt2 = rt2.subscriptions().await;
    assert!(
        seen_by_rt2.contains(&sub),
        "rt2 sees rt1's subscription: {seen_by_rt2:?}"
    );

    // Removing it stops deliveries.
    rt2.remove_subscription(sub.id()).await.unwrap();
    assert!(!rt1.subscriptions().await.contains(&sub));
    rt2.publish_message(&Quiet, &TopicId::new("jobs", "j1").unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        log.lock().unwrap().is_empty(),
        "removed subscription still delivered"
    );
    assert_eq!(
        rt2.remove_subscription(sub.id()).await.unwrap_err(),
        RuntimeError::UnknownSubscription(sub.id().to_owned())
    );

    // disconnected_agent: the runtime stops; its type and subscriptions go with it;
    // a new runtime takes the type and gets a fresh subscription, without duplicates.
    let old = Subscription::for_type("jobs", "worker").unwrap();
    rt1.add_subscription(old.clone()).await.unwrap();
    rt1.stop().await.unwrap();
    let rt3 = net.start("rt3").await.unwrap();
    let l = log.clone();
    rt3.register("worker", move |id: &AgentId| Recorder::new(id, l.clone()))
        .await
        .unwrap();
    let fresh = Subscription::for_type("jobs", "worker").unwrap();
    rt3.add_subscription(fresh.clone()).await.unwrap();
    let subs = rt2.subscriptions().await;
    assert_eq!(
        subs,
        vec![fresh.clone()],
        "only the fresh subscription remains"
    );
    assert_ne!(fresh.id(), old.id());
    rt2.publish_message(&Quiet, &TopicId::new("jobs", "j2").unwrap())
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || log.lock().unwrap().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(log.lock().unwrap().len(), 1);
    rt3.stop().await.unwrap();
    rt2.stop().await.unwrap();
}
