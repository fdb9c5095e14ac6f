"""Graceful shutdown as requests see it: how long uvicorn waits for them, and when uploads must end.

On SIGTERM uvicorn stops accepting connections and waits :data:`GRACEFUL_TIMEOUT` seconds for the
requests in flight; then it cancels them (an ERROR and a 500 each). An upload still receiving its
body :data:`UPLOAD_CUTOFF` seconds after the signal is answered 503 with ``Retry-After`` instead,
before that happens (see :mod:`filejobs.uploads`).
"""

from __future__ import annotations

import asyncio

#: Seconds ``filejobs serve`` lets uvicorn wait for requests after SIGTERM (long-polls end sooner).
GRACEFUL_TIMEOUT = 5.0
#: Seconds after SIGTERM an upload may go on receiving: the rest of the grace answers and closes it.
UPLOAD_CUTOFF = GRACEFUL_TIMEOUT - 1.5
#: ``Retry-After`` of an upload refused because the server is shutting down.
RETRY_AFTER = "5"


class Shutdown:
    """Set by the signal handler (on the event loop); read by uploads as they receive."""

    def __init__(self) -> None:
        #: Event-loop time by which uploads must have ended; None while not shutting down.
        self.upload_deadline: float | None = None

    def begin(self) -> None:
        """The server received SIGTERM or SIGINT (call on the event loop)."""
        if self.upload_deadline is None:
            self.upload_deadline = asyncio.get_running_loop().time() + UPLOAD_CUTOFF
