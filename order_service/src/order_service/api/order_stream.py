"""The live status of one order, as server-sent events (see `status_watch`)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from order_service.deps import SettingsDep, StatusWatchDep
from order_service.errors import OrderNotFound
from order_service.status_watch import status_events
from shared.auth import CurrentClaims
from shared.errors import problem_answers

router = APIRouter(prefix="/v1/orders", tags=["orders"])

_STREAM: dict[str, Any] = {
    "description": "`status` events: `{status, cancel_reason, refunded_amount, at}`, the "
    "current one at once, then one per change; a comment line at least every 15 s; the "
    "stream ends after `delivered` or `cancelled`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


@router.get(
    "/{order_id}/stream",
    response_class=EventSourceResponse,
    responses={200: _STREAM, **problem_answers({404: "No such order, or not yours"})},
)
async def stream_order_status(
    order_id: uuid.UUID, claims: CurrentClaims, watch: StatusWatchDep, settings: SettingsDep
) -> EventSourceResponse:
    """Watch an order's status live (yours, or any for administrators)."""
    first = await watch.current(order_id)
    if first is None or not (claims.is_admin or first.user_id == claims.user_id):
        raise OrderNotFound(order_id)
    return EventSourceResponse(
        status_events(watch, order_id, first), ping=settings.order_stream_ping_seconds
    )
