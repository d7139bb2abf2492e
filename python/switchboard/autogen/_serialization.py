"""AutoGen's serialization registry, as the bridge to Switchboard's ``Payload``.

A message crosses the network as ``(type_name, content_type, data)``: the type name
is AutoGen's (``type(message).__name__`` for dataclasses and pydantic models, the
full protobuf name for protobuf messages), the content type the serializer's
(``application/json`` or ``application/x-protobuf``), the data its bytes. Rust
messages use the same three fields (``Message::TYPE_NAME``, JSON), so an agent in
either language reads the other's messages when both name the type alike.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Sequence, Tuple

from autogen_core import JSON_DATA_CONTENT_TYPE, MessageSerializer
from autogen_core._serialization import SerializationRegistry, try_get_known_serializers_for_type


class Serializers:
    """The registry plus an index of content types by type name."""

    def __init__(self) -> None:
        self.registry = SerializationRegistry()
        self._content_types: Dict[str, List[str]] = {}
        # Classes sent under another name than AutoGen's (NamedJsonSerializer).
        self._wire_names: Dict[type, str] = {}

    def add(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        if isinstance(serializer, Sequence):
            for s in serializer:
                self.add(s)
            return
        self.registry.add_serializer(serializer)
        if isinstance(serializer, NamedJsonSerializer):
            self._wire_names[serializer.cls] = serializer.type_name
        types = self._content_types.setdefault(serializer.type_name, [])
        if serializer.data_content_type not in types:
            types.append(serializer.data_content_type)

    def is_registered(self, type_name: str, content_type: str) -> bool:
        return self.registry.is_registered(type_name, content_type)

    def encode(self, message: Any) -> Tuple[str, str, bytes]:
        """``(type_name, content_type, data)`` of ``message``. Dataclasses, pydantic
        models and protobuf messages without a registered serializer get AutoGen's
        known serializer for their class on first use."""
        type_name = self._wire_names.get(type(message)) or self.registry.type_name(message)
        types = self._content_types.get(type_name)
        if not types:
            self.add(try_get_known_serializers_for_type(type(message)))
            types = self._content_types.get(type_name)
            if not types:
                raise ValueError(
                    f"no serializer for message type {type_name!r} ({type(message).__qualname__}); "
                    "add one with runtime.add_message_serializer(...)"
                )
        content_type = JSON_DATA_CONTENT_TYPE if JSON_DATA_CONTENT_TYPE in types else types[0]
        data = self.registry.serialize(message, type_name=type_name, data_content_type=content_type)
        return type_name, content_type, data

    def decode(self, type_name: str, content_type: str, data: bytes) -> Any:
        """The message, or AutoGen's ``UnknownPayload`` when no serializer is known."""
        return self.registry.deserialize(data, type_name=type_name, data_content_type=content_type)


class NamedJsonSerializer(MessageSerializer[Any]):
    """JSON for a dataclass or pydantic model under a wire type name of your choice,
    e.g. a Rust message's ``TYPE_NAME`` (``example.Ping``): AutoGen's own serializers
    always use the Python class name."""

    def __init__(self, cls: type, type_name: str) -> None:
        from pydantic import BaseModel

        self.cls = cls
        self._type_name = type_name
        self._pydantic = isinstance(cls, type) and issubclass(cls, BaseModel)
        if not self._pydantic and not hasattr(cls, "__dataclass_fields__"):
            raise TypeError(f"{cls!r} is neither a dataclass nor a pydantic model")

    @property
    def data_content_type(self) -> str:
        return JSON_DATA_CONTENT_TYPE

    @property
    def type_name(self) -> str:
        return self._type_name

    def deserialize(self, payload: bytes) -> Any:
        if self._pydantic:
            return self.cls.model_validate_json(payload)
        value = json.loads(payload)
        if not isinstance(value, dict):
            raise ValueError(f"{self._type_name}: expected a JSON object, got {type(value).__name__}")
        return self.cls(**value)

    def serialize(self, message: Any) -> bytes:
        if self._pydantic:
            return message.model_dump_json().encode("utf-8")
        return json.dumps(dataclasses.asdict(message)).encode("utf-8")


def json_serializer(cls: type, type_name: str) -> NamedJsonSerializer:
    """A serializer of ``cls`` under wire type name ``type_name`` (for
    ``runtime.add_message_serializer``)."""
    return NamedJsonSerializer(cls, type_name)
