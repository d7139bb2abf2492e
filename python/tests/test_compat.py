"""Programs written for the Python Kafka extension run with their imports changed."""

from __future__ import annotations

import json
import logging

import pytest
from autogen_core import AgentId, TopicId

from switchboard.autogen import ConfigError
from switchboard.autogen.compat import (
    KafkaConfig,
    KafkaWorkerAgentRuntime,
    SaslMechanism,
    SecurityProtocol,
    WorkerConfig,
)

from agents import Add, Calc, Sum, reply_serializers
from helpers import bootstrap

FAST = {"heartbeat_interval": 0.5, "liveness_timeout": 3.0, "partitions": 3}


async def test_extension_readme_program_runs_on_switchboard(prefix, caplog):
    caplog.set_level(logging.INFO, logger="switchboard.compat")
    # The README's constructor, as written there (plus the broker and our fast timings).
    config = WorkerConfig(
        request_topic=prefix,
        subscription_topic="agent.responses",
        group_id="worker_group_A",
        client_id="worker-client",
        title="Python Agent Runtime",
        bootstrap_servers=[bootstrap()],
        security_protocol=SecurityProtocol.PLAINTEXT,
        kafka_config=KafkaConfig(
            batch_size=16384, linger_ms=0, compression_type="lz4", session_timeout_ms=30000,
            heartbeat_interval_ms=10000, max_poll_records=500,
        ),
        switchboard=FAST,
    )
    host = KafkaWorkerAgentRuntime(config)
    assert not host.is_started
    await host.start()
    assert host.is_started
    assert host.runtime_name == "worker-group-a" and host.topic_prefix == prefix
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(ignored) == 1, ignored
    for name in ("subscription_topic", "title", "max_poll_records"):
        assert name in ignored[0]
    await Calc.register(host, "calc", Calc)
    assert await host.get_registered_factories() == ["calc"]

    # Same request_topic, another group_id: another runtime of the same network.
    client = KafkaWorkerAgentRuntime(
        WorkerConfig(request_topic=prefix, group_id="worker-group-b", bootstrap_servers=bootstrap(), switchboard=FAST)
    )
    client.add_message_serializer(reply_serializers())
    await client.start()
    assert await client.send_message(Add(1, 2), AgentId("calc", "x")) == Sum(3)

    service = client.subscription_service
    subs = await service.get_all_subscriptions()
    assert any(getattr(s, "topic_type_prefix", None) == "calc:" for s in subs), subs
    assert await service.get_subscribed_recipients(TopicId("calc:direct", "src")) == [AgentId("calc", "src")]
    assert await service.get_subscribed_recipients(TopicId("nobody", "src")) == []
    await client.stop()
    await host.stop()
    assert not host.is_started


def test_settings_map_to_librdkafka_and_security():
    kc = KafkaConfig(
        bootstrap_servers="127.0.0.1:1",
        security_protocol=SecurityProtocol.SASL_SSL,
        sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
        sasl_username="u",
        sasl_password="p",
        batch_size=65536,
        linger_ms=100,
        compression_type="lz4",
        buffer_memory=67108864,
        fetch_min_bytes=1024,
        fetch_max_wait_ms=500,
        receive_buffer_bytes=65536,
    )
    producer, consumer = kc.client_properties()
    assert producer == {
        "batch.size": "65536",
        "linger.ms": "100",
        "compression.type": "lz4",
        "queue.buffering.max.kbytes": "65536",
        "socket.receive.buffer.bytes": "65536",
    }
    assert consumer == {"fetch.min.bytes": "1024", "fetch.wait.max.ms": "500", "socket.receive.buffer.bytes": "65536"}
    rt = KafkaWorkerAgentRuntime(WorkerConfig(request_topic="agent.requests", group_id="g1", kafka_config=kc))
    file = json.loads(rt._settings.config_text())
    assert file["kafka"]["security"] == {"protocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512"}
    assert file["kafka"]["bootstrapServers"] == "127.0.0.1:1"
    assert rt._settings.secrets() == {"SWITCHBOARD_SASL_USERNAME": "u", "SWITCHBOARD_SASL_PASSWORD": "p"}
    # The extension's spelling of the mechanism works too.
    rt2 = KafkaWorkerAgentRuntime(
        WorkerConfig(group_id="g2", bootstrap_servers="127.0.0.1:1", security_protocol="SASL_PLAINTEXT",
                     security_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    )
    assert json.loads(rt2._settings.config_text())["kafka"]["security"]["saslMechanism"] == "PLAIN"


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError) as e:
        KafkaWorkerAgentRuntime(WorkerConfig(group_id="g", bootstrap_servers="127.0.0.1:1", security_protocol="TLS"))
    assert "security" in e.value.field and "TLS" in str(e.value)
    with pytest.raises(ConfigError) as e:
        KafkaWorkerAgentRuntime(WorkerConfig(request_topic="bad prefix!", group_id="g", bootstrap_servers="127.0.0.1:1"))
    assert "topicPrefix" in e.value.field
    with pytest.raises(ConfigError) as e:
        KafkaWorkerAgentRuntime(WorkerConfig(group_id="g", bootstrap_servers="127.0.0.1:1", kafka_config=KafkaConfig(linger_ms="soon")))
    assert e.value.field == "KafkaConfig.linger_ms"
