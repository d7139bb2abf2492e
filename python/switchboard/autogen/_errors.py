"""Runtime errors as the exceptions AutoGen programs catch.

The Rust core raises one ``NativeError(kind, message, detail)``; :func:`translate`
picks the AutoGen (or builtin) exception an AutoGen user expects for that kind.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Dict, Tuple, Type

from autogen_core import exceptions as agx

from .._native import NativeError


class SwitchboardError(Exception):
    """Base of the errors this package raises."""


class UnknownAgentTypeError(SwitchboardError, agx.UndeliverableException, LookupError):
    """No runtime of the network hosts the recipient's agent type."""


class CantHandleError(SwitchboardError, agx.CantHandleException):
    """The recipient has no handler (no serializer) for the message type."""


class UndeliverableError(SwitchboardError, agx.UndeliverableException):
    """The runtime refused the message before any handler saw it."""


class RpcTimeoutError(SwitchboardError, asyncio.TimeoutError):
    """No reply within the RPC timeout (an ``asyncio.TimeoutError``)."""


class SelfRpcError(SwitchboardError, RuntimeError):
    """An agent sent an RPC to itself (it would wait for its own turn)."""


class AgentRegistrationError(SwitchboardError, ValueError):
    """The agent type or id is already registered, here or by another runtime."""


class NotAccessibleError(SwitchboardError, agx.NotAccessibleError):
    """The agent lives in another process."""


class WrongAgentClassError(SwitchboardError, TypeError):
    """The agent is of another class than asked for."""


class UnknownSubscriptionError(SwitchboardError, LookupError, ValueError):
    """No subscription with that id."""


class MessageDecodeError(SwitchboardError, ValueError):
    """A message did not decode into its type."""


class ConfigError(SwitchboardError, ValueError):
    """A configuration value is invalid; ``field`` names it."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class KafkaError(SwitchboardError, ConnectionError):
    """Kafka refused or failed a request."""


class RuntimeStoppedError(SwitchboardError, RuntimeError):
    """The runtime is stopping or stopped."""


class HandlerError(SwitchboardError):
    """The recipient's handler raised; ``remote_type`` is the exception's class name.

    When that class is a builtin exception (``ValueError``, ``KeyError``...) or one of
    autogen_core's, the error raised is also an instance of it, so ``except
    ValueError`` works as with AutoGen's in-process runtime.
    """

    def __init__(self, message: str, *, agent: str = "", remote_type: str = "") -> None:
        super().__init__(message)
        self.agent = agent
        self.remote_type = remote_type


_KINDS: Dict[str, Type[SwitchboardError]] = {
    "unknown_agent_type": UnknownAgentTypeError,
    "unknown_message_type": CantHandleError,
    "rejected": UndeliverableError,
    "timeout": RpcTimeoutError,
    "self_rpc": SelfRpcError,
    "duplicate_agent_type": AgentRegistrationError,
    "agent_type_taken": AgentRegistrationError,
    "duplicate_agent_instance": AgentRegistrationError,
    "agent_type_conflict": AgentRegistrationError,
    "not_local": NotAccessibleError,
    "wrong_class": WrongAgentClassError,
    "unknown_subscription": UnknownSubscriptionError,
    "codec": MessageDecodeError,
    "invalid_id": ConfigError,
    "kafka": KafkaError,
    "task": SwitchboardError,
    "stopped": RuntimeStoppedError,
}

_HANDLER_CLASSES: Dict[Type[BaseException], Type[HandlerError]] = {}


def _remote_class(name: str) -> Type[BaseException] | None:
    cls = getattr(builtins, name, None) or getattr(agx, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None


def _handler_error(detail: str, agent: str) -> BaseException:
    name, sep, text = detail.partition(": ")
    remote = _remote_class(name) if sep or name.isidentifier() else None
    if remote is None:
        return HandlerError(detail, agent=agent)
    if not sep:
        text = ""
    cls = _HANDLER_CLASSES.get(remote)
    if cls is None:
        try:
            cls = type(name, (HandlerError, remote), {"__module__": __name__})
        except TypeError:  # an exception class with an incompatible layout
            return HandlerError(detail, agent=agent, remote_type=name)
        _HANDLER_CLASSES[remote] = cls
    err = cls.__new__(cls)
    HandlerError.__init__(err, text, agent=agent, remote_type=name)
    return err


def translate(e: NativeError) -> BaseException:
    """The exception to raise for ``e``."""
    kind, message, detail = (list(e.args) + ["", "", ""])[:3]
    if kind == "cancelled":
        return asyncio.CancelledError(message)
    if kind == "handler":
        agent = message.removeprefix("handler of agent ").split(" failed", 1)[0]
        return _handler_error(detail, agent)
    if kind == "config":
        return ConfigError(message, detail)
    cls = _KINDS.get(kind, SwitchboardError)
    return cls(message)


def format_exception(e: BaseException) -> str:
    """``ValueError: boom``: how a handler's exception travels to its caller."""
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


__all__: Tuple[str, ...] = tuple(
    n for n, v in dict(globals()).items() if isinstance(v, type) and issubclass(v, SwitchboardError)
) + ("translate", "format_exception")
