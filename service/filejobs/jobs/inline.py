"""A light processor's call on a small input, run in the worker's own thread (no child round trip).

The worker thread (the local pool's, or a Celery pool process's task thread) is never the event
loop. A light processor (``Processor.light``) promises bounded, pure-Python work whose memory is a
small constant plus what it reads in chunks; on an input of at most ``FILEJOBS_INLINE_MAX_BYTES``
its time is bounded too (``inspect`` on 1 MiB: a few milliseconds), so it needs neither the
child's memory limit nor its kill on timeout. :func:`run_inline` gives the same
:class:`~filejobs.jobs.executor.Outcome` as :meth:`ChildProcess.run
<filejobs.jobs.executor.ChildProcess.run>`, through the same :func:`call_processor`: the job's
ticker is asked at most every ``TICK_SECONDS`` (as the child's parent asks it while it waits) when
the processor reports progress or checks for a cancel, and ``timeout`` is checked there too
(cooperatively: nothing can be killed).
"""

from __future__ import annotations

import logging
import time

from filejobs.jobs.executor import TICK_SECONDS, Control, Outcome, Tick
from filejobs.jobs.messages import Done, Failed, RunRequest
from filejobs.jobs.processor_call import call_processor, throttled
from filejobs.processors.base import Processor

log = logging.getLogger(__name__)


def runs_inline(processor: type[Processor], input_size: int, max_bytes: int) -> bool:
    """True when a job of ``processor`` on ``input_size`` bytes runs in the worker's thread."""
    return processor.light and max_bytes > 0 and input_size <= max_bytes


def run_inline(request: RunRequest, *, tick: Tick, timeout: float) -> Outcome:
    """Run ``request``'s processor in this thread; how it ended, as the child's run would say."""
    started = time.monotonic()
    deadline = started + timeout
    last_tick = started
    control = Control.CONTINUE
    timed_out = False

    def stop_asked() -> bool:
        nonlocal control, last_tick, timed_out
        if control != Control.CONTINUE or timed_out:
            return True
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
        elif now - last_tick >= TICK_SECONDS:
            last_tick = now
            control = tick(None, None)
        return control != Control.CONTINUE or timed_out

    def report(fraction: float, message: str | None) -> None:
        nonlocal control, last_tick
        last_tick = time.monotonic()
        answer = tick(fraction, message)
        if control == Control.CONTINUE:
            control = answer

    def crashed() -> None:
        log.exception("processor %s failed on %s", request.spec, request.input)

    reply = call_processor(request, progress=throttled(report), cancelled=stop_asked, on_crash=crashed)
    if timed_out:
        return Outcome("timeout", Failed("timeout", f"The job ran longer than its {timeout:g} s limit."))
    if isinstance(reply, Done):
        return Outcome("done", reply)
    if isinstance(reply, Failed):
        return Outcome("error", reply)
    return Outcome("stopped" if control == Control.STOP else "cancelled")
