"""What the notification service does with the events it consumes (it publishes none):
`user.registered` teaches it the user's address and sends the welcome e-mail;
`order.confirmed`, `order.cancelled`, `order.shipped` and `order.refunded` mail the
order's owner a receipt. Every type of the contract (`EVENT_TYPES`) is also owed to the
webhook endpoints subscribed to it: a pending delivery each, which the delivery worker
sends.

Each handler runs in the consumer's transaction, with the event id's inbox row (so an
event mails once and is owed once however often it is delivered): it issues SQL and
does not commit. A handler that mails is registered with `external_effects`.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import EventEnvelope, EventHandlers, Handler
from eventbus.types import (
    EVENT_TYPES,
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_REFUNDED,
    ORDER_SHIPPED,
    USER_REGISTERED,
    OrderChanged,
    OrderRefunded,
    UserRegistered,
)
from notification_service.mailer import Mailer
from notification_service.models import NotificationKind, Recipient
from notification_service.repository import RecipientRepository
from notification_service.service import NotificationService
from notification_service.templates import order_message, refund_message, welcome
from notification_service.webhooks.service import owe_deliveries

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


def event_handlers(
    mailer: Mailer, *, deliveries_due: asyncio.Event, retry_window: timedelta
) -> EventHandlers:
    """The e-mail handlers, each followed by the webhook fan-out; the types nothing is
    mailed for get the fan-out alone."""
    mail = mail_handlers(mailer)

    async def owe_webhooks(session: AsyncSession, event: EventEnvelope) -> None:
        if await owe_deliveries(session, event, retry_window=retry_window):
            # Wake the worker once the deliveries are committed (not before: it would
            # find nothing yet), instead of leaving them to its next poll.
            sa_event.listen(
                session.sync_session, "after_commit", lambda _: deliveries_due.set(), once=True
            )

    handlers = EventHandlers()
    for type_ in EVENT_TYPES:
        # An e-mail sent cannot be taken back: its handler never runs twice because
        # another event of its batch failed. Without an SMTP server nothing is sent.
        sends = mailer.enabled and mail.get(type_) is not None
        handlers.on(type_, external_effects=sends)(_then(mail.get(type_), owe_webhooks))
    return handlers


def _then(first: Handler | None, second: Handler) -> Handler:
    if first is None:
        return second

    async def both(session: AsyncSession, event: EventEnvelope) -> None:
        await first(session, event)
        await second(session, event)

    return both


def mail_handlers(mailer: Mailer) -> EventHandlers:
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
        recipient = await _recipient(session, order.user_id)
        kind = KIND_OF_EVENT[event.type]
        await NotificationService(session).notify(
            mailer,
            user_id=order.user_id,
            kind=kind,
            message=order_message(kind, order, name=recipient.full_name),
            recipient=recipient.email,
            order_id=order.order_id,
        )

    @handlers.on(ORDER_REFUNDED)
    async def notify_refund(session: AsyncSession, event: EventEnvelope) -> None:
        """Mail the owner what was refunded."""
        refund = OrderRefunded.model_validate(event.data)
        recipient = await _recipient(session, refund.user_id)
        await NotificationService(session).notify(
            mailer,
            user_id=refund.user_id,
            kind=NotificationKind.ORDER_REFUNDED,
            message=refund_message(refund, name=recipient.full_name),
            recipient=recipient.email,
            order_id=refund.order_id,
        )

    return handlers


async def _recipient(session: AsyncSession, user_id: uuid.UUID) -> Recipient:
    recipient = await RecipientRepository(session).get(user_id)
    if recipient is None:
        raise RecipientUnknown(f"no address known for user {user_id}")
    return recipient
