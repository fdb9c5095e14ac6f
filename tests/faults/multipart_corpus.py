"""Hostile and malformed ``POST /v1/jobs`` requests, each named after the advisory it comes from.

Every :class:`Case` is a request head plus a body *generator* (a 20 MiB preamble is one 64 KiB
block yielded 320 times), what the client does with the connection (see
:data:`tests.faults.rawhttp.Mode`) and the answer the service must give. The shapes come from
the public advisories of the parsers this service is built on:

- python-multipart
  - CVE-2024-24762 / GHSA-2jv5-9r88-3w3p: ReDoS in ``parse_options_header`` (the Content-Type
    options), e.g. an unterminated quoted ``boundary="\\\\\\...``; fixed in 0.0.7.
  - CVE-2024-53981 / GHSA-59g5-xgcq-4qw3: CR/LF before the first boundary and bytes after the last
    one were skipped one byte at a time, each logged: a huge preamble/epilogue stalls the loop;
    fixed in 0.0.18.
  - CVE-2026-40347 / GHSA-mj87-hwqh-73pj: the same, CPU only: large preamble or epilogue data;
    fixed in 0.0.26 (skips to the next boundary candidate, discards the epilogue at once).
  - CVE-2026-42561 / GHSA-pp6c-gr5w-3c5g: no limit on the number of part headers nor on the size
    of one (many headers without ending the header block, or one huge header); fixed in 0.0.27.
  - CVE-2026-24486: path traversal through the client's filename (only with the non-default
    ``UPLOAD_DIR`` + ``UPLOAD_KEEP_FILENAME=True``); fixed in 0.0.22. Here: hostile filenames.
  - CVE-2026-53537: RFC 2231/5987 ``filename*=`` / ``name*=`` parameters decoded although RFC 7578
    §4.2 forbids them in form-data: a parser differential to smuggle a name; fixed in 0.0.30.
  - CVE-2026-53538 / GHSA-6jv3-5f52-599m and GHSA-5rvq-cxj2-64vf: ``;`` as a urlencoded field
    separator (smuggling; quadratic time); fixed in 0.0.30. Here: a urlencoded body must be 415.
  - CVE-2026-53540 / GHSA-v9pg-7xvm-68hf: a negative ``Content-Length`` turned ``parse_form``'s
    bounded read into read-to-EOF (the whole body in memory); fixed in 0.0.31.
- Starlette
  - CVE-2023-30798 / GHSA-74m5-2c7w-9w3x: any number of form fields or files (CPU, memory, OOM);
    fixed in 0.25.0 (``max_fields``/``max_files``).
  - CVE-2024-47874 / GHSA-f96h-pmfr-66vw: a form field without a filename was held in memory
    whatever its size; fixed in 0.40.0 (``max_part_size``).
  - CVE-2025-54121 / GHSA-2c2j-9gv5-cj73: rolling a large upload over from memory to disk blocked
    the event loop; fixed in 0.47.2. Here: large files written while others are served.
- HTTP/1.1 framing (RFC 9112 §6): lying, duplicated or conflicting lengths, truncated bodies.

The service answers all of these with ``application/problem+json``: the app itself, or, for a
request whose HTTP framing is invalid, the HTTP protocol before the app sees it (its 400
"Malformed HTTP request", ``layer="http"``; uvicorn's own answer there is a ``text/plain`` 400,
which ``filejobs.http_protocol`` replaces).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from tests.faults.rawhttp import Mode, chunked

KiB = 1024
MiB = 1024 * KiB
#: The file limit of the server the corpus is sent to (FILEJOBS_MAX_UPLOAD_BYTES): small enough
#: that a body over the whole-body limit streams in well under a second, large enough that the
#: 20 MiB preamble and epilogue cases are parsed to their end instead of being cut off.
MAX_UPLOAD_BYTES = 32 * MiB
MAX_FIELDS = 8  # the defaults of the other limits
MAX_FIELD_BYTES = 64 * KiB
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + MAX_FIELDS * MAX_FIELD_BYTES + 64 * KiB  # uploads.Limits
BIG = 20 * MiB
BLOCK = 64 * KiB

BOUNDARY = b"faultsuite-7e1c0b"
MULTIPART = b"multipart/form-data; boundary=" + BOUNDARY
DELIMITER = b"--" + BOUNDARY + b"\r\n"
CLOSE = b"--" + BOUNDARY + b"--\r\n"
#: The title of the HTTP protocol's answer to a request it cannot frame (llhttp refused it).
MALFORMED_HTTP_TITLE = "Malformed HTTP request"

Body = Callable[[], Iterator[bytes]]


# ---- body building blocks ---------------------------------------------------------------------


def repeat(pattern: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes of ``pattern`` repeated, as :data:`BLOCK`-sized chunks of one object."""
    block = (pattern * (BLOCK // len(pattern) + 1))[:BLOCK]
    full, rest = divmod(total, BLOCK)
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


def part_head(
    name: str | None = "file",
    *,
    filename: str | bytes | None = None,
    content_type: bytes | None = None,
    disposition: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    """The delimiter and headers of one part, up to its first content byte."""
    if disposition is None:
        disposition = b"form-data"
        if name is not None:
            disposition += b'; name="' + name.encode() + b'"'
        if filename is not None:
            raw = filename if isinstance(filename, bytes) else filename.encode("utf-8")
            disposition += b'; filename="' + raw + b'"'
    headers = b"Content-Disposition: " + disposition + b"\r\n" if disposition else b""
    if content_type is not None:
        headers += b"Content-Type: " + content_type + b"\r\n"
    return DELIMITER + headers + extra + b"\r\n"


def part(name: str | None, content: bytes, **kwargs: object) -> bytes:
    return part_head(name, **kwargs) + content + b"\r\n"  # type: ignore[arg-type]


def file_part(content: bytes = b"hello fault suite\n", filename: str | bytes = "a.txt") -> bytes:
    return part("file", content, filename=filename, content_type=b"text/plain")


def body_of(*pieces: bytes | Callable[[], Iterator[bytes]]) -> Body:
    """A body factory: fixed pieces and generator factories, in order."""

    def make() -> Iterator[bytes]:
        for piece in pieces:
            if isinstance(piece, bytes):
                yield piece
            else:
                yield from piece()

    return make


def size_of(body: Body) -> int:
    return sum(len(chunk) for chunk in body())


# ---- a case -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    #: The advisory (or RFC) the shape comes from.
    source: str
    body: Body
    #: Answers the service may give; empty when no answer is expected (the client hangs up).
    expect: frozenset[int]
    #: Request headers besides Host and the framing ones (Content-Length, Transfer-Encoding).
    headers: tuple[tuple[bytes, bytes], ...] = ((b"Content-Type", MULTIPART),)
    #: ``"auto"``: the body's real length. A ``bytes`` value is sent as-is (a lie). ``None``: none.
    content_length: Literal["auto"] | bytes | None = "auto"
    #: Send the body with Transfer-Encoding: chunked (no Content-Length).
    chunked: bool = False
    #: Further raw header lines, e.g. a second Content-Length.
    raw_headers: bytes = b""
    mode: Mode = "send"
    stop_after: int | None = None
    stall: float = 0.0
    #: Who answers (problem+json either way): the app, the HTTP protocol (a request it cannot
    #: frame: a 400 titled :data:`MALFORMED_HTTP_TITLE`), or either.
    layer: Literal["app", "http", "either"] = "app"
    #: A word the problem's ``detail`` must contain (case-insensitive).
    detail: str | None = None
    #: For an accepted upload (202): the display name the job must show.
    accepted_name: str | None = None
    #: Set when the service is known to answer otherwise: the test is a strict xfail saying why.
    known_bug: str | None = None
    #: Informational: "big" (MiB on the wire), "slow" (takes seconds by design).
    tags: frozenset[str] = field(default_factory=frozenset)

    def declared_length(self) -> bytes | None:
        if self.chunked:
            return None
        if self.content_length == "auto":
            return str(size_of(self.body)).encode()
        return self.content_length

    def head(self, host: bytes = b"127.0.0.1") -> bytes:
        lines = [b"POST /v1/jobs HTTP/1.1", b"Host: " + host, b"User-Agent: filejobs-fault-suite"]
        lines += [name + b": " + value for name, value in self.headers]
        length = self.declared_length()
        if length is not None:
            lines.append(b"Content-Length: " + length)
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        head = b"\r\n".join(lines) + b"\r\n" + self.raw_headers
        return head + b"\r\n"

    def wire_body(self) -> Iterator[bytes]:
        return iter(chunked(self.body())) if self.chunked else self.body()


def _empty() -> Iterator[bytes]:
    return iter(())


def _with_boundary(boundary: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"Content-Type", b"multipart/form-data; boundary=" + boundary),)


def _form_with(boundary: bytes) -> Body:
    delimiter = b"--" + boundary
    return body_of(
        delimiter + b'\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        b"hello\r\n" + delimiter + b"--\r\n"
    )


def _many_parts(count: int, make: Callable[[int], bytes], tail: bytes = CLOSE) -> Body:
    def body() -> Iterator[bytes]:
        batch: list[bytes] = []
        for index in range(count):
            batch.append(make(index))
            if len(batch) == 256:
                yield b"".join(batch)
                batch.clear()
        yield b"".join(batch) + tail

    return body


VALID_FORM = file_part() + CLOSE
NO_FILE_FORM = part("processor", b"inspect") + CLOSE

CORPUS: list[Case] = [
    # ---- preamble and epilogue ---------------------------------------------------------------
    # CVE-2024-53981 / GHSA-59g5-xgcq-4qw3 (each skipped CR/LF logged) and CVE-2026-40347 /
    # GHSA-mj87-hwqh-73pj (CPU): 20 MiB of CRLF before the first boundary. It is parsed to its end:
    # the form after it has no file, so the answer (422) proves the whole preamble went through.
    Case(
        "preamble-crlf-20mib",
        "CVE-2024-53981 GHSA-59g5-xgcq-4qw3; CVE-2026-40347",
        body_of(lambda: repeat(b"\r\n", BIG), NO_FILE_FORM),
        frozenset({422}),
        detail="no 'file' field",
        tags=frozenset({"big"}),
    ),
    # CVE-2026-40347: 20 MiB of junk (no CR/LF) before the first boundary: refused at its first byte.
    Case(
        "preamble-garbage-20mib",
        "CVE-2026-40347 GHSA-mj87-hwqh-73pj",
        body_of(lambda: repeat(b"junk-before-the-boundary ", BIG), VALID_FORM),
        frozenset({400}),
        detail="malformed",
        tags=frozenset({"big"}),
    ),
    # CVE-2026-40347: CR/LF runs, each ending in a boundary near-miss ("-" sends the old parser
    # back to boundary matching): refused at the first near-miss.
    Case(
        "preamble-crlf-near-miss-boundaries",
        "CVE-2026-40347 GHSA-mj87-hwqh-73pj",
        body_of(lambda: repeat(b"\r\n" * 31 + b"-", BIG), VALID_FORM),
        frozenset({400}),
        detail="malformed",
        tags=frozenset({"big"}),
    ),
    # CVE-2024-53981 (trailing bytes after the last boundary) / CVE-2026-40347 (epilogue): a closed
    # form followed by 20 MiB of epilogue, read to the end (the form has no file: 422).
    Case(
        "epilogue-20mib",
        "CVE-2024-53981 GHSA-59g5-xgcq-4qw3; CVE-2026-40347",
        body_of(NO_FILE_FORM, lambda: repeat(b"\r\nepilogue bytes after the closing boundary", BIG)),
        frozenset({422}),
        detail="no 'file' field",
        tags=frozenset({"big"}),
    ),
    # CVE-2026-40347, without Content-Length: a valid form, then an endless chunked epilogue. It
    # must be cut off at the whole-body limit (~32.6 MiB here), not read for ever.
    Case(
        "epilogue-endless-chunked",
        "CVE-2026-40347 GHSA-mj87-hwqh-73pj",
        body_of(VALID_FORM, lambda: repeat(b"\r\n-epilogue-", 2 * MAX_BODY_BYTES)),
        frozenset({413}),
        chunked=True,
        detail="larger than",
        tags=frozenset({"big"}),
    ),
    # ---- part headers ------------------------------------------------------------------------
    # CVE-2026-42561 / GHSA-pp6c-gr5w-3c5g: one part header value of 4 MiB with no CRLF.
    Case(
        "part-header-value-4mib",
        "CVE-2026-42561 GHSA-pp6c-gr5w-3c5g",
        body_of(part_head(filename="a.txt", extra=b"X-Runaway: "), lambda: repeat(b"v", 4 * MiB)),
        frozenset({400}),
        detail="header",
        tags=frozenset({"big"}),
    ),
    # CVE-2026-42561: a header *name* of 4 MiB (no colon, no CRLF).
    Case(
        "part-header-name-4mib",
        "CVE-2026-42561 GHSA-pp6c-gr5w-3c5g",
        body_of(DELIMITER, lambda: repeat(b"X-Runaway-Name", 4 * MiB)),
        frozenset({400}),
        detail="header",
        tags=frozenset({"big"}),
    ),
    # CVE-2026-42561: 10 000 header lines in one part, the header block never ended.
    Case(
        "part-headers-10000-lines",
        "CVE-2026-42561 GHSA-pp6c-gr5w-3c5g",
        body_of(
            DELIMITER + b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n',
            _many_parts(10_000, lambda i: b"X-Header-%d: value\r\n" % i, tail=b"\r\nx\r\n" + CLOSE),
        ),
        frozenset({400}),
        detail="header",
    ),
    # CVE-2026-42561: one Content-Disposition of 8 KiB + 1 (one byte over the part-header limit),
    # full of ';' (email.message's parameter parsing is what would pay for it).
    Case(
        "part-content-disposition-over-8kib",
        "CVE-2026-42561 GHSA-pp6c-gr5w-3c5g",
        body_of(
            part("file", b"x", disposition=b'form-data; name="file"; filename="a.txt"' + b";" * 8192) + CLOSE
        ),
        frozenset({400}),
        detail="header",
    ),
    # ---- too many parts ----------------------------------------------------------------------
    # Starlette CVE-2023-30798 / GHSA-74m5-2c7w-9w3x: 10 000 tiny (empty) form fields.
    Case(
        "parts-10000-tiny-fields",
        "Starlette CVE-2023-30798 GHSA-74m5-2c7w-9w3x",
        _many_parts(10_000, lambda i: part(f"f{i}", b"")),
        frozenset({413}),
        detail="too many form parts",
    ),
    # CVE-2023-30798 (too many files): 5 000 file parts all named "file".
    Case(
        "file-parts-5000-same-name",
        "Starlette CVE-2023-30798 GHSA-74m5-2c7w-9w3x",
        _many_parts(5_000, lambda i: file_part(b"", filename=f"f{i}.txt")),
        frozenset({422}),
        detail="exactly one file",
    ),
    # CVE-2023-30798 (too many files): 5 000 empty file parts under 5 000 names. A file under a
    # name other than 'file' is refused at its first part (issue 14, item 4).
    Case(
        "file-parts-5000-names",
        "Starlette CVE-2023-30798 GHSA-74m5-2c7w-9w3x",
        _many_parts(5_000, lambda i: part(f"file{i}", b"", filename=f"f{i}.txt")),
        frozenset({422}),
        detail="unknown form field(s): file0",
    ),
    # ---- big fields and files ----------------------------------------------------------------
    # Starlette CVE-2024-47874 / GHSA-f96h-pmfr-66vw: a form field (no filename) of 10 MiB, far
    # over FILEJOBS_MAX_FIELD_BYTES, before the file.
    Case(
        "field-10mib-before-file",
        "Starlette CVE-2024-47874 GHSA-f96h-pmfr-66vw",
        body_of(part_head("params"), lambda: repeat(b" ", 10 * MiB), b"\r\n" + VALID_FORM),
        frozenset({413}),
        detail="larger than 65536 bytes",
        tags=frozenset({"big"}),
    ),
    # CVE-2024-47874: the same field after a file of 3 MiB (which is on disk by then).
    Case(
        "field-10mib-after-file",
        "Starlette CVE-2024-47874 GHSA-f96h-pmfr-66vw",
        body_of(
            part_head(filename="big.bin", content_type=b"application/octet-stream"),
            lambda: repeat(b"\x00\x01file", 3 * MiB),
            b"\r\n" + part_head("processor"),
            lambda: repeat(b"p", 10 * MiB),
            b"\r\n" + CLOSE,
        ),
        frozenset({413}),
        detail="larger than 65536 bytes",
        tags=frozenset({"big"}),
    ),
    # Starlette CVE-2025-54121 / GHSA-2c2j-9gv5-cj73 (a large file going to disk blocked the
    # loop): a chunked file over FILEJOBS_MAX_UPLOAD_BYTES; ~32 MiB reach the disk, then 413.
    Case(
        "file-over-limit-chunked",
        "Starlette CVE-2025-54121 GHSA-2c2j-9gv5-cj73",
        body_of(
            part_head(filename="big.bin", content_type=b"application/octet-stream"),
            lambda: repeat(b"0123456789abcdef", MAX_UPLOAD_BYTES + MiB),
            b"\r\n" + CLOSE,
        ),
        frozenset({413}),
        chunked=True,
        detail="larger than the limit",
        tags=frozenset({"big"}),
    ),
    # ---- boundaries --------------------------------------------------------------------------
    # RFC 2046 §5.1.1 / Starlette GHSA-74m5 write-up: a file part whose closing delimiter never
    # comes (8 MiB of file, which is on disk by then, then the body ends).
    Case(
        "closing-boundary-never-appears",
        "RFC 2046 §5.1.1; Starlette CVE-2025-54121 (file on disk)",
        body_of(part_head(filename="a.bin"), lambda: repeat(b"\r\n--not-the-boundary\r\n", 8 * MiB)),
        frozenset({400}),
        detail="closing boundary",
        tags=frozenset({"big"}),
    ),
    # RFC 2046: the body is delimited by another boundary than the one declared.
    Case(
        "boundary-not-the-declared-one",
        "RFC 2046 §5.1.1",
        _form_with(b"some-other-boundary"),
        frozenset({400}),
        detail="malformed",
    ),
    # RFC 2046 §5.1.1 allows 1-70 characters; python-multipart refuses longer ones too.
    Case(
        "boundary-71-chars",
        "RFC 2046 §5.1.1",
        _form_with(b"b" * 71),
        frozenset({400}),
        headers=_with_boundary(b"b" * 71),
        detail="boundary",
    ),
    Case(
        "boundary-4kib",
        "RFC 2046 §5.1.1",
        _form_with(b"b" * 4096),
        frozenset({400}),
        headers=_with_boundary(b"b" * 4096),
        detail="boundary",
    ),
    Case(
        "boundary-empty",
        "RFC 2046 §5.1.1",
        body_of(VALID_FORM),
        frozenset({400}),
        headers=((b"Content-Type", b"multipart/form-data; boundary="),),
        detail="boundary",
    ),
    Case(
        "boundary-empty-quoted",
        "RFC 2046 §5.1.1",
        body_of(VALID_FORM),
        frozenset({400}),
        headers=((b"Content-Type", b'multipart/form-data; boundary=""'),),
        detail="boundary",
    ),
    Case(
        "boundary-missing",
        "RFC 7578 §4.1",
        body_of(VALID_FORM),
        frozenset({400}),
        headers=((b"Content-Type", b"multipart/form-data"),),
        detail="boundary",
    ),
    # A control character in the boundary: httptools refuses the header line itself.
    Case(
        "boundary-control-character",
        "RFC 2046 §5.1.1; RFC 9110 §5.5",
        _form_with(b"a\x01b"),
        frozenset({400}),
        headers=_with_boundary(b"a\x01b"),
        layer="http",
    ),
    # RFC 2046 §5.1.1 bchars are DIGIT ALPHA '()+_,-./:=? and space; "{}<>@" and latin-1 are not.
    Case(
        "boundary-illegal-characters",
        "RFC 2046 §5.1.1",
        _form_with(b"{a}<b>@\xe9"),
        frozenset({400}),
        headers=_with_boundary(b"{a}<b>@\xe9"),
        detail="boundary",
    ),
    # CVE-2024-24762 / GHSA-2jv5-9r88-3w3p, the published shape: an unterminated quoted boundary of
    # backslashes (catastrophic backtracking in the old options regex). 8 KiB of them (a header line
    # over MAX_HEADER_LINE_BYTES, 16 KiB, gets 431 from the server before the app sees it).
    Case(
        "content-type-redos-quoted-backslashes",
        "python-multipart CVE-2024-24762 GHSA-2jv5-9r88-3w3p",
        body_of(VALID_FORM),
        frozenset({400}),
        headers=((b"Content-Type", b'multipart/form-data; boundary="' + b"\\" * (8 * KiB) + b"a"),),
        detail="boundary",
    ),
    # CVE-2024-24762-shaped: a valid boundary and then 8 Ki ';' (one empty option each). A
    # Content-Type over 1 KiB is refused unparsed (service/filejobs/uploads.py MAX_CONTENT_TYPE).
    Case(
        "content-type-redos-semicolons",
        "python-multipart CVE-2024-24762 GHSA-2jv5-9r88-3w3p",
        _empty,
        frozenset({400}),
        headers=((b"Content-Type", MULTIPART + b"; " + b";" * (8 * KiB)),),
        detail="over 1024 characters",
    ),
    # CVE-2024-24762-shaped: options separated by long whitespace runs and unbalanced quotes.
    Case(
        "content-type-redos-whitespace-and-quotes",
        "python-multipart CVE-2024-24762 GHSA-2jv5-9r88-3w3p",
        _empty,
        frozenset({400}),
        headers=((b"Content-Type", MULTIPART + (b'; \t \t a="\\";' + b" \t" * 64) * 96),),
        detail="over 1024 characters",
    ),
    # ---- content types -----------------------------------------------------------------------
    Case(
        "content-type-missing",
        "RFC 7578 §4",
        body_of(VALID_FORM),
        frozenset({415}),
        headers=(),
        detail="multipart/form-data",
    ),
    Case(
        "content-type-json",
        "RFC 7578 §4",
        body_of(b'{"file": "aGVsbG8="}'),
        frozenset({415}),
        headers=((b"Content-Type", b"application/json"),),
        detail="application/json",
    ),
    # python-multipart GHSA-5rvq-cxj2-64vf / CVE-2026-53538 (';' in urlencoded bodies: quadratic,
    # smuggling): 4 MiB of ';'-separated fields must be refused from the header, not parsed.
    Case(
        "content-type-urlencoded-semicolons",
        "python-multipart GHSA-5rvq-cxj2-64vf; CVE-2026-53538 GHSA-6jv3-5f52-599m",
        body_of(lambda: repeat(b"a=1;", 4 * MiB)),
        frozenset({415}),
        headers=((b"Content-Type", b"application/x-www-form-urlencoded"),),
        detail="application/x-www-form-urlencoded",
        tags=frozenset({"big"}),
    ),
    Case(
        "content-type-multipart-mixed",
        "RFC 2046 §5.1.3",
        body_of(VALID_FORM),
        frozenset({415}),
        headers=((b"Content-Type", b"multipart/mixed; boundary=" + BOUNDARY),),
        detail="multipart/mixed",
    ),
    # ---- Content-Length and framing -----------------------------------------------------------
    # python-multipart CVE-2026-53540 / GHSA-v9pg-7xvm-68hf: a negative Content-Length.
    Case(
        "content-length-negative",
        "python-multipart CVE-2026-53540 GHSA-v9pg-7xvm-68hf",
        body_of(VALID_FORM),
        frozenset({400}),
        content_length=b"-1",
        layer="http",
    ),
    Case(
        "content-length-non-numeric",
        "RFC 9112 §6.3",
        body_of(VALID_FORM),
        frozenset({400}),
        content_length=b"12abc",
        layer="http",
    ),
    Case(
        "content-length-overflowing-int64",
        "RFC 9112 §6.3",
        body_of(VALID_FORM),
        frozenset({400}),
        content_length=b"9" * 40,
        layer="http",
    ),
    # Request smuggling shapes (RFC 9112 §6.3): two lengths, or a length and chunked.
    Case(
        "content-length-twice-differing",
        "RFC 9112 §6.3 (request smuggling)",
        body_of(VALID_FORM),
        frozenset({400}),
        raw_headers=b"Content-Length: 3\r\n",
        layer="http",
    ),
    Case(
        "content-length-and-chunked",
        "RFC 9112 §6.3 (request smuggling)",
        body_of(VALID_FORM),
        frozenset({400}),
        raw_headers=b"Transfer-Encoding: chunked\r\n",
        layer="http",
    ),
    # A body far over the limit, announced: refused from the header before a body byte is read
    # (413, not the free-disk check's 507 + Retry-After: a retry could never succeed).
    Case(
        "content-length-1pib-refused-before-reading",
        "Starlette CVE-2024-47874 / CVE-2025-54121 (refuse before storing)",
        _empty,
        frozenset({413}),
        content_length=str(1 << 50).encode(),
        mode="headers",
        detail="files may be at most",
    ),
    Case(
        "content-length-one-over-the-body-limit",
        "Starlette CVE-2024-47874 (refuse before storing)",
        _empty,
        frozenset({413}),
        content_length=str(MAX_BODY_BYTES + 1).encode(),
        mode="headers",
        detail="files may be at most",
    ),
    # Content-Length smaller than the body: the body is cut at the declared length (truncated
    # multipart: 400); what follows is the next "request" on the connection (ignored here).
    Case(
        "content-length-smaller-than-body",
        "RFC 9112 §6.3",
        body_of(file_part(b"0123456789" * 100) + CLOSE),
        frozenset({400}),
        content_length=b"300",
        # The app refuses the 300 bytes (400, no closing boundary); the bytes after them are a
        # broken next request, which the HTTP protocol refuses with its 400 and closes: whichever
        # is first.
        layer="either",
        detail="closing boundary",
    ),
    # Content-Length larger than the body, then EOF (shutdown SHUT_WR): the client is gone.
    Case(
        "content-length-larger-than-body-eof",
        "RFC 9112 §6.3",
        body_of(VALID_FORM),
        frozenset({400}),
        content_length=str(len(VALID_FORM) + 4096).encode(),
        mode="half-close",
    ),
    # Content-Length larger than the body and the client stalls with the connection open (with
    # 3 MiB of the file on disk): nothing is answered, others are served, and once the client
    # hangs up the temp file is gone.
    Case(
        "content-length-larger-than-body-stall",
        "RFC 9112 §6.3 (slow client)",
        body_of(part_head(filename="a.bin"), lambda: repeat(b"stalled!", 3 * MiB)),
        frozenset(),
        content_length=str(8 * MiB).encode(),
        mode="stall",
        stall=2.0,
        tags=frozenset({"slow"}),
    ),
    # The connection closed mid-part, after 6 MiB of the file (on disk by then).
    Case(
        "truncated-connection-closed-mid-file",
        "RFC 9112 §9.6 (incomplete message)",
        body_of(part_head(filename="a.bin"), lambda: repeat(b"truncate", 16 * MiB), b"\r\n" + CLOSE),
        frozenset(),
        mode="close",
        stop_after=6 * MiB,
        tags=frozenset({"big"}),
    ),
    # The connection closed inside the part headers.
    Case(
        "truncated-connection-closed-in-headers",
        "RFC 9112 §9.6 (incomplete message)",
        body_of(VALID_FORM),
        frozenset(),
        mode="close",
        stop_after=40,
    ),
    # ---- the parts' own headers --------------------------------------------------------------
    Case(
        "part-without-content-disposition",
        "RFC 7578 §4.2",
        body_of(part(None, b"hello", disposition=b"", content_type=b"text/plain") + CLOSE),
        frozenset({400}),
        detail="Content-Disposition",
    ),
    Case(
        "file-part-without-name",
        "RFC 7578 §4.2",
        body_of(part(None, b"hello", filename="a.txt") + CLOSE),
        frozenset({400}),
        detail="no name",
    ),
    # CVE-2026-53537 (RFC 2231 name*= decoded): a field named only through name*=UTF-8''file must
    # not become the file field.
    Case(
        "name-only-as-rfc2231",
        "python-multipart CVE-2026-53537",
        body_of(
            part(None, b"hello", disposition=b"form-data; name*=UTF-8''file; filename=\"a.txt\"") + CLOSE
        ),
        frozenset({400}),
        detail="no name",
    ),
    # RFC 7578 §4.3 (formerly RFC 2388): several files as a nested multipart/mixed part. Sent
    # under "files" as in RFC 2388's example: an unknown field, and no 'file' part.
    Case(
        "nested-multipart-mixed",
        "RFC 2388 §5.5 / RFC 7578 §4.3",
        body_of(
            part(
                "files",
                b'--inner-b\r\nContent-Disposition: file; filename="1.txt"\r\n\r\none\r\n'
                b'--inner-b\r\nContent-Disposition: file; filename="2.txt"\r\n\r\ntwo\r\n--inner-b--',
                content_type=b"multipart/mixed; boundary=inner-b",
            )
            + CLOSE
        ),
        frozenset({422}),
        detail="no 'file' field",
    ),
    # ---- hostile filenames: accepted, but only as display names ------------------------------
    # python-multipart CVE-2026-24486 (a client filename used as a path).
    Case(
        "filename-path-traversal",
        "python-multipart CVE-2026-24486",
        body_of(file_part(filename="../../../../etc/passwd") + CLOSE),
        frozenset({202}),
        accepted_name="passwd",
    ),
    Case(
        "filename-nul-filled",
        "python-multipart CVE-2026-24486 (names as paths); CWE-158",
        body_of(file_part(filename=b"\x00" * 300) + CLOSE),
        frozenset({202}),
        accepted_name="upload",
    ),
    Case(
        "filename-nul-truncation",
        "CWE-158 (NUL byte truncation: 'x.txt\\0.php')",
        body_of(file_part(filename=b"../x.txt\x00../../evil.php") + CLOSE),
        frozenset({202}),
        accepted_name="evil.php",
    ),
    # CVE-2026-53537: filename*= with invalid percent escapes and a traversal.
    Case(
        "filename-rfc2231-invalid-escapes",
        "python-multipart CVE-2026-53537",
        body_of(
            part("file", b"x", disposition=b"form-data; name=\"file\"; filename*=UTF-8''%ZZ%FF%2e%2e%2fx")
            + CLOSE
        ),
        frozenset({202}),
        accepted_name="x",
    ),
    Case(
        "filename-rfc2231-unknown-charset",
        "python-multipart CVE-2026-53537",
        body_of(
            part("file", b"x", disposition=b"form-data; name=\"file\"; filename*=x-no-such''abc%41") + CLOSE
        ),
        frozenset({202}),
        accepted_name="abcA",
    ),
    Case(
        "filename-rfc2231-truncated-utf8",
        "python-multipart CVE-2026-53537",
        body_of(
            part("file", b"x", disposition=b"form-data; name=\"file\"; filename*=UTF-8''a%E2%82") + CLOSE
        ),
        frozenset({202}),
        accepted_name="a\ufffd",
    ),
    Case(
        "filename-rfc2231-overlong-utf8-dots",
        "python-multipart CVE-2026-53537 (overlong UTF-8 '../')",
        body_of(
            part(
                "file",
                b"x",
                disposition=b"form-data; name=\"file\"; filename*=UTF-8''%C0%AE%C0%AE%C0%AFpasswd",
            )
            + CLOSE
        ),
        frozenset({202}),
        accepted_name="\ufffd" * 6 + "passwd",
    ),
    Case(
        "filename-rfc2231-continuations",
        "python-multipart CVE-2026-53537 (filename*0/filename*1 continuations)",
        body_of(
            part(
                "file",
                b"x",
                disposition=b"form-data; name=\"file\"; filename*0*=UTF-8''%2e%2e; filename*1=%2fetc; "
                b"filename*2=/shadow",
            )
            + CLOSE
        ),
        frozenset({202}),
        accepted_name="shadow",
    ),
]

BY_NAME = {case.name: case for case in CORPUS}
assert len(BY_NAME) == len(CORPUS), "case names must be unique"
