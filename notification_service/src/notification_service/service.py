"""The notification service's use cases: recording and sending a notification (the
event handlers), and reading the log (the routes)."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from notification_service.mailer import Mailer
from notification_service.models import Notification, NotificationKind, NotificationStatus
from notification_service.repository import NotificationRepository
from notification_service.schemas import NotificationRead
from notification_service.templates import Message
from shared.auth import TokenClaims
from shared.schemas import Page, PageParams

logger = logging.getLogger(__name__)


class NotificationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.notifications = NotificationRepository(session)

    async def page(self, claims: TokenClaims, page: PageParams) -> Page[NotificationRead]:
        """A user's own notifications, or everyone's for an administrator; newest first."""
        found = await self.notifications.page(
            user_id=None if claims.is_admin else claims.user_id, page=page
        )
        return found.to_page(NotificationRead, page.limit)

    async def notify(
        self,
        mailer: Mailer,
        *,
        user_id: uuid.UUID,
        kind: NotificationKind,
        message: Message,
        recipient: str,
        order_id: uuid.UUID | None = None,
    ) -> Notification:
        """Store the notification and send it, in the caller's transaction (the event
        consumer's, which commits it with the event's inbox row).

        The row is written before the e-mail goes out, so nothing the database could
        refuse fails after sending. An SMTP failure never raises: the mailer tries a few
        times, then the notification is stored `failed` (visible, and nothing retried
        later sends a duplicate). Only a database failure after a successful send could
        repeat an e-mail, when the consumer hands the event out again."""
        notification = Notification(
            user_id=user_id,
            kind=kind,
            subject=message.subject,
            body=message.body,
            status=NotificationStatus.RECORDED,
            order_id=order_id,
            recipient=recipient,
            attempts=0,
        )
        await self.notifications.add(notification)
        context = {"notification_id": str(notification.id), "kind": kind.value}
        if not mailer.enabled:
            logger.info("notification recorded (no SMTP server set)", extra=context)
            return notification
        delivery = await mailer.send(recipient, message)
        notification.status = (
            NotificationStatus.SENT if delivery.sent else NotificationStatus.FAILED
        )
        notification.attempts = delivery.attempts
        await self.session.flush()
        if delivery.sent:
            logger.info("notification sent", extra={**context, "attempts": delivery.attempts})
        else:
            logger.error(
                "notification failed on every try", extra={**context, "error": delivery.error}
            )
        return notification
