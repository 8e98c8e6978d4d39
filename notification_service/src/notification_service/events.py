"""What the notification service does with the events it consumes (it publishes none):
`user.registered` teaches it the user's address and sends the welcome e-mail;
`order.confirmed`, `order.cancelled` and `order.shipped` mail the order's owner.
`order.created` is not bound: nothing is mailed for an order still `pending`.

Each handler runs in the consumer's transaction, with the event id's inbox row (so an
event mails once however often it is delivered): it issues SQL and does not commit.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import EventEnvelope, EventHandlers
from eventbus.types import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_SHIPPED,
    USER_REGISTERED,
    OrderChanged,
    UserRegistered,
)
from notification_service.mailer import Mailer
from notification_service.models import NotificationKind
from notification_service.repository import RecipientRepository
from notification_service.service import NotificationService
from notification_service.templates import order_message, welcome

KIND_OF_EVENT = {
    ORDER_CONFIRMED: NotificationKind.ORDER_CONFIRMED,
    ORDER_CANCELLED: NotificationKind.ORDER_CANCELLED,
    ORDER_SHIPPED: NotificationKind.ORDER_SHIPPED,
}


class RecipientUnknown(LookupError):
    """An order event for a user whose `user.registered` has not been processed (yet).

    Raised so the consumer hands the event back: the two come from different producers
    and may arrive in either order. One that never resolves ends in the dead-letter
    queue, from where `python -m eventbus.dlq replay` brings it back."""


def event_handlers(mailer: Mailer) -> EventHandlers:
    handlers = EventHandlers()

    @handlers.on(USER_REGISTERED)
    async def welcome_user(session: AsyncSession, event: EventEnvelope) -> None:
        """Remember the address and name, and send the welcome e-mail."""
        user = UserRegistered.model_validate(event.data)
        await RecipientRepository(session).save(user.user_id, user.email, user.full_name)
        await NotificationService(session).notify(
            mailer,
            user_id=user.user_id,
            kind=NotificationKind.WELCOME,
            message=welcome(name=user.full_name, email=user.email),
            recipient=user.email,
        )

    @handlers.on(*KIND_OF_EVENT)
    async def notify_order_owner(session: AsyncSession, event: EventEnvelope) -> None:
        """Mail the owner that the order was confirmed, cancelled or shipped."""
        order = OrderChanged.model_validate(event.data)
        recipient = await RecipientRepository(session).get(order.user_id)
        if recipient is None:
            raise RecipientUnknown(f"no address known for user {order.user_id}")
        kind = KIND_OF_EVENT[event.type]
        await NotificationService(session).notify(
            mailer,
            user_id=order.user_id,
            kind=kind,
            message=order_message(kind, order, name=recipient.full_name),
            recipient=recipient.email,
            order_id=order.order_id,
        )

    return handlers
