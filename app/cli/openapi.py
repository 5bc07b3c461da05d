"""`iap openapi`: write the API's OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.base import config_errors, load_settings


def openapi_command(
    output: Annotated[Path, typer.Option(metavar="FILE", help="Where to write it")] = Path(
        "openapi/openapi.json"
    ),
) -> None:
    """Write the OpenAPI document of the API."""
    from app.main import create_app  # here, so that the other commands never load the API

    settings = load_settings()
    with config_errors():
        app = create_app(settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n")
    typer.echo(f"wrote {output}")
