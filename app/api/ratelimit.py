"""Rate limits: per API client for calls with a key, per address for calls without one.

Counting is a sliding window counter: two counters per client and window, so memory per client
stays constant whatever its limit, and a burst at a window's edge is weighed against the window
before it. In memory by default (each process counts alone: MemoryCounter); in Redis
when IAP_API__RATE_LIMIT_STORAGE names one, so every gateway process shares one count (the
`limits` library's, one Lua script per check).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio
import structlog
from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.aio import storage as async_storage
from limits.aio import strategies as async_strategies

from app.api.problems import RateLimited, documented_problem
from app.clients.service import Caller
from app.core.settings import ApiSettings

log = structlog.get_logger()
# After Redis fails, calls go unlimited for this long rather than each waiting on it again.
STORAGE_RETRY_SECONDS = 5.0
_REDIS_TIMEOUT_SECONDS = 0.25

RATE_LIMITED_RESPONSE: dict[str, Any] = {
    **documented_problem("Too many requests from this API key or address"),
    "headers": {
        "Retry-After": {
            "description": "Whole seconds to wait before trying again",
            "schema": {"type": "integer"},
        },
        "RateLimit": {
            "description": 'What is left: `"client";r=0;t=SECONDS` (IETF RateLimit fields)',
            "schema": {"type": "string"},
        },
        "RateLimit-Policy": {
            "description": 'The limit, e.g. `"client";q=600;w=60` (IETF RateLimit fields)',
            "schema": {"type": "string"},
        },
    },
}


@dataclass(frozen=True)
class Quota:
    """A named limit ("client", "anonymous", "inbound") and its windows."""

    name: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, rate: str | None) -> Quota | None:
        return cls(name, tuple(parse_many(rate))) if rate else None


class _Counter(Protocol):
    async def hit(self, item: RateLimitItem, bucket: str) -> bool: ...

    async def seconds_to_wait(self, item: RateLimitItem, bucket: str) -> int: ...

    async def close(self) -> None: ...


class MemoryCounter:
    """Counts in this process, on the event loop: the same sliding window counter as the
    Redis one (the window's count plus the last window's, weighed by how much of it is still
    inside the window), two numbers per bucket and window.

    Entries older than two windows are swept at most once a minute, on a call; nothing runs in
    between (the library's memory storage starts a timer thread every 10 ms while it is used,
    which takes the interpreter lock from the requests)."""

    _SWEEP_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (bucket, window seconds, amount) -> [window number, last window's count, this one's]
        self._windows: dict[tuple[str, int, int], list[int]] = {}
        self._swept_at = clock()

    def _entry(self, item: RateLimitItem, bucket: str, now: float) -> tuple[list[int], float]:
        """The bucket's counts moved to the window `now` is in, and how far into it now is."""
        seconds = item.get_expiry()
        number, into = divmod(now, seconds)
        key = (bucket, seconds, item.amount)
        entry = self._windows.get(key)
        if entry is None:
            entry = self._windows[key] = [int(number), 0, 0]
        elif entry[0] != number:
            last = entry[2] if entry[0] == number - 1 else 0
            entry[:] = [int(number), last, 0]
        return entry, into / seconds

    async def hit(self, item: RateLimitItem, bucket: str) -> bool:
        now = self._clock()
        self._sweep(now)
        entry, into = self._entry(item, bucket, now)
        if entry[1] * (1 - into) + entry[2] + 1 > item.amount:
            return False
        entry[2] += 1
        return True

    async def seconds_to_wait(self, item: RateLimitItem, bucket: str) -> int:
        """Until one more call fits: the last window's weight falling, or the next window."""
        now = self._clock()
        entry, into = self._entry(item, bucket, now)
        seconds, room = item.get_expiry(), item.amount - 1
        _, last, this = entry
        if this <= room:
            # The last window's share must fall to `room - this`: at 1 - into = (room-this)/last.
            wait = seconds * (1 - (room - this) / last - into) if last else 0.0
        else:
            # This window becomes the last one, weighed down until `this` fits.
            wait = seconds * (1 - into) + seconds * (1 - room / this)
        return max(1, math.ceil(wait))

    def _sweep(self, now: float) -> None:
        if now - self._swept_at < self._SWEEP_SECONDS:
            return
        self._swept_at = now
        stale = [key for key, (number, _, _) in self._windows.items() if number < now // key[1] - 1]
        for key in stale:
            del self._windows[key]

    async def close(self) -> None:
        return None


class RedisCounter:
    """Counts in Redis (one Lua script per check), shared by every process using it."""

    def __init__(self, url: str, *, prefix: str) -> None:
        self.pool = redis.asyncio.ConnectionPool.from_url(
            url,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
        )
        storage = async_storage.RedisStorage(
            f"async+{url}",
            implementation="redispy",
            key_prefix=prefix,
            # Ours, so that close() can release its connections; the library documents the
            # option but types its options as scalars.
            connection_pool=self.pool,  # type: ignore[arg-type]
        )
        self.limiter = async_strategies.SlidingWindowCounterRateLimiter(storage)

    async def hit(self, item: RateLimitItem, bucket: str) -> bool:
        return await self.limiter.hit(item, bucket)

    async def seconds_to_wait(self, item: RateLimitItem, bucket: str) -> int:
        return _seconds_until((await self.limiter.get_window_stats(item, bucket)).reset_time)

    async def close(self) -> None:
        await self.pool.aclose()


def _seconds_until(moment: float) -> int:
    """Retry-After in whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(moment - time.time()))


class RateLimiter:
    """The gateway's limits and the counter that keeps them."""

    def __init__(self, settings: ApiSettings) -> None:
        self.client = Quota.parse("client", settings.rate_limit_client)
        self.anonymous = Quota.parse("anonymous", settings.rate_limit_anonymous)
        self.inbound = Quota.parse("inbound", settings.rate_limit_inbound)
        url = settings.rate_limit_storage.get_secret_value()
        self.counter: _Counter = (
            MemoryCounter()
            if url.startswith("memory://")
            else RedisCounter(url, prefix=settings.rate_limit_key_prefix)
        )
        self._storage_down_until = 0.0

    async def check(self, quota: Quota | None, bucket: str, *, who: str) -> None:
        """Count one call against `bucket`; RateLimited when it is over the quota."""
        if quota is None or self._storage_down_until > time.monotonic():
            return
        for item in quota.items:
            try:
                allowed = await self.counter.hit(item, f"{quota.name}:{bucket}")
                if allowed:
                    continue
                wait = await self.counter.seconds_to_wait(item, f"{quota.name}:{bucket}")
            except (redis.RedisError, OSError) as error:
                # The limits protect the gateway; a limiter outage must not stop intake.
                self._storage_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
                log.error("ratelimit.storage_failed", error=f"{type(error).__name__}: {error}")
                return
            raise _refusal(quota, item, wait, who)

    async def close(self) -> None:
        await self.counter.close()


def _refusal(quota: Quota, item: RateLimitItem, wait: int, who: str) -> RateLimited:
    window = item.get_expiry()
    return RateLimited(
        f"Too many requests from {who}: at most {item.amount} every {_seconds(window)}. "
        f"Try again in {_seconds(wait)}.",
        headers={
            "Retry-After": str(wait),
            "RateLimit-Policy": f'"{quota.name}";q={item.amount};w={window}',
            "RateLimit": f'"{quota.name}";r=0;t={wait}',
        },
    )


def _seconds(count: int) -> str:
    return "1 second" if count == 1 else f"{count} seconds"


def client_address(request: Request) -> str:
    """The caller's address; IPv6 by its /64, which one subscriber usually holds whole."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def limiter_of(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.iap.limiter
    return limiter


async def limit_caller(request: Request, caller: Caller) -> None:
    """Count a call made with a valid API key against its client."""
    limiter = limiter_of(request)
    await limiter.check(limiter.client, caller.client_id, who="this API key")


async def limit_address(request: Request) -> None:
    """Count a call without a (valid) API key against its address."""
    limiter = limiter_of(request)
    await limiter.check(limiter.anonymous, client_address(request), who="this address")


async def limit_inbound(request: Request) -> None:
    """A dependency: count an organisation's push against the address it came from."""
    limiter = limiter_of(request)
    await limiter.check(limiter.inbound, client_address(request), who="this address")
