"""The messages between a worker and its child process, one JSON line each way.

The worker (:class:`filejobs.jobs.executor.ChildProcess`) sends :class:`RunRequest` and
:class:`Cancel`; the child (:mod:`filejobs.jobs.child`) answers :class:`Ready` once at start, then
for each request some :class:`Progress` and one of :class:`Done`, :class:`Failed` or
:class:`Cancelled`. Both ends :func:`encode` and :func:`decode` these classes, so the field names
are spelled here only. On the wire a message is its fields as a JSON object plus ``"type"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeAlias

from filejobs.memory import RESOURCE_EXHAUSTED
from filejobs.processors.base import Limits


class ProtocolError(ValueError):
    """A line that is not one of these messages."""


@dataclass(frozen=True, slots=True)
class RunRequest:
    """Run the processor ``spec`` (``module:Class``) on ``input``, writing into ``output_dir``."""

    TYPE: ClassVar[str] = "run"
    spec: str
    input: str
    output_dir: str
    params: dict[str, Any] = field(default_factory=dict)
    file_name: str = "upload"
    content_type: str = "application/octet-stream"
    #: The job's bounds; ``limits.memory_bytes`` becomes the child's ``RLIMIT_AS`` for this job.
    limits: Limits = field(default_factory=Limits)
    #: ``content_type`` is the type sniffed from the file's content (a job's file type always is).
    content_type_sniffed: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the running job cooperatively (the processor sees ``ctx.cancelled()``)."""

    TYPE: ClassVar[str] = "cancel"


@dataclass(frozen=True, slots=True)
class Ready:
    """The child started and waits for requests."""

    TYPE: ClassVar[str] = "ready"
    pid: int


@dataclass(frozen=True, slots=True)
class Progress:
    TYPE: ClassVar[str] = "progress"
    progress: float
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The processor returned: its result, and the absolute path of its output file if any."""

    TYPE: ClassVar[str] = "done"
    result: dict[str, Any] = field(default_factory=dict)
    file: str | None = None
    file_name: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The job failed with ``code``; ``retryable`` failures are tried again with backoff."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The job stopped because it was asked to (:class:`Cancel`)."""

    TYPE: ClassVar[str] = "cancelled"


Message: TypeAlias = RunRequest | Cancel | Ready | Progress | Done | Failed | Cancelled
#: The child's last reply to a request.
Final: TypeAlias = Done | Failed | Cancelled

_CLASSES: tuple[type[Message], ...] = (RunRequest, Cancel, Ready, Progress, Done, Failed, Cancelled)
_BY_TYPE: dict[str, type[Message]] = {cls.TYPE: cls for cls in _CLASSES}
_FIELDS: dict[type[Message], tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _CLASSES}


def out_of_memory(limit: int) -> Failed:
    """The failure of a job that ran out of memory under ``limit`` bytes (0: no limit)."""
    bound = f"its limit of {limit / 2**20:,.0f} MiB" if limit > 0 else "what the machine has"
    message = f"The job ran out of memory (needed more than {bound}); it was stopped."
    return Failed(RESOURCE_EXHAUSTED, message)


def encode(message: Message) -> bytes:
    """One line (with its newline) for the pipe."""
    body = {name: getattr(message, name) for name in _FIELDS[type(message)]}
    body["type"] = message.TYPE
    if isinstance(message, RunRequest):
        body["limits"] = vars(message.limits)  # a plain dataclass: its fields are its __dict__
    return json.dumps(body, default=str).encode() + b"\n"


def decode(line: bytes | str) -> Message:
    """The message on ``line``; :class:`ProtocolError` if it is none."""
    try:
        body = json.loads(line)
        cls = _BY_TYPE[body.pop("type")]
        if cls is RunRequest and "limits" in body:
            body["limits"] = Limits(**body["limits"])
        return cls(**body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"not a worker message: {line[:200]!r}") from exc
