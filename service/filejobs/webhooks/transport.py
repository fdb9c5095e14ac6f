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


class PinnedSender:
    """Sends one request at a time per call; share it between tasks (one event loop)."""

    def __init__(
        self, *, timeout: float, connections_per_pool: int, verify: ssl.SSLContext | bool = True
    ) -> None:
        self._timeout = timeout
        self._per_pool = connections_per_pool
        self._verify = verify  # the system's CAs (certifi's); a test's own CA in tests
        self._pools: OrderedDict[tuple[str, str, int, str], httpx.AsyncClient] = OrderedDict()

    def _client(self, url: httpx.URL, ip: str) -> httpx.AsyncClient:
        key = (url.scheme, url.host, address.port_of(url), ip)
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
                asyncio.get_running_loop().create_task(old.aclose())
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

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for client in pools:
            with contextlib.suppress(Exception):
                await client.aclose()
