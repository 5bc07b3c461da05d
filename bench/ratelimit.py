"""What one rate-limit check costs: `RateLimiter.check` as every /v1 call makes it.

Times the check for one busy client (the intake hot path) and spread over 10,000 addresses,
in memory and, with --redis URL, in that Redis; against a floor measured in the same run (an
awaited coroutine that does nothing). Each call yields to the event loop once, as a server's
loop would run other work between requests, so background expiry is paid for too.

Run: .venv/bin/python bench/ratelimit.py [--calls 20000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from pydantic import SecretStr

from app.api.ratelimit import RateLimiter
from app.core.settings import ApiSettings

NEVER_REACHED = "1000000000/minute"


async def per_call_us(calls: int, check: Callable[[int], Awaitable[None]]) -> float:
    """Microseconds per call of check(i), with one event-loop turn between calls."""
    for i in range(min(calls, 1000)):  # warm up
        await check(i)
    started = time.perf_counter()
    for i in range(calls):
        await check(i)
        await asyncio.sleep(0)
    return (time.perf_counter() - started) / calls * 1e6


async def nothing(_: int) -> None:
    return None


async def measure(storage: str, calls: int) -> dict[str, float]:
    settings = ApiSettings(
        rate_limit_client=NEVER_REACHED,
        rate_limit_anonymous=NEVER_REACHED,
        rate_limit_storage=SecretStr(storage),
        rate_limit_key_prefix=f"iap-bench-{uuid.uuid4().hex[:8]}",
    )
    limiter = RateLimiter(settings)

    async def one_client(_: int) -> None:
        await limiter.check(limiter.client, "3f1c2a9e-client", who="bench")

    async def many_addresses(i: int) -> None:
        await limiter.check(limiter.anonymous, f"198.18.{i % 10_000 // 256}.{i % 256}", who="b")

    try:
        return {
            "one client": await per_call_us(calls, one_client),
            "10,000 addresses": await per_call_us(calls, many_addresses),
        }
    finally:
        if storage.startswith("redis"):
            await limiter.counter.limiter.storage.reset()  # type: ignore[attr-defined]
        await limiter.close()


async def main(calls: int, redis_url: str | None) -> None:
    floor = await per_call_us(calls, nothing)
    print(f"floor (an awaited no-op and a loop turn): {floor:.1f} µs")
    storages = ["memory://", *([redis_url] if redis_url else [])]
    for storage in storages:
        for case, cost in (await measure(storage, calls)).items():
            print(
                f"{storage.split(':')[0]:6} {case:17} {cost:7.1f} µs per call, "
                f"{cost - floor:7.1f} µs over the floor ({cost / floor:.1f}x)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--redis", default=None, help="a Redis URL on loopback, e.g. redis://…")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.redis))
