"""``pdf-text``: the text of a PDF, page by page, into a UTF-8 ``.txt`` file (pypdf).

The output holds one page's text after another, pages separated by a form feed (``\\f``, U+000C);
a form feed inside a page's own text is written as a newline, so splitting the file on ``\\f``
gives exactly the extracted pages. Text is written page by page as it is extracted, never held
whole in memory.

Hostile files: every call into pypdf is guarded. pypdf's own errors and anything unexpected it
raises on a damaged file end the job with a clean error code (``pdf_invalid``, ``pdf_too_complex``,
...) and a fixed message; the detail goes to the log (stderr), never into the job. pypdf's built-in
resource limits (decompressed stream size, page-tree size and depth, ...) stay at their defaults.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from filejobs.lazy import lazy_module

if TYPE_CHECKING:
    import pypdf
    from pypdf import PdfReader
else:  # pypdf loads when a job first needs it, not in the API process (see filejobs.lazy)
    pypdf = lazy_module("pypdf")

from filejobs.processors.base import Cancelled, Context, Output, Processor, ProcessorError

log = logging.getLogger(__name__)

SEPARATOR = "\f"
OUTPUT_NAME = "text.txt"  # the name on disk; the download is named after the upload
CONTENT_TYPE = "text/plain; charset=utf-8"
MAX_PAGE_NUMBER = 1_000_000
MAX_PAGE_LIST = 1000  # per-page character counts reported for at most this many pages
MAX_METADATA_CHARS = 500
HEADER_BYTES = 1024

_TEXT_FIELDS = {
    "title": "/Title",
    "author": "/Author",
    "subject": "/Subject",
    "creator": "/Creator",
    "producer": "/Producer",
}
_DATE_FIELDS = {"creation_date": "/CreationDate", "modification_date": "/ModDate"}
_HEADER = re.compile(rb"%PDF-(\d\.\d)")
# D:YYYYMMDDHHmmSSOHH'mm' (ISO 32000-1, 7.9.4); everything after the year is optional.
_PDF_DATE = re.compile(
    r"(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?"
    r"(?:([Zz+-])(?:(\d{2})'?(?:(\d{2})'?)?)?)?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

INVALID_MESSAGE = "The file is not a readable PDF: it is damaged, truncated or not a PDF at all."


class PdfTextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: SecretStr | None = Field(
        default=None,
        max_length=1024,
        description=(
            "Password of an encrypted PDF. Not needed for PDFs that open without one (owner-password "
            "only). Never shown in the job body."
        ),
    )
    first_page: int = Field(
        default=1, ge=1, le=MAX_PAGE_NUMBER, description="First page to extract (1-based)."
    )
    last_page: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PAGE_NUMBER,
        description="Last page to extract (inclusive); default and values past the end: the last page.",
    )
    layout: bool = Field(
        default=False,
        description="Keep the page's visual layout (pypdf's 'layout' mode) instead of plain reading order.",
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> PdfTextParams:
        if self.last_page is not None and self.last_page < self.first_page:
            raise ValueError("last_page must not be less than first_page")
        return self


@contextmanager
def _pdf_errors() -> Iterator[None]:
    """Turn whatever pypdf raises on a bad file into a clean :class:`ProcessorError`."""
    try:
        yield
    except (ProcessorError, Cancelled, MemoryError):
        raise
    except pypdf.errors.DependencyError as exc:
        log.warning("pdf-text: missing dependency", exc_info=True)
        if "cryptography" in str(exc) or "AES" in str(exc):
            raise ProcessorError(
                "pdf_crypto_unavailable",
                "The PDF is encrypted with AES, and the server lacks the 'cryptography' package to "
                "decrypt it.",
            ) from None
        raise ProcessorError(
            "pdf_unsupported", "The PDF uses a feature that needs a library this server lacks."
        ) from None
    except pypdf.errors.FileNotDecryptedError:
        raise ProcessorError("pdf_encrypted", "The PDF is encrypted and could not be decrypted.") from None
    except pypdf.errors.LimitReachedError:
        log.warning("pdf-text: pypdf limit reached", exc_info=True)
        raise ProcessorError(
            "pdf_too_complex",
            "The PDF exceeds a safety limit of the PDF reader (too many or too deeply nested objects, "
            "or a stream too large once decompressed).",
        ) from None
    except Exception:  # pypdf's errors, and anything a hostile file trips inside pypdf
        log.warning("pdf-text: cannot read the PDF", exc_info=True)
        raise ProcessorError("pdf_invalid", INVALID_MESSAGE) from None


def header_version(path: Path) -> str | None:
    """The version in the ``%PDF-x.y`` header, looked for in the file's first bytes."""
    with open(path, "rb") as handle:
        match = _HEADER.search(handle.read(HEADER_BYTES))
    return match.group(1).decode("ascii") if match else None


def _clean(value: str) -> str | None:
    value = _CONTROL.sub("", value).strip()[:MAX_METADATA_CHARS]
    return value or None


def _info_text(info: Any, key: str) -> str | None:
    """A metadata entry when it is a plain text string; anything else (numbers, names, bytes that
    pypdf could not decode, dictionaries) is left out."""
    try:
        value = info.get(key)
        if isinstance(value, pypdf.generic.IndirectObject):
            value = value.get_object()
    except (Cancelled, MemoryError):
        raise
    except Exception:
        log.warning("pdf-text: unreadable metadata entry %s", key, exc_info=True)
        return None
    return _clean(str(value)) if isinstance(value, pypdf.generic.TextStringObject) else None


def parse_pdf_date(text: str | None) -> str | None:
    """A PDF date string (``D:20240131120000+01'00'``) as ISO 8601, or None when it is not one."""
    if not text:
        return None
    match = _PDF_DATE.fullmatch(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, sign, tz_hours, tz_minutes = match.groups()
    tzinfo: timezone | None = None
    if sign in ("Z", "z"):
        tzinfo = UTC
    elif sign:
        offset = timedelta(hours=int(tz_hours or 0), minutes=int(tz_minutes or 0))
        if offset >= timedelta(hours=24):
            return None
        tzinfo = timezone(-offset if sign == "-" else offset)
    try:
        moment = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=tzinfo,
        )
    except ValueError:
        return None
    return moment.isoformat()


def document_metadata(reader: PdfReader) -> dict[str, str | None]:
    """Title, author, ... as short plain strings; dates as ISO 8601. Never fails: what cannot be
    read is None."""
    result: dict[str, str | None] = dict.fromkeys((*_TEXT_FIELDS, *_DATE_FIELDS))
    try:
        info = reader.metadata
    except (Cancelled, MemoryError):
        raise
    except Exception:
        log.warning("pdf-text: unreadable document information", exc_info=True)
        return result
    if info is None:
        return result
    for name, key in _TEXT_FIELDS.items():
        result[name] = _info_text(info, key)
    for name, key in _DATE_FIELDS.items():
        result[name] = parse_pdf_date(_info_text(info, key))
    return result


def _decrypt(reader: PdfReader, password: str | None) -> None:
    """Open an encrypted PDF with ``password``, or with the empty password when none is given."""
    with _pdf_errors():
        outcome = reader.decrypt(password or "")
    if outcome != pypdf.PasswordType.NOT_DECRYPTED:
        return
    if password:
        raise ProcessorError("pdf_bad_password", "The password does not open this PDF.")
    raise ProcessorError(
        "pdf_encrypted",
        "The PDF is encrypted with a password; send it as the 'password' param to extract its text.",
    )


def _download_name(file_name: str) -> str:
    stem = Path(file_name).stem.strip() or "document"
    return f"{stem[:200]}.txt"


def _extract(
    ctx: Context,
    reader: PdfReader,
    first: int,
    last: int,
    page_count: int,
    mode: Literal["plain", "layout"],
) -> tuple[list[int], int]:
    """Write pages ``first..last`` (1-based) to the output file; their character counts and the number
    of pages without text (scans, blank pages)."""
    counts: list[int] = []
    empty_pages = 0
    total = last - first + 1
    path = ctx.output_dir / OUTPUT_NAME
    try:
        with open(path, "w", encoding="utf-8", errors="replace", newline="") as out:
            for number in range(first, last + 1):
                ctx.check_cancelled()
                with _pdf_errors():
                    text = reader.pages[number - 1].extract_text(extraction_mode=mode)
                text = text.replace(SEPARATOR, "\n")
                if counts:
                    out.write(SEPARATOR)
                out.write(text)
                counts.append(len(text))
                if not text.strip():
                    empty_pages += 1
                ctx.progress(len(counts) / total, f"page {number} of {page_count}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return counts, empty_pages


class PdfText(Processor):
    name = "pdf-text"
    version = "1"
    description = (
        "Extracts the text of a PDF page by page into a UTF-8 .txt file (pages separated by form feeds), "
        "with the page count, character counts and the document's metadata."
    )
    accepts = ("application/pdf",)
    Params = PdfTextParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, PdfTextParams)
        version = header_version(ctx.input_path)
        with open(ctx.input_path, "rb") as handle:
            with _pdf_errors():
                reader = pypdf.PdfReader(handle, strict=False)
                encrypted = reader.is_encrypted
            if encrypted:
                _decrypt(reader, params.password.get_secret_value() if params.password else None)
            with _pdf_errors():
                page_count = len(reader.pages)
            if page_count > ctx.limits.max_pdf_pages:
                raise ProcessorError(
                    "pdf_too_many_pages",
                    f"The PDF has {page_count} pages; at most {ctx.limits.max_pdf_pages} are accepted.",
                )
            if page_count and params.first_page > page_count:
                raise ProcessorError(
                    "pdf_page_out_of_range",
                    f"first_page is {params.first_page}, but the PDF has only {page_count} pages.",
                )
            first = params.first_page
            last = min(params.last_page or page_count, page_count)
            metadata = document_metadata(reader)
            mode: Literal["plain", "layout"] = "layout" if params.layout else "plain"
            counts, empty_pages = _extract(ctx, reader, first, last, page_count, mode)

        characters = sum(counts)
        return Output(
            result={
                "page_count": page_count,
                "first_page": first if last >= first else None,
                "last_page": last if last >= first else None,
                "pages_extracted": len(counts),
                "characters": characters,
                "page_characters": counts[:MAX_PAGE_LIST],
                "page_characters_truncated": len(counts) > MAX_PAGE_LIST,
                "empty_pages": empty_pages,
                "encrypted": encrypted,
                "pdf_version": version,
                "layout": params.layout,
                "metadata": metadata,
            },
            file=ctx.output_dir / OUTPUT_NAME,
            file_name=_download_name(ctx.file_name),
            content_type=CONTENT_TYPE,
        )
