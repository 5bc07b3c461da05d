"""Writing the append-only audit log: every read of personal data by a client, every subject
access export, every erasure and every retention run. The database refuses to change an entry.

Here in core because intake (a read of the citizen's details) writes to it as well as privacy;
reading the log back is app.privacy.audit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.models import audit_table, utcnow
from app.core.vocabulary import AuditAction


class _Person(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def actor_id(self) -> str: ...


class _Client(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def client_id(self) -> str: ...

    @property
    def person(self) -> _Person | None: ...


@dataclass(frozen=True)
class Actor:
    """Who did it: a person (by their personal token), an API client, or a command an
    operator ran."""

    name: str
    id: str | None = None

    @classmethod
    def of(cls, caller: _Client) -> Actor:
        """The person behind the call if there is one, else the client."""
        if caller.person is not None:
            return cls(name=caller.person.name, id=caller.person.actor_id)
        return cls(name=caller.name, id=caller.client_id)

    def on_event(self) -> dict[str, str | None]:
        """The columns that name who did it on a timeline event (shown to staff only)."""
        return {"actor_id": self.id, "actor": self.name}


async def record(
    conn: AsyncConnection,
    *,
    actor: Actor,
    action: AuditAction,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append one entry, in the caller's transaction so it stands or falls with the act."""
    await conn.execute(
        audit_table.insert(),
        {
            "id": uuid.uuid4(),
            "at": at or utcnow(),
            "actor_id": actor.id,
            "actor": actor.name,
            "action": action,
            "subject": subject,
            "detail": detail,
        },
    )
