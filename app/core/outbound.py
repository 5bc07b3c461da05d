"""Outbound targets: which addresses the gateway may call, checked at start-up and on every call.

With IAP_ENV=production a target is refused when it is reached without TLS, or when any address
its host resolves to is private, loopback, link-local (cloud metadata at 169.254.169.254 among
them), unique-local, unspecified, multicast or otherwise not publicly routable, unless the host,
the address or its network is listed in IAP_OUTBOUND__ALLOWED_PRIVATE (or, for TLS,
IAP_OUTBOUND__ALLOWED_PLAINTEXT). Outside production nothing is refused: the sandbox is on
loopback. `OutboundPolicy.refusal` is the one rule; `OutboundGuard` resolves host names and
applies it, and `GuardedTransport` puts it in front of every request of the shared httpx client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from app.core.errors import PermanentError
from app.core.settings import Environment, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK_NAMES = ("localhost", ".localhost")  # RFC 6761: always loopback, never asked of DNS
# Schemes whose targets are encrypted: https, and SMTP with TLS (implicit or STARTTLS).
_ENCRYPTED = {"https": 443, "smtps": 465}
_PLAIN = {"http": 80, "smtp": 25}
_CACHE_LIMIT = 1024


class OutboundRefused(PermanentError):
    """The outbound rules forbid this target; trying again would be refused again."""


@dataclass(frozen=True)
class Target:
    """Where a call goes: scheme, host (name or address literal) and port."""

    scheme: str
    host: str
    port: int

    @property
    def encrypted(self) -> bool:
        return self.scheme in _ENCRYPTED

    @property
    def literal(self) -> IPAddress | None:
        """The host as an address, when it is one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_target(url: str) -> Target:
    """`https://host:port/...` (`smtp://`, `smtps://` for mail) as a Target; ValueError if not."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    default_port = _ENCRYPTED.get(scheme) or _PLAIN.get(scheme)
    if default_port is None:
        raise ValueError(f"{scheme or 'no'} scheme: only http, https, smtp and smtps are called")
    if not parts.hostname:
        raise ValueError("no host")
    return Target(scheme, parts.hostname.rstrip(".").lower(), parts.port or default_port)


def address_class(address: IPAddress) -> str | None:
    """Why an address may not be called from production, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_class(embedded)
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address in METADATA_ADDRESSES, "the cloud metadata address (link-local)"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _UNIQUE_LOCAL, "a unique-local address"),
        (address.is_private, "a private address"),
        (not address.is_global or address.is_reserved, "not a publicly routable address"),
    )
    return next((kind for refused, kind in checks if refused), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is what is reached."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


class Allowlist:
    """Host names (`.example.org` also covers its subdomains), addresses and networks."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.names: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.rstrip(".").lower())

    def covers_name(self, host: str) -> bool:
        return host in self.names or any(
            name.startswith(".") and (host.endswith(name) or host == name[1:])
            for name in self.names
        )

    def covers(self, host: str, address: IPAddress) -> bool:
        return self.covers_name(host) or any(address in network for network in self.networks)


class OutboundPolicy:
    """The rules for outbound targets; `refusal` is the one check every caller uses."""

    def __init__(
        self,
        *,
        enforce: bool,
        allowed_private: Iterable[str] = (),
        allowed_plaintext: Iterable[str] = (),
    ) -> None:
        self.enforce = enforce
        self.allowed_private = Allowlist(allowed_private)
        self.allowed_plaintext = Allowlist(allowed_plaintext)

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(
            enforce=settings.env is Environment.production,
            allowed_private=settings.outbound.allowed_private,
            allowed_plaintext=settings.outbound.allowed_plaintext,
        )

    def refusal(self, target: Target, addresses: Sequence[IPAddress]) -> str | None:
        """Why calling `target` at `addresses` (what its host resolves to) is refused, or None."""
        if not self.enforce:
            return None
        for address in addresses:
            kind = address_class(address)
            if kind is not None and not self.allowed_private.covers(target.host, address):
                shown = "" if target.literal == address else f" resolves to {address}, which"
                return (
                    f"{target.host}{shown} is {kind} (list the host or its network "
                    "in IAP_OUTBOUND__ALLOWED_PRIVATE to allow it)"
                )
        if not target.encrypted and not self._plaintext_allowed(target, addresses):
            return (
                f"{target.scheme}://{target.host} is not encrypted (use "
                f"{'https' if target.scheme == 'http' else 'TLS'}, or list the host in "
                "IAP_OUTBOUND__ALLOWED_PLAINTEXT)"
            )
        return None

    def _plaintext_allowed(self, target: Target, addresses: Sequence[IPAddress]) -> bool:
        allowed = self.allowed_plaintext
        if allowed.covers_name(target.host):
            return True
        return bool(addresses) and all(allowed.covers(target.host, a) for a in addresses)


class Resolver(Protocol):
    """Host name → addresses: blocking at start-up, on the event loop at request time."""

    def resolve(self, host: str, port: int) -> list[IPAddress]: ...

    async def resolve_async(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), as every connection uses it."""

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        return _addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))

    async def resolve_async(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        return _addresses(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def _addresses(infos: Sequence[tuple[Any, Any, Any, Any, tuple[Any, ...]]]) -> list[IPAddress]:
    # sockaddr is (address, port) or (address, port, flow, scope); a scoped "fe80::1%eth0" too.
    found = {str(sockaddr[0]).split("%", 1)[0] for *_, sockaddr in infos}
    return sorted((ipaddress.ip_address(a) for a in found), key=str)


class OutboundGuard:
    """Applies the policy to a target, resolving its host name first (answers kept briefly)."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        cache_seconds: float = 10.0,
    ) -> None:
        self.policy = policy
        self.resolver = resolver or SystemResolver()
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}

    @property
    def enforcing(self) -> bool:
        return self.policy.enforce

    async def check_url(self, url: str) -> None:
        """Raise OutboundRefused unless `url` may be called now; OSError if its host is unknown."""
        if not self.enforcing:
            return
        try:
            target = parse_target(url)
        except ValueError as exc:
            raise OutboundRefused(f"outbound call refused: {exc}") from exc
        reason = self.policy.refusal(target, await self._addresses(target))
        if reason is not None:
            raise OutboundRefused(f"outbound call refused: {reason}")

    def refusal_now(self, url: str) -> str | None:
        """The same check, blocking, for start-up; a host that does not resolve yet is not refused
        here, because every call checks it again."""
        try:
            target = parse_target(url)
        except ValueError as exc:
            return str(exc)
        try:
            addresses = _fixed_addresses(target) or self.resolver.resolve(target.host, target.port)
        except OSError:
            addresses = []
        return self.policy.refusal(target, addresses)

    async def _addresses(self, target: Target) -> list[IPAddress]:
        fixed = _fixed_addresses(target)
        if fixed:
            return fixed
        key = (target.host, target.port)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = await self.resolver.resolve_async(target.host, target.port)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (now + self._cache_seconds, addresses)
        return addresses


def _fixed_addresses(target: Target) -> list[IPAddress]:
    """Addresses known without asking DNS: a literal, or a name that is always loopback."""
    literal = target.literal
    if literal is not None:
        return [literal]
    if target.host == _LOOPBACK_NAMES[0] or target.host.endswith(_LOOPBACK_NAMES[1]):
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    return []


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks every request's target, after resolving its host, before it is sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport, guard: OutboundGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            await self._guard.check_url(str(request.url))
        except OSError as exc:  # the name did not resolve: as a failed connection would say
            raise httpx.ConnectError(
                f"cannot resolve {request.url.host}: {exc}", request=request
            ) from exc
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def outbound_client(settings: Settings, guard: OutboundGuard) -> httpx.AsyncClient:
    """The one shared httpx client; in production every request passes the guard first.

    A client given its own transport ignores HTTP(S)_PROXY: the guard must see the address
    that is really connected to, which a proxy would hide.
    """
    limits = httpx.Limits(max_connections=settings.http.max_connections)
    timeout = settings.http.timeout_seconds
    if not guard.enforcing:
        return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)
    transport = GuardedTransport(httpx.AsyncHTTPTransport(limits=limits), guard)
    return httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
