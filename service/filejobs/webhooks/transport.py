"""POSTs to a checked address: the connection goes to the IP the SSRF check approved, while the
``Host`` header and the TLS server name (SNI, and the certificate's check) stay the URL's host.

httpx connects wherever the URL's host says, so the request's URL names the approved IP and
``Host`` names the real host; httpcore's ``sni_hostname`` request extension sets the TLS server name
(``ssl``'s hostname check follows it). Connections are pooled per (scheme, host, port, address): a
connection opened for one host name is never reused for another that shares its address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

from filejobs.webhooks import address

#: Connection pools kept (least recently used ones are closed past this).
MAX_POOLS = 128
#: Bytes of an answer's body read (to keep a connection reusable); the rest is not read.
MAX_ANSWER_BYTES = 64 * 1024
#: Seconds one pool's close may take: a pool that a cancelled request left stuck may never close.
CLOSE_WITHIN = 5.0


class PinnedSender:
    """Sends one request at a time per call; share it between tasks (one event loop)."""

    def __init__(
        self, *, timeout: float, connections_per_pool: int, verify: ssl.SSLContext | bool = True
    ) -> None:
        self._timeout = timeout
        self._per_pool = connections_per_pool
        self._verify = verify  # the system's CAs (certifi's); a test's own CA in tests
        self._pools: OrderedDict[tuple[str, str, int, str], httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self, url: httpx.URL, ip: str) -> httpx.AsyncClient:
        key = _key(url, ip)
        client = self._pools.get(key)
        if client is None:
            import httpx  # on the first delivery (see filejobs.webhooks)

            client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: we connect to the checked address
                verify=self._verify,
                limits=httpx.Limits(max_connections=self._per_pool, max_keepalive_connections=self._per_pool),
            )
            self._pools[key] = client
            while len(self._pools) > MAX_POOLS:
                _, old = self._pools.popitem(last=False)
                self._close_later(old)
        self._pools.move_to_end(key)
        return client

    async def post(self, target: address.Resolved, *, headers: dict[str, str], body: bytes) -> int:
        """POST ``body`` to ``target`` on its first address; the answer's status code. Raises
        httpx's errors (connect, timeout, protocol). No redirect is followed."""
        url, ip = target.url, target.addresses[0]
        pinned = url.copy_with(host=ip)
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        host_header = url.netloc.decode("ascii")
        client = self._client(url, ip)
        request = client.build_request(
            "POST", pinned, headers={**headers, "host": host_header}, content=body, extensions=extensions
        )
        response = await client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > MAX_ANSWER_BYTES:
                    break
        finally:
            await response.aclose()
        return response.status_code

    def forget(self, target: address.Resolved) -> None:
        """Stop using the pool of ``target`` (it is closed in the background): called after a
        request to it was cancelled (its deadline), which can leave one of the pool's connection
        slots taken for good (encode/httpcore#1093, #830), so that the next delivery does not
        queue behind it."""
        client = self._pools.pop(_key(target.url, target.addresses[0]), None)
        if client is not None:
            self._close_later(client)

    def _close_later(self, client: httpx.AsyncClient) -> None:
        task = asyncio.get_running_loop().create_task(_close(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every pool, each within :data:`CLOSE_WITHIN` seconds."""
        pools, self._pools = list(self._pools.values()), OrderedDict()
        await asyncio.gather(*(_close(client) for client in pools), *list(self._closing))


def _key(url: httpx.URL, ip: str) -> tuple[str, str, int, str]:
    return (url.scheme, url.host, address.port_of(url), ip)


async def _close(client: httpx.AsyncClient) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_WITHIN):
            await client.aclose()
