"""Services and organisations as data: YAML files validated at start-up with pydantic."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from app.catalogue.status import Status
from app.core.errors import ConfigError

GSS_CODE = r"^[EWSN]\d{8}$"
SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"
M = TypeVar("M", bound=BaseModel)
_ENV_REFERENCE = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class OrganisationKind(StrEnum):
    county = "county"
    district = "district"
    unitary = "unitary"
    police = "police"
    health = "health"
    triage = "triage"


class Tier(StrEnum):
    """Who handles a service: a tier of local government, or another kind of body."""

    county = "county"
    district = "district"
    police = "police"
    health = "health"
    triage = "triage"


class AdapterConfig(BaseModel):
    """Which adapter delivers to an organisation; each adapter validates its own extra fields."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)


CitizenField = Literal[
    "name", "email", "phone", "preferred_contact", "accessibility_needs", "language"
]


class Inbound(BaseModel):
    """How an organisation proves the status updates it pushes to us are its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Standard Webhooks secret ("whsec_" + base64) it signs POST /v1/inbound/{id} with.
    webhook_secret: SecretStr | None = None
    # The api_key an Open311 partner sends with mySociety-style servicerequestupdates pushes.
    api_key: SecretStr | None = None


# How long a delivered enquiry may go without a word back from an organisation that does not
# say otherwise before it counts as stuck (GET /v1/stuck).
DEFAULT_SILENCE_HOURS = 72.0


class Organisation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)
    kind: OrganisationKind
    areas: tuple[str, ...] = ()
    adapter: AdapterConfig
    # The citizen's details this organisation may receive under its data-sharing agreement,
    # and then only when the citizen agreed to share them. None unless listed.
    shares: tuple[CitizenField, ...] = ()
    inbound: Inbound = Inbound()
    # Its own status words in our vocabulary, beyond those its adapter already knows.
    status_map: dict[str, Status] = Field(default_factory=dict)
    # Delivered and never acknowledged for longer than this: stuck (a mailbox that never
    # reports back, a back-office that lost it).
    silence_hours: float = Field(default=DEFAULT_SILENCE_HOURS, gt=0, le=24 * 366)

    @model_validator(mode="after")
    def _areas_fit_kind(self) -> Organisation:
        if self.kind is not OrganisationKind.triage and not self.areas:
            raise ValueError("areas: every organisation but the triage desk covers some area")
        return self


class AttributeValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)


class ServiceAttribute(BaseModel):
    """An Open311-style question a service asks, beyond the description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = Field(min_length=1, max_length=500)
    datatype: Literal[
        "string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"
    ] = "string"
    required: bool = False
    values: tuple[AttributeValue, ...] = ()

    @model_validator(mode="after")
    def _lists_have_values(self) -> ServiceAttribute:
        if self.datatype.endswith("valuelist") and not self.values:
            raise ValueError(f"values: a {self.datatype} attribute needs values")
        return self


# For a service that does not say, and for enquiries whose service is no longer configured.
DEFAULT_RETENTION_DAYS = 730
# What `source` says of a figure nobody published: the gateway's own choice.
GATEWAY_DEFAULT = "gateway default, not a published target"


class ServiceTargets(BaseModel):
    """How soon an organisation should acknowledge, then resolve, an enquiry for a service,
    counted from when the enquiry was accepted; `source` says where each figure comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acknowledge_hours: float | None = Field(default=None, gt=0, le=24 * 366)
    resolve_days: float | None = Field(default=None, gt=0, le=3660)
    source: str = Field(min_length=1, max_length=500)


class Service(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=1000)
    lgsl: int | None = Field(default=None, ge=1)
    tiers: tuple[Tier, ...] = Field(min_length=1)
    needs_location: bool = False
    group: str = Field(default="", max_length=100)
    keywords: tuple[str, ...] = ()
    attributes: tuple[ServiceAttribute, ...] = ()
    # Days after an enquiry closes until its personal data is anonymised (UK GDPR storage
    # limitation); the enquiry itself and its statistics remain.
    retention_days: int = Field(default=DEFAULT_RETENTION_DAYS, ge=1, le=36500)
    # Past these, its enquiries are listed as stuck (GET /v1/stuck); None: no target.
    targets: ServiceTargets | None = None
    # The status changes its enquiries' citizens are told of (docs/alerts.md); None: the
    # top-level `tell:` of services.yaml, else DEFAULT_TELL.
    tell: tuple[Status, ...] | None = None

    def attribute(self, code: str) -> ServiceAttribute | None:
        """The attribute with this code, if the service asks it."""
        return next((a for a in self.attributes if a.code == code), None)


# Told by default: the work starting, being scheduled, and every way it can end or start
# again. Not `acknowledged` (the gateway's own acknowledgement came at intake) nor our own
# progress before delivery (routed, dispatched, failed, cancelled).
DEFAULT_TELL: tuple[Status, ...] = (
    Status.in_progress,
    Status.action_scheduled,
    Status.resolved,
    Status.closed,
    Status.not_our_responsibility,
    Status.duplicate,
    Status.withdrawn,
    Status.reopened,
)


class Catalogue(BaseModel):
    """The validated configuration: every organisation and every service, by id."""

    model_config = ConfigDict(frozen=True)

    organisations: dict[str, Organisation]
    services: dict[str, Service]
    # Councils beside the area that are not partners, by GSS code: the triage desk names them
    # to signpost a caller whose place is theirs (neighbours.yaml, optional).
    neighbours: dict[str, str] = Field(default_factory=dict)
    # The status changes a citizen is told of unless their service says otherwise.
    tell: tuple[Status, ...] = Field(default_factory=lambda: DEFAULT_TELL)

    def tells(self, service_code: str) -> frozenset[Status]:
        """The status changes the citizens of this service are told of."""
        service = self.services.get(service_code)
        chosen = service.tell if service is not None and service.tell is not None else self.tell
        return frozenset(chosen)

    @model_validator(mode="after")
    def _one_triage_desk(self) -> Catalogue:
        if not any(o.kind is OrganisationKind.triage for o in self.organisations.values()):
            raise ValueError("organisations: one organisation of kind 'triage' is required")
        return self

    @property
    def triage(self) -> Organisation:
        return next(o for o in self.organisations.values() if o.kind is OrganisationKind.triage)


def load_catalogue(config_dir: Path, *, variables: Mapping[str, str] = {}) -> Catalogue:
    """Read and validate organisations.yaml and services.yaml; errors name file and field.

    `${NAME}` and `${NAME:-default}` in values are filled from `variables`, then the environment.
    """
    lookup = {**os.environ, **variables}
    organisations = _load_list(
        config_dir / "organisations.yaml", "organisations", Organisation, lookup
    )
    services = _load_list(config_dir / "services.yaml", "services", Service, lookup)
    neighbours = _load_neighbours(config_dir / "neighbours.yaml", lookup)
    tell = _load_tell(config_dir / "services.yaml")
    try:
        return Catalogue(
            organisations={o.id: o for o in organisations},
            services={s.code: s for s in services},
            neighbours={n.code: n.name for n in neighbours},
            **({"tell": tell} if tell is not None else {}),
        )
    except ValidationError as exc:
        raise ConfigError(_describe(config_dir / "organisations.yaml", exc)) from exc


class Neighbour(BaseModel):
    """A council beside the area, not a partner: named for signposting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=GSS_CODE)
    name: str = Field(min_length=1, max_length=200)


class _Tell(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tell: tuple[Status, ...] | None = None


def _load_tell(path: Path) -> tuple[Status, ...] | None:
    """services.yaml's top-level `tell:`, if it has one."""
    try:
        return _Tell.model_validate(_read_yaml(path)).tell
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from exc


def _load_neighbours(path: Path, lookup: Mapping[str, str]) -> list[Neighbour]:
    if not path.exists():
        return []
    return _load_list(path, "neighbours", Neighbour, lookup)


def _load_list(path: Path, key: str, model: type[M], lookup: Mapping[str, str]) -> list[M]:
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get(key), list):
        raise ConfigError(f"{path}: expected a mapping with a list under '{key}'")
    items: list[M] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw[key]):
        try:
            item = model.model_validate(_expand_env(entry, lookup))
        except ValidationError as exc:
            raise ConfigError(_describe(path, exc, prefix=f"{key}[{index}]")) from exc
        ident = str(getattr(item, "id", None) or getattr(item, "code", ""))
        if ident in seen:
            raise ConfigError(f"{path}: {key}[{index}]: duplicate id '{ident}'")
        seen.add(ident)
        items.append(item)
    return items


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def _expand_env(value: Any, lookup: Mapping[str, str]) -> Any:
    """Fill ${NAME} and ${NAME:-default} in strings, so secrets and URLs stay out of the files."""
    if isinstance(value, str):
        return _ENV_REFERENCE.sub(lambda m: lookup.get(m[1], m[2] or ""), value)
    if isinstance(value, dict):
        return {k: _expand_env(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, lookup) for v in value]
    return value


def _describe(path: Path, exc: ValidationError, *, prefix: str = "") -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        # Our own checks across fields name the field first: "areas: ...".
        named = re.match(r"^([a-z_]+): (.*)$", message) if not field else None
        if named:
            field, message = named[1], named[2]
        where = ".".join(part for part in (prefix, field) if part)
        problems.append(f"{path}: {where}: {message}")
    return "\n".join(problems)
