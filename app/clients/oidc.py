"""Single sign-on with the council's OpenID Connect provider: the authorization code flow with
PKCE (S256), as the console's relying party.

The provider's discovery document (<issuer>/.well-known/openid-configuration) and its keys are
fetched with the caller's HTTP client (the gateway's outbound one: its rules apply) and kept for
an hour; an ID token signed with a key not yet seen fetches the keys once more (the provider
rotated them). The ID token is checked in full: its signature against the provider's keys
(asymmetric algorithms only), then with authlib's OpenID claims its issuer, audience (this
gateway's client id, and azp), expiry, issue time and the nonce this sign-in sent. Who the
person is to the console is Sessions.single_sign_on's to say (app/clients/sessions.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery.well_known import get_well_known_url
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from app.core.outbound import OutboundRefused
from app.core.settings import ConsoleSettings

SCOPE = "openid email profile"
METADATA_SECONDS = 3600.0
LEEWAY_SECONDS = 60  # clocks a little apart
# Signatures the provider's public keys make; never "none", never a shared-secret MAC.
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_MAX_ANSWER = 1024 * 1024


class SingleSignOnFailed(Exception):
    """The provider could not be used, or its answer did not hold. `reason` is for the logs
    (it names no person); `unreachable` when the provider could not be reached or read."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


@dataclass(frozen=True)
class ProviderMetadata:
    """What this gateway uses of the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]
    secret_in_body: bool  # client_secret_post: the provider takes no HTTP Basic

    @classmethod
    def of(cls, document: dict[str, Any], issuer: str) -> ProviderMetadata:
        """The document's endpoints; SingleSignOnFailed unless it is this issuer's (OpenID
        Connect Discovery 4.3: the issuer it names must be the one asked)."""
        named = document.get("issuer")
        if not isinstance(named, str) or named.rstrip("/") != issuer.rstrip("/"):
            raise SingleSignOnFailed("discovery-issuer", unreachable=True)
        endpoints = [document.get(k) for k in ("authorization_endpoint", "token_endpoint")]
        jwks_uri = document.get("jwks_uri")
        if not all(isinstance(v, str) and v for v in [*endpoints, jwks_uri]):
            raise SingleSignOnFailed("discovery-incomplete", unreachable=True)
        offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(a for a in offered if a in ASYMMETRIC)
        if not algorithms:
            raise SingleSignOnFailed("discovery-algorithms", unreachable=True)
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return cls(
            issuer=named,
            authorization_endpoint=str(endpoints[0]),
            token_endpoint=str(endpoints[1]),
            jwks_uri=str(jwks_uri),
            algorithms=algorithms,
            secret_in_body="client_secret_basic" not in methods and "client_secret_post" in methods,
        )


@dataclass(frozen=True)
class Attempt:
    """One sign-in's secrets, kept by the browser (sealed) between leaving for the provider and
    coming back: the state that ties the answer to this browser, the nonce the ID token must
    carry, and the PKCE verifier only this gateway knows."""

    state: str
    nonce: str
    verifier: str

    @classmethod
    def new(cls) -> Attempt:
        return cls(state=generate_token(32), nonce=generate_token(32), verifier=generate_token(64))


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in."""

    subject: str
    email: str | None
    email_verified: bool

    @property
    def verified_email(self) -> str | None:
        """The email, only when the provider vouches for it (an unverified one finds nobody)."""
        return self.email if self.email_verified else None


@dataclass
class _Known:
    until: float
    metadata: ProviderMetadata
    keys: KeySet | None = None


# The discovery document and keys of each issuer, kept across requests for METADATA_SECONDS.
_known: dict[str, _Known] = {}


def configured(settings: ConsoleSettings) -> bool:
    """Whether single sign-on is set up: an issuer, and this gateway's client id and secret."""
    return bool(settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret)


class OpenIDProvider:
    """The council's provider, as this gateway's client there sees it."""

    def __init__(
        self, settings: ConsoleSettings, *, http: httpx.AsyncClient, redirect_uri: str
    ) -> None:
        assert configured(settings)
        self.issuer = str(settings.oidc_issuer)
        self.client_id = str(settings.oidc_client_id)
        secret = settings.oidc_client_secret
        self.client_secret = secret.get_secret_value() if secret else ""
        self.http = http
        self.redirect_uri = redirect_uri

    async def authorization_url(self, attempt: Attempt) -> str:
        """Where the browser goes to sign in at the provider."""
        metadata = await self.metadata()
        return str(
            add_params_to_uri(
                metadata.authorization_endpoint,
                [
                    ("response_type", "code"),
                    ("client_id", self.client_id),
                    ("redirect_uri", self.redirect_uri),
                    ("scope", SCOPE),
                    ("state", attempt.state),
                    ("nonce", attempt.nonce),
                    ("code_challenge", create_s256_code_challenge(attempt.verifier)),
                    ("code_challenge_method", "S256"),
                ],
            )
        )

    async def identity(self, *, code: str, attempt: Attempt) -> Identity:
        """The code exchanged (with the client secret and the PKCE verifier) for an ID token,
        checked in full; SingleSignOnFailed if any of it does not hold."""
        metadata = await self.metadata()
        tokens = await self._exchange(metadata, code, attempt)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SingleSignOnFailed("no-id-token")
        claims = await self._verified_claims(metadata, id_token, tokens, attempt)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise SingleSignOnFailed("id-token-subject")
        email = claims.get("email")
        verified = claims.get("email_verified")
        return Identity(
            subject=subject,
            email=email if isinstance(email, str) and email else None,
            email_verified=verified is True or verified == "true",
        )

    async def metadata(self) -> ProviderMetadata:
        known = _known.get(self.issuer)
        if known is not None and known.until > time.monotonic():
            return known.metadata
        document = await self._get_json(get_well_known_url(self.issuer, external=True))
        metadata = ProviderMetadata.of(document, self.issuer)
        _known[self.issuer] = _Known(time.monotonic() + METADATA_SECONDS, metadata)
        return metadata

    async def _keys(self, metadata: ProviderMetadata, *, again: bool = False) -> KeySet:
        known = _known.get(self.issuer)
        if known is not None and known.keys is not None and not again:
            return known.keys
        try:
            keys = KeySet.import_key_set(await self._get_json(metadata.jwks_uri))  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise SingleSignOnFailed("jwks-unreadable", unreachable=True) from exc
        if known is not None:
            known.keys = keys
        return keys

    async def _exchange(
        self, metadata: ProviderMetadata, code: str, attempt: Attempt
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": attempt.verifier,
        }
        auth: httpx.BasicAuth | None = None
        if metadata.secret_in_body:
            form |= {"client_id": self.client_id, "client_secret": self.client_secret}
        else:  # RFC 6749 2.3.1: each part form-encoded, then HTTP Basic
            auth = httpx.BasicAuth(quote_plus(self.client_id), quote_plus(self.client_secret))
        answer = await self._call("POST", metadata.token_endpoint, data=form, auth=auth)
        if answer.status_code != 200:
            raise SingleSignOnFailed(f"token-refused-{answer.status_code}")
        return self._json_of(answer)

    async def _verified_claims(
        self, metadata: ProviderMetadata, id_token: str, tokens: dict[str, Any], attempt: Attempt
    ) -> CodeIDToken:
        try:
            try:
                token = jwt.decode(id_token, await self._keys(metadata), metadata.algorithms)
            except InvalidKeyIdError:  # a key not seen before: the provider rotated its keys
                keys = await self._keys(metadata, again=True)
                token = jwt.decode(id_token, keys, metadata.algorithms)
            claims = CodeIDToken(
                token.claims,
                token.header,
                {
                    "iss": {"essential": True, "values": [metadata.issuer]},
                    "aud": {"essential": True, "values": [self.client_id]},
                    "exp": {"essential": True},
                    "nonce": {"essential": True},
                },
                {
                    "nonce": attempt.nonce,
                    "client_id": self.client_id,
                    "access_token": tokens.get("access_token"),
                },
            )
            claims.validate(leeway=LEEWAY_SECONDS)
        except (JoseError, ValueError, TypeError) as exc:
            raise SingleSignOnFailed(f"id-token-{type(exc).__name__}") from exc
        return claims

    async def _get_json(self, url: str) -> dict[str, Any]:
        answer = await self._call("GET", url)
        if answer.status_code != 200:
            raise SingleSignOnFailed(f"provider-{answer.status_code}", unreachable=True)
        return self._json_of(answer, unreachable=True)

    async def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            answer = await self.http.request(
                method, url, headers={"Accept": "application/json"}, **kw
            )
        except (httpx.HTTPError, OutboundRefused, OSError) as exc:
            raise SingleSignOnFailed(f"unreachable-{type(exc).__name__}", unreachable=True) from exc
        if len(answer.content) > _MAX_ANSWER:
            raise SingleSignOnFailed("answer-too-large", unreachable=True)
        return answer

    def _json_of(self, answer: httpx.Response, *, unreachable: bool = False) -> dict[str, Any]:
        try:
            found = answer.json()
        except ValueError as exc:
            raise SingleSignOnFailed("not-json", unreachable=unreachable) from exc
        if not isinstance(found, dict):
            raise SingleSignOnFailed("not-an-object", unreachable=unreachable)
        return found
