"""The envelope every event travels in.

Body of each message: `{id, type, occurred_at, source, version: 1, data}` (the contract's
"Events, over RabbitMQ"). Consumers ignore fields they do not know, so a producer may
add some without a new version; removing or changing one needs `version: 2`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

#: `domain.happening`: lowercase words joined by dots (also the routing key).
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"

EventType = Annotated[str, Field(pattern=EVENT_TYPE_PATTERN, max_length=100)]


class EventEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: uuid.UUID
    type: EventType
    occurred_at: AwareDatetime
    source: Annotated[str, Field(min_length=1, max_length=100)]
    version: Literal[1] = 1
    data: dict[str, Any]

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @classmethod
    def new(cls, type: str, data: BaseModel | Mapping[str, Any], *, source: str) -> EventEnvelope:
        """A new event with a fresh id, happening now."""
        payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else dict(data)
        return cls(
            id=uuid.uuid4(),
            type=type,
            occurred_at=datetime.now(UTC),
            source=source,
            data=payload,
        )

    def to_json(self) -> str:
        return self.model_dump_json()
