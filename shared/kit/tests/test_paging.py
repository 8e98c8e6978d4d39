"""Cursors of shared.paging: they carry typed sort keys and refuse what they did not make."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.exceptions import RequestValidationError

from shared.paging import decode_cursor, encode_cursor


def test_cursor_gives_back_the_keys_with_their_types() -> None:
    keys = [True, 0.1 + 0.2, datetime(2026, 12, 2, 5, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()]
    keys += [Decimal("12.30"), 7, "text"]

    cursor = encode_cursor(keys, 40, scope="filters")

    assert decode_cursor(cursor, key_count=len(keys), scope="filters") == (keys, 40)


@pytest.mark.parametrize(
    ("cursor", "key_count", "scope"),
    [
        (encode_cursor([1], 20, scope="a"), 1, "b"),  # another list's
        (encode_cursor([1], 20, scope="a"), 2, "a"),  # another order's
        ("bm90IGpzb24", 1, "a"),  # base64 of "not json"
        ("eyJrIjpbWyJmIiwiTmFOIl1dLCJvIjowLCJzIjoiIn0", 1, ""),  # a NaN key
        ("", 1, ""),
    ],
)
def test_foreign_or_broken_cursor_is_refused(cursor: str, key_count: int, scope: str) -> None:
    with pytest.raises(RequestValidationError):
        decode_cursor(cursor, key_count=key_count, scope=scope)


def test_key_of_an_unknown_type_cannot_go_into_a_cursor() -> None:
    with pytest.raises(TypeError):
        encode_cursor([object()], 0, scope="")
