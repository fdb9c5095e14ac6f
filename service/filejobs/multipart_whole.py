"""A multipart body that arrived whole, split in a few ``bytes.find`` passes.

Most uploads are small: their whole body is the first (and only) chunk the server reads. For those,
python-multipart's byte-driven state machine and its eight callbacks per part cost more than the
rest of the parse. :func:`split_whole` splits such a body into its parts (headers and data offsets)
without a callback, but only when the body is written the plain way (the framing every client
library sends: a first delimiter line at the very start, ``Name: value`` header lines of token
characters, each part ended by ``CRLF--boundary`` followed by ``CRLF`` or, for the last, ``--``,
nothing but an optional ``CRLF`` after it) and within python-multipart's header limits. For anything
else it returns None *before* the receiver has seen a part, and the caller feeds the same bytes to
python-multipart, which then raises or accepts exactly as it always did. So on the bodies it takes,
the parts are those python-multipart would report (the same header names and values, the same data
spans), and every rule of the malformed-multipart suite is still python-multipart's to enforce.
"""

from __future__ import annotations

#: RFC 9110 §5.6.2 ``tchar``: what a header name is made of (python-multipart's own check).
TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"
_CRLF = b"\r\n"
_HEADERS_END = b"\r\n\r\n"

#: One part: its header lines as (name, value) and its data as ``body[start:end]``.
Part = tuple[list[tuple[bytes, bytes]], int, int]


def split_whole(body: bytes, boundary: bytes, max_headers: int, max_header_bytes: int) -> list[Part] | None:
    """The parts of ``body`` up to its closing delimiter, or None when the body is not plainly
    framed (the caller parses it the general way then). ``max_headers`` and ``max_header_bytes``
    are the general parser's limits: a part over them is left to it (to refuse)."""
    first = b"--" + boundary + _CRLF
    if not body.startswith(first):
        return None
    delimiter = b"\r\n--" + boundary
    parts: list[Part] = []
    position = len(first)
    while True:
        if body.startswith(_CRLF, position):  # a part with no header at all
            return None
        headers_end = body.find(_HEADERS_END, position)
        if headers_end == -1:
            return None
        lines = body[position:headers_end].split(_CRLF)
        if len(lines) > max_headers:
            return None
        headers: list[tuple[bytes, bytes]] = []
        for line in lines:
            colon = line.find(b":")
            if colon <= 0 or len(line) > max_header_bytes or b"\r" in line or b"\n" in line:
                return None
            name = line[:colon]
            if name.translate(None, TOKEN_CHARS):
                return None
            headers.append((name, line[colon + 1 :].lstrip(b" ")))
        start = headers_end + len(_HEADERS_END)
        end = body.find(delimiter, start)
        if end == -1:
            return None
        parts.append((headers, start, end))
        after = end + len(delimiter)
        if body.startswith(_CRLF, after):
            position = after + len(_CRLF)
            continue
        if body.startswith(b"--", after):  # the closing delimiter: the end, or a CRLF and the end
            tail = len(body) - after - 2
            return parts if tail == 0 or (tail == 2 and body.endswith(_CRLF)) else None
        return None
