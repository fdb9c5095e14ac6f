"""``inspect``: size, hashes, sniffed type, and for text its encoding, lines and words."""

from __future__ import annotations

import codecs
import hashlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from pydantic import BaseModel

from filejobs.processors.base import Context, NoParams, Output, Processor
from filejobs.sniff import SNIFF_BYTES, looks_binary, sniff, text_encoding

CHUNK = 1024 * 1024
#: Below this size MD5 runs in the job's thread: starting, using and joining a thread took about
#: 90 us, what MD5 takes over 64 KiB (SHA-256 beside it: 37 us), and a trivial job's child spent
#: it on every job.
MD5_THREAD_FROM = 256 * 1024
_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c"


def _ascii_compatible(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).encode(" \t\n")[0] == b" \t\n"
    except LookupError:
        return False


class _TextCounter:
    """Counts lines and whitespace-separated words across chunks."""

    def __init__(self, encoding: str) -> None:
        self.lines = 0
        self.words = 0
        self._in_word = False
        self._last_char_newline = True
        self._bytes_mode = _ascii_compatible(encoding)
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.any = False

    def feed(self, chunk: bytes, final: bool = False) -> None:
        if self._bytes_mode:
            data: Any = chunk
            newline: Any = b"\n"
            starts_space = not chunk or chunk[:1] in (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")
            ends_space = not chunk or chunk[-1:] in (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c")
        else:
            data = self._decoder.decode(chunk, final)
            newline = "\n"
            starts_space = not data or data[:1].isspace()
            ends_space = not data or data[-1:].isspace()
        if not data:
            return
        self.any = True
        self.lines += data.count(newline)
        words = len(data.split())
        if self._in_word and not starts_space and words:
            words -= 1  # the first token continues the previous chunk's last word
        self.words += words
        self._in_word = not ends_space
        self._last_char_newline = data[-1:] == newline

    def total_lines(self) -> int:
        return self.lines + (0 if self._last_char_newline or not self.any else 1)


class Inspect(Processor):
    name = "inspect"
    version = "1"
    description = (
        "Reports the file's size, SHA-256 and MD5, its MIME type sniffed from the content, whether it is "
        "text, and for text its encoding, line count and word count."
    )
    accepts = ("*/*",)
    Params = NoParams
    # Hashes, the sniff the API already did on every upload (reused), and counts over 1 MiB chunks.
    light = True

    def run(self, ctx: Context, params: BaseModel) -> Output:
        sha256 = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        size = ctx.input_path.stat().st_size
        done = 0
        counter: _TextCounter | None = None
        result: dict[str, Any] = {}
        # hashlib drops the GIL on large buffers: MD5 runs beside SHA-256 and the text counts, in a
        # thread of its own for a file of MD5_THREAD_FROM bytes or more.
        with open(ctx.input_path, "rb") as handle, ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1)) if size >= MD5_THREAD_FROM else None
            first = handle.read(CHUNK)
            sample = first[:SNIFF_BYTES]
            binary = looks_binary(sample)
            # A job's type was sniffed from this very sample by the API: the magic lookup (most of a
            # small file's time here) is not done again.
            result["mime_type"] = ctx.content_type if ctx.content_type_sniffed else sniff(sample)
            result["is_text"] = not binary
            if not binary:
                encoding = text_encoding(sample) or "utf-8"
                result["encoding"] = encoding
                counter = _TextCounter(encoding)
            chunk = first
            while chunk:
                ctx.check_cancelled()
                md5_done = pool.submit(md5.update, chunk) if pool is not None else None
                sha256.update(chunk)
                if counter is not None:
                    counter.feed(chunk)
                if md5_done is not None:
                    md5_done.result()
                else:
                    md5.update(chunk)
                done += len(chunk)
                ctx.progress(done / size if size else 1.0, None)
                chunk = handle.read(CHUNK)
        if counter is not None:
            counter.feed(b"", final=True)
            result["lines"] = counter.total_lines()
            result["words"] = counter.words
        return Output(result={"size": done, "sha256": sha256.hexdigest(), "md5": md5.hexdigest(), **result})
