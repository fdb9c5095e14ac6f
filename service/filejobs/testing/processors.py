"""A processor for the harness's scenarios, loaded through ``FILEJOBS_PROCESSORS`` like any plugin
(spec :data:`SLEEP`): ``sleep`` keeps a job running for a while, reporting progress, so that a
scenario can kill a process while a job runs in it."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, ConfigDict, Field

from filejobs.processors import Context, Output, Processor

#: The ``FILEJOBS_PROCESSORS`` spec of :class:`Sleep`.
SLEEP = "filejobs.testing.processors:Sleep"


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=1.0, ge=0, le=120)
    steps: int = Field(default=10, ge=1, le=1000)
    ignore_cancel: bool = False


class Sleep(Processor):
    name = "sleep"
    description = "Sleeps in steps, reporting progress; for tests."
    Params = SleepParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, SleepParams)
        for step in range(params.steps):
            if not params.ignore_cancel:
                ctx.check_cancelled()
            time.sleep(params.seconds / params.steps)
            ctx.progress((step + 1) / params.steps, f"step {step + 1} of {params.steps}")
        return Output(result={"slept": params.seconds, "pid": os.getpid()})
