"""Text encodings for ``csv-profile``: which codecs a file can be read with, and decoding that
fails only as a ``csv_*`` error.

A Python codec name is not necessarily one a byte stream can be read with incrementally: ``idna``
and ``punycode`` refuse any error handler but ``strict``, ``undefined`` refuses everything,
``base64``, ``hex`` or ``rot13`` are not text encodings, and ``utf-16``/``utf-32`` need a
byte-order mark the file may not have. :func:`usable_encoding` refuses those at submit (the params
model's validator, so ``422``); :func:`decoding` turns whatever decoding still raises in the
processor (an encoding detected from the content, a file without the BOM its encoding needs) into
``csv_encoding``.
"""

from __future__ import annotations

import codecs
import contextlib
import threading
from collections.abc import Iterator

from filejobs.processors.base import ProcessorError

#: The error handler the processor decodes with: undecodable bytes become U+FFFD and are counted.
ERROR_HANDLER = "filejobs.csv_profile.replace_and_count"
#: Codecs that read the byte order from a BOM and fail without one: name the byte order instead.
NEEDS_BOM = {"utf-16": ("utf-16-le", "utf-16-be"), "utf-32": ("utf-32-le", "utf-32-be")}
#: A byte-order mark at the start of a file read with one of these is skipped, not a character.
BOM_SKIPPING = {
    "utf-8": (codecs.BOM_UTF8, "utf-8-sig"),
    "utf-16-le": (codecs.BOM_UTF16_LE, "utf-16"),
    "utf-16-be": (codecs.BOM_UTF16_BE, "utf-16"),
    "utf-32-le": (codecs.BOM_UTF32_LE, "utf-32"),
    "utf-32-be": (codecs.BOM_UTF32_BE, "utf-32"),
}
#: What a usable codec must decode back, incrementally and with :data:`ERROR_HANDLER`.
_PROBE = "id,name\r\n1,x\n"

_decode_errors = threading.local()


def _count_and_replace(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    _decode_errors.count = getattr(_decode_errors, "count", 0) + (error.end - error.start)
    return "\ufffd", error.end


codecs.register_error(ERROR_HANDLER, _count_and_replace)


def reset_decode_errors() -> None:
    _decode_errors.count = 0


def decode_errors() -> int:
    """Bytes replaced in this thread since :func:`reset_decode_errors`."""
    count: int = getattr(_decode_errors, "count", 0)
    return count


def usable_encoding(name: str) -> str:
    """The codec's canonical name, or ``ValueError`` saying why a CSV cannot be read with it."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{name!r} is not a text encoding")
    if info.name in NEEDS_BOM:
        little, big = NEEDS_BOM[info.name]
        raise ValueError(
            f"{name!r} needs a byte-order mark at the start of the file: name the byte order "
            f"({little!r} or {big!r}), or leave 'encoding' out to have a BOM detected"
        )
    if not _round_trips(info.name):
        raise ValueError(f"{name!r} cannot decode a file (it is not an encoding for text files)")
    return info.name


def _round_trips(name: str) -> bool:
    """Whether the codec encodes a line of CSV and decodes it back as the processor decodes."""
    try:
        data = codecs.encode(_PROBE, name)
        decoder = codecs.getincrementaldecoder(name)(errors=ERROR_HANDLER)
        text = decoder.decode(data) + decoder.decode(b"", final=True)
    except Exception:  # a codec (a plugin may register one) may raise anything
        return False
    return bool(text == _PROBE)


def reading_encoding(encoding: str, head: bytes) -> str:
    """The codec to read a file starting with ``head`` with: one that skips its BOM, if it has one."""
    bom, skipping = BOM_SKIPPING.get(encoding, (b"", encoding))
    return skipping if bom and head.startswith(bom) else encoding


@contextlib.contextmanager
def decoding(encoding: str) -> Iterator[None]:
    """Whatever decoding raises inside becomes the job's ``csv_encoding`` failure."""
    try:
        yield
    except (UnicodeError, LookupError) as exc:
        raise ProcessorError(
            "csv_encoding", f"The file cannot be decoded as {encoding!r}: {_reason(exc)}."
        ) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"{exc.reason} at byte {exc.start}"
    return str(exc).replace(ERROR_HANDLER, "replacement").rstrip(".") or type(exc).__name__
