"""`iap gazetteer import`: load the ONS Postcode Directory into the gazetteer."""

from __future__ import annotations

import csv
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
import typer
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.catalogue.locate import PostcodeTable, import_onspd_rows, normalise_postcode
from app.cli.base import command_group, load_settings, open_engine, run_async
from app.core.db import writing
from app.core.errors import ConfigError
from app.core.models import gazetteer_table
from app.core.settings import Settings

gazetteer_cli = command_group(help="Manage the postcode gazetteer.")


@gazetteer_cli.command("import")
def gazetteer_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, metavar="FILE", hidden=True)],
    replace: Annotated[bool, typer.Option(help="Empty the gazetteer first")] = False,
) -> None:
    """Load full postcodes from FILE, an ONS Postcode Directory CSV (columns pcds, oscty,
    oslaua...)."""
    settings = load_settings()
    table = PostcodeTable.from_csv(settings.config_dir / "postcode_areas.csv")
    progress = _ImportProgress(total_bytes=file.stat().st_size)
    tally = run_async(settings, _import(settings, file, table, progress, replace=replace))
    progress.done()
    typer.echo(tally.summary(time.monotonic() - progress.started))


@dataclass
class _ImportTally:
    """What an import did with each row of the directory."""

    read: int = 0
    imported: int = 0
    terminated: int = 0  # imported, and marked: a citizen may still give an old postcode
    malformed: int = 0
    outside: int = 0

    def summary(self, seconds: float) -> str:
        rate = self.read / seconds if seconds > 0 else 0.0
        return (
            f"imported {self.imported} postcodes ({self.terminated} of them terminated, kept "
            f"and marked) from {self.read} rows in {seconds:.1f} s ({rate:,.0f} rows/s); "
            f"skipped {self.malformed + self.outside}: {self.malformed} without a valid "
            f"postcode, {self.outside} outside every area of postcode_areas.csv"
        )


class _ImportProgress:
    """Rows done, rate and time left, on stderr: a line rewritten in place on a terminal,
    otherwise a log line every 10 seconds."""

    def __init__(self, *, total_bytes: int, every_seconds: float = 10.0) -> None:
        self.total_bytes = max(total_bytes, 1)
        self.started = self._last = time.monotonic()
        self.every_seconds = 0.5 if sys.stderr.isatty() else every_seconds
        self._drawn = False

    def update(self, *, rows: int, bytes_read: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_seconds:
            return
        self._last = now
        elapsed = now - self.started
        fraction = min(bytes_read / self.total_bytes, 1.0)
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        rate = rows / elapsed if elapsed > 0 else 0.0
        if sys.stderr.isatty():
            line = f"{rows:,} rows, {fraction:.0%}, {rate:,.0f} rows/s, about {left:.0f} s left"
            sys.stderr.write(f"\r{line:<72}")
            sys.stderr.flush()
            self._drawn = True
        else:
            structlog.get_logger().info(
                "gazetteer.import_progress",
                rows=rows,
                percent=round(fraction * 100),
                rows_per_second=round(rate),
                seconds_left=round(left),
            )

    def done(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")


_ONSPD_POSTCODE_COLUMNS = ("pcds", "pcd")


async def _import(
    settings: Settings,
    file: Path,
    table: PostcodeTable,
    progress: _ImportProgress,
    *,
    replace: bool,
) -> _ImportTally:
    tally = _ImportTally()
    async with open_engine(settings) as engine:
        with (
            file.open("rb") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text,
        ):
            reader = csv.DictReader(text)
            if not set(_ONSPD_POSTCODE_COLUMNS) & set(reader.fieldnames or ()):
                raise ConfigError(
                    f"{file} has no pcds or pcd column: is it the ONS Postcode Directory CSV?"
                )
            async with writing(engine) as conn:
                if replace:
                    await conn.execute(delete(gazetteer_table))
                batch: list[dict[str, str]] = []
                for row in reader:
                    if _keep(row, table, tally):
                        batch.append(row)
                    if len(batch) == 5000:
                        await _import_batch(conn, batch, tally)
                        batch = []
                    if tally.read % 5000 == 0:
                        progress.update(rows=tally.read, bytes_read=raw.tell())
                await _import_batch(conn, batch, tally)
    return tally


def _keep(row: dict[str, str], table: PostcodeTable, tally: _ImportTally) -> bool:
    tally.read += 1
    postcode = normalise_postcode(row.get("pcds") or row.get("pcd") or "")
    if postcode is None:
        tally.malformed += 1
        return False
    if not table.covers(postcode):
        # The built-in table already answers "outside the area" for it.
        tally.outside += 1
        return False
    return True


async def _import_batch(
    conn: AsyncConnection, batch: list[dict[str, str]], tally: _ImportTally
) -> None:
    rows = import_onspd_rows(batch)
    if not rows:
        return
    postcodes = [r["postcode"] for r in rows]
    # Re-importing a newer directory replaces the rows it carries.
    await conn.execute(delete(gazetteer_table).where(gazetteer_table.c.postcode.in_(postcodes)))
    await conn.execute(insert(gazetteer_table), rows)
    tally.imported += len(rows)
    tally.terminated += sum(1 for r in rows if r["terminated"])
