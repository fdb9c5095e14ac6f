"""The framing of a one-file ``multipart/form-data`` body, built by hand so the file can stream.

The body is ``head + <file bytes> + tail``: the head holds the form fields (first, so the server
can refuse a bad processor or params before the file streams in) and the file part's headers; the
tail closes the form. Knowing both lengths gives an exact ``Content-Length`` without reading the file.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

#: Size of each read from the file while uploading.
CHUNK_SIZE = 1024 * 1024
CRLF = "\r\n"


@dataclass(frozen=True)
class Framing:
    boundary: str
    head: bytes
    tail: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def content_length(self, file_size: int | None) -> int | None:
        """The body's length, or ``None`` (chunked transfer) when the file's size is unknown."""
        return None if file_size is None else len(self.head) + file_size + len(self.tail)


def new_boundary() -> str:
    return f"filejobs-{secrets.token_hex(16)}"


def _quoted(value: str) -> str:
    """A quoted parameter value as browsers send it (WHATWG): ``"``, CR and LF percent-encoded."""
    return '"' + value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A") + '"'


def file_disposition(field: str, filename: str) -> str:
    """``form-data; name=…; filename=…``, plus RFC 5987 ``filename*`` for a non-ASCII name."""
    value = f"form-data; name={_quoted(field)}; filename={_quoted(filename)}"
    if not filename.isascii():
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def frame(
    fields: Mapping[str, str],
    *,
    filename: str,
    content_type: str = "application/octet-stream",
    file_field: str = "file",
    boundary: str | None = None,
) -> Framing:
    """The head and tail around a file sent as ``file_field``, after the text ``fields``."""
    boundary = boundary or new_boundary()
    parts: list[str] = []
    for name, value in fields.items():
        parts.append(f"--{boundary}{CRLF}Content-Disposition: form-data; name={_quoted(name)}{CRLF}{CRLF}")
        parts.append(f"{value}{CRLF}")
    parts.append(
        f"--{boundary}{CRLF}"
        f"Content-Disposition: {file_disposition(file_field, filename)}{CRLF}"
        f"Content-Type: {content_type}{CRLF}{CRLF}"
    )
    return Framing(
        boundary=boundary,
        head="".join(parts).encode("utf-8"),
        tail=f"{CRLF}--{boundary}--{CRLF}".encode("ascii"),
    )


def text_form(fields: Mapping[str, str], *, boundary: str | None = None) -> Framing:
    """A form of text fields only (an upload by hash): ``head + tail`` is the whole body."""
    boundary = boundary or new_boundary()
    parts = [
        f"--{boundary}{CRLF}Content-Disposition: form-data; name={_quoted(name)}{CRLF}{CRLF}{value}{CRLF}"
        for name, value in fields.items()
    ]
    return Framing(
        boundary=boundary, head="".join(parts).encode("utf-8"), tail=f"--{boundary}--{CRLF}".encode("ascii")
    )
