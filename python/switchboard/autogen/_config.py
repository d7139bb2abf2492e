"""Settings of a :class:`SwitchboardAgentRuntime`, written as the runtime's config file.

The Rust core validates them (errors name the field, e.g. ``kafka.topicPrefix``);
the same file format is what ``switchboard-runtime run`` and the operator use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Union


def _servers(value: Union[str, Sequence[str], None]) -> str:
    if value is None:
        value = os.environ.get("SWITCHBOARD_BOOTSTRAP_SERVERS", "")
    if isinstance(value, str):
        return value
    return ",".join(value)


def _enum_str(value: Any) -> Optional[str]:
    """Strings, or str-valued enums (``SecurityProtocol.SASL_SSL``), as the string."""
    if value is None:
        return None
    inner = getattr(value, "value", value)
    return str(inner)


@dataclass
class RuntimeSettings:
    """Everything a runtime process needs; see python/README.md for each field."""

    runtime_name: str
    topic_prefix: str = "switchboard"
    bootstrap_servers: Union[str, Sequence[str], None] = None
    client_id: Optional[str] = None
    security_protocol: Any = None
    sasl_mechanism: Any = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[str] = None
    ssl_ca_location: Optional[str] = None
    producer: Dict[str, str] = field(default_factory=dict)
    consumer: Dict[str, str] = field(default_factory=dict)
    create_topics: bool = True
    partitions: Optional[int] = None
    replication_factor: Optional[int] = None
    max_concurrency: Optional[int] = None
    rpc_timeout: Optional[float] = None
    max_message_bytes: Optional[int] = None
    local_delivery: Optional[bool] = None
    instance_id: Optional[str] = None
    heartbeat_interval: Optional[float] = None
    liveness_timeout: Optional[float] = None
    drain_timeout: Optional[float] = None
    durable_steps: Optional[bool] = None

    def config_text(self) -> str:
        """The runtime config file (JSON) these settings describe."""
        kafka: Dict[str, Any] = {
            "bootstrapServers": _servers(self.bootstrap_servers),
            "topicPrefix": self.topic_prefix,
        }
        if self.client_id is not None:
            kafka["clientId"] = self.client_id
        protocol = _enum_str(self.security_protocol)
        mechanism = _enum_str(self.sasl_mechanism)
        if protocol is not None or mechanism is not None or self.ssl_ca_location is not None:
            security: Dict[str, Any] = {"protocol": protocol or "PLAINTEXT"}
            if mechanism is not None:
                security["saslMechanism"] = mechanism
            if self.ssl_ca_location is not None:
                security["caLocation"] = self.ssl_ca_location
            kafka["security"] = security
        if self.producer:
            kafka["producer"] = {str(k): str(v) for k, v in self.producer.items()}
        if self.consumer:
            kafka["consumer"] = {str(k): str(v) for k, v in self.consumer.items()}
        runtime: Dict[str, Any] = {"name": self.runtime_name, "createTopics": self.create_topics}
        for key, value in (
            ("partitions", self.partitions),
            ("replicationFactor", self.replication_factor),
            ("maxConcurrency", self.max_concurrency),
            ("maxMessageBytes", self.max_message_bytes),
            ("localDelivery", self.local_delivery),
            ("durableSteps", self.durable_steps),
        ):
            if value is not None:
                runtime[key] = value
        if self.rpc_timeout is not None:
            runtime["rpcTimeoutMs"] = _millis(self.rpc_timeout, "rpc_timeout")
        return json.dumps({"kafka": kafka, "runtime": runtime})

    def secrets(self) -> Dict[str, str]:
        """SASL credentials, by the variables the Rust side reads them from."""
        out: Dict[str, str] = {}
        if self.sasl_username is not None:
            out["SWITCHBOARD_SASL_USERNAME"] = self.sasl_username
        if self.sasl_password is not None:
            out["SWITCHBOARD_SASL_PASSWORD"] = self.sasl_password
        return out

    def native_options(self) -> Dict[str, Any]:
        """Keyword arguments of ``NativeRuntime`` beyond the file."""
        out: Dict[str, Any] = {}
        if self.instance_id is not None:
            out["instance_id"] = self.instance_id
        if self.heartbeat_interval is not None:
            out["heartbeat_interval_ms"] = _millis(self.heartbeat_interval, "heartbeat_interval")
        if self.liveness_timeout is not None:
            out["liveness_timeout_ms"] = _millis(self.liveness_timeout, "liveness_timeout")
        if self.drain_timeout is not None:
            out["drain_timeout_ms"] = _millis(self.drain_timeout, "drain_timeout")
        return out


def _millis(seconds: float, name: str) -> int:
    from ._errors import ConfigError

    if not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {seconds!r}", name)
    return max(1, round(seconds * 1000))
