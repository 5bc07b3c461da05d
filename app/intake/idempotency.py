"""Idempotency-Key (IETF httpapi draft): replay the stored answer for a repeated request.

Same key and same body → the first answer again; a different body → 422; the first request
still running → 409. Keys are per client and kept at least 24 hours. The answer is stored in the
same transaction as the enquiry (app/intake/store.py), so a key is never left
claiming an enquiry that was not stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import writing
from app.core.errors import IdempotencyInFlight, IdempotencyMismatch
from app.core.models import idempotency_table, utcnow
from app.core.settings import ApiSettings
from app.core.vocabulary import IdempotencyState

t = idempotency_table.c


@dataclass(frozen=True)
class IdempotencyKey:
    client_id: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


def fingerprint(body: Any) -> str:
    """A digest of the request as parsed, so spacing and key order do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def begin(
    engine: AsyncEngine, key: IdempotencyKey, settings: ApiSettings
) -> StoredResponse | None:
    """Claim the key for this request; None means go ahead, a StoredResponse means replay it."""
    for _ in range(3):
        if await _try_claim(engine, key, settings):
            return None
        stored = await _existing(engine, key, settings)
        if stored is not None:
            return stored
    raise IdempotencyInFlight("This Idempotency-Key is busy; try again shortly.")


async def _try_claim(engine: AsyncEngine, key: IdempotencyKey, settings: ApiSettings) -> bool:
    now = utcnow()
    try:
        async with writing(engine) as conn:
            await conn.execute(
                idempotency_table.insert(),
                {
                    "client_id": key.client_id,
                    "key": key.key,
                    "request_hash": key.fingerprint,
                    "state": IdempotencyState.in_flight,
                    "created_at": now,
                    "expires_at": now + timedelta(hours=settings.idempotency_hours),
                },
            )
    except IntegrityError:
        return False
    return True


async def _existing(
    engine: AsyncEngine, key: IdempotencyKey, settings: ApiSettings
) -> StoredResponse | None:
    """The stored answer; None when the record was stale and has been cleared for a retry."""
    now = utcnow()
    where = (t.client_id == key.client_id, t.key == key.key)
    async with writing(engine) as conn:
        row = (await conn.execute(select(idempotency_table).where(*where))).mappings().first()
        if row is None:
            return None
        if row["expires_at"] <= now:
            await conn.execute(delete(idempotency_table).where(*where))
            return None
        if row["request_hash"] != key.fingerprint:
            raise IdempotencyMismatch(
                "This Idempotency-Key was used for a different request; use a new key."
            )
        if row["state"] == IdempotencyState.in_flight:
            # The answer is written with the enquiry, so a stale claim stored nothing.
            if row["created_at"] < now - timedelta(seconds=settings.in_flight_seconds):
                await conn.execute(delete(idempotency_table).where(*where))
                return None
            raise IdempotencyInFlight(
                "A request with this Idempotency-Key is still being processed; retry later."
            )
        return StoredResponse(row["response_status"], row["response_body"])


async def release(engine: AsyncEngine, key: IdempotencyKey) -> None:
    """Forget a claim whose request failed, so the client may fix it and send it again."""
    async with writing(engine) as conn:
        await conn.execute(
            delete(idempotency_table).where(
                t.client_id == key.client_id,
                t.key == key.key,
                t.state == IdempotencyState.in_flight,
            )
        )
