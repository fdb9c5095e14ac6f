"""In-process change notifications, so a long-poll or an event stream answers the moment a job
changes.

Worker threads and routes call :meth:`ChangeHub.notify` after they commit; waiters on the event
loop wake, and listeners (the event streams' :class:`~filejobs.events.feed.ChangeFeed`) hear the
id. Changes made by other processes are seen by the waiters' periodic re-read of the row and by
the feed's own look at the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable


class ChangeHub:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._listeners: list[Callable[[str], None]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, job_id: str) -> None:
        """Thread-safe: wake everyone waiting on ``job_id``."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._fire(job_id)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._fire, job_id)

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(job_id)`` on the event loop for every change from now on."""
        self._listeners.append(listener)

    def _fire(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()
        for listener in self._listeners:
            listener(job_id)

    def subscribe(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
