"""What IAP_ENV=production refuses at start-up: internal or sandbox targets, placeholder secrets.

Every problem is listed at once, each by the organisation and field or the setting it is in,
and never with a secret's value. Secrets are found by walking the models, so a `SecretStr`
added to the settings or to an adapter's config is checked without being listed here.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, SecretBytes, SecretStr

from app.adapters import adapter_configs
from app.catalogue.catalogue import Catalogue
from app.core.crypto import DEVELOPMENT_KEY, DEVELOPMENT_LOOKUP_KEY
from app.core.errors import ConfigError
from app.core.outbound import OutboundGuard, parse_target
from app.core.settings import SHIPPED_CONFIG_DIR, Environment, Settings

log = structlog.get_logger()

MIN_SECRET_LENGTH = 16
# Found anywhere in a secret (or a whsec_ secret's decoded bytes), case aside.
PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "placeholder",
    "example",
    "sandbox",
    "secret",
    "password",
)
# Short words are a placeholder only at the start or end of a word of the secret: a random
# secret holds "xxx" somewhere often enough to refuse a good one now and then.
PLACEHOLDER_AFFIXES = ("test", "xxx", "dummy", "todo")
# Fewer different characters than this: "aaaaaaaaaaaaaaaa", "1234123412341234".
MIN_DISTINCT_CHARACTERS = 8
_SHIPPED_DEFAULT = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")
_WORDS = re.compile(r"[^a-z0-9]+")


def check_production(settings: Settings, catalogue: Catalogue, *, guard: OutboundGuard) -> None:
    """With IAP_ENV=production, raise ConfigError listing every refused target and secret."""
    if settings.env is not Environment.production:
        return
    problems = [
        *target_problems(settings, catalogue, guard=guard),
        *secret_problems(settings, catalogue),
    ]
    if problems:
        listed = "\n".join(f"- {problem}" for problem in problems)
        raise ConfigError(f"IAP_ENV=production refuses this configuration:\n{listed}")


def configured_urls(settings: Settings, catalogue: Catalogue) -> Iterator[tuple[str, str]]:
    """Every address the gateway is configured to call, named by where it is set."""
    for organisation_id, config in adapter_configs(catalogue, settings).items():
        for field, url in config.outbound_urls().items():
            yield f"organisations.yaml: {organisation_id}: adapter.{field}", url
    if settings.locator.http_url:
        yield "IAP_LOCATOR__HTTP_URL", settings.locator.http_url
    if settings.console.oidc_issuer:  # the console's single sign-on (docs/console.md)
        yield "IAP_CONSOLE__OIDC_ISSUER", settings.console.oidc_issuer
    alerts = settings.alerts  # telling the citizen (docs/alerts.md)
    if alerts.notify_base_url:
        yield "IAP_ALERTS__NOTIFY_BASE_URL", alerts.notify_base_url
    if alerts.smtp_host:
        scheme = "smtps" if alerts.smtp_starttls else "smtp"
        host = f"[{alerts.smtp_host}]" if ":" in alerts.smtp_host else alerts.smtp_host
        port = alerts.smtp_port or (587 if alerts.smtp_starttls else 25)
        yield "IAP_ALERTS__SMTP_HOST", f"{scheme}://{host}:{port}"


def target_problems(
    settings: Settings, catalogue: Catalogue, *, guard: OutboundGuard
) -> Iterator[str]:
    """One line per configured target that production may not call."""
    for where, url in configured_urls(settings, catalogue):
        reason = sandbox_address(settings, url) or guard.refusal_now(url)
        if reason is not None:
            yield f"{where}: {reason}"


def sandbox_address(settings: Settings, url: str) -> str | None:
    """Why `url` is the sandbox's own address, if it is."""
    sandbox = settings.sandbox_url.rstrip("/")
    if url == sandbox or url.startswith(f"{sandbox}/"):
        return f"{url} is the sandbox's address (IAP_SANDBOX_URL)"
    try:
        target = parse_target(url)
    except ValueError:
        return None
    loopback = target.host in ("127.0.0.1", "localhost", "::1")
    if target.scheme.startswith("smtp") and loopback and target.port == settings.sandbox_smtp_port:
        return f"{target.host}:{target.port} is the sandbox's SMTP sink"
    return None


def secret_problems(settings: Settings, catalogue: Catalogue) -> Iterator[str]:
    """One line per secret that is missing, empty, short, shipped or a placeholder; never its
    value."""
    if not settings.privacy.keys:
        yield "IAP_PRIVACY__KEYS: not set; citizen details need keys of their own"
    if settings.privacy.lookup_key is None:
        yield "IAP_PRIVACY__LOOKUP_KEY: not set; citizen look-up hashes need a key of their own"
    console = settings.console
    if console.oidc_issuer and not (console.oidc_client_id and console.oidc_client_secret):
        yield "IAP_CONSOLE__OIDC_ISSUER: set without IAP_CONSOLE__OIDC_CLIENT_ID and _SECRET"
    for path, secret in secrets_in(settings):
        reason = weakness(secret)
        if reason is not None:
            yield f"{setting_name(path)}: {reason}"
    configs = adapter_configs(catalogue, settings)
    for organisation in catalogue.organisations.values():
        found = [
            *secrets_in(configs[organisation.id], "adapter"),
            *secrets_in(organisation.inbound, "inbound"),
        ]
        for path, secret in found:
            reason = weakness(secret)
            if reason is not None:
                yield f"organisations.yaml: {organisation.id}: {path}: {reason}"


def secrets_in(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every secret held anywhere in `value` (models, lists, mappings), with its dotted path."""
    if isinstance(value, SecretStr):
        yield path, value.get_secret_value()
    elif isinstance(value, SecretBytes):
        yield path, value.get_secret_value().decode("utf-8", "replace")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secrets_in(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from secrets_in(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from secrets_in(item, f"{path}[{index}]")


def setting_name(path: str) -> str:
    """`privacy.keys[0]` → `IAP_PRIVACY__KEYS[0]`, the variable that sets it."""
    return "IAP_" + path.upper().replace(".", "__")


def weakness(secret: str) -> str | None:
    """Why a secret is not fit for production, or None; the reason never quotes it."""
    if "://" in secret:
        # A connection URL (the rate-limit store's, say): only its password is a secret.
        password = urlsplit(secret).password
        return None if password is None else weakness(password)
    if not secret.strip():
        return "is empty"
    if secret in shipped_defaults():
        return "is the sandbox's value shipped in organisations.yaml"
    if secret in (DEVELOPMENT_KEY, DEVELOPMENT_LOOKUP_KEY):
        return "is the public development key in app/crypto.py"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if looks_like_placeholder(secret):
        return "looks like a placeholder, not a generated secret"
    return None


def looks_like_placeholder(secret: str) -> bool:
    """Whether the secret, or a whsec_ secret's decoded key, reads like a made-up value."""
    texts = [secret.lower()]
    if secret.startswith("whsec_"):
        # Random key bytes are not text: then there is nothing more to read.
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            texts.append(base64.b64decode(secret.removeprefix("whsec_")).decode().lower())
    for text in texts:
        if any(word in text for word in PLACEHOLDER_WORDS):
            return True
        words = _WORDS.split(text)
        if any(w.startswith(PLACEHOLDER_AFFIXES) or w.endswith(PLACEHOLDER_AFFIXES) for w in words):
            return True
    return len(set(secret)) < MIN_DISTINCT_CHARACTERS


@cache
def shipped_defaults() -> frozenset[str]:
    """The values after ':-' in the shipped organisations.yaml: the sandbox's own secrets."""
    text = (SHIPPED_CONFIG_DIR / "organisations.yaml").read_text(encoding="utf-8")
    return frozenset(value for value in _SHIPPED_DEFAULT.findall(text) if value)
