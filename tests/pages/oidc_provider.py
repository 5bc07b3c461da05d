"""A small OpenID Connect provider for the single sign-on tests, run on loopback
(tests.conftest.serving): a discovery document, its keys (an RSA key made when the provider is),
an /authorize that signs the preset person in at once and sends the browser back with a code,
and a /token that checks the client's id and secret, the code, the redirect URI and the PKCE
verifier, and answers with an RS256 ID token carrying the nonce.

`mode` makes it misbehave the ways a relying party must notice: an ID token with another
nonce, for another audience, signed by another key, already expired, or a refused sign-in."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "iap-console"
CLIENT_SECRET = "provider-test-secret"
KEY_ID = "test-key-1"
MODES = ("ok", "denied", "wrong-nonce", "wrong-audience", "bad-signature", "expired")


@dataclass
class User:
    """Who signs in at the provider."""

    subject: str = "council-0001"
    email: str = "jo@staff.example.org"
    email_verified: bool = True


@dataclass
class Grant:
    user: User
    nonce: str
    challenge: str
    redirect_uri: str


@dataclass
class OpenIDProviderStub:
    """The provider's state: who signs in, how it behaves, and what it was asked."""

    url: str = ""
    user: User = field(default_factory=User)
    mode: str = "ok"
    key: RSAKey = field(default_factory=lambda: _new_key())
    other_key: RSAKey = field(default_factory=lambda: _new_key())  # same kid, not published
    grants: dict[str, Grant] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)  # the paths called, in order
    token_refusals: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    def rotate(self) -> None:
        """A new signing key under a new key id, the old one no longer published."""
        kid = f"test-key-{secrets.token_hex(4)}"
        self.key = _new_key(kid)
        self.other_key = _new_key(kid)

    def reset(self) -> None:
        self.user = User()
        self.mode = "ok"
        self.grants.clear()
        self.asked.clear()
        self.token_refusals.clear()

    async def discovery(self, request: Request) -> Response:
        self.asked.append(request.url.path)
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        self.asked.append(request.url.path)
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: Request) -> Response:
        """Signs the preset person in at once, as a provider with a live session would."""
        self.asked.append(request.url.path)
        q = request.query_params
        expected = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "code_challenge_method": "S256",
        }
        if any(q.get(k) != v for k, v in expected.items()) or "openid" not in q.get(
            "scope", ""
        ).split(" "):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        back = q["redirect_uri"]
        if self.mode == "denied":
            answer = {"error": "access_denied", "state": q.get("state", "")}
            return RedirectResponse(f"{back}?{urlencode(answer)}", status_code=302)
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(User(**vars(self.user)), q["nonce"], q["code_challenge"], back)
        answer = {"code": code, "state": q.get("state", "")}
        return RedirectResponse(f"{back}?{urlencode(answer)}", status_code=302)

    async def token(self, request: Request) -> Response:
        self.asked.append(request.url.path)
        form = await request.form()
        refusal = self._refusal(request, dict(form))
        if refusal is not None:
            self.token_refusals.append(refusal)
            return JSONResponse({"error": refusal}, status_code=400)
        grant = self.grants.pop(str(form["code"]))
        access_token = secrets.token_urlsafe(24)
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self._id_token(grant),
            }
        )

    def _refusal(self, request: Request, form: dict[str, Any]) -> str | None:
        if request.headers.get("authorization") != _basic(CLIENT_ID, CLIENT_SECRET):
            return "invalid_client"
        grant = self.grants.get(str(form.get("code")))
        if form.get("grant_type") != "authorization_code" or grant is None:
            return "invalid_grant"
        if form.get("redirect_uri") != grant.redirect_uri:
            return "invalid_grant"
        verifier = str(form.get("code_verifier", ""))
        if _s256(verifier) != grant.challenge:
            return "invalid_grant"
        return None

    def _id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": grant.user.subject,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            "email": grant.user.email,
            "email_verified": grant.user.email_verified,
            "name": "Jo Agent",
        }
        key = self.key
        if self.mode == "wrong-nonce":
            claims["nonce"] = secrets.token_urlsafe(16)
        elif self.mode == "wrong-audience":
            claims["aud"] = "another-client"
        elif self.mode == "expired":
            claims |= {"iat": now - 3600, "exp": now - 1800}
        elif self.mode == "bad-signature":
            key = self.other_key
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def _new_key(kid: str = KEY_ID) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
