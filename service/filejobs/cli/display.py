"""The live view of a batch: bytes uploaded, jobs finished, and how many files are in each status."""

from __future__ import annotations

from collections import Counter
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from filejobs.cli.common import human_bytes

#: The order (and colour) statuses are shown in; others follow in the order first seen.
STYLES = {
    "pending": "dim",
    "hashing": "dim",
    "uploading": "cyan",
    "submitting": "cyan",
    "queued": "blue",
    "running": "blue",
    "accepted": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "rejected": "red",
    "error": "red",
}


class _Counts:
    def __init__(self, counts: Counter[str], display: Display) -> None:
        self.counts = counts
        self.display = display

    def __rich__(self) -> RenderableType:
        text = Text("  ")
        ordered = [s for s in STYLES if self.counts.get(s)]
        ordered += [s for s in self.counts if s not in STYLES and self.counts[s]]
        for index, status in enumerate(ordered):
            if index:
                text.append("  ")
            text.append(f"{status} {self.counts[status]}", style=STYLES.get(status, ""))
        if self.display.skipped_bytes:
            text.append(f"  · {human_bytes(self.display.skipped_bytes)} not sent (already on the server)")
        return text


class Display:
    """Progress bars on ``console`` (stderr); a no-op when ``enabled`` is false (``--json``)."""

    def __init__(self, console: Console, *, files: int, total: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.counts: Counter[str] = Counter()
        self._sent: dict[str, int] = {}
        #: Bytes of files not sent: the server already held them (jobs made by hash).
        self.skipped_bytes = 0
        self.bytes = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.jobs = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._upload: TaskID = self.bytes.add_task("uploaded", total=total)
        self._done: TaskID = self.jobs.add_task("finished", total=files)
        self._live = Live(
            Group(self.bytes, self.jobs, _Counts(self.counts, self)),
            console=console,
            refresh_per_second=8,
            transient=False,
        )

    # ---- what the batch reports -----------------------------------------------------------------

    # The bytes bar: ``total`` starts as the size of every file (known before the first upload) and
    # only shrinks by what will not be sent; ``completed`` only grows (bytes sent, resent ones too).

    def to_upload(self, size: int) -> None:
        """``size`` more bytes than planned are going to be uploaded (a lost job's file again)."""
        self._grow(size)

    def sent(self, path: str, sent: int) -> None:
        """The upload of ``path`` has sent ``sent`` bytes so far. A retry starts again from 0: the
        bytes sent before are kept, and the total grows by what is sent a second time."""
        before = self._sent.get(path, 0)
        self._sent[path] = sent
        if sent > before:
            self.bytes.advance(self._upload, sent - before)
        elif sent < before:
            self._grow(before - sent)

    def uploaded(self, path: str, size: int) -> None:
        self.sent(path, size)
        self._sent.pop(path, None)

    def skip(self, path: str, size: int) -> None:
        """``path`` (``size`` bytes, in the total) will not be sent, or not all of it: refused by
        the server, failed, or not uploaded at all (a job from the ledger). What was sent stays."""
        self._grow(self._sent.pop(path, 0) - size)

    def not_sent(self, path: str, size: int) -> None:
        """``path`` (``size`` bytes) needs no upload: the server holds its content already."""
        self.skip(path, size)
        self.skipped_bytes += size

    def _grow(self, size: int) -> None:
        self.bytes.update(self._upload, total=(self.bytes.tasks[0].total or 0) + size)

    def status(self, old: str | None, new: str) -> None:
        if old is not None:
            self.counts[old] -= 1
        self.counts[new] += 1

    def finished(self) -> None:
        self.jobs.advance(self._done)

    @property
    def uploaded_bytes(self) -> float:
        return self.bytes.tasks[0].completed

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Display:
        if self.enabled:
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self._live.stop()
