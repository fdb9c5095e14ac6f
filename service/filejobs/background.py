"""A component that runs one asyncio task while the app lives: started by the lifespan, cancelled
(and waited for) at its end."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundTask:
    #: The task's name (in asyncio's debug output and task dumps).
    task_name = "filejobs background task"
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
