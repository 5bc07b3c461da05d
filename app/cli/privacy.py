"""`iap privacy new-key|rotate-keys` and `iap retention run`: keys for citizen details at rest,
and anonymising enquiries past their retention."""

from __future__ import annotations

import typer

from app.attachments.store import build_store
from app.cli.base import command_group, load_settings, open_engine, run_async
from app.core import crypto
from app.core.audit import Actor
from app.partners import subscriptions as webhooks
from app.privacy import service as privacy
from app.runtime import load_configured_catalogue

privacy_cli = command_group(help="Keys for citizen details at rest.")
retention_cli = command_group(help="Anonymise enquiries past their retention.")


@privacy_cli.command("new-key")
def privacy_new_key() -> None:
    """Print a fresh key for IAP_PRIVACY__KEYS (put it first to make it the sealing key)."""
    typer.echo(crypto.new_key())


@privacy_cli.command("rotate-keys")
def privacy_rotate_keys() -> None:
    """Re-seal every citizen's details, stored photo and document under the first key in
    IAP_PRIVACY__KEYS and re-hash their email and phone under IAP_PRIVACY__LOOKUP_KEY;
    afterwards the old key can go."""
    settings = load_settings()

    async def run() -> tuple[int, int, int]:
        sealer, actor = settings.sealer(), Actor("iap privacy rotate-keys")
        async with open_engine(settings) as engine:
            enquiries = await privacy.reseal_all(engine=engine, sealer=sealer, actor=actor)
            files = await privacy.reseal_files(
                engine=engine,
                store=build_store(settings.attachments),
                sealer=sealer,
                actor=actor,
            )
            secrets_ = await webhooks.reseal_secrets(engine=engine, sealer=sealer)
            return enquiries, files, secrets_

    try:
        count, files, secrets_ = run_async(settings, run())
    except crypto.SealedDataUnreadable as exc:
        typer.echo(f"{exc}: keep every old key in IAP_PRIVACY__KEYS until this succeeds", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"re-sealed the citizen's details of {count} enquiries with the newest key")
    typer.echo(f"re-sealed {files} stored photos and documents with the newest key")
    typer.echo(f"re-sealed {secrets_} webhook subscription secrets with the newest key")


@retention_cli.command("run")
def retention_run() -> None:
    """Anonymise every enquiry whose service's retention_days have passed since it closed, and
    delete webhook deliveries kept long enough (IAP_WEBHOOKS__DELIVERED_RETENTION_DAYS and
    IAP_WEBHOOKS__DEAD_RETENTION_DAYS)."""
    settings = load_settings()

    async def run() -> int:
        async with open_engine(settings) as engine:
            return await privacy.run_retention(
                engine=engine,
                catalogue=load_configured_catalogue(settings),
                store=build_store(settings.attachments),
                actor=Actor("iap retention run"),
                webhooks=settings.webhooks,
            )

    typer.echo(f"anonymised {run_async(settings, run())} enquiries past their retention period")
