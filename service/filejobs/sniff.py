"""The content type of a file, from its first bytes (never from its name or a client header)."""

from __future__ import annotations

import functools

import puremagic

from filejobs import client_json, magic

SNIFF_BYTES = 64 * 1024
#: Samples up to this size are sniffed on the event loop when no charset detection is needed.
CHEAP_BYTES = 16 * 1024
OCTET = "application/octet-stream"

# puremagic guesses the most specific ZIP-based office format for any ZIP; trust it only for these.
_ZIP_FAMILY = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}


def looks_binary(sample: bytes) -> bool:
    """NUL bytes (outside UTF-16/32 text) or no plausible text encoding."""
    if not sample:
        return False
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    if b"\x00" in sample:
        return True
    return text_encoding(sample) is None


@functools.lru_cache(maxsize=16)  # sniff, looks_binary and inspect all ask about the same sample
def text_encoding(sample: bytes) -> str | None:
    """The likely text encoding of ``sample``, or None when it is not text."""
    if sample.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off by the end of the sample is still UTF-8.
        if exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
    from charset_normalizer import from_bytes  # on first need: 2.5 MB most processes never use

    best = from_bytes(sample).best()
    if best is None:
        return None
    return str(best.encoding)


def _sniff_text(sample: bytes) -> str:
    stripped = sample.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"{", b"["):
        try:
            client_json.loads(sample.decode("utf-8-sig"), max_depth=None)
            return "application/json"
        except (UnicodeDecodeError, client_json.ClientJSONError):
            pass
    head = stripped[:5].lower()
    if head.startswith((b"<?xml",)):
        return "application/xml"
    if head.startswith((b"<html", b"<!doc")):
        return "text/html"
    lines = stripped.splitlines()[:20]
    # The sample may end mid-line: its last line is left out unless a line break ends it.
    whole = lines if len(lines) < 20 and stripped.endswith((b"\n", b"\r")) else lines[:-1]
    if len(lines) >= 2:
        for delimiter in (b",", b";", b"\t"):
            counts = {line.count(delimiter) for line in whole if line}
            if len(counts) == 1 and counts.pop() > 0:
                return "text/csv" if delimiter != b"\t" else "text/tab-separated-values"
    return "text/plain"


def sniff_is_cheap(sample: bytes) -> bool:
    """Whether :func:`sniff` needs no charset detection for ``sample`` (binary with NUL bytes, a
    BOM, or UTF-8: then it takes well under a millisecond and can run on the event loop)."""
    if len(sample) > CHEAP_BYTES:
        return False
    if b"\x00" in sample or sample.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    return _is_utf8(sample)


def _is_utf8(sample: bytes) -> bool:
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data"
    return True


def sniff(sample: bytes) -> str:
    """The MIME type of a file whose first bytes are ``sample`` (up to :data:`SNIFF_BYTES`)."""
    if not sample:
        return "application/x-empty"
    try:
        matches = magic.magic_string(sample)  # puremagic's answer, indexed
    except (puremagic.PureError, ValueError):
        matches = []
    for match in matches:
        mime = match.mime_type
        if not mime:
            continue
        if mime in _ZIP_FAMILY and match.confidence < 0.8:
            return "application/zip"
        if mime == "image/jpeg" and match.extension == ".jp2":  # puremagic files JPEG 2000 as JPEG
            return "image/jp2"
        if mime.startswith("text/") and not looks_binary(sample):
            return _sniff_text(sample)
        if len(getattr(match, "byte_match", b"") or b"") <= 2 and not looks_binary(sample):
            # A one- or two-byte magic on text is a coincidence when the text is a table:
            # "BMI,age" is a CSV header, not a BMP ("BM"); "P1,P2" is not a PBM image.
            text_type = _sniff_text(sample)
            if text_type in ("text/csv", "text/tab-separated-values"):
                return text_type
        return str(mime)
    if looks_binary(sample):
        return OCTET
    return _sniff_text(sample)
