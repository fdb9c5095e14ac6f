"""Ends the event streams of callers no longer allowed in: a key revoked (by ``filejobs keys
revoke``, in another process, which only writes the database) while its streams were open, or,
for the anonymous caller of an open service, a first key made since.

A request is authenticated when it starts; a stream lasts for hours. So every
``events_key_check`` seconds while streams are open, one query asks which of the keys holding
streams in this process are still active (one for all of them, not one per stream), and the
streams of the others end, as a stopping server ends them: the client's reconnect then gets 401.
"""

from __future__ import annotations

import asyncio
import logging

from anyio import to_thread

from filejobs.background import BackgroundTask
from filejobs.db import Database
from filejobs.events.feed import ChangeFeed
from filejobs.keys import ANONYMOUS, AuthGate, active_key_ids

log = logging.getLogger(__name__)


class KeyWatch(BackgroundTask):
    task_name = "filejobs stream key watch"

    def __init__(self, db: Database, feed: ChangeFeed, gate: AuthGate, *, interval: float) -> None:
        self._db = db
        self._feed = feed
        self._gate = gate
        self._interval = interval

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            owners = self._feed.owners()
            if not owners:
                continue
            try:
                refused = await to_thread.run_sync(self.refused, owners)
            except Exception:
                log.exception("checking the keys of open event streams failed; trying again")
                continue
            if refused:
                log.info("ending the event streams of %d revoked key(s)", len(refused))
                self._feed.close_streams_of(refused)

    def refused(self, owners: set[str]) -> set[str]:
        """Those of ``owners`` (stream owners: key ids, or "" for anonymous) no longer let in."""
        keyed = owners - {ANONYMOUS.scope}
        refused = keyed - active_key_ids(self._db, keyed)
        if ANONYMOUS.scope in owners and self._gate.required():
            refused.add(ANONYMOUS.scope)
        return refused
