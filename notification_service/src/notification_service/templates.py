"""The e-mails, as plain text: one template per notification kind."""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

from eventbus.types import OrderChanged
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
        "Total: $total\n\n"
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
        "Hello $name,\n\nyour order $order_id has shipped.\n\n$items\nThe $shop team\n"
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


def order_message(kind: NotificationKind, order: OrderChanged, *, name: str) -> Message:
    items = "\n".join(f"  {line.quantity} x product {line.product_id}" for line in order.items)
    reason = order.reason or "cancelled"
    values = {
        "shop": SHOP_NAME,
        "name": name,
        "order": str(order.order_id)[:8],
        "order_id": str(order.order_id),
        "items": items + "\n" if items else "",
        "total": f"{order.total_amount:.2f}",
        "reason": _REASONS.get(reason, reason.replace("_", " ")),
    }
    return Message(_SUBJECTS[kind].substitute(values), _BODIES[kind].substitute(values))
