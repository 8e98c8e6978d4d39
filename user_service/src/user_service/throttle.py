"""Login throttling: failed logins counted per account (from whatever address) and per
address (against whatever account), over a moving window.

Once either count reaches its limit, logins for that account, or from that address,
answer 429 with `Retry-After` without checking the password (a right password among
429s would tell an attacker he found it). An unknown e-mail counts like a real one, so
the answers reveal nothing about which accounts exist. A successful login resets no
count: it would let an attacker who interleaves his guesses with the owner's logins
guess for ever. Counters live in Redis when `REDIS_URL` is set (every replica sees the
same counts), in memory otherwise.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from shared.counters import StorageHealth, address_key, close_storage, counter_storage
from user_service.config import Settings
from user_service.errors import LoginThrottled


class LoginThrottle:
    def __init__(
        self,
        storage: Storage,
        *,
        failures_per_account: int,
        failures_per_address: int,
        window_seconds: int,
    ) -> None:
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self.per_account = RateLimitItemPerSecond(failures_per_account, window_seconds)
        self.per_address = RateLimitItemPerSecond(failures_per_address, window_seconds)
        self.health = StorageHealth("login throttle")

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        return cls(
            counter_storage(settings.redis_url),
            failures_per_account=settings.login_failures_per_account,
            failures_per_address=settings.login_failures_per_address,
            window_seconds=settings.login_failure_window_seconds,
        )

    async def check(self, email: str, address: str) -> None:
        """Raise `LoginThrottled` when the account or the address has failed too often."""
        if self.health.skipping():
            return
        retry_at = 0.0
        try:
            for item, key in self._counters(email, address):
                if not await self.strategy.test(item, key):
                    stats = await self.strategy.get_window_stats(item, key)
                    retry_at = max(retry_at, stats.reset_time)
        except StorageError:
            self.health.failed()
            return
        if retry_at:
            retry_after = max(1, math.ceil(retry_at - time.time()))
            raise LoginThrottled(
                f"Too many failed logins; try again in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )

    async def record_failure(self, email: str, address: str) -> None:
        if self.health.skipping():
            return
        try:
            for item, key in self._counters(email, address):
                await self.strategy.hit(item, key)
        except StorageError:
            self.health.failed()

    def _counters(self, email: str, address: str) -> tuple[tuple[RateLimitItemPerSecond, str], ...]:
        # The e-mail is hashed: counter keys (in Redis) should not be a list of addresses.
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        return (
            (self.per_account, f"login-failures:account:{account}"),
            (self.per_address, f"login-failures:address:{address_key(address)}"),
        )

    async def aclose(self) -> None:
        await close_storage(self.storage)
