"""The event envelope and the trace context it travels with."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from eventbus import EventEnvelope
from eventbus.types import ProductChanged
from shared.tracing import outgoing_traceparent, traceparent_var, valid_traceparent


def envelope_json(note: str, **overrides: Any) -> bytes:
    envelope = {
        "id": str(uuid.uuid4()),
        "type": "thing.happened",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "test_service",
        "version": 1,
        "data": {"note": note},
        **overrides,
    }
    return json.dumps(envelope).encode()


class TestEnvelope:
    def test_round_trips_with_utc_time(self) -> None:
        envelope = EventEnvelope.new("thing.happened", {"note": "x"}, source="test_service")

        parsed = EventEnvelope.model_validate_json(envelope.to_json())

        assert parsed == envelope
        assert json.loads(envelope.to_json())["occurred_at"].endswith("Z")

    @pytest.mark.parametrize("type_", ["Thing.Happened", "thing", "thing..x", "a.b c", ""])
    def test_refuses_a_bad_type(self, type_: str) -> None:
        with pytest.raises(ValueError, match="type"):
            EventEnvelope.new(type_, {}, source="test_service")

    def test_ignores_fields_it_does_not_know(self) -> None:
        parsed = EventEnvelope.model_validate_json(envelope_json("x", extra="later"))

        assert parsed.data == {"note": "x"}

    def test_money_in_data_is_a_string_with_two_places(self) -> None:
        data = ProductChanged(
            product_id=uuid.uuid4(), sku="S-1", name="Lamp", price="24.9", is_active=True
        )

        envelope = EventEnvelope.new("product.created", data, source="product_service")

        assert json.loads(envelope.to_json())["data"]["price"] == "24.90"
        assert ProductChanged.model_validate(envelope.data) == data


class TestTraceparent:
    def test_a_new_trace_without_one_in_progress(self) -> None:
        first, second = outgoing_traceparent(), outgoing_traceparent()

        assert valid_traceparent(first) == first
        assert first.split("-")[1] != second.split("-")[1]

    def test_continues_the_trace_in_progress_with_a_new_parent(self) -> None:
        incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        token = traceparent_var.set(incoming)
        try:
            outgoing = outgoing_traceparent()
        finally:
            traceparent_var.reset(token)

        assert outgoing.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        assert outgoing.endswith("-01")
        assert outgoing != incoming

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ],
    )
    def test_refuses_an_invalid_one(self, value: str) -> None:
        assert valid_traceparent(value) is None
