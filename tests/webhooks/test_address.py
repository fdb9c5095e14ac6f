"""Which URLs the sender may call: the form, and every address the host resolves to."""

from __future__ import annotations

import ipaddress

import pytest

from filejobs.webhooks import address


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("not a url", "Not an absolute"),
        ("", "Not an absolute"),
        ("ftp://example.com/x", "Not an absolute"),
        ("/relative/path", "Not an absolute"),
        ("http://example.com/hook", "must use https"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("https://example.com/hook#frag", "fragment"),
        ("https://example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_the_form_is_checked_first(url: str, why: str) -> None:
    with pytest.raises(address.RefusedURL, match=why):
        address.check_form(url, allow_http=False)


def test_http_only_when_allowed() -> None:
    assert address.check_form("http://example.com/hook", allow_http=True).scheme == "http"


@pytest.mark.parametrize(
    ("ip", "what"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not a public address"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("169.254.169.254", "metadata"),
        ("168.63.129.16", "metadata"),
        ("fd00:ec2::254", "metadata"),
    ],
)
def test_non_public_addresses_are_refused(ip: str, what: str) -> None:
    why = address.refusal(ipaddress.ip_address(ip), allow_private=False)
    assert why is not None
    assert what in why


def test_allow_private_allows_all_but_metadata() -> None:
    assert address.refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert address.refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    assert address.refusal(ipaddress.ip_address("169.254.169.254"), allow_private=True) is not None


def test_public_addresses_pass() -> None:
    for ip in ("93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"):
        assert address.refusal(ipaddress.ip_address(ip), allow_private=False) is None


def test_every_resolved_address_must_pass() -> None:
    """A name with one public and one private address (a rebinding set-up) is refused."""
    url = address.check_form("https://example.com/hook", allow_http=False)
    with pytest.raises(address.RefusedURL, match=r"10\.0\.0\.1"):
        address.check_addresses(url, ["93.184.215.14", "10.0.0.1"], allow_private=False)
    resolved = address.check_addresses(url, ["93.184.215.14", "93.184.215.14"], allow_private=False)
    assert resolved.addresses == ("93.184.215.14",)
    with pytest.raises(address.RefusedURL, match="does not resolve"):
        address.check_addresses(url, [], allow_private=False)


def test_unresolvable_hosts_are_refused() -> None:
    with pytest.raises(address.RefusedURL, match="does not resolve"):
        address.resolve("https://no-such-host.invalid/hook", allow_http=False, allow_private=False)


def test_the_sender_checks_again_at_delivery_time(tmp_path: object) -> None:
    """A URL registered while allowed, delivered under stricter settings (or whose name now
    resolves elsewhere), is refused at the attempt: the attempt fails, nothing is sent."""
    import asyncio
    from pathlib import Path

    from filejobs.db import Database
    from filejobs.webhooks.sender import WebhookSender
    from tests.conftest import make_settings

    assert isinstance(tmp_path, Path)
    settings = make_settings(tmp_path, webhook_allow_http=True)
    sender = WebhookSender(Database(settings.resolved_database_url), settings, leader=lambda: True)

    async def resolve(url: str) -> address.Resolved:
        return await sender._resolve(url)

    with pytest.raises(address.RefusedURL, match="loopback"):
        asyncio.run(resolve("http://localhost:8080/hook"))
    with pytest.raises(address.RefusedURL, match="loopback"):
        asyncio.run(resolve("http://127.0.0.1:8080/hook"))
    assert asyncio.run(resolve("http://93.184.215.14/hook")).addresses == ("93.184.215.14",)
