"""The worker child process: runs one processor call at a time, told what to do over stdin.

Started as ``python -m filejobs.jobs.child`` by :class:`filejobs.jobs.executor.ChildProcess`.
Requests arrive as lines on stdin (:class:`~filejobs.jobs.messages.RunRequest` or ``Cancel``);
replies (``Progress``, then ``Done``, ``Failed`` or ``Cancelled``, see :mod:`filejobs.jobs.messages`)
go out as lines on the original stdout, which is kept for the protocol while fd 1 is pointed at
stderr so a processor's prints cannot corrupt it. When stdin closes (the parent died, even by
``kill -9``), or the parent process is otherwise seen gone, the child exits at once.

Each job runs under its memory limit (``limits.memory_bytes``, set as this process's ``RLIMIT_AS``,
see :mod:`filejobs.memory`): running out fails the job ``resource_exhausted``; a thread that runs
out, or a reply that no longer fits, ends the child with :data:`~filejobs.memory.OUT_OF_MEMORY_EXIT`.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from filejobs.jobs import messages
from filejobs.jobs.messages import RunRequest
from filejobs.memory import OUT_OF_MEMORY_EXIT, limit_address_space
from filejobs.processors.base import Cancelled, Context, ProcessorError
from filejobs.processors.registry import PluginError, load_spec
from filejobs.settings import get_settings

PROGRESS_EVERY = 0.1  # seconds between progress messages to the parent
PARENT_CHECK_EVERY = 0.5


def _watch_parent(parent: int) -> None:
    """Exit once the parent process is gone (we are re-parented), even if stdin never closes.

    Not PR_SET_PDEATHSIG: Linux ties that to the parent *thread* that started us, and worker threads
    may come and go while their process lives on.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_EVERY)
    os._exit(0)


class Channel:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: messages.Message) -> None:
        line = messages.encode(message)
        with self._lock:
            self._out.write(line)
            self._out.flush()


class _Context(Context):
    """The processor's :class:`Context`, whose output directory is made when the processor first
    asks for it (the parent sends only its path: most jobs write no file, and two ``mkdir`` calls
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


def _reader(requests: queue.Queue[RunRequest], cancelled: threading.Event) -> None:
    for line in sys.stdin.buffer:
        try:
            message = messages.decode(line)
        except messages.ProtocolError:
            continue
        if isinstance(message, messages.Cancel):
            cancelled.set()
        elif isinstance(message, RunRequest):
            requests.put(message)
    os._exit(0)  # the parent is gone: stop whatever is running


def run_one(request: RunRequest, channel: Channel, cancelled: threading.Event) -> None:
    # Sent once the call has returned: by then a processor that ran out of memory has let go of it.
    channel.send(_run(request, channel, cancelled))


def _run(request: RunRequest, channel: Channel, cancelled: threading.Event) -> messages.Final:
    """Run the processor the request names, under the job's memory limit; the reply to send."""
    last = 0.0

    def progress(fraction: float, message: str | None = None) -> None:
        nonlocal last
        now = time.monotonic()
        # A bare 1.0 is not sent: the Done that follows records it (a trivial job's one message back).
        if message is None and (fraction >= 1.0 or now - last < PROGRESS_EVERY):
            return
        last = now
        channel.send(messages.Progress(float(fraction), message))

    limits = request.limits
    try:
        limit_address_space(limits.memory_bytes)
        processor_cls = load_spec(request.spec)
        try:
            params = processor_cls.Params.model_validate(request.params)
        except ValidationError as exc:  # stored before the processor's checks tightened (or a new version)
            raise ProcessorError(
                "invalid_params",
                "The job's params are no longer accepted by its processor: "
                f"{exc.errors(include_url=False, include_input=False)[0]['msg']}.",
            ) from None
        ctx = _Context(
            input_path=Path(request.input),
            output_dir=Path(request.output_dir),
            file_name=request.file_name,
            content_type=request.content_type,
            progress=progress,
            cancelled=cancelled.is_set,
            limits=limits,
        )
        output = processor_cls().run(ctx, params)
        if cancelled.is_set():
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
        traceback.print_exc(file=sys.stderr)
        text = f"The processor failed unexpectedly ({type(exc).__name__})."
        return messages.Failed("processor_crashed", text)


def _thread_died(args: threading.ExceptHookArgs) -> None:
    """A thread (ours, or one a processor started) that ran out of memory takes the child down
    with the status the parent reads as ``resource_exhausted``: the job cannot finish without it."""
    if issubclass(args.exc_type, MemoryError):
        os._exit(OUT_OF_MEMORY_EXIT)
    threading.__excepthook__(args)


def main() -> None:
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    niceness = get_settings().processor_nice
    if niceness:
        os.nice(niceness)  # processors yield the CPU to the API (status polls) and the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which stops us itself
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = Channel(proto)
    requests: queue.Queue[RunRequest] = queue.Queue()
    cancelled = threading.Event()
    threading.Thread(target=_reader, args=(requests, cancelled), daemon=True).start()
    threading.excepthook = _thread_died
    channel.send(messages.Ready(os.getpid()))
    while True:
        request = requests.get()
        cancelled.clear()
        try:
            run_one(request, channel, cancelled)
        except MemoryError:  # not even the reply fitted: the exit status says it instead
            os._exit(OUT_OF_MEMORY_EXIT)


if __name__ == "__main__":
    main()
