"""The order domain on its own: state machine, pricing, request fingerprints, payments."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from order_service.errors import InvalidPaymentToken, MixedCurrencies, ProductUnavailable
from order_service.payments import SandboxPaymentProvider
from order_service.pricing import CatalogProduct, RequestedLine, price_order
from order_service.schemas import OrderCreate
from order_service.states import CANCELLABLE, OrderStatus, can_move, sources_of


def product(price: str = "10.00", currency: str = "USD", active: bool = True) -> CatalogProduct:
    return CatalogProduct(uuid.uuid4(), "Thing", Decimal(price), currency, active)


class TestStateMachine:
    def test_happy_path_and_cancellation(self) -> None:
        assert can_move(OrderStatus.PENDING, OrderStatus.CONFIRMED)
        assert can_move(OrderStatus.CONFIRMED, OrderStatus.SHIPPED)
        assert can_move(OrderStatus.SHIPPED, OrderStatus.DELIVERED)
        assert {OrderStatus.PENDING, OrderStatus.CONFIRMED} == CANCELLABLE

    @pytest.mark.parametrize(
        ("current", "target"),
        [
            (OrderStatus.PENDING, OrderStatus.SHIPPED),
            (OrderStatus.CONFIRMED, OrderStatus.DELIVERED),
            (OrderStatus.SHIPPED, OrderStatus.CANCELLED),
            (OrderStatus.DELIVERED, OrderStatus.CANCELLED),
            (OrderStatus.CANCELLED, OrderStatus.CONFIRMED),
            (OrderStatus.CANCELLED, OrderStatus.CANCELLED),
        ],
    )
    def test_forbidden_moves(self, current: OrderStatus, target: OrderStatus) -> None:
        assert not can_move(current, target)

    def test_sources(self) -> None:
        assert sources_of(OrderStatus.SHIPPED) == {OrderStatus.CONFIRMED}
        assert sources_of(OrderStatus.DELIVERED) == {OrderStatus.SHIPPED}
        assert sources_of(OrderStatus.PENDING) == frozenset()


class TestPricing:
    def test_lines_and_total(self) -> None:
        a, b = product("19.99"), product("0.01")
        priced = price_order([RequestedLine(a.id, 3), RequestedLine(b.id, 100)], {a.id: a, b.id: b})
        assert [line.line_total for line in priced.lines] == [Decimal("59.97"), Decimal("1.00")]
        assert priced.total_amount == Decimal("60.97")
        assert priced.currency == "USD"

    def test_every_unavailable_line_is_named(self) -> None:
        ok, inactive = product(), product(active=False)
        missing = uuid.uuid4()
        with pytest.raises(ProductUnavailable) as caught:
            price_order(
                [RequestedLine(ok.id, 1), RequestedLine(missing, 1), RequestedLine(inactive.id, 1)],
                {ok.id: ok, inactive.id: inactive},
            )
        errors = caught.value.extra["errors"]
        assert [(e["loc"][2], e["type"]) for e in errors] == [
            (1, "product_unknown"),
            (2, "product_inactive"),
        ]

    def test_one_currency_per_order(self) -> None:
        usd, eur = product(currency="USD"), product(currency="EUR")
        with pytest.raises(MixedCurrencies):
            price_order(
                [RequestedLine(usd.id, 1), RequestedLine(eur.id, 1)], {usd.id: usd, eur.id: eur}
            )


class TestFingerprint:
    def test_same_request_same_fingerprint(self) -> None:
        product_id = str(uuid.uuid4())
        a = OrderCreate.model_validate(
            {"items": [{"product_id": product_id, "quantity": 2}], "payment_token": "tok_ok"}
        )
        b = OrderCreate.model_validate_json(
            f'{{"payment_token": "tok_ok", "items": [{{"quantity": 2, '
            f'"product_id": "{product_id.upper()}"}}]}}'
        )
        assert a.fingerprint() == b.fingerprint()
        assert len(a.fingerprint()) == 64

    def test_any_change_changes_it(self) -> None:
        product_id = str(uuid.uuid4())
        base = {"items": [{"product_id": product_id, "quantity": 2}], "payment_token": "tok_ok"}
        other = {"items": [{"product_id": product_id, "quantity": 3}], "payment_token": "tok_ok"}
        assert (
            OrderCreate.model_validate(base).fingerprint()
            != OrderCreate.model_validate(other).fingerprint()
        )


class TestSandboxPayments:
    async def test_approves_and_declines(self) -> None:
        payments = SandboxPaymentProvider()
        order_id = uuid.uuid4()
        approved = await payments.charge(
            order_id=order_id, amount=Decimal("1.00"), currency="USD", token="tok_ok"
        )
        declined = await payments.charge(
            order_id=order_id, amount=Decimal("1.00"), currency="USD", token="tok_decline"
        )
        assert approved.approved
        assert approved.payment_id
        assert not declined.approved
        assert declined.decline_code == "card_declined"
        await payments.refund(order_id=order_id)

    @pytest.mark.parametrize("token", ["", "tok_OK", "tok_visa", "tok_ok\n"])
    def test_other_tokens_are_invalid(self, token: str) -> None:
        with pytest.raises(InvalidPaymentToken):
            SandboxPaymentProvider().check_token(token)
