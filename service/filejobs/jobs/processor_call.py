"""One processor call, from a :class:`RunRequest` to its final message: what the child does per
request, and what a worker thread does when it runs a light processor on a small input itself.

Both paths call :func:`call_processor`, so params validation, the lazily made output directory, the
output file's check, and the failure codes (``ProcessorError`` → its code, an unexpected exception
→ ``processor_crashed`` with a short message, the trace to the log) are the same wherever a
processor runs. What differs stays with the caller: the child sets its memory limit first and
sends progress over its pipe; a worker thread hands progress and cancel checks to the job's ticker.
"""

from __future__ import annotations

import errno
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from filejobs.jobs import messages
from filejobs.jobs.messages import RunRequest
from filejobs.processors.base import Cancelled, Context, ProcessorError
from filejobs.processors.registry import PluginError, load_spec

#: Least seconds between two progress reports a processor's calls lead to.
PROGRESS_EVERY = 0.1

Report = Callable[[float, str | None], None]


class LazyContext(Context):
    """The processor's :class:`Context`, whose output directory is made when the processor first
    asks for it (the worker passes only its path: most jobs write no file, and two ``mkdir`` calls
    per job cost more than a trivial job's processor)."""

    _output_dir: Path
    _output_made: bool

    @property
    def output_dir(self) -> Path:
        if not self._output_made:
            self._output_dir.mkdir(parents=True, exist_ok=True)
            self._output_made = True
        return self._output_dir

    @output_dir.setter
    def output_dir(self, path: Path) -> None:
        self._output_dir = path
        self._output_made = False


def throttled(report: Report) -> Report:
    """``report`` called at most every :data:`PROGRESS_EVERY` s, a message always passed on; a
    bare 1.0 is not: the ``Done`` that follows records it (a trivial job's one message back)."""
    last = 0.0

    def progress(fraction: float, message: str | None = None) -> None:
        nonlocal last
        now = time.monotonic()
        if message is None and (fraction >= 1.0 or now - last < PROGRESS_EVERY):
            return
        last = now
        report(float(fraction), message)

    return progress


def crashed(exc: BaseException) -> messages.Failed:
    """The failure of a job whose processor raised ``exc`` unexpectedly (no trace: that is logged)."""
    return messages.Failed("processor_crashed", f"The processor failed unexpectedly ({type(exc).__name__}).")


def _print_trace() -> None:
    traceback.print_exc(file=sys.stderr)


def call_processor(
    request: RunRequest,
    *,
    progress: Report,
    cancelled: Callable[[], bool],
    on_crash: Callable[[], None] = _print_trace,
) -> messages.Final:
    """Run the processor ``request`` names in this thread: the final message for its job.

    ``on_crash`` is called inside the handler of an unexpected exception (to log its trace)."""
    limits = request.limits
    try:
        processor_cls = load_spec(request.spec)
        try:
            params = processor_cls.Params.model_validate(request.params)
        except ValidationError as exc:  # stored before the processor's checks tightened (or a new version)
            raise ProcessorError(
                "invalid_params",
                "The job's params are no longer accepted by its processor: "
                f"{exc.errors(include_url=False, include_input=False)[0]['msg']}.",
            ) from None
        ctx = LazyContext(
            input_path=Path(request.input),
            output_dir=Path(request.output_dir),
            file_name=request.file_name,
            content_type=request.content_type,
            progress=progress,
            cancelled=cancelled,
            limits=limits,
            content_type_sniffed=request.content_type_sniffed,
        )
        output = processor_cls().run(ctx, params)
        if cancelled():
            raise Cancelled()
        file_path = None
        if output.file is not None:
            resolved = Path(output.file).resolve()
            if not resolved.is_relative_to(ctx.output_dir.resolve()) or not resolved.is_file():
                raise ProcessorError(
                    "bad_output", "The processor's output file is not in its output directory."
                )
            file_path = str(resolved)
        json.dumps(output.result)  # refuse results that are not JSON before reporting success
        return messages.Done(output.result, file_path, output.file_name, output.content_type)
    except Cancelled:
        return messages.Cancelled()
    except ProcessorError as exc:
        return messages.Failed(exc.code, exc.message, exc.retryable)
    except PluginError as exc:
        return messages.Failed("processor_unavailable", str(exc))
    except MemoryError:
        return messages.out_of_memory(limits.memory_bytes)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            return messages.out_of_memory(limits.memory_bytes)
        # A processor bug: the trace goes to the server log, the job gets a short message.
        on_crash()
        return crashed(exc)
