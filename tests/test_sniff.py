"""Unit tests of filejobs.sniff on real bytes: the type comes from content, never from names."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import puremagic
import pytest
from puremagic import main as pm

from filejobs import magic
from filejobs.sniff import OCTET, SNIFF_BYTES, looks_binary, sniff, text_encoding


def png_bytes() -> bytes:
    """A valid 1x1 greyscale PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes() -> bytes:
    """SOI + JFIF APP0 segment + EOI: the start of every JFIF file."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\x00" * 32 + b"\xff\xd9"


def gif_bytes(version: bytes = b"89a") -> bytes:
    return b"GIF" + version + b"\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00;"


def pdf_bytes() -> bytes:
    return (
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
        b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("hello.txt", "hello " * 100)
        archive.writestr("data/numbers.csv", "a,b\n1,2\n")
    return buffer.getvalue()


def random_bytes(size: int = 4096, *, seed: int = 1234, nul: bool = True) -> bytes:
    data = random.Random(seed).randbytes(size * 2)
    if not nul:
        data = data.replace(b"\x00", b"")
    return data[:size]


# ---- sniff: binary formats ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (png_bytes(), "image/png"),
        (jpeg_bytes(), "image/jpeg"),
        (gif_bytes(b"89a"), "image/gif"),
        (gif_bytes(b"87a"), "image/gif"),
        (pdf_bytes(), "application/pdf"),
        (zip_bytes(), "application/zip"),
    ],
    ids=["png", "jpeg", "gif89a", "gif87a", "pdf", "zip"],
)
def test_sniff_binary_formats_by_magic(sample: bytes, expected: str) -> None:
    assert sniff(sample) == expected


def test_sniff_gzip_is_a_gzip_type() -> None:
    assert sniff(gzip.compress(b"hello world")) in {"application/gzip", "application/x-gzip"}


def test_sniff_binary_magic_with_trailing_garbage_still_matches() -> None:
    # Only the first bytes matter: a PNG signature followed by noise is still reported as PNG.
    assert sniff(png_bytes() + random_bytes(1000)) == "image/png"


def test_sniff_random_binary_is_octet_stream() -> None:
    assert sniff(random_bytes()) == OCTET == "application/octet-stream"


def test_sniff_random_binary_without_nul_bytes_is_octet_stream() -> None:
    sample = random_bytes(nul=False)
    assert b"\x00" not in sample
    assert sniff(sample) == OCTET


def test_sniff_text_with_a_nul_byte_is_binary() -> None:
    assert sniff(b"hello\x00world, this is mostly text\n") == OCTET


def test_sniff_empty_is_x_empty() -> None:
    assert sniff(b"") == "application/x-empty"


# ---- sniff: text formats --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (b'{"name": "report", "pages": [1, 2, 3], "ok": true, "x": null}', "application/json"),
        (b"[1, 2, 3]\n", "application/json"),
        (b'  \n\t{"indented": 1}\n', "application/json"),
        (b'\xef\xbb\xbf{"bom": 1}', "application/json"),
        (b"id,name,score\n1,ann,3\n2,bob,5\n", "text/csv"),
        (b"id;name;score\n1;ann;3\n2;bob;5\n", "text/csv"),
        (b"id\tname\tscore\n1\tann\t3\n2\tbob\t5\n", "text/tab-separated-values"),
        (b'<?xml version="1.0" encoding="utf-8"?>\n<root><item>1</item></root>\n', "application/xml"),
        (b'\xef\xbb\xbf<?xml version="1.0"?><root/>', "application/xml"),
        (b"<!DOCTYPE html>\n<html><body>hi</body></html>\n", "text/html"),
        (b"<html><head></head><body>hi</body></html>", "text/html"),
        (b"hello world\n", "text/plain"),
        ("naïve café — ünïcödé\n".encode(), "text/plain"),
        (b"\xef\xbb\xbfwith a utf-8 bom\n", "text/plain"),
    ],
    ids=[
        "json-object",
        "json-array",
        "json-leading-whitespace",
        "json-bom",
        "csv-comma",
        "csv-semicolon",
        "tsv",
        "xml",
        "xml-bom",
        "html-doctype",
        "html",
        "ascii",
        "utf8",
        "utf8-bom",
    ],
)
def test_sniff_text_formats(sample: bytes, expected: str) -> None:
    assert sniff(sample) == expected


def test_sniff_csv_ignores_a_last_line_cut_by_the_sample() -> None:
    rows = b"id,name,score\n" + b"".join(b"%d,name%d,%d\n" % (i, i, i * 3) for i in range(20000))
    assert len(rows) > SNIFF_BYTES
    assert sniff(rows[:SNIFF_BYTES]) == "text/csv"
    assert sniff(b"a,b,c\n1,2,3\n4,5") == "text/csv"


@pytest.mark.parametrize(
    "sample",
    [
        b"a,b,c",  # one line is not a table
        b"one, two\nthree four five\n",  # inconsistent column counts
        b"Hello, world.\nGoodbye.\n",  # the complete last line counts too
        b"a,b\n1,2\n3\n",
        b"[INFO] started\n[WARN] disk at 80%\n",  # starts with "[" but is not JSON
        b"hello\nworld\n",
    ],
)
def test_sniff_plain_text_that_only_resembles_structure(sample: bytes) -> None:
    assert sniff(sample) == "text/plain"


@pytest.mark.parametrize(
    "sample",
    [b"[" * 5000 + b"]" * 5000, b"[" + b"7" * 5000 + b"]"],
    ids=["nested-5000-deep", "integer-of-5000-digits"],
)
def test_sniff_json_that_json_loads_fails_on_is_text_not_a_crash(sample: bytes) -> None:
    """Valid JSON that makes ``json.loads`` raise RecursionError or ValueError (an upload's
    content, so a client's) is sniffed as text instead of failing the upload with a 500."""
    assert sniff(sample) == "text/plain"


def test_sniff_ignores_what_a_name_or_header_would_claim() -> None:
    # There is no name argument at all: identical bytes give identical answers.
    assert sniff(png_bytes()) == sniff(bytes(png_bytes())) == "image/png"
    assert sniff(b"just text, honestly\nno really, it is\n") != "image/png"


def test_sniff_utf16_text_with_bom_is_text_not_binary() -> None:
    for sample in (
        "hello, world\nsecond line\n".encode("utf-16"),  # BOM + native order
        b"\xff\xfe" + "little endian text\n".encode("utf-16-le"),
        b"\xfe\xff" + "big endian text\n".encode("utf-16-be"),
    ):
        assert b"\x00" in sample
        assert sniff(sample).startswith("text/")


def test_sniff_latin1_text_is_plain_text() -> None:
    sample = "Le cœur a ses raisons. Café crème et déjà vu. À bientôt, garçon!\n".encode("cp1252")
    sample += "Une deuxième ligne sans virgule: très simple.\n".encode("cp1252")
    assert b"\xe9" in sample  # latin-1, not UTF-8
    assert sniff(sample) == "text/plain"


# ---- looks_binary ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample",
    [png_bytes(), jpeg_bytes(), zip_bytes(), gzip.compress(b"x" * 100), random_bytes(), b"text\x00with nul"],
    ids=["png", "jpeg", "zip", "gzip", "random", "nul"],
)
def test_looks_binary_true(sample: bytes) -> None:
    assert looks_binary(sample) is True


@pytest.mark.parametrize(
    "sample",
    [
        b"",
        b"hello world\n",
        "ünïcödé — text\n".encode(),
        b'{"a": 1}',
        "Café crème brûlée à la carte\n".encode("latin-1") * 3,
        "utf-16 text\n".encode("utf-16"),
        b"\xfe\xff" + "big endian\n".encode("utf-16-be"),
    ],
    ids=["empty", "ascii", "utf8", "json", "latin1", "utf16-le-bom", "utf16-be-bom"],
)
def test_looks_binary_false(sample: bytes) -> None:
    assert looks_binary(sample) is False


# ---- text_encoding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (b"plain ascii\n", "utf-8"),
        ("déjà vu — €\n".encode(), "utf-8"),
        (b"\xef\xbb\xbfbom first\n", "utf-8-sig"),
        ("with bom\n".encode("utf-16"), "utf-16"),
        (b"\xff\xfe" + "le\n".encode("utf-16-le"), "utf-16"),
        (b"\xfe\xff" + "be\n".encode("utf-16-be"), "utf-16"),
        (b"", "utf-8"),
    ],
    ids=["ascii", "utf8", "utf8-bom", "utf16", "utf16-le", "utf16-be", "empty"],
)
def test_text_encoding_known(sample: bytes, expected: str) -> None:
    assert text_encoding(sample) == expected


def test_text_encoding_accepts_a_multibyte_character_cut_by_the_sample_end() -> None:
    text = ("x" * 100 + "€").encode()
    for cut in (1, 2):
        assert text_encoding(text[:-cut]) == "utf-8"


def test_text_encoding_rejects_invalid_utf8_in_the_middle_as_utf8() -> None:
    # An invalid byte in the middle is not "cut off by the sample": some other guess, never utf-8.
    assert text_encoding(b"abc\xffdef" * 20) != "utf-8"


def test_text_encoding_of_latin1_text_is_a_single_byte_guess_that_decodes_it() -> None:
    sample = "Café crème brûlée, déjà vu. Les élèves étaient très fâchés.\n".encode("latin-1") * 3
    encoding = text_encoding(sample)
    assert encoding is not None
    assert encoding.replace("_", "-").lower() not in {"utf-8", "utf-8-sig", "utf-16", "ascii"}
    decoded = sample.decode(encoding)
    assert "Caf" in decoded
    assert "vu." in decoded
    assert len(decoded) == len(sample)  # one byte per character


def test_text_encoding_of_binary_is_none() -> None:
    assert text_encoding(png_bytes()) is None
    assert text_encoding(zip_bytes()) is None
    assert text_encoding(random_bytes()) is None


def test_sniff_results_are_stable_for_a_large_sample() -> None:
    sample = json.dumps({f"key{i}": i for i in range(20000)}).encode()[:SNIFF_BYTES]
    assert len(sample) == SNIFF_BYTES
    # A truncated JSON object is still reported as JSON (it is the start of one), and deterministically.
    first = sniff(sample)
    assert first == "application/json"
    assert all(sniff(sample) == first for _ in range(3))


# ---- the indexed puremagic (filejobs.magic) ------------------------------------------------------


def _described(sample: bytes, find: Callable[[bytes], list[Any]]) -> list[tuple[Any, ...]] | str:
    try:
        return [(m.mime_type, m.extension, m.confidence, m.byte_match, m.name) for m in find(sample)]
    except puremagic.PureError:
        return "no match"


def _signature_samples() -> Iterator[bytes]:
    """Each header and multi-part signature puremagic knows, at its offset, after zeros and after
    text, followed by random bytes; then random samples of many sizes."""
    rng = random.Random(7)
    rows = list(pm.magic_header_array) + [r for rows in pm.multi_part_dict.values() for r in rows]
    for row in rows:
        if row.offset >= 0:
            for fill in (b"\0", b"A"):
                yield fill * row.offset + row.byte_match + rng.randbytes(64)
    for size in (1, 2, 3, 8, 100, 1024, 5000, 70_000):
        yield rng.randbytes(size)


def test_indexed_magic_agrees_with_puremagic_on_every_signature() -> None:
    checked = 0
    for sample in _signature_samples():
        assert _described(sample, magic.magic_string) == _described(sample, puremagic.magic_string)
        checked += 1
    assert checked > 2000


def test_indexed_magic_refuses_empty_input_like_puremagic() -> None:
    with pytest.raises(ValueError, match="empty"):
        magic.magic_string(b"")
