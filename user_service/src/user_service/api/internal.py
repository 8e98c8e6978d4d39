"""Service-to-service routes; the gateway never routes /internal."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from shared.service_auth import require_service
from user_service.deps import AccountServiceDep
from user_service.schemas import UserStatusRead

# Every other process checks access tokens against the account's status (user_service
# reads its own database).
router = APIRouter(
    prefix="/internal/v1",
    tags=["internal"],
    dependencies=[
        require_service(
            "product_service",
            "order_service",
            "inventory_service",
            "notification_service",
            "api_gateway",
        )
    ],
)


@router.get("/users/{user_id}/status")
async def read_user_status(user_id: uuid.UUID, accounts: AccountServiceDep) -> UserStatusRead:
    """Whether the account may still act, and its current role (used by token checks)."""
    return UserStatusRead.model_validate(await accounts.get(user_id))
