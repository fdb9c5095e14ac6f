"""Unit tests of filejobs.filenames: display names and Content-Disposition parsing."""

from __future__ import annotations

import random
import unicodedata

import pytest

from filejobs.filenames import (
    FALLBACK,
    MAX_NAME_BYTES,
    decode_filename,
    display_name,
    parse_content_disposition,
)

# ---- display_name -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("résumé 2024 \u2013 final.pdf", "résumé 2024 \u2013 final.pdf"),
        ("日本語のファイル.txt", "日本語のファイル.txt"),
        ("📄 notes.md", "📄 notes.md"),
        ("archive.tar.gz", "archive.tar.gz"),
        ("  padded name.txt  ", "padded name.txt"),
    ],
)
def test_ordinary_names_are_kept(raw: str, expected: str) -> None:
    assert display_name(raw) == expected


@pytest.mark.parametrize(
    "raw", [None, "", " ", "   \t  ", ".", "..", "/", "\\", "../..", "dir/", "C:\\", "\u202e"]
)
def test_names_with_nothing_left_fall_back_to_upload(raw: str | None) -> None:
    assert display_name(raw) == FALLBACK == "upload"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("a/b/c/d.txt", "d.txt"),
        ("C:\\x\\y.txt", "y.txt"),
        ("..\\..\\windows\\system32\\boot.ini", "boot.ini"),
        ("\\\\server\\share\\doc.docx", "doc.docx"),
        ("mixed/sep\\arators.txt", "arators.txt"),
        ("./hidden/.env", ".env"),
    ],
)
def test_only_the_last_path_component_is_kept(raw: str, expected: str) -> None:
    name = display_name(raw)
    assert name == expected
    assert "/" not in name
    assert "\\" not in name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b.txt", "ab.txt"),
        ("bell\x07.txt", "bell.txt"),
        ("\x1b[31mred\x1b[0m.txt", "[31mred[0m.txt"),
        ("line\r\nbreak.txt", "linebreak.txt"),
        ("tab\there.txt", "tabhere.txt"),
        ("del\x7f.txt", "del.txt"),
        ("c1\x85\x9b.txt", "c1.txt"),
    ],
)
def test_control_characters_are_dropped(raw: str, expected: str) -> None:
    assert display_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # RIGHT-TO-LEFT OVERRIDE: "invoice\u202efdp.exe" displays as "invoiceexe.pdf".
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("\u202a\u202b\u202c\u202d\u202ex.txt", "x.txt"),
        ("\u2066\u2067\u2068x\u2069.txt", "x.txt"),
        ("\u200e\u200fx.txt", "x.txt"),  # LRM / RLM marks
        ("zero\u200bwidth\u200d.txt", "zerowidth.txt"),
        ("\ufeffbom.txt", "bom.txt"),
    ],
)
def test_bidi_and_invisible_format_characters_are_dropped(raw: str, expected: str) -> None:
    assert display_name(raw) == expected


def test_surrogates_private_use_and_unassigned_are_dropped() -> None:
    # A lone surrogate is what a surrogateescape-decoded invalid byte looks like.
    assert display_name("\udc80a.txt") == "a.txt"
    assert display_name("\ue000b\U000f0000.txt") == "b.txt"
    assert unicodedata.category("\u0378") == "Cn"
    assert display_name("c\u0378.txt") == "c.txt"


def test_names_are_nfc_normalised() -> None:
    decomposed = "cafe\u0301.txt"
    assert display_name(decomposed) == "caf\u00e9.txt"
    assert unicodedata.is_normalized("NFC", display_name(decomposed))


def test_a_name_of_exactly_the_limit_is_kept() -> None:
    name = "x" * (MAX_NAME_BYTES - 4) + ".txt"
    assert len(name.encode()) == MAX_NAME_BYTES == 255
    assert display_name(name) == name


@pytest.mark.parametrize("length", [256, 300, 4096])
def test_long_ascii_names_are_cut_at_255_bytes(length: int) -> None:
    assert display_name("x" * length) == "x" * 255


def test_long_multibyte_names_are_cut_on_a_character_boundary() -> None:
    # "€" is 3 bytes in UTF-8: 100 of them are 300 bytes; 85 fit in 255.
    assert display_name("€" * 100) == "€" * 85
    # With one ASCII byte in front, 84 euros (253 bytes) fit and the split character is dropped.
    cut = display_name("a" + "€" * 100)
    assert cut == "a" + "€" * 84
    assert len(cut.encode("utf-8")) == 253
    # Four-byte characters.
    emoji = display_name("😀" * 70)  # 280 bytes
    assert emoji == "😀" * 63
    assert len(emoji.encode("utf-8")) == 252


def test_cut_names_lose_trailing_whitespace() -> None:
    raw = "x" * 254 + " " + "y" * 10
    assert display_name(raw) == "x" * 254


def test_display_names_keep_their_invariants_on_arbitrary_input() -> None:
    rng = random.Random(20240601)
    alphabet = (
        [chr(c) for c in range(0x00, 0x80)]
        + ["/", "\\", ".", " ", "\u202e", "\u2066", "\u200b", "\ufeff", "\udc80", "\ue000", "\u0378"]
        + ["é", "€", "日", "😀", "e\u0301", "\x85", "\x9b"]
    )
    for _ in range(2000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        name = display_name(raw)
        assert name, raw
        assert name == name.strip()
        assert "/" not in name
        assert "\\" not in name
        assert name not in (".", "..")
        assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
        assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in name), raw
        # Sanitising is idempotent.
        assert display_name(name) == name


# ---- parse_content_disposition ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('form-data; name="file"; filename="a.txt"', ("file", "a.txt")),
        ('form-data; name="processor"', ("processor", None)),
        ("form-data; name=file; filename=a.txt", ("file", "a.txt")),
        ('form-data; name="file"; filename="a b;c.txt"', ("file", "a b;c.txt")),
        ('form-data; name="file"; filename="a\\"b.txt"', ("file", 'a"b.txt')),
        ('form-data; name="file"; filename="C:\\\\x\\\\y.txt"', ("file", "C:\\x\\y.txt")),
        ('Form-Data; NAME="file"; FILENAME="a.txt"', ("file", "a.txt")),
        ('form-data; name="file"; filename=""', ("file", "")),
        ('form-data; filename="a.txt"', (None, "a.txt")),
        ("form-data", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_plain_parameters(value: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_content_disposition(value) == expected


def test_parse_leaves_paths_to_display_name() -> None:
    name, filename = parse_content_disposition('form-data; name="file"; filename="../../etc/passwd"')
    assert (name, filename) == ("file", "../../etc/passwd")
    assert display_name(filename) == "passwd"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.txt", "€.txt"),
        ("form-data; name=\"file\"; filename*=utf-8''r%C3%A9sum%C3%A9.pdf", "résumé.pdf"),
        ("form-data; name=\"file\"; filename*=UTF-8'en'%E2%82%AC%20rates.csv", "€ rates.csv"),
        ("form-data; name=\"file\"; filename*=ISO-8859-1''%E9t%E9.txt", "été.txt"),
        ('form-data; name="file"; filename*0="abc"; filename*1="def.txt"', "abcdef.txt"),
    ],
)
def test_parse_rfc2231_filenames(value: str, expected: str) -> None:
    assert parse_content_disposition(value) == ("file", expected)


@pytest.mark.parametrize(
    "value",
    [
        'form-data; name="file"; filename="EUR.txt"; filename*=UTF-8\'\'%E2%82%AC.txt',
        'form-data; name="file"; filename*=UTF-8\'\'%E2%82%AC.txt; filename="EUR.txt"',
    ],
)
def test_filename_star_wins_over_the_plain_fallback(value: str) -> None:
    # RFC 6266 section 4.3: when both are present, filename* is used and filename ignored.
    assert parse_content_disposition(value) == ("file", "€.txt")


def test_rfc2231_filename_with_invalid_utf8_is_replaced_not_raised() -> None:
    name, filename = parse_content_disposition("form-data; name=\"file\"; filename*=UTF-8''%FF%FEx.txt")
    assert name == "file"
    assert filename == "\ufffd\ufffdx.txt"
    assert display_name(filename) == "\ufffd\ufffdx.txt"


def test_rfc2231_encoded_control_characters_and_paths_are_cleaned_by_display_name() -> None:
    _, filename = parse_content_disposition(
        "form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fa%00b%0A%E2%80%AE.txt"
    )
    assert filename == "../../a\x00b\n\u202e.txt"
    assert display_name(filename) == "ab.txt"


@pytest.mark.parametrize(
    "value",
    [
        'form-data; name="file"; filename="report.pdf"',
        'form-data; name="file"; filename="a b (1) [x] {y} ~!@#$%^&*.txt"',
        'form-data; name="file"; filename=""',
        'form-data; name="processor"',
        'form-data; name="params"',
        'form-data; name="file"; filename="..\\\\..\\\\evil"',  # backslashes: the general path
        "form-data; name=\"file\"; filename*=UTF-8''na%C3%AFve.txt",
        'form-data; name="file"; filename="x.txt"; filename*=UTF-8\'\'y.txt',
        "form-data; name=file; filename=plain.txt",
    ],
)
def test_the_simple_header_fast_path_agrees_with_the_email_package(value: str) -> None:
    from email.message import Message

    from filejobs.filenames import _SIMPLE

    message = Message()
    message["content-disposition"] = value
    parsed = parse_content_disposition(value)
    if _SIMPLE.fullmatch(value):
        assert parsed == (message.get_param("name", header="content-disposition"), message.get_filename())
    assert parsed[0] in ("file", "processor", "params")


# ---- percent-encoded plain filenames (item 11 of issue 14) --------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("caf%C3%A9.txt", "café.txt"),  # aiohttp: every byte outside the unreserved set
        ("100%25%20done.txt", "100% done.txt"),  # aiohttp's literal '%'
        ("say %22hi%22.txt", 'say "hi".txt'),  # WHATWG: '"' as %22
        ("a%0D%0Ab.txt", "a\r\nb.txt"),  # WHATWG: CR and LF (display_name drops them)
        ("%e2%82%ac.txt", "€.txt"),  # lowercase hex
        ("100%.txt", "100%.txt"),  # a '%' that starts no escape stays
        ("50%off.txt", "50%off.txt"),
        ("%", "%"),
        ("a%2", "a%2"),
        ("%FF.txt", "%FF.txt"),  # not UTF-8: the escape stays
        ("%C3.txt", "%C3.txt"),  # a truncated sequence stays
        ("%C3%A9%FF%41.txt", "é%FFA.txt"),  # valid parts of a run decode, the rest stays
        ("résumé 100%.txt", "résumé 100%.txt"),  # curl: raw UTF-8 with a literal '%'
        ("plain.txt", "plain.txt"),
    ],
)
def test_decode_filename(raw: str, expected: str) -> None:
    assert decode_filename(raw) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('form-data; name="file"; filename="caf%C3%A9.txt"', "café.txt"),
        ('form-data; name="file"; filename="say %22hi%22.txt"', 'say "hi".txt'),
        ('form-data; name="file"; filename="résumé 100%.txt"', "résumé 100%.txt"),
        ('form-data; name="file"; filename="a\\"%41.txt"', 'a"A.txt'),  # the email package's path
        # filename* is decoded by RFC 5987 rules once, never a second time.
        ("form-data; name=\"file\"; filename*=UTF-8''100%2525.txt", "100%25.txt"),
        ('form-data; name="file"; filename="x%41.txt"; filename*=UTF-8\'\'y.txt', "y.txt"),
    ],
)
def test_parse_decodes_percent_encoded_plain_filenames(value: str, expected: str) -> None:
    assert parse_content_disposition(value) == ("file", expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
        ("x" * 300 + ".tar.gz", "x" * 248 + ".tar.gz"),
        ("é" * 200 + ".txt", "é" * 125 + ".txt"),  # cut on a character boundary before the extension
        ("x" * 300 + "." + "e" * 40, "x" * 255),  # no extension that long: a plain cut
        ("x" * 250 + " " * 10 + ".md", "x" * 250 + ".md"),  # the cut stem loses trailing spaces
    ],
)
def test_long_names_keep_their_extension(raw: str, expected: str) -> None:
    name = display_name(raw)
    assert name == expected
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert display_name(name) == name
