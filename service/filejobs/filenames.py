"""Client-supplied filenames are display metadata only: made safe to show, never used as a path.

What a client's ``filename=`` means is decoded first (:func:`decode_filename`), then the name is
cleaned for display (:func:`display_name`).
"""

from __future__ import annotations

import re
import unicodedata
from email.message import Message
from email.utils import collapse_rfc2231_value

MAX_NAME_BYTES = 255
FALLBACK = "upload"
#: A cut name keeps an extension of up to this many bytes (".tar.gz" counts as one).
MAX_EXTENSION_BYTES = 32
_EXTENSION = re.compile(r"(?:\.[^.\s]{1,16}){1,2}\Z")
#: Runs of percent escapes, decoded together (a UTF-8 character spans several).
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")

# Cc: control characters; Cf: format characters, which include the bidi overrides (U+202A-U+202E,
# U+2066-U+2069) and zero-width characters; Cs/Co/Cn: surrogates, private use and unassigned.
_DROP = {"Cc", "Cf", "Cs", "Co", "Cn"}


def display_name(raw: str | None) -> str:
    """The last path component of ``raw`` without control or bidi characters, at most 255 bytes."""
    if not raw:
        return FALLBACK
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROP).strip()
    if name in ("", ".", ".."):
        return FALLBACK
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        name = _shorten(name)
    return name or FALLBACK


def _shorten(name: str) -> str:
    """``name`` cut to :data:`MAX_NAME_BYTES` on a character boundary, keeping its extension."""
    match = _EXTENSION.search(name)
    extension = match.group() if match else ""
    if len(extension.encode("utf-8")) > MAX_EXTENSION_BYTES or len(extension) == len(name):
        extension = ""
    room = MAX_NAME_BYTES - len(extension.encode("utf-8"))
    stem = name[: len(name) - len(extension)].encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return stem.rstrip() + extension


def decode_filename(raw: str) -> str:
    """Undo the percent-encoding clients apply to a plain ``filename=`` parameter.

    Browsers (the WHATWG multipart/form-data encoding) send ``"``, CR and LF as ``%22``, ``%0D`` and
    ``%0A`` and other characters as raw UTF-8; aiohttp percent-encodes every byte outside the
    unreserved set (``caf%C3%A9.txt``, a literal ``%`` as ``%25``); curl sends the name as it is.
    So every run of ``%XX`` escapes that decodes to valid UTF-8 is decoded, and every ``%`` that
    does not start one (``100%.txt``, ``%zz``, a lone ``%FF``) stays as it is. A name whose real
    form holds such an escape (a file called ``a%41.txt``) is shown decoded: no client tells
    the two apart.
    """
    if "%" not in raw:
        return raw
    return _ESCAPES.sub(_decode_run, raw)


def _decode_run(match: re.Match[str]) -> str:
    data = bytes.fromhex(match.group().replace("%", ""))
    text = data.decode("utf-8", errors="surrogateescape")
    # Bytes that are not part of a valid UTF-8 sequence come back as lone surrogates: their escapes stay.
    return re.sub("[\udc80-\udcff]", lambda m: f"%{ord(m.group()) - 0xDC00:02X}", text)


#: The header every client sends for a plain form part: parsed without the email package (which
#: costs a noticeable share of a small upload); anything else takes the general path.
_SIMPLE = re.compile(r'form-data; name="([A-Za-z0-9_.\-]+)"(?:; filename="([ -!#-\[\]-~]*)")?')


def parse_content_disposition(value: str) -> tuple[str | None, str | None]:
    """``(name, filename)`` from a part's Content-Disposition, honouring RFC 2231 ``filename*``."""
    simple = _SIMPLE.fullmatch(value)
    if simple is not None:  # printable ASCII without quotes or backslashes: only escapes to decode
        filename = simple.group(2)
        return simple.group(1), (decode_filename(filename) if filename else filename)
    message = Message()
    message["content-disposition"] = value
    name = message.get_param("name", header="content-disposition")
    filename = message.get_filename()
    # RFC 6266 section 4.3: when both are sent, ``filename*`` wins over the plain ``filename``
    # (get_filename returns whichever comes first; an RFC 2231 value is a (charset, lang, text) tuple).
    for key, param in message.get_params(header="content-disposition") or []:
        if key.lower() == "filename" and isinstance(param, tuple):
            return (name if isinstance(name, str) else None), collapse_rfc2231_value(param).strip()
    if filename is not None:
        filename = decode_filename(filename)
    return (name if isinstance(name, str) else None), filename
