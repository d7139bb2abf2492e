"""Switchboard for Python: AutoGen agents on the Switchboard runtime (Rust, in-process).

- :mod:`switchboard.autogen`: :class:`~switchboard.autogen.SwitchboardAgentRuntime`,
  autogen_core's ``AgentRuntime`` over Kafka.
- :mod:`switchboard.autogen.compat`: the Python Kafka extension's constructor API.
- ``python -m switchboard serve``: a runtime pod whose agents are Python.
- :func:`switchboard.step`: durable steps (a completed step is not run again when a
  message is redelivered after a crash), :mod:`switchboard.durable`.
"""

from ._native import NativeError
from .durable import step
from .serve import serve

__all__ = ["NativeError", "serve", "step"]
