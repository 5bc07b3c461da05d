"""Settings: one pydantic-settings class, `IAP_` prefix, nested models per concern."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from limits import parse_many
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.crypto import DEVELOPMENT_KEY, DEVELOPMENT_LOOKUP_KEY, Sealer
from app.core.db import async_database_url

SHIPPED_CONFIG_DIR = Path(__file__).parent.parent / "data" / "oxfordshire"
# A host name, or ".name" for every host under it.
_HOST_PATTERN = re.compile(r"^\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class LogFormat(StrEnum):
    json = "json"  # one JSON object a line, for a log collector
    console = "console"  # aligned key=value lines, for a person at a terminal


class DatabaseSettings(BaseModel):
    """Connection pools on PostgreSQL: per process, the engine's pool and the overflow it may
    open beyond it; intake's own pool for its one-statement insert is as large as pool_size.
    SQLite keeps 8 connections and no overflow, since it has one writer anyway."""

    pool_size: int = Field(default=20, ge=1)
    max_overflow: int = Field(default=10, ge=0)


class LeaseQueueSettings(BaseModel):
    """How an outbox (app.core.outbox) claims, retries and gives up; each kind of work
    has its own defaults and its own environment variables (IAP_DISPATCH__*, IAP_WEBHOOKS__*)."""

    lease_seconds: float = Field(default=60.0, gt=0)
    batch_size: int = Field(default=32, ge=1, le=500)
    concurrency: int = Field(default=16, ge=1, le=256)
    # How often due work is looked for when nothing announces it.
    poll_seconds: float = Field(default=2.0, gt=0)
    # Seconds to wait before attempt 2, 3, ...; its length + 1 is the number of attempts.
    retry_schedule: list[float] = Field(default=[5, 30, 120, 600, 1800, 3600, 7200, 14400])
    jitter: float = Field(default=0.2, ge=0, le=1)

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule) + 1


class DispatchSettings(LeaseQueueSettings):
    """How the dispatcher claims, retries and gives up."""

    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # After an attempt that may have reached the back-office (it timed out, or was cut off at
    # shutdown), the next waits at least this long before it looks the case up, so that a
    # back-office that commits after answering late has done so by then.
    settle_seconds: float = Field(default=15.0, ge=0)
    # Failed attempts to one organisation within circuit_window_seconds that open its circuit
    # (when no fewer than those that succeeded), and how long it stays open before one trial
    # delivery may test the back-office again.
    circuit_failures: int = Field(default=5, ge=1)
    circuit_window_seconds: float = Field(default=60.0, gt=0)
    circuit_cooldown_seconds: float = Field(default=30.0, gt=0)


class HttpSettings(BaseModel):
    """The one shared outbound HTTP client."""

    timeout_seconds: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=100, ge=1)


class LocatorSettings(BaseModel):
    """Where postcodes are looked up beyond the built-in table."""

    http_url: str | None = None
    http_timeout_seconds: float = Field(default=3.0, gt=0)


class ApiSettings(BaseModel):
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Far above what a browser or a partner's client sends (a browser's whole request head is
    # a few KiB); the server itself sets no limit, so the gateway answers 431 past these.
    max_header_count: int = Field(default=100, ge=20)
    max_header_bytes: int = Field(default=32 * 1024, ge=8 * 1024)
    idempotency_hours: float = Field(default=24.0, ge=24.0)
    in_flight_seconds: float = Field(default=60.0, gt=0)
    # How long a client's key, once checked, is trusted without the database: a key revoked
    # by another process stops working within this many seconds (0: checked every time).
    key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # Rate limits (docs/security.md), as `limits` strings such as "600/minute"; "0" or "none"
    # turns one off. Per API client; per address for calls without a key (the catalogue, the
    # citizen's token look-up, failed keys); per address for organisations' inbound pushes.
    rate_limit_client: str | None = "600/minute"
    rate_limit_anonymous: str | None = "60/minute"
    rate_limit_inbound: str | None = "600/minute"
    # memory:// counts in this process; redis://host:6379/0 (or rediss://) shares the count
    # between every gateway process using that Redis. Secret: the URL may hold its password.
    rate_limit_storage: SecretStr = SecretStr("memory://")
    rate_limit_key_prefix: str = Field(default="iap", min_length=1, max_length=64)
    # Origins of browser front ends allowed to call the API (CORS); none by default.
    cors_origins: list[str] = Field(default_factory=list)
    # Host names the gateway answers to (`Host` header); others get 400. "*" allows any.
    trusted_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"])
    # Take the X-Request-ID a front end sends (when it looks like one) instead of minting one:
    # only behind a proxy that sets it on every request, since a client could send anything.
    trust_request_id: bool = False

    @field_validator("rate_limit_client", "rate_limit_anonymous", "rate_limit_inbound")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        return checked_rate(value)

    @field_validator("rate_limit_storage")
    @classmethod
    def _storage(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().split("://", 1)[0] not in ("memory", "redis", "rediss"):
            raise ValueError("must be memory:// or a redis:// or rediss:// URL")
        return value


def checked_rate(value: str | None) -> str | None:
    """A rate limit in the `limits` notation ("600/minute"), or None when it is turned off."""
    if value is None or value.strip().lower() in ("", "0", "none", "off"):
        return None
    try:
        parse_many(value)
    except ValueError as error:
        raise ValueError(f"must read like '600/minute' or '10/second;100/hour': {error}") from None
    return value.strip()


class PrivacySettings(BaseModel):
    """Keys for citizen details at rest, and how long they are kept."""

    # Fernet keys (`iap privacy new-key`), newest first: the first seals, all of them open.
    keys: list[SecretStr] = Field(default_factory=list)
    # The HMAC key emails and phone numbers are found by (subject access, erasure). Changing
    # it needs `iap privacy rotate-keys` to hash every stored address again.
    lookup_key: SecretStr | None = None
    # How often the worker anonymises enquiries past their service's retention period.
    retention_interval_seconds: float = Field(default=3600.0, gt=0)


class WebhookSettings(LeaseQueueSettings):
    """How partner webhook subscriptions are fed and delivered (docs/webhooks.md)."""

    # Svix's schedule.
    retry_schedule: list[float] = Field(default=[5, 300, 1800, 7200, 18000, 36000, 36000])
    jitter: float = Field(default=0.1, ge=0, le=1)
    concurrency: int = Field(default=8, ge=1, le=256)
    # poll_seconds is also how often new timeline events are looked for; each look re-reads
    # overlap_seconds back, so an event committed late with an earlier time is still found.
    overlap_seconds: float = Field(default=30.0, ge=0)
    # A Retry-After longer than this is not waited for; the schedule's own delay is used.
    max_retry_after_seconds: float = Field(default=36000.0, gt=0)
    # A subscription whose every attempt has failed for this long, with none delivered, is
    # disabled (Svix's rule); `webhook.disabled` tells its client's other subscriptions.
    disable_after_days: float = Field(default=5.0, gt=0)
    # The retention job deletes deliveries (and their attempts) delivered, or given up, this
    # long ago.
    delivered_retention_days: float = Field(default=30.0, gt=0)
    dead_retention_days: float = Field(default=60.0, gt=0)
    # The longest window POST /v1/webhooks/{id}/recover sends again.
    recover_max_days: float = Field(default=14.0, gt=0)

    @model_validator(mode="after")
    def _history_outlives_the_disable_rule(self) -> WebhookSettings:
        # The disable rule reads the last delivered attempt, and recovery must not mistake a
        # delivered event whose row was deleted for one never sent.
        if self.delivered_retention_days < max(self.disable_after_days, self.recover_max_days):
            raise ValueError(
                "delivered_retention_days must be at least disable_after_days and recover_max_days"
            )
        return self


class StuckSettings(BaseModel):
    """What counts as stuck work (GET /v1/stuck) and the daily summary of it."""

    # A delivery still waiting this long after it was made (or sent again) is stuck.
    pending_minutes: float = Field(default=60.0, gt=0)
    # How often the worker checks whether today's `work.stuck_summary` is written yet.
    summary_check_seconds: float = Field(default=600.0, gt=0)
    # The hour of the day (UTC) from which today's summary is written.
    summary_hour: int = Field(default=7, ge=0, le=23)


class LoopSettings(BaseModel):
    """How the background loops are watched and restarted (app/core/supervisor.py)."""

    # A loop with no successful turn for this long beyond its own longest idle wait is stale,
    # and /readyz answers 503.
    stale_seconds: float = Field(default=300.0, gt=0)
    # A loop that raised runs again after restart_min_seconds, doubled for each failure in a
    # row up to restart_max_seconds.
    restart_min_seconds: float = Field(default=1.0, gt=0)
    restart_max_seconds: float = Field(default=60.0, gt=0)


class OutboundSettings(BaseModel):
    """What production may call although it is private or unencrypted (docs/security.md)."""

    # Host names (".corp.example" covers its subdomains), addresses or networks (CIDR) that
    # production may reach although they are private, loopback or link-local.
    allowed_private: list[str] = Field(default_factory=list)
    # The same, for targets reached without TLS (http://, SMTP without STARTTLS).
    allowed_plaintext: list[str] = Field(default_factory=list)
    # How long a host name's addresses, once checked, are used without resolving it again.
    resolve_cache_seconds: float = Field(default=10.0, ge=0, le=300)

    @field_validator("allowed_private", "allowed_plaintext")
    @classmethod
    def _hosts_or_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if not (_is_network(entry) or _HOST_PATTERN.fullmatch(entry)):
                raise ValueError(f"{entry!r} is neither a host name nor an address or network")
        return entries


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


class TriageSettings(BaseModel):
    """The triage desk (docs/casework.md)."""

    # How long a person's claim on a triage item lasts; claiming it again extends it.
    claim_seconds: float = Field(default=900.0, gt=0, le=86400)


class ConsoleSettings(BaseModel):
    """The staff console's sign-in (docs/console.md)."""

    # Signed out after this long without a request; and after this long in any case.
    idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    session_hours: float = Field(default=12.0, gt=0, le=7 * 24)
    # This many wrong passwords (or codes) for an email within the window lock it that long.
    lockout_failures: int = Field(default=5, ge=1, le=100)
    lockout_minutes: float = Field(default=15.0, gt=0, le=24 * 60)
    # The session cookie is Secure (and named __Host-…) in production unless this says otherwise.
    secure_cookie: bool | None = None
    # Single sign-on with the council's OpenID Connect provider: its issuer URL (discovery at
    # <issuer>/.well-known/openid-configuration), this gateway's client id and secret there.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_name: str = "your council account"  # the button says "Sign in with …"


class KioskSettings(BaseModel):
    """The kiosk's pages (docs/kiosk.md): how long a screen left alone keeps its answers."""

    # A question page left this long goes back to the start, clearing every answer.
    idle_seconds: int = Field(default=120, ge=30, le=3600)
    # The pages where people type (what happened, contact details) wait this long instead.
    typing_seconds: int = Field(default=300, ge=30, le=3600)
    # The longest text a kiosk takes: the answers travel sealed in a cookie (4 KB at most).
    max_text: int = Field(default=1000, ge=100, le=1500)


class AttachmentStoreKind(StrEnum):
    local = "local"  # a directory on this machine: the embedded default
    s3 = "s3"  # an S3-compatible object store: several machines share it


class AttachmentSettings(BaseModel):
    """Photos and documents added to enquiries (docs/conversation.md)."""

    store: AttachmentStoreKind = AttachmentStoreKind.local
    directory: Path = Path("./iap-attachments")  # store=local
    s3_endpoint_url: str | None = None  # store=s3; None: the provider's default endpoint
    s3_bucket: str = "iap-attachments"
    s3_region: str = "eu-west-2"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)  # per file
    max_files: int = Field(default=5, ge=1, le=50)  # per request
    max_per_enquiry: int = Field(default=20, ge=1, le=500)
    # Larger images are refused unopened (a decompression bomb): 40 megapixels.
    max_pixels: int = Field(default=40_000_000, ge=1_000_000)
    # How long a signed attachment URL handed to a back-office (Open311 media_url) works.
    url_seconds: float = Field(default=7 * 86400.0, gt=0)


class Open311Settings(BaseModel):
    """The Open311 GeoReport v2 front door (docs/open311.md)."""

    # The one jurisdiction this gateway answers for; a request naming another is 404.
    jurisdiction_id: str = Field(default="oxfordshire.gov.uk", min_length=1, max_length=100)
    # How long GET requests looks back without start_date (the spec's 90 days), and its cap.
    default_days: int = Field(default=90, ge=1, le=3650)
    max_requests: int = Field(default=1000, ge=1, le=1000)
    # Where a client reads the gateway's contact details (the discovery document).
    contact: str = Field(default="Your gateway operator", max_length=500)


class FollowUpSettings(LeaseQueueSettings):
    """Information, withdrawals and reopenings carried to the back-offices."""

    # A citizen may reopen an enquiry this many days after it was resolved or closed; an
    # agent may at any time.
    reopen_days: float = Field(default=28.0, ge=0)


class AlertVia(StrEnum):
    smtp = "smtp"
    notify = "notify"


class AlertSettings(LeaseQueueSettings):
    """Telling the citizen: the acknowledgement and status changes (docs/conversation.md)."""

    enabled: bool = True
    # Email: through this SMTP server (None: the sandbox's sink in development and tests),
    # or through Notify's email API (email_via=notify).
    email_via: AlertVia = AlertVia.smtp
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    from_address: str = "no-reply@iap.invalid"
    # SMS (and email_via=notify): a GOV.UK Notify-compatible API. Its key; its address
    # (None: the sandbox's Notify simulator outside production); and the templates whose
    # body is the one placeholder ((body)) (the message is written here, in the citizen's
    # language).
    notify_api_key: SecretStr | None = None
    notify_base_url: str | None = None
    notify_sms_template_id: str = "00000000-0000-4000-8000-000000000001"
    notify_email_template_id: str = "00000000-0000-4000-8000-000000000002"


class Settings(BaseSettings):
    """Everything configurable, read from `IAP_*` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="IAP_", env_nested_delimiter="__", extra="ignore", env_file=None
    )

    env: Environment = Environment.development
    database_url: str = "sqlite+aiosqlite:///./iap.db"
    config_dir: Path = SHIPPED_CONFIG_DIR
    sandbox_url: str = "http://127.0.0.1:8090"
    # The sandbox's SMTP sink (the shipped police binding sends there) and how often its
    # simulated cases move to their next status.
    sandbox_smtp_port: int = Field(default=8025, ge=1, le=65535)
    sandbox_step_seconds: float | None = Field(default=20.0, gt=0)
    migrate_on_start: bool = True
    # Where citizens and back-offices reach this gateway: the base of links in messages to
    # citizens (unsubscribe, tracking) and of signed attachment URLs (Open311 media_url).
    public_url: str = "http://127.0.0.1:8000"
    # Where `iap serve` keeps the development API key (IAP_ENV=development only).
    dev_key_file: Path = Path(".iap-dev-key")
    log_level: str = "INFO"
    # How log lines are written; by default console lines in development, JSON elsewhere.
    log_format: LogFormat | None = None

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    database: DatabaseSettings = DatabaseSettings()
    dispatch: DispatchSettings = DispatchSettings()
    http: HttpSettings = HttpSettings()
    locator: LocatorSettings = LocatorSettings()
    api: ApiSettings = ApiSettings()
    privacy: PrivacySettings = PrivacySettings()

    def sealer(self) -> Sealer:
        """What seals citizen details: the configured keys, or in development the public
        development keys (production refuses to run without its own)."""
        keys, lookup_key = self.privacy.keys, self.privacy.lookup_key
        if self.env is Environment.production and (not keys or lookup_key is None):
            raise ValueError(
                "IAP_ENV=production needs IAP_PRIVACY__KEYS and IAP_PRIVACY__LOOKUP_KEY: "
                "citizen details are never sealed with the public development keys"
            )
        return Sealer(
            keys or [SecretStr(DEVELOPMENT_KEY)],
            lookup_key or SecretStr(DEVELOPMENT_LOOKUP_KEY),
        )

    outbound: OutboundSettings = OutboundSettings()
    webhooks: WebhookSettings = WebhookSettings()
    loops: LoopSettings = LoopSettings()
    triage: TriageSettings = TriageSettings()
    stuck: StuckSettings = StuckSettings()
    attachments: AttachmentSettings = AttachmentSettings()
    follow_ups: FollowUpSettings = FollowUpSettings()
    open311: Open311Settings = Open311Settings()
    alerts: AlertSettings = AlertSettings()
    console: ConsoleSettings = ConsoleSettings()
    kiosk: KioskSettings = KioskSettings()

    @property
    def log_renderer(self) -> LogFormat:
        """The log format: IAP_LOG_FORMAT, or console in development and JSON elsewhere."""
        if self.log_format is not None:
            return self.log_format
        return LogFormat.console if self.env is Environment.development else LogFormat.json


def describe_settings_error(error: ValidationError) -> str:
    """One line per wrong setting, named by its environment variable, its value never shown
    (it may be a password or a key)."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        name = "IAP_" + "__".join(str(part) for part in problem["loc"]).upper()
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return "\n".join(lines)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
