"""The Python AutoGen Kafka extension's API on Switchboard: change the imports,
keep the program.

    # before: from autogen_kafka_extension.worker_config import WorkerConfig
    #         from autogen_kafka_extension.worker_runtime import KafkaWorkerAgentRuntime
    from switchboard.autogen.compat import KafkaConfig, KafkaWorkerAgentRuntime, WorkerConfig

How the extension's settings map (python/README.md has the full table):

- ``request_topic`` is the agent network: it becomes the topic prefix (unless
  ``topic_prefix=`` is given), so runtimes given the same ``request_topic`` talk.
- ``group_id`` names the runtime: the same ``group_id`` in two processes makes them
  replicas of one runtime (they share its agent types, inbox and state).
- ``subscription_topic``, ``registry_topic``, ``response_topic``, ``title`` and
  ``description`` name things Switchboard derives itself; they are accepted and
  ignored, with one log line saying so.
- Kafka tuning fields become the librdkafka properties they stand for.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from autogen_core import AgentId, Subscription, TopicId

from ._errors import ConfigError
from ._runtime import SwitchboardAgentRuntime

logger = logging.getLogger("switchboard.compat")

__all__ = [
    "KafkaConfig",
    "KafkaWorkerAgentRuntime",
    "SaslMechanism",
    "SecurityProtocol",
    "SubscriptionService",
    "WorkerConfig",
]


class SecurityProtocol(str, enum.Enum):
    """Kafka's ``security.protocol`` values (strings work as well)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(str, enum.Enum):
    """SASL mechanisms (strings work as well)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


# KafkaConfig field -> (librdkafka property, which clients, value conversion).
_TUNING = {
    "batch_size": ("batch.size", "producer", int),
    "linger_ms": ("linger.ms", "producer", int),
    "compression_type": ("compression.type", "producer", str),
    "buffer_memory": ("queue.buffering.max.kbytes", "producer", lambda b: max(1, int(b) // 1024)),
    "session_timeout_ms": ("session.timeout.ms", "consumer", int),
    "heartbeat_interval_ms": ("heartbeat.interval.ms", "consumer", int),
    "fetch_min_bytes": ("fetch.min.bytes", "consumer", int),
    "fetch_max_wait_ms": ("fetch.wait.max.ms", "consumer", int),
    "receive_buffer_bytes": ("socket.receive.buffer.bytes", "both", int),
    "send_buffer_bytes": ("socket.send.buffer.bytes", "both", int),
}


@dataclass
class KafkaConfig:
    """Connection and tuning, as the extension's ``KafkaConfig``."""

    bootstrap_servers: Union[str, Sequence[str], None] = None
    security_protocol: Union[str, SecurityProtocol, None] = None
    sasl_mechanism: Union[str, SaslMechanism, None] = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[str] = None
    ssl_ca_location: Optional[str] = None
    client_id: Optional[str] = None
    batch_size: Optional[int] = None
    linger_ms: Optional[int] = None
    compression_type: Optional[str] = None
    buffer_memory: Optional[int] = None
    session_timeout_ms: Optional[int] = None
    heartbeat_interval_ms: Optional[int] = None
    fetch_min_bytes: Optional[int] = None
    fetch_max_wait_ms: Optional[int] = None
    receive_buffer_bytes: Optional[int] = None
    send_buffer_bytes: Optional[int] = None
    #: Kafka's Java consumer setting; librdkafka has no such limit (it is ignored).
    max_poll_records: Optional[int] = None
    #: The extension's spelling of ``sasl_mechanism``.
    security_mechanism: Union[str, SaslMechanism, None] = None
    #: Any other librdkafka properties, passed through as given.
    producer: Dict[str, str] = field(default_factory=dict)
    consumer: Dict[str, str] = field(default_factory=dict)

    def client_properties(self) -> tuple[Dict[str, str], Dict[str, str]]:
        """``(producer, consumer)`` librdkafka properties of the tuning fields."""
        producer, consumer = dict(self.producer), dict(self.consumer)
        for name, (prop, which, convert) in _TUNING.items():
            value = getattr(self, name)
            if value is None:
                continue
            try:
                text = str(convert(value))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"KafkaConfig.{name}: {value!r} is invalid ({e})", f"KafkaConfig.{name}") from None
            if which in ("producer", "both"):
                producer[prop] = text
            if which in ("consumer", "both"):
                consumer[prop] = text
        return producer, consumer


@dataclass
class WorkerConfig:
    """The extension's ``WorkerConfig`` (see the module docstring for the mapping)."""

    request_topic: str = "agent.requests"
    subscription_topic: Optional[str] = None
    registry_topic: Optional[str] = None
    response_topic: Optional[str] = None
    publish_topic: Optional[str] = None
    group_id: str = "worker-group"
    client_id: Optional[str] = None
    title: Optional[str] = None
    description: Optional[str] = None
    bootstrap_servers: Union[str, Sequence[str], None] = None
    security_protocol: Union[str, SecurityProtocol, None] = None
    security_mechanism: Union[str, SaslMechanism, None] = None
    sasl_mechanism: Union[str, SaslMechanism, None] = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[str] = None
    kafka_config: Optional[KafkaConfig] = None
    #: Switchboard's own: the network's topic prefix (default: ``request_topic``).
    topic_prefix: Optional[str] = None
    #: Switchboard's own settings (e.g. ``partitions``, ``rpc_timeout``), passed on.
    switchboard: Dict[str, Any] = field(default_factory=dict)

    def runtime_name(self) -> str:
        """``group_id`` as a runtime name (a DNS label; the same id, the same name)."""
        name = re.sub(r"[^a-z0-9-]+", "-", self.group_id.lower()).strip("-")[:63].strip("-")
        if not name:
            raise ConfigError(f"WorkerConfig.group_id {self.group_id!r} has no usable characters", "WorkerConfig.group_id")
        if name != self.group_id:
            logger.info("group_id %r names runtime %r (runtime names are DNS labels)", self.group_id, name)
        return name

    def settings(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`SwitchboardAgentRuntime`."""
        kc = self.kafka_config or KafkaConfig()
        ignored = [
            n
            for n in ("subscription_topic", "registry_topic", "response_topic", "publish_topic", "title", "description")
            if getattr(self, n) is not None
        ]
        if kc.max_poll_records is not None:
            ignored.append("kafka_config.max_poll_records")
        if ignored:
            logger.info(
                "switchboard.compat: ignoring %s (Switchboard derives its topics from the prefix %r; "
                "librdkafka has no max_poll_records)",
                ", ".join(ignored),
                self.topic_prefix or self.request_topic,
            )

        def first(*values: Any) -> Any:
            return next((v for v in values if v is not None), None)

        producer, consumer = kc.client_properties()
        out: Dict[str, Any] = dict(
            topic_prefix=self.topic_prefix or self.request_topic,
            bootstrap_servers=first(self.bootstrap_servers, kc.bootstrap_servers),
            client_id=first(self.client_id, kc.client_id),
            security_protocol=first(self.security_protocol, kc.security_protocol),
            sasl_mechanism=first(self.sasl_mechanism, self.security_mechanism, kc.sasl_mechanism, kc.security_mechanism),
            sasl_username=first(self.sasl_username, kc.sasl_username),
            sasl_password=first(self.sasl_password, kc.sasl_password),
            ssl_ca_location=kc.ssl_ca_location,
            producer=producer,
            consumer=consumer,
        )
        out.update(self.switchboard)
        return out


class SubscriptionService:
    """The extension's view of the network's subscriptions (all runtimes of the prefix)."""

    def __init__(self, runtime: SwitchboardAgentRuntime) -> None:
        self._runtime = runtime

    async def get_all_subscriptions(self) -> List[Subscription]:
        """Every subscription of the network."""
        return await self._runtime.subscriptions()

    async def get_subscribed_recipients(self, topic: TopicId) -> List[AgentId]:
        """The agents an event on ``topic`` reaches (one per subscribed agent type)."""
        out: List[AgentId] = []
        for s in await self._runtime.subscriptions():
            if s.is_match(topic):
                recipient = s.map_to_agent(topic)
                if recipient not in out:
                    out.append(recipient)
        return out

    async def add_subscription(self, subscription: Subscription) -> None:
        await self._runtime.add_subscription(subscription)

    async def remove_subscription(self, id: str) -> None:
        await self._runtime.remove_subscription(id)


class KafkaWorkerAgentRuntime(SwitchboardAgentRuntime):
    """``KafkaWorkerAgentRuntime(config)`` of the extension, on Switchboard."""

    def __init__(self, config: WorkerConfig) -> None:
        if not isinstance(config, WorkerConfig):
            raise TypeError(f"config must be a switchboard.autogen.compat.WorkerConfig, got {type(config).__name__}")
        self.config = config
        super().__init__(config.runtime_name(), **config.settings())
        self._subscription_service = SubscriptionService(self)

    @property
    def subscription_service(self) -> SubscriptionService:
        return self._subscription_service

    async def get_registered_factories(self) -> List[str]:
        """The agent types this runtime hosts."""
        return sorted(self._local_types)
