"""The parent's handle on one worker child process (see :mod:`filejobs.jobs.child`).

:meth:`ChildProcess.run` sends one request and waits for its outcome while calling ``tick``
several times a second, so the caller can renew its lease, write progress, and decide to cancel
(cooperatively, then by SIGKILL after a grace period) or to give up on a deadline (SIGKILL).
A child that was killed or died is replaced on the next run, and so is one that ran out of
memory (its job fails ``resource_exhausted``, whether the child answered so or exited with
:data:`~filejobs.memory.OUT_OF_MEMORY_EXIT`). Processor code never runs here.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from filejobs.jobs.messages import (
    Cancel,
    Cancelled,
    Done,
    Failed,
    Message,
    Progress,
    ProtocolError,
    Ready,
    RunRequest,
    decode,
    encode,
    out_of_memory,
)
from filejobs.memory import OUT_OF_MEMORY_EXIT, RESOURCE_EXHAUSTED

TICK_SECONDS = 0.1
START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: ``done`` / ``error`` / ``cancelled`` (by request) / ``timeout`` / ``crashed``
    / ``stopped`` (the caller asked to stop, e.g. shutdown).

    ``reply`` is the child's :class:`Done` for ``done``, and the job's failure for ``error`` (the
    child's), ``timeout`` (``timeout``, not retryable) and ``crashed`` (``worker_crashed``, retryable).
    """

    kind: Literal["done", "error", "cancelled", "timeout", "crashed", "stopped"]
    reply: Done | Failed | None = None

    @property
    def done(self) -> Done:
        assert isinstance(self.reply, Done), self
        return self.reply

    @property
    def failed(self) -> Failed:
        assert isinstance(self.reply, Failed), self
        return self.reply


def _crashed(message: str) -> Outcome:
    return Outcome("crashed", Failed("worker_crashed", message, retryable=True))


class Control:
    """What ``tick`` returns: keep going, cancel cooperatively, or stop now (kill)."""

    CONTINUE = "continue"
    CANCEL = "cancel"
    STOP = "stop"


Tick = Callable[[float | None, str | None], str]


def child_env() -> dict[str, str]:
    """This process's environment for a child, which must import what it can (plugins, test processors)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ChildError(Exception):
    """The child could not be started or broke the protocol."""


class _Closed(Exception):
    """The child's stdout closed: it exited."""


class ChildProcess:
    """One persistent child; not thread-safe (each worker thread owns one)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.alive():
            return
        self.kill()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "filejobs.jobs.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            close_fds=True,
        )
        self._buffer = b""
        deadline = time.monotonic() + START_TIMEOUT
        message: Message | None = None
        with contextlib.suppress(_Closed):
            while not isinstance(message, Ready) and time.monotonic() < deadline:
                message = self._next_message(max(0.0, deadline - time.monotonic()))
        if not isinstance(message, Ready):
            code = self._exit_code()
            self.kill()
            raise ChildError(f"worker child did not start (exit code {code})")

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _exit_code(self, wait: float = 1.0) -> int | None:
        """The exit code of a child whose stdout just closed. Its pipe closes a moment before the
        kernel reports the exit, so wait briefly instead of polling once (which says None)."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def _send(self, message: Message) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(encode(message))
        self._proc.stdin.flush()

    def _next_message(self, timeout: float) -> Message | None:
        """The next message, None on timeout; :class:`_Closed` when the child's stdout closed."""
        assert self._proc is not None
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _Closed
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return decode(line)
        except ProtocolError as exc:
            raise ChildError("worker child broke the protocol") from exc

    def run(
        self,
        request: RunRequest,
        *,
        tick: Tick,
        timeout: float,
        cancel_grace: float,
    ) -> Outcome:
        """Run ``request`` in the child. ``tick(progress, message)`` is called with each progress
        message (or ``(None, None)`` when idle) and returns a :class:`Control` value."""
        self.start()
        try:
            self._send(request)
        except (BrokenPipeError, OSError):
            self.kill()
            return _crashed("The worker process died before the job started.")
        deadline = time.monotonic() + timeout
        kill_at: float | None = None
        stopping: Literal["cancelled", "stopped"] | None = None
        while True:
            now = time.monotonic()
            if now >= deadline and stopping is None:
                self.kill()
                message = f"The job ran longer than its {timeout:g} s limit."
                return Outcome("timeout", Failed("timeout", message))
            if kill_at is not None and now >= kill_at:
                self.kill()
                return Outcome(stopping or "cancelled")
            wait = min(TICK_SECONDS, max(0.0, deadline - now))
            try:
                reply = self._next_message(wait)
            except _Closed:
                code = self._exit_code()
                self.kill()
                if stopping is not None:
                    return Outcome(stopping)
                if code == OUT_OF_MEMORY_EXIT:
                    return Outcome("error", out_of_memory(request.limits.memory_bytes))
                return _crashed(_death_message(code))
            if isinstance(reply, Done):
                return Outcome("done", reply)
            if isinstance(reply, Failed):
                if reply.code == RESOURCE_EXHAUSTED:
                    self.kill()  # the next job gets a fresh child, not one with a fragmented heap
                return Outcome("error", reply)
            if isinstance(reply, Cancelled):
                return Outcome(stopping or "cancelled")
            control = tick(reply.progress, reply.message) if isinstance(reply, Progress) else tick(None, None)
            if stopping is None and control == Control.CANCEL:
                stopping = "cancelled"
                kill_at = time.monotonic() + cancel_grace
                try:
                    self._send(Cancel())
                except OSError:
                    kill_at = time.monotonic()
            elif control == Control.STOP:
                self.kill()
                return Outcome("stopped")


def _death_message(code: int | None) -> str:
    if code is not None and code < 0:
        return f"The worker process was killed by signal {-code}."
    return f"The worker process exited unexpectedly (exit code {code})."
