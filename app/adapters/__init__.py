"""The explicit registry of adapter types, and building one adapter per organisation."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from app.adapters.base import Adapter
from app.adapters.http_json import HttpJsonAdapter
from app.adapters.triage import TriageAdapter
from app.catalogue import Catalogue
from app.errors import ConfigError

ADAPTER_TYPES: dict[str, type[Adapter]] = {
    "http-json": HttpJsonAdapter,
    "triage": TriageAdapter,
}


def build_adapters(catalogue: Catalogue, client: httpx.AsyncClient) -> dict[str, Adapter]:
    """One configured adapter per organisation; a bad adapter entry fails start-up by name."""
    adapters: dict[str, Adapter] = {}
    for organisation in catalogue.organisations.values():
        settings = organisation.adapter.model_dump()
        adapter_type = ADAPTER_TYPES.get(settings["type"])
        where = f"organisations.yaml: {organisation.id}: adapter"
        if adapter_type is None:
            known = ", ".join(sorted(ADAPTER_TYPES))
            raise ConfigError(f"{where}.type: unknown adapter '{settings['type']}' ({known})")
        try:
            config = adapter_type.config_model.model_validate(settings)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{where}: {fields}") from exc
        adapters[organisation.id] = adapter_type(config=config, client=client)
    return adapters
