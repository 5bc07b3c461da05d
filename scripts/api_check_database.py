"""A fresh PostgreSQL database for scripts/api-check, beside the one a URL names, and its end.

python scripts/api_check_database.py create URL   prints the new database's URL
python scripts/api_check_database.py drop URL     drops the database URL names
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(statement))
    await engine.dispose()


def main(action: str, url: str) -> None:
    """Create a database next to URL's (printing its URL), or drop URL's own database."""
    server, _, name = url.rpartition("/")
    if action == "create":
        fresh = f"iap_api_check_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(url, f'CREATE DATABASE "{fresh}"'))
        sys.stdout.write(f"{server}/{fresh}\n")
    else:
        asyncio.run(_admin(f"{server}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main(*sys.argv[1:3])
