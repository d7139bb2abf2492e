"""AutoGen on Switchboard: :class:`SwitchboardAgentRuntime` implements
``autogen_core.AgentRuntime`` on the Switchboard core (Rust, Kafka, in-process)."""

from ._errors import (
    AgentRegistrationError,
    CantHandleError,
    ConfigError,
    HandlerError,
    KafkaError,
    MessageDecodeError,
    NotAccessibleError,
    RpcTimeoutError,
    RuntimeStoppedError,
    SelfRpcError,
    SwitchboardError,
    UndeliverableError,
    UnknownAgentTypeError,
    UnknownSubscriptionError,
    WrongAgentClassError,
)
from ._runtime import SwitchboardAgentRuntime
from ._serialization import NamedJsonSerializer, json_serializer

__all__ = [
    "SwitchboardAgentRuntime",
    "NamedJsonSerializer",
    "json_serializer",
    "SwitchboardError",
    "AgentRegistrationError",
    "CantHandleError",
    "ConfigError",
    "HandlerError",
    "KafkaError",
    "MessageDecodeError",
    "NotAccessibleError",
    "RpcTimeoutError",
    "RuntimeStoppedError",
    "SelfRpcError",
    "UndeliverableError",
    "UnknownAgentTypeError",
    "UnknownSubscriptionError",
    "WrongAgentClassError",
]
