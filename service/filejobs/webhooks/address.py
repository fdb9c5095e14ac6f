"""Which webhook URLs the service will call (SSRF protection), and the address it connects to.

A URL must be ``https`` (``http`` only with ``WEBHOOK_ALLOW_HTTP``), carry no credentials, and its
host must resolve, every address of it, to public unicast addresses: loopback, private, link-local,
multicast, reserved and shared (CGNAT) addresses are refused unless ``WEBHOOK_ALLOW_PRIVATE``;
cloud metadata addresses are refused always. The check resolves the name once and returns the
addresses it checked; the sender connects to one of those (:mod:`filejobs.webhooks.transport`), so
a DNS answer that changes between the check and the connection (rebinding) cannot move the request
to a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Instance metadata services (AWS, GCP, Azure, Oracle: 169.254.169.254; AWS IPv6; Alibaba; Azure's
#: wire server, a public address): refused whatever the settings say.
METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)


class RefusedURL(ValueError):
    """A URL the service will not call; the message says why (shown to the caller)."""


@dataclass(frozen=True)
class Resolved:
    """A checked URL and the addresses its host resolved to, every one of them allowed."""

    url: httpx.URL
    addresses: tuple[str, ...]


def check_form(url: str, *, allow_http: bool) -> httpx.URL:
    """The URL parsed, or :class:`RefusedURL` when it is not an absolute http(s) URL we may call."""
    if len(url) > MAX_URL_LENGTH:
        raise RefusedURL(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    import httpx  # on the first URL checked (see filejobs.webhooks)

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise RefusedURL("Not a URL.") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise RefusedURL("Not an absolute https:// URL.")
    if parsed.scheme == "http" and not allow_http:
        raise RefusedURL("Webhook URLs must use https (this service does not call plain http).")
    if parsed.userinfo:
        raise RefusedURL("Webhook URLs must not carry a user name or password.")
    if parsed.fragment:
        raise RefusedURL("Webhook URLs must not have a #fragment.")
    return parsed


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` may not be called (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "a cloud metadata address"
    if allow_private:
        return None
    for test, what in (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    ):
        if test:
            return what
    return None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def check_addresses(url: httpx.URL, infos: list[str], *, allow_private: bool) -> Resolved:
    """``url`` with the addresses its host resolved to, or :class:`RefusedURL` if any is refused."""
    if not infos:
        raise RefusedURL(f"The host {url.host!r} does not resolve.")
    addresses: list[str] = []
    for text in dict.fromkeys(infos):
        address = ipaddress.ip_address(text.split("%", 1)[0])
        why = refusal(address, allow_private=allow_private)
        if why is not None:
            raise RefusedURL(
                f"The host {url.host!r} resolves to {address}, {why}; this service does not call it."
            )
        addresses.append(str(address))
    return Resolved(url, tuple(addresses))


def getaddrinfo_hosts(host: str, port: int) -> list[str]:
    """The addresses of ``host`` (blocking: run it in a thread), [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return [str(info[4][0]) for info in infos]


def resolve(url: str, *, allow_http: bool, allow_private: bool) -> Resolved:
    """Check ``url`` completely, resolving its host once (blocking: run it in a thread)."""
    parsed = check_form(url, allow_http=allow_http)
    return check_addresses(
        parsed, getaddrinfo_hosts(parsed.host, port_of(parsed)), allow_private=allow_private
    )
