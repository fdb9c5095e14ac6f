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

import os
import queue
import signal
import sys
import threading
import time
from typing import BinaryIO

from filejobs.jobs import messages
from filejobs.jobs.messages import RunRequest
from filejobs.jobs.processor_call import call_processor, crashed, throttled
from filejobs.memory import OUT_OF_MEMORY_EXIT, limit_address_space
from filejobs.settings import get_settings

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
    try:
        limit_address_space(request.limits.memory_bytes)
    except (OSError, ValueError) as exc:
        print(f"cannot set the job's memory limit: {exc!r}", file=sys.stderr)
        return crashed(exc)
    progress = throttled(lambda fraction, message: channel.send(messages.Progress(fraction, message)))
    return call_processor(request, progress=progress, cancelled=cancelled.is_set)


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
