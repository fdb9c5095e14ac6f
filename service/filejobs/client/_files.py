"""Result downloads: the file name the server suggests, made safe, and atomic writes.

Everything here blocks; the async client calls it in a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import unicodedata
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import IO, Any

MAX_NAME_BYTES = 255
# Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned characters.
_DROP = {"Cc", "Cf", "Cs", "Co", "Cn"}


def disposition_filename(value: str | None) -> str | None:
    """The ``filename`` of a ``Content-Disposition`` value; ``filename*`` (RFC 6266) wins."""
    if not value:
        return None
    message = Message()
    message["content-disposition"] = value
    plain: str | None = None
    for key, param in message.get_params(header="content-disposition") or []:
        name = key.lower()
        if name == "filename*" or (name == "filename" and isinstance(param, tuple)):
            return collapse_rfc2231_value(param)
        if name == "filename" and isinstance(param, str):
            plain = param
    return plain


def safe_filename(raw: str | None, fallback: str) -> str:
    """A name that stays inside the directory it is joined to: the last path component, without
    control or bidi characters or leading dots, at most 255 bytes; ``fallback`` if nothing is left."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROP).strip().lstrip(".")
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip()
    return name or fallback


def resolve_target(
    to: str | os.PathLike[str] | None, disposition: str | None, job_id: str, *, suffix: str = ".result"
) -> Path:
    """Where a file result goes: ``to`` itself, or the server's file name inside ``to`` when it
    is a directory or a string ending in a separator (the current directory for ``None``);
    ``<job id><suffix>`` there when the server names no file."""
    directory = Path.cwd() if to is None else Path(to)
    named_dir = isinstance(to, str) and to.endswith(("/", os.sep))
    if to is not None and not named_dir and not directory.is_dir():
        return directory
    fallback = f"{safe_filename(job_id, 'job')}{suffix}"
    return directory / safe_filename(disposition_filename(disposition), fallback)


class AtomicFile:
    """A temp file next to ``target``: ``commit()`` fsyncs and renames it into place; ``abort()``
    removes it. A failed download never leaves a partial file under the target's name."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:  # as mkstemp, but with the mode every tool gives a new file: 0666 less the umask
            self.temp = target.parent / f".{target.name[:200]}.{secrets.token_hex(6)}.part"
            try:
                fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileExistsError:
                continue
            break
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp, self.target)
        return self.target

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


def write_json(target: Path, data: Any) -> Path:
    """``data`` as indented UTF-8 JSON at ``target``, atomically (see :class:`AtomicFile`)."""
    out = AtomicFile(target)
    try:
        out.write((json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode())
        return out.commit()
    except BaseException:
        out.abort()
        raise
