"""The e-mails, as plain text: one template per notification kind."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from string import Template

import pycountry

from eventbus.types import OrderChanged, OrderItem, OrderRefunded, ShippingAddress
from notification_service.models import NotificationKind

SHOP_NAME = "E-Shop"


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    body: str


_SUBJECTS = {
    NotificationKind.WELCOME: Template("Welcome to $shop, $name"),
    NotificationKind.ORDER_CONFIRMED: Template("Your order $order is confirmed"),
    NotificationKind.ORDER_CANCELLED: Template("Your order $order was cancelled"),
    NotificationKind.ORDER_SHIPPED: Template("Your order $order is on its way"),
    NotificationKind.ORDER_REFUNDED: Template("Your refund of $amount for order $order"),
}

_BODIES = {
    NotificationKind.WELCOME: Template(
        "Hello $name,\n\n"
        "your $shop account is ready. Sign in with $email to start shopping.\n\n"
        "The $shop team\n"
    ),
    NotificationKind.ORDER_CONFIRMED: Template(
        "Hello $name,\n\n"
        "thank you for your order $order_id.\n\n"
        "$items\n"
        "Total: $total\n"
        "$address\n"
        "We will tell you when it ships.\n\n"
        "The $shop team\n"
    ),
    NotificationKind.ORDER_CANCELLED: Template(
        "Hello $name,\n\n"
        "your order $order_id was cancelled ($reason).\n\n"
        "$items\n"
        "Any payment taken for it is refunded.\n\n"
        "The $shop team\n"
    ),
    NotificationKind.ORDER_SHIPPED: Template(
        "Hello $name,\n\nyour order $order_id has shipped.\n\n$items\n$address\nThe $shop team\n"
    ),
    NotificationKind.ORDER_REFUNDED: Template(
        "Hello $name,\n\n"
        "we have refunded part of your order $order_id$reason.\n\n"
        "$items\n"
        "Refunded: $amount\n"
        "$address\n"
        "The money goes back to the card you paid with.\n\n"
        "The $shop team\n"
    ),
}

_REASONS = {
    "out_of_stock": "an item was out of stock",
    "payment_declined": "the payment was declined",
    "cancelled_by_user": "you cancelled it",
    "expired": "it could not be completed in time",
}


def welcome(*, name: str, email: str) -> Message:
    values = {"shop": SHOP_NAME, "name": name, "email": email}
    kind = NotificationKind.WELCOME
    return Message(_SUBJECTS[kind].substitute(values), _BODIES[kind].substitute(values))


def receipt_line(item: OrderItem, currency: str) -> str:
    """`2 x Blue mug at 12.99 USD = 25.98 USD`; events from before names and prices were
    added to them name only the product id."""
    if item.product_name is None or item.unit_price is None:
        return f"  {item.quantity} x product {item.product_id}"
    line = f"  {item.quantity} x {item.product_name} at {_money(item.unit_price, currency)}"
    if item.line_total is not None:
        line += f" = {_money(item.line_total, currency)}"
    return line


def receipt_address(address: ShippingAddress | None) -> str:
    """The shipping address block, or nothing when the order has none."""
    if address is None:
        return ""
    lines = [
        address.full_name,
        address.line1,
        address.line2,
        f"{address.postal_code} {address.city}",
        _country_name(address.country),
    ]
    return "Shipping to:\n" + "".join(f"  {line}\n" for line in lines if line)


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:.2f} {currency}".rstrip()


def _country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code)
    return country.name if country is not None else code


def order_message(kind: NotificationKind, order: OrderChanged, *, name: str) -> Message:
    currency = order.currency or ""
    items = "\n".join(receipt_line(item, currency) for item in order.items)
    reason = order.reason or "cancelled"
    values = {
        "shop": SHOP_NAME,
        "name": name,
        "order": str(order.order_id)[:8],
        "order_id": str(order.order_id),
        "items": items + "\n" if items else "",
        "total": _money(order.total_amount, currency),
        "address": receipt_address(order.shipping_address),
        "reason": _REASONS.get(reason, reason.replace("_", " ")),
    }
    return Message(_SUBJECTS[kind].substitute(values), _BODIES[kind].substitute(values))


def refund_message(refund: OrderRefunded, *, name: str) -> Message:
    currency = refund.currency or ""
    items = "\n".join(receipt_line(item, currency) for item in refund.items)
    values = {
        "shop": SHOP_NAME,
        "name": name,
        "order": str(refund.order_id)[:8],
        "order_id": str(refund.order_id),
        "items": items + "\n" if items else "",
        "amount": _money(refund.amount, currency),
        "address": receipt_address(refund.shipping_address),
        "reason": f" ({refund.reason})" if refund.reason else "",
    }
    kind = NotificationKind.ORDER_REFUNDED
    return Message(_SUBJECTS[kind].substitute(values), _BODIES[kind].substitute(values))
