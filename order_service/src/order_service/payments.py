"""Taking payment for an order.

`PaymentProvider` is what checkout needs of a provider; `SandboxPaymentProvider` is the
one the contract describes (`tok_ok` approves, `tok_decline` declines). A real provider
(Stripe, Adyen) implements the same four calls with its SDK, passing the order id as
its idempotency key so that a retried charge or refund never takes or returns money
twice.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from order_service.errors import InvalidPaymentToken

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PaymentResult:
    approved: bool
    #: The provider's reference of the payment (approved only).
    payment_id: str | None = None
    #: Why it was declined (declined only), in the provider's words.
    decline_code: str | None = None


class PaymentProvider(Protocol):
    def check_token(self, token: str) -> None:
        """Raise `InvalidPaymentToken` for a token the provider would reject outright;
        called before anything else happens, so a typo costs nothing."""
        ...

    async def charge(
        self, *, order_id: uuid.UUID, amount: Decimal, currency: str, token: str
    ) -> PaymentResult:
        """Take `amount` for the order: approved or declined. Charging the same order
        again returns the first result. A provider that cannot be reached raises a
        problem error (503/504), like any other dependency."""
        ...

    async def refund(self, *, order_id: uuid.UUID) -> None:
        """Give back whatever was taken for the order; nothing when nothing was, and
        nothing more when it was already refunded."""
        ...

    async def pay_back(
        self, *, order_id: uuid.UUID, refund_id: uuid.UUID, amount: Decimal, currency: str
    ) -> str:
        """Give `amount` of the order's payment back (a partial refund) and return the
        provider's reference; `refund_id` is the idempotency key, so paying the same
        refund again returns the first reference and moves no more money."""
        ...


class SandboxPaymentProvider:
    """Approves `tok_ok`, declines `tok_decline`, knows no other token; keeps no state,
    so any number of processes agree on every answer."""

    APPROVE = "tok_ok"
    DECLINE = "tok_decline"

    def check_token(self, token: str) -> None:
        if token not in (self.APPROVE, self.DECLINE):
            raise InvalidPaymentToken()

    async def charge(
        self, *, order_id: uuid.UUID, amount: Decimal, currency: str, token: str
    ) -> PaymentResult:
        self.check_token(token)
        if token == self.DECLINE:
            logger.info("sandbox payment declined", extra={"order_id": str(order_id)})
            return PaymentResult(approved=False, decline_code="card_declined")
        payment_id = f"pay_sandbox_{order_id.hex}"
        logger.info(
            "sandbox payment approved",
            extra={"order_id": str(order_id), "amount": str(amount), "currency": currency},
        )
        return PaymentResult(approved=True, payment_id=payment_id)

    async def refund(self, *, order_id: uuid.UUID) -> None:
        logger.info("sandbox payment refunded", extra={"order_id": str(order_id)})

    async def pay_back(
        self, *, order_id: uuid.UUID, refund_id: uuid.UUID, amount: Decimal, currency: str
    ) -> str:
        logger.info(
            "sandbox partial refund paid",
            extra={
                "order_id": str(order_id),
                "refund_id": str(refund_id),
                "amount": str(amount),
                "currency": currency,
            },
        )
        return f"re_sandbox_{refund_id.hex}"
