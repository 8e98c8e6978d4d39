"""Sending e-mail by SMTP (aiosmtplib), with a few tries; or, with no SMTP server
configured, nothing (the caller records the notification and logs it)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from notification_service.config import Settings
from notification_service.templates import Message

logger = logging.getLogger(__name__)

#: Longest pause between two tries of one e-mail.
MAX_RETRY_DELAY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Delivery:
    sent: bool
    attempts: int
    error: str | None = None


class Mailer:
    """One per process (made in `create_app`; it connects only to send)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    def build(self, to: str, message: Message) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.settings.smtp_from
        email["To"] = to
        email["Subject"] = message.subject
        email.set_content(message.body)
        return email

    async def send(self, to: str, message: Message) -> Delivery:
        """Try `smtp_attempts` times, pausing (doubling) between tries; never raises
        for an SMTP failure, the result says what happened."""
        settings = self.settings
        delay = settings.smtp_retry_delay_seconds
        error = ""
        for attempt in range(1, settings.smtp_attempts + 1):
            try:
                await aiosmtplib.send(
                    self.build(to, message),
                    hostname=settings.smtp_host,
                    port=settings.smtp_port,
                    username=settings.smtp_username or None,
                    password=settings.smtp_password.get_secret_value() or None,
                    start_tls=settings.smtp_use_tls,
                    timeout=settings.smtp_timeout_seconds,
                )
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                error = repr(exc)
                logger.warning(
                    "an e-mail could not be sent",
                    extra={"attempt": attempt, "error": error[:500]},
                )
                if attempt < settings.smtp_attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)
            else:
                return Delivery(sent=True, attempts=attempt)
        return Delivery(sent=False, attempts=settings.smtp_attempts, error=error)
