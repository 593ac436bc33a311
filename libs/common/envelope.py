"""The one envelope every bus event travels in, and the base class of event payloads.

An event type is a pydantic model with a `type` (also its routing key on the topic exchange) and a
`schema_version`. Subscribers outside chatdesk read the JSON Schemas in `docs/events/`.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Event(BaseModel):
    """Payload of one event type. Subclasses set `type` and document every field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            if cls.type in EVENT_TYPES:
                raise TypeError(f"event type {cls.type!r} is declared twice")
            EVENT_TYPES[cls.type] = cls


EVENT_TYPES: dict[str, builtins.type[Event]] = {}
"""Every declared event type by its name (filled as `libs.common.events` is imported)."""


E = TypeVar("E", bound=Event)


class Envelope(BaseModel):
    """What travels on the bus: metadata plus the event's `data`."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id, description="Unique event id; consumers dedupe on it.")
    type: str = Field(description="Event type, also the routing key, e.g. `chat.opened`.")
    source: str = Field(description="The service that emitted the event.")
    time: datetime = Field(default_factory=utcnow, description="When the event happened (UTC).")
    subject: str | None = Field(
        default=None, description="Id of the entity the event is about (a chat id, a contact id)."
    )
    schema_version: int = Field(default=1, description="Version of the `data` schema.")
    data: dict[str, Any]
    # The bytes it was read from: relaying or republishing it sends them again as they are.
    _raw: bytes | None = PrivateAttr(default=None)

    @classmethod
    def wrap(cls, event: Event, *, source: str, subject: str | None = None) -> Envelope:
        return cls(
            type=event.type,
            source=source,
            subject=subject,
            schema_version=event.schema_version,
            data=event.model_dump(mode="json"),
        )

    def parse(self, model: builtins.type[E]) -> E:
        return model.model_validate(self.data)

    def __eq__(self, other: object) -> bool:
        # Whether one of them was read from bytes does not make two envelopes differ.
        return isinstance(other, Envelope) and self.__dict__ == other.__dict__

    def to_bytes(self) -> bytes:
        if self._raw is None:
            # pydantic-core writes the JSON itself, without building a dict of it first.
            self._raw = self.__pydantic_serializer__.to_json(self)
        return self._raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        envelope = cls.model_validate_json(raw)
        envelope._raw = raw
        return envelope
