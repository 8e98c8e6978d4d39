"""A partial update (PATCH body): fields may be left out, never null, and its schema says
exactly that."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from shared.schemas import PartialUpdate, SingleLineText


class ThingUpdate(PartialUpdate):
    name: SingleLineText | None = Field(default=None, max_length=10)
    tags: list[str] | None = None
    is_active: bool | None = None


def test_fields_left_out_are_not_set() -> None:
    update = ThingUpdate.model_validate({"name": "lamp"})
    assert update.model_fields_set == {"name"}
    assert update.model_dump(exclude_unset=True) == {"name": "lamp"}


def test_null_is_refused_field_by_field() -> None:
    with pytest.raises(ValidationError) as refused:
        ThingUpdate.model_validate({"name": None, "tags": None, "is_active": True})
    assert [error["loc"] for error in refused.value.errors()] == [("name",), ("tags",)]
    assert all("not null" in error["msg"] for error in refused.value.errors())


def test_the_schema_never_offers_null() -> None:
    schema = ThingUpdate.model_json_schema()
    assert "required" not in schema
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert properties["name"] == {"maxLength": 10, "title": "Name", "type": "string"}
    assert properties["tags"] == {"items": {"type": "string"}, "title": "Tags", "type": "array"}
    assert properties["is_active"] == {"title": "Is Active", "type": "boolean"}
