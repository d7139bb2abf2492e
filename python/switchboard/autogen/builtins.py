"""Messages of the runtime's built-in Rust agents (runtime/src/builtins.rs), for
Python agents and clients that talk to them.

- ``echo`` replies with the message it got (same type name and data), so any
  message your runtime can serialize comes back as itself.
- ``counter`` counts every message per key and replies :class:`Count` (wire type
  ``switchboard.builtin.Count``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._serialization import json_serializer


@dataclass
class Count:
    """The counter's reply: messages received so far by that counter, this one included."""

    count: int


#: Serializers of the built-ins' messages; every SwitchboardAgentRuntime has them.
SERIALIZERS = [json_serializer(Count, "switchboard.builtin.Count")]
