"""Citizen details sealed at rest, and keyed hashes that find them without opening them.

The citizen's contact details (name, email, phone, accessibility needs, language) are stored
only as a Fernet token (AES-128-CBC with an HMAC-SHA256 tag, from `cryptography`). Keys come
from `IAP_PRIVACY__KEYS`, newest first: the first seals, every one opens, so rotating is
"put a new key first, run `iap privacy rotate-keys`, then drop the old one".

A subject access or erasure request names a citizen by email or phone; the enquiry table
keeps an HMAC-SHA256 of each, normalised, under a separate lookup key, so they can be found by
an index without storing the address itself.

Photos and documents are sealed the same way, as bytes (`seal_bytes`), so the attachment
store never holds a plain file.

Links carry keyed MACs that nothing stores: the signed URLs a back-office fetches files at
(`sign`), the enquiry's access token (its SHA-256 is kept, as before), the unsubscribe
link's signature and the tracking page's form fields (`form_tokens`, against CSRF). Each is
an HMAC-SHA256 under a key derived from a sealing key, one key per purpose; made with the
newest key and checked against each configured one, so a link made before a rotation still
works until its key is dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

# The embedded development default: public, so production refuses it (see settings.py).
DEVELOPMENT_KEY = "ZGV2ZWxvcG1lbnQtb25seS1ub3QtYS1zZWNyZXQtISE="
DEVELOPMENT_LOOKUP_KEY = "development-only-lookup-key-not-a-secret"


class SealedDataUnreadable(Exception):
    """A sealed value that none of the configured keys opens."""


class Sealer:
    """Seals and opens citizen details; hashes emails and phone numbers for look-up."""

    def __init__(self, keys: list[SecretStr], lookup_key: SecretStr) -> None:
        if not keys:
            raise ValueError("at least one key is needed to seal citizen details")
        self._fernet = MultiFernet([Fernet(k.get_secret_value().encode()) for k in keys])
        self._lookup_key = lookup_key.get_secret_value().encode()
        # Newest first, like the sealing keys: the first makes, every one checks. Derived
        # once, so a token or signature costs one HMAC (intake makes one per enquiry).
        self._signing_keys = [_derive(k, "signed-urls") for k in keys]
        self._token_keys = [_derive(k, "access-token") for k in keys]
        self._unsubscribe_keys = [_derive(k, "unsubscribe") for k in keys]
        self._form_keys = [_derive(k, "forms") for k in keys]

    def seal(self, details: dict[str, Any] | None) -> str | None:
        """The details as one token; None for none."""
        if not details:
            return None
        plain = json.dumps(details, separators=(",", ":"), ensure_ascii=False)
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, token: str | None) -> dict[str, Any] | None:
        """The details a token holds; SealedDataUnreadable if no configured key opens it."""
        if token is None:
            return None
        try:
            plain = self._fernet.decrypt(token.encode())
        except InvalidToken as exc:
            raise SealedDataUnreadable("no configured key opens these citizen details") from exc
        opened: dict[str, Any] = json.loads(plain)
        return opened

    def reseal(self, token: str) -> str:
        """The same details sealed under the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SealedDataUnreadable("no configured key opens these citizen details") from exc

    def seal_bytes(self, content: bytes) -> bytes:
        """A file's bytes as one token (a stored photo or document)."""
        return self._fernet.encrypt(content)

    def open_bytes(self, token: bytes) -> bytes:
        """The bytes a token holds; SealedDataUnreadable if no configured key opens it."""
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise SealedDataUnreadable("no configured key opens this file") from exc

    def reseal_bytes(self, token: bytes) -> bytes:
        """The same file sealed under the newest key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken as exc:
            raise SealedDataUnreadable("no configured key opens this file") from exc

    def sign(self, message: str) -> str:
        """An HMAC-SHA256 of the message under the newest signing key, base64url."""
        return _mac(self._signing_keys[0], message.encode())

    def verify(self, message: str, signature: str) -> bool:
        """Whether the signature is the message's under any configured key."""
        return _made_by_one_of(self._signing_keys, message.encode(), signature)

    def email_hash(self, email: str | None) -> str | None:
        """The keyed hash an email is found by, whatever its case or surrounding spaces."""
        if not email or not email.strip():
            return None
        return self._hash("email", email.strip().lower())

    def phone_hash(self, phone: str | None) -> str | None:
        """The keyed hash a phone number is found by, however it was typed (UK +44 or 0)."""
        normalised = normalise_phone(phone)
        return self._hash("phone", normalised) if normalised else None

    def access_token(self, enquiry_id: uuid.UUID) -> str:
        """The citizen's key to this one enquiry, under the newest key: one HMAC, so intake
        stays fast, and the alert sender can make it again for the tracking link."""
        return _mac(self._token_keys[0], enquiry_id.bytes)

    def access_tokens(self, enquiry_id: uuid.UUID) -> list[str]:
        """The enquiry's access token under each configured key, newest first (the one a
        rotation left behind is among them)."""
        return [_mac(key, enquiry_id.bytes) for key in self._token_keys]

    def unsubscribe_signature(self, enquiry_id: uuid.UUID) -> str:
        """What the unsubscribe link of this enquiry's messages is signed with."""
        return _mac(self._unsubscribe_keys[0], enquiry_id.bytes)

    def unsubscribe_signed(self, enquiry_id: uuid.UUID, signature: str) -> bool:
        """Whether `signature` is this enquiry's unsubscribe signature under any configured key."""
        return _made_by_one_of(self._unsubscribe_keys, enquiry_id.bytes, signature)

    def form_tokens(self, bound_to: uuid.UUID | bytes, purpose: str) -> list[str]:
        """A page's form field proving a POST came from the form this gateway rendered for
        this enquiry (or console session) and purpose (CSRF), under each configured key, newest
        first: render the first, accept any."""
        binding = bound_to.bytes if isinstance(bound_to, uuid.UUID) else bound_to
        message = binding + purpose.encode()  # bindings are of fixed length (16 or 32 bytes)
        return [_mac(key, message) for key in self._form_keys]

    def _hash(self, kind: str, value: str) -> str:
        message = f"{kind}:{value}".encode()
        return hmac.new(self._lookup_key, message, hashlib.sha256).hexdigest()


def _derive(key: SecretStr, purpose: str) -> bytes:
    """A key for one purpose alone, from a sealing key (HMAC-SHA256 of the purpose's name)."""
    return hmac.new(
        key.get_secret_value().encode(), f"iap:{purpose}".encode(), hashlib.sha256
    ).digest()


def _mac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of the message, base64url without padding (43 characters)."""
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _made_by_one_of(keys: list[bytes], message: bytes, signature: str) -> bool:
    """Whether `signature` is the message's MAC under any of the keys (compared as bytes: a
    signature a client made up, in any characters, is simply wrong, never an error)."""
    given = signature.encode("utf-8", "surrogateescape")
    return any(hmac.compare_digest(_mac(key, message).encode(), given) for key in keys)


def normalise_phone(phone: str | None) -> str | None:
    """Digits only, with a UK international prefix (+44 or 0044) written as the trunk 0."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if phone.strip().startswith("+44") or digits.startswith("0044"):
        national = digits.removeprefix("00").removeprefix("44")
        digits = "0" + national.removeprefix("0")  # "+44 (0)7700 ..." has its 0 already
    return digits or None


def new_key() -> str:
    """A fresh key for IAP_PRIVACY__KEYS."""
    return Fernet.generate_key().decode()
