"""The explicit registry of adapter types, and building one adapter per organisation."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from app.adapters.base import Adapter, AdapterConfig, OutboundCheck
from app.adapters.fhir import FhirAdapter
from app.adapters.open311 import Open311Adapter
from app.adapters.rest_json import RestJsonAdapter
from app.adapters.smtp import EmailAdapter
from app.adapters.triage import TriageAdapter
from app.catalogue.catalogue import Catalogue
from app.core.errors import ConfigError
from app.core.settings import Settings

ADAPTER_TYPES: dict[str, type[Adapter]] = {
    "email": EmailAdapter,
    "fhir": FhirAdapter,
    "open311": Open311Adapter,
    "rest-json": RestJsonAdapter,
    "triage": TriageAdapter,
}


def build_adapters(
    catalogue: Catalogue,
    client: httpx.AsyncClient,
    settings: Settings,
    *,
    outbound: OutboundCheck | None = None,
) -> dict[str, Adapter]:
    """One configured adapter per organisation; a bad adapter entry fails start-up by name."""
    adapters: dict[str, Adapter] = {}
    for organisation_id, config in adapter_configs(catalogue, settings).items():
        adapter_type = ADAPTER_TYPES[config.type]
        timeout = config.timeout_seconds or settings.http.timeout_seconds
        adapters[organisation_id] = adapter_type(
            config=config, client=client, timeout=timeout, outbound=outbound
        )
    return adapters


def adapter_configs(catalogue: Catalogue, settings: Settings) -> dict[str, AdapterConfig]:
    """Each organisation's adapter config, validated by its adapter's model, by organisation.

    A call must end well inside the dispatcher's lease, or a second worker could take the
    dispatch over and send it again while the first call still waits.
    """
    configs: dict[str, AdapterConfig] = {}
    for organisation in catalogue.organisations.values():
        raw = organisation.adapter.model_dump()
        adapter_type = ADAPTER_TYPES.get(raw["type"])
        where = f"organisations.yaml: {organisation.id}: adapter"
        if adapter_type is None:
            known = ", ".join(sorted(ADAPTER_TYPES))
            raise ConfigError(f"{where}.type: unknown adapter '{raw['type']}' ({known})")
        try:
            config = adapter_type.config_model.model_validate(raw)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{where}: {fields}") from exc
        timeout = config.timeout_seconds or settings.http.timeout_seconds
        if 2 * timeout >= settings.dispatch.lease_seconds:
            raise ConfigError(
                f"{where}.timeout_seconds: {timeout} s is too long for a lease of "
                f"{settings.dispatch.lease_seconds} s (IAP_DISPATCH__LEASE_SECONDS must be more "
                "than twice the longest call)"
            )
        configs[organisation.id] = config
    return configs
