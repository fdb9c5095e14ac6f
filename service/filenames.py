"""Client-supplied filenames are display metadata only: made safe to show, never used as a path."""

from __future__ import annotations

import re
import unicodedata
from email.message import Message
from email.utils import collapse_rfc2231_value

MAX_NAME_BYTES = 255
FALLBACK = "upload"

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
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip()
    return name or FALLBACK


#: The header every client sends for a plain form part: parsed without the email package (which
#: costs a noticeable share of a small upload); anything else takes the general path.
_SIMPLE = re.compile(r'form-data; name="([A-Za-z0-9_.\-]+)"(?:; filename="([ -!#-\[\]-~]*)")?')


def parse_content_disposition(value: str) -> tuple[str | None, str | None]:
    """``(name, filename)`` from a part's Content-Disposition, honouring RFC 2231 ``filename*``."""
    simple = _SIMPLE.fullmatch(value)
    if simple is not None:  # printable ASCII without quotes or backslashes: nothing to decode
        return simple.group(1), simple.group(2)
    message = Message()
    message["content-disposition"] = value
    name = message.get_param("name", header="content-disposition")
    filename = message.get_filename()
    # RFC 6266 section 4.3: when both are sent, ``filename*`` wins over the plain ``filename``
    # (get_filename returns whichever comes first; an RFC 2231 value is a (charset, lang, text) tuple).
    for key, param in message.get_params(header="content-disposition") or []:
        if key.lower() == "filename" and isinstance(param, tuple):
            filename = collapse_rfc2231_value(param).strip()
            break
    return (name if isinstance(name, str) else None), filename
