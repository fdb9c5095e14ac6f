"""Where ``filejobs submit --results DIR`` puts each succeeded job's result.

* A JSON result: ``DIR/<relpath>.json`` (``photos/a.jpg`` → ``DIR/photos/a.jpg.json``).
* A file result: the server's file name in the folder of ``DIR/<relpath>``
  (``photos/a.jpg`` with ``thumbnail`` → ``DIR/photos/a.thumb.webp``). When another file of the
  batch already has a result of that name there (``a.jpg`` and ``a.png`` both give
  ``a.thumb.webp``), the later one is ``<its own name>.<server's name>`` (``a.png.a.thumb.webp``).
  Which file holds which name is kept in the ledger, so re-runs agree.

A download lands in a private folder next to its target first and is renamed into place, so a
result never replaces another's and an interrupted download leaves no partial file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from filejobs.cli.ledger import FileState
from filejobs.client import AsyncClient
from filejobs.client._files import write_json


class _Options(Protocol):
    @property
    def results(self) -> Path | None: ...

    @property
    def concurrency(self) -> int: ...


def exists(path: str | None) -> bool:
    return path is not None and os.path.exists(path)


class Results:
    def __init__(self, client: AsyncClient, options: _Options, previous: Iterable[FileState]) -> None:
        assert options.results is not None
        self.client = client
        self.root = options.results
        self.slots = asyncio.Semaphore(options.concurrency)
        #: result file → the source it belongs to
        self.claimed: dict[Path, Path] = {
            Path(before.result_path): self.root / before.relpath for before in previous if before.result_path
        }

    async def fetch(self, state: FileState) -> Path:
        """Download the result of ``state``'s job; where it went."""
        assert state.job_id is not None
        target = self.root / state.relpath
        private = target.parent / f".filejobs-{state.job_id}"
        private.mkdir(parents=True, exist_ok=True)
        try:
            async with self.slots:
                result = await self.client.result(state.job_id, to=private)
            if isinstance(result, Path):
                return result.replace(self._claim(target.parent / result.name, target))
            return await asyncio.to_thread(write_json, target.with_name(target.name + ".json"), result)
        finally:
            for leftover in private.glob("*"):
                leftover.unlink(missing_ok=True)
            private.rmdir()

    def _claim(self, name: Path, target: Path) -> Path:
        owner = self.claimed.setdefault(name, target)
        return name if owner == target else target.with_name(f"{target.name}.{name.name}")
