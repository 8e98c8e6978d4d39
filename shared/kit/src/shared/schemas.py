"""Schema building blocks: strict request models and the page envelope of every list."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

# PostgreSQL cannot store NUL in text, and other control characters have no place in
# names; line breaks and tabs are fine in multi-line text only.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_CHARACTERS_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def single_line(value: str) -> str:
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def multi_line(value: str) -> str:
    if _CONTROL_CHARACTERS_BUT_WHITESPACE.search(value):
        raise ValueError("must not contain control characters other than tabs and line breaks")
    return value


def one_line_per_product(message: str) -> AfterValidator:
    """A list's validator: no two of its lines name the same `product_id` (a 422 saying
    `message` otherwise), so quantities are never split over lines."""

    def check(lines: list[Any]) -> list[Any]:
        if len({line.product_id for line in lines}) != len(lines):
            raise ValueError(message)
        return lines

    return AfterValidator(check)


#: Text on one line (names, categories): no control characters.
SingleLineText = Annotated[str, AfterValidator(single_line)]
#: Text that may span lines (descriptions): no control characters but tabs and newlines.
MultiLineText = Annotated[str, AfterValidator(multi_line)]


def _format_money(value: Decimal) -> str:
    return f"{value:.2f}"


#: An exact amount with at most two decimal places, written as a string ("12.99").
#: A JSON number is accepted too: the body parser makes it a float, whose shortest repr
#: gives back the digits sent (up to 15 significant ones).
Money = Annotated[
    Decimal,
    Field(decimal_places=2, examples=["12.99"]),
    PlainSerializer(_format_money, return_type=str, when_used="json"),
]


class RequestModel(BaseModel):
    """Request bodies reject unknown fields (a 422 says which)."""

    model_config = ConfigDict(extra="forbid")


def _never_null(schema: dict[str, Any]) -> None:
    """A partial update's schema: each property optional, none nullable."""
    for prop in schema.get("properties", {}).values():
        choices = [choice for choice in prop.pop("anyOf", []) if choice != {"type": "null"}]
        if len(choices) == 1:
            prop.update(choices[0])
        elif choices:
            prop["anyOf"] = choices
        prop.pop("default", None)


class PartialUpdate(RequestModel):
    """A PATCH body: a field left out keeps its value; none may be `null` (it would erase
    a value that must exist, or mean "leave it" to one client and "clear it" to another).
    Its fields are declared `X | None = None`; the schema says optional, never null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_never_null)

    @field_validator("*")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out but not null")
        return value


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")

#: Above this many matches a list's `total` may be the database's estimate (flagged).
EXACT_TOTAL_UP_TO = 10_000


class Page(BaseModel, Generic[T]):
    """One page of a list. `next_cursor` (when there is a next page) asks for it by key,
    as fast deep in the list as at its start; `total_is_estimate` appears, true, when
    `total` is above `EXACT_TOTAL_UP_TO` and only estimated. Both are left out otherwise,
    so a client that knows only `items`, `total`, `limit` and `offset` sees nothing new."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Pass as `cursor` to get the next page; absent on the last one.",
    )
    total_is_estimate: bool = Field(
        default=False,
        exclude_if=lambda value: not value,
        description="Present, true, when `total` is an estimate.",
    )


class PageParams(BaseModel):
    limit: int
    offset: int
    cursor: str | None = None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1..100.")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip.")] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=1024,
            description="`next_cursor` of the previous page: the page after it (instead of"
            " `offset`).",
        ),
    ] = None,
) -> PageParams:
    if cursor is not None and offset:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "offset"),
                    "msg": "Send either `cursor` or `offset`, not both.",
                    "type": "value_error",
                }
            ]
        )
    return PageParams(limit=limit, offset=offset, cursor=cursor or None)


PageDep = Annotated[PageParams, Depends(page_params)]


#: The most records one internal batch lookup may ask for.
MAX_BATCH_IDS = 100
#: `?ids=...&ids=...` of an internal batch lookup (order_service's cart asks for up to 50).
BatchIds = Annotated[list[uuid.UUID], Query(min_length=1, max_length=MAX_BATCH_IDS)]
