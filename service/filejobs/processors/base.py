"""The processor interface: what a processor implements and what it is handed.

A processor is a class with a ``name``, a ``description``, the sniffed content types it
``accepts`` (``*/*`` or ``image/*`` patterns allowed), a pydantic ``Params`` model and a ``run``
method. ``run`` is called in a worker process, never on the event loop::

    class Shout(Processor):
        name = "shout"
        description = "Upper-cases a text file."
        accepts = ("text/*",)

        class Params(BaseModel):
            exclaim: bool = False

        def run(self, ctx: Context, params: BaseModel) -> Output:
            text = ctx.input_path.read_text().upper()
            (ctx.output_dir / "shout.txt").write_text(text)
            return Output(result={"chars": len(text)}, file=ctx.output_dir / "shout.txt")
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from filejobs.memory import headroom


class NoParams(BaseModel):
    """For processors that take no parameters: anything else is refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Limits:
    """Operator-set bounds a processor must respect (from ``FILEJOBS_*`` settings)."""

    max_image_pixels: int = 64_000_000
    max_pdf_pages: int = 2000
    #: The address space the job's process may map (``FILEJOBS_JOB_MEMORY_LIMIT``); 0: no limit.
    memory_bytes: int = 0

    def memory_headroom(self) -> int | None:
        """Bytes the job may still map before it runs out of memory; None when unbounded."""
        return headroom(self.memory_bytes)


@dataclass
class Context:
    """What a running processor is handed."""

    input_path: Path
    output_dir: Path
    file_name: str
    content_type: str
    progress: Callable[[float, str | None], None]
    cancelled: Callable[[], bool]
    limits: Limits = field(default_factory=Limits)
    #: True when ``content_type`` is what :func:`filejobs.sniff.sniff` said of the file's first
    #: :data:`~filejobs.sniff.SNIFF_BYTES` bytes (a job's: the API sniffed them when it stored them).
    content_type_sniffed: bool = False

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled; call it between units of work."""
        if self.cancelled():
            raise Cancelled()


@dataclass
class Output:
    """What a processor returns: a JSON-able result and optionally a file inside ``output_dir``."""

    result: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None
    file_name: str | None = None
    content_type: str | None = None


class ProcessorError(Exception):
    """The job fails with ``code``; ``retryable`` errors are tried again with backoff."""

    retryable: ClassVar[bool] = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RetryableError(ProcessorError):
    """A transient failure (a resource briefly unavailable): the job is tried again."""

    retryable = True


class Cancelled(Exception):
    """Raised by :meth:`Context.check_cancelled`; the worker records the job as cancelled."""


class Processor(ABC):
    """Subclass this to add a processor; see the module docstring."""

    name: ClassVar[str]
    description: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]] = ("*/*",)
    Params: ClassVar[type[BaseModel]] = NoParams
    #: The version of what ``run`` does: a job's result is reused only for the same version, so
    #: change it whenever the same file and params would give another result.
    version: ClassVar[str] = "1"
    #: False for a processor whose run must happen every time (side effects): never reused.
    reusable: ClassVar[bool] = True
    #: True for a processor whose call is bounded, pure-Python work (memory: a small constant plus
    #: what it reads in chunks; no third-party native parser of hostile input): on an input of at
    #: most ``FILEJOBS_INLINE_MAX_BYTES`` it runs in the worker's own thread, without the child's
    #: memory limit or kill on timeout (see docs/processors.md). Never assumed: plugins say so.
    light: ClassVar[bool] = False

    @abstractmethod
    def run(self, ctx: Context, params: BaseModel) -> Output:
        """Do the work. Raise :class:`ProcessorError` for a clean failure."""

    @classmethod
    def accepts_type(cls, content_type: str) -> bool:
        return any(fnmatch.fnmatchcase(content_type, pattern) for pattern in cls.accepts)
