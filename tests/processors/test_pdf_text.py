"""pdf-text on real PDFs made here (reportlab; pypdf encrypts them), run directly and through the API."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pypdf._encryption
import pytest
import reportlab
from fastapi.testclient import TestClient
from pypdf import PdfReader, PdfWriter
from pypdf._crypt_providers import _fallback
from pypdf.errors import DependencyError
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.worker import LocalWorker
from filejobs.processors import pdf_text
from filejobs.processors.base import Cancelled, Context, Limits, Output, ProcessorError
from filejobs.processors.pdf_text import (
    CONTENT_TYPE,
    MAX_METADATA_CHARS,
    OUTPUT_NAME,
    PdfText,
    PdfTextParams,
    parse_pdf_date,
)
from filejobs.services import Services
from filejobs.testing import post_file, submit
from tests.conftest import burst_worker, make_settings
from tests.test_sniff import png_bytes

PAGES = [
    ["alpha apple first", "second line of page one"],
    ["bravo banana middle"],
    ["charlie cherry last", "closing words"],
]
Run = Callable[..., tuple[Output, str]]  # the ``run`` fixture
UNICODE_LINE = "Grüße aus Köln: café, naïve, Œuvre, “quotes”, € 5, Ωmega Łódz"


# ---- making PDFs ------------------------------------------------------------------------------


def make_pdf(
    pages: list[list[str]] = PAGES,
    *,
    title: str = "Quarterly Report",
    author: str = "Ada Lovelace",
    subject: str = "Numbers",
    creator: str = "filejobs tests",
    font: str = "Helvetica",
) -> bytes:
    """A PDF with one page per item of ``pages``, each line drawn on its own row (no line: empty page)."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, invariant=True)  # invariant: fixed dates and ids, byte-for-byte repeatable
    pdf.setTitle(title)
    pdf.setAuthor(author)
    pdf.setSubject(subject)
    pdf.setCreator(creator)
    for lines in pages:
        pdf.setFont(font, 12)
        for row, line in enumerate(lines):
            pdf.drawString(72, 720 - 20 * row, line)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def unicode_font() -> str:
    """Bitstream Vera, shipped inside reportlab: a TrueType font covering the accents used here."""
    if "Vera" not in pdfmetrics.getRegisteredFontNames():
        path = Path(reportlab.__file__).parent / "fonts" / "Vera.ttf"
        pdfmetrics.registerFont(TTFont("Vera", str(path)))
    return "Vera"


def encrypt(data: bytes, *, user: str, owner: str | None = None, algorithm: str = "AES-256") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user, owner_password=owner, algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def with_metadata(data: bytes, metadata: dict[str, Any]) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.add_metadata(metadata)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def raw_pdf(*objects: bytes, info: bytes | None = None) -> bytes:
    """A hand-written PDF: object ``i`` is ``objects[i-1]``, object 1 is the catalog; ``info`` is the
    document information dictionary."""
    if info is not None:
        objects = (*objects, info)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    info_ref = b" /Info %d 0 R" % len(objects) if info is not None else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info_ref,
        xref,
    )
    return bytes(out)


EMPTY_DOCUMENT = (b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>")


# ---- running the processor directly ----------------------------------------------------------


class Recorder:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.calls: list[tuple[float, str | None]] = []
        self.cancel_after = cancel_after

    def progress(self, fraction: float, message: str | None) -> None:
        self.calls.append((fraction, message))

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.calls) >= self.cancel_after


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``run(pdf_bytes, **params)`` → (output, text of the output file)."""
    count = 0

    def runner(
        data: bytes,
        *,
        limits: Limits | None = None,
        recorder: Recorder | None = None,
        file_name: str = "report.pdf",
        **params: Any,
    ) -> tuple[Output, str]:
        nonlocal count
        count += 1
        base = tmp_path / f"run{count}"
        (base / "out").mkdir(parents=True)
        (base / "input").write_bytes(data)
        recorder = recorder or Recorder()
        ctx = Context(
            input_path=base / "input",
            output_dir=base / "out",
            file_name=file_name,
            content_type="application/pdf",
            progress=recorder.progress,
            cancelled=recorder.cancelled,
            limits=limits or Limits(),
        )
        output = PdfText().run(ctx, PdfTextParams.model_validate(params))
        assert output.file is not None
        assert output.file.parent == base / "out"
        return output, output.file.read_bytes().decode("utf-8")

    return runner


def failure(run: Run, data: bytes, tmp_path: Path, **kwargs: Any) -> ProcessorError:
    with pytest.raises(ProcessorError) as caught:
        run(data, **kwargs)
    error = caught.value
    assert not error.retryable
    assert str(tmp_path) not in error.message
    assert "Traceback" not in error.message
    assert "/" not in error.message  # no paths at all
    return error


def leftovers(tmp_path: Path) -> list[Path]:
    return sorted(p for p in tmp_path.rglob("out/*"))


# ---- extraction -------------------------------------------------------------------------------


def test_extracts_every_page_in_order_separated_by_form_feeds(run: Run) -> None:
    output, text = run(make_pdf())
    pages = text.split("\f")
    assert len(pages) == 3
    for page, lines in zip(pages, PAGES, strict=True):
        positions = [page.index(line) for line in lines]
        assert positions == sorted(positions)
    assert output.file is not None
    assert output.file.name == OUTPUT_NAME
    assert output.file_name == "report.txt"
    assert output.content_type == CONTENT_TYPE == "text/plain; charset=utf-8"
    result = output.result
    assert result["page_count"] == 3
    assert result["pages_extracted"] == 3
    assert (result["first_page"], result["last_page"]) == (1, 3)
    assert result["page_characters"] == [len(page) for page in pages]
    assert result["characters"] == len(text) - 2 == sum(result["page_characters"])
    assert result["page_characters_truncated"] is False
    assert result["empty_pages"] == 0
    assert result["encrypted"] is False
    assert result["layout"] is False


def test_per_page_counts_are_capped_for_long_documents(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_text, "MAX_PAGE_LIST", 2)
    output, text = run(make_pdf())
    assert output.result["page_characters"] == [len(page) for page in text.split("\f")[:2]]
    assert output.result["page_characters_truncated"] is True
    assert output.result["pages_extracted"] == 3


def test_pdf_version_comes_from_the_header(run: Run) -> None:
    data = make_pdf()
    header = data[: data.index(b"\n")]
    output, _ = run(data)
    assert header == b"%PDF-" + output.result["pdf_version"].encode()


def test_unicode_text_is_written_as_utf8(run: Run) -> None:
    output, text = run(make_pdf([[UNICODE_LINE], ["plain ascii"]], font=unicode_font()))
    assert UNICODE_LINE in text.split("\f")[0]
    assert output.result["page_characters"][0] >= len(UNICODE_LINE)


def test_metadata_is_reported_with_iso_dates(run: Run) -> None:
    output, _ = run(make_pdf())
    metadata = output.result["metadata"]
    assert metadata["title"] == "Quarterly Report"
    assert metadata["author"] == "Ada Lovelace"
    assert metadata["subject"] == "Numbers"
    assert metadata["creator"] == "filejobs tests"
    assert "ReportLab" in metadata["producer"]
    for key in ("creation_date", "modification_date"):
        assert datetime.fromisoformat(metadata[key]).year >= 2000


def test_metadata_keeps_only_short_clean_strings(run: Run) -> None:
    data = with_metadata(
        make_pdf(),
        {
            "/Title": "bad\x00title " + "x" * 5000,
            "/CreationDate": "yesterday-ish",  # not a PDF date: left out
            "/ModDate": "D:20240131120500-05'30'",
        },
    )
    metadata = run(data)[0].result["metadata"]
    assert metadata["title"].startswith("badtitle xxx")
    assert len(metadata["title"]) == MAX_METADATA_CHARS
    assert metadata["creation_date"] is None
    assert metadata["modification_date"] == "2024-01-31T12:05:00-05:30"


def test_metadata_that_is_not_text_is_left_out(run: Run) -> None:
    info = (
        b"<< /Title 42 /Author /SomeName /Subject [(a) (b)] /Creator << /X 1 >> /Producer 99 0 R"
        b" /CreationDate 7 /ModDate (D:20240131) >>"
    )
    output, _ = run(raw_pdf(*EMPTY_DOCUMENT, info=info))
    assert output.result["metadata"] == {
        "title": None,
        "author": None,
        "subject": None,
        "creator": None,
        "producer": None,
        "creation_date": None,
        "modification_date": "2024-01-31T00:00:00",
    }


def test_unreadable_metadata_does_not_fail_the_job(run: Run) -> None:
    data = raw_pdf(*EMPTY_DOCUMENT, info=b"<< /Title (unterminated")
    output, _ = run(data)
    assert set(output.result["metadata"].values()) <= {None}


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("D:20240131120500+01'00'", "2024-01-31T12:05:00+01:00"),
        ("D:20240131120500Z", "2024-01-31T12:05:00+00:00"),
        ("D:20240131120500Z00'00'", "2024-01-31T12:05:00+00:00"),
        ("20240131", "2024-01-31T00:00:00"),
        ("D:2024", "2024-01-01T00:00:00"),
        ("D:20241331", None),  # month 13
        ("D:20240131120500+99'00'", None),
        ("", None),
        ("Tuesday", None),
    ],
)
def test_pdf_dates(raw: str, iso: str | None) -> None:
    assert parse_pdf_date(raw) == iso


def test_empty_pages_are_counted_and_kept_as_empty_sections(run: Run) -> None:
    output, text = run(make_pdf([["one here"], [], ["three here"]]))
    pages = text.split("\f")
    assert len(pages) == 3
    assert pages[1] == ""
    assert output.result["empty_pages"] == 1
    assert output.result["page_characters"][1] == 0


def test_a_pdf_with_no_pages_gives_an_empty_file(run: Run) -> None:
    output, text = run(raw_pdf(*EMPTY_DOCUMENT))
    assert text == ""
    assert output.result["page_count"] == 0
    assert output.result["pages_extracted"] == 0
    assert output.result["first_page"] is None


def test_page_range(run: Run) -> None:
    output, text = run(make_pdf(), first_page=2, last_page=3)
    assert "alpha" not in text
    assert "bravo banana middle" in text.split("\f")[0]
    assert "charlie cherry last" in text.split("\f")[1]
    assert output.result["pages_extracted"] == 2
    assert (output.result["first_page"], output.result["last_page"]) == (2, 3)
    assert output.result["page_count"] == 3


def test_last_page_past_the_end_stops_at_the_end(run: Run) -> None:
    output, text = run(make_pdf(), first_page=3, last_page=50)
    assert output.result["pages_extracted"] == 1
    assert "charlie" in text
    assert "\f" not in text


def test_first_page_past_the_end_fails(run: Run, tmp_path: Path) -> None:
    error = failure(run, make_pdf(), tmp_path, first_page=4)
    assert error.code == "pdf_page_out_of_range"
    assert "3 pages" in error.message


def test_layout_mode(run: Run) -> None:
    output, text = run(make_pdf(), layout=True)
    assert output.result["layout"] is True
    assert [("alpha apple first" in p, "charlie cherry last" in p) for p in text.split("\f")] == [
        (True, False),
        (False, False),
        (False, True),
    ]


def test_a_form_feed_inside_a_page_cannot_fake_a_page_break(run: Run) -> None:
    content = b"BT /F1 12 Tf 10 100 Td (before) Tj (\\f) Tj (after) Tj ET"
    data = raw_pdf(
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    )
    output, text = run(data)
    assert "before" in text
    assert "after" in text
    assert "\f" not in text
    assert output.result["pages_extracted"] == 1


def test_download_name_follows_the_upload(run: Run) -> None:
    assert run(make_pdf(), file_name="Annual Report 2024.pdf")[0].file_name == "Annual Report 2024.txt"
    assert run(make_pdf(), file_name="scan")[0].file_name == "scan.txt"


# ---- progress and cancellation ----------------------------------------------------------------


def test_progress_is_reported_per_page(run: Run) -> None:
    recorder = Recorder()
    run(make_pdf(), recorder=recorder)
    assert recorder.calls == [(1 / 3, "page 1 of 3"), (2 / 3, "page 2 of 3"), (1.0, "page 3 of 3")]


def test_progress_of_a_range_counts_the_range(run: Run) -> None:
    recorder = Recorder()
    run(make_pdf(), recorder=recorder, first_page=2)
    assert recorder.calls == [(0.5, "page 2 of 3"), (1.0, "page 3 of 3")]


def test_cancellation_is_checked_between_pages(run: Run, tmp_path: Path) -> None:
    recorder = Recorder(cancel_after=1)  # cancelled once page 1 is done
    with pytest.raises(Cancelled):
        run(make_pdf(), recorder=recorder)
    assert recorder.calls == [(1 / 3, "page 1 of 3")]
    assert leftovers(tmp_path) == []  # the partial output is removed


# ---- encryption -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_encrypted_pdf_without_the_password_is_refused(run: Run, tmp_path: Path, algorithm: str) -> None:
    error = failure(run, encrypt(make_pdf(), user="s3cret", algorithm=algorithm), tmp_path)
    assert error.code == "pdf_encrypted"
    assert "password" in error.message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_encrypted_pdf_opens_with_its_password(run: Run, algorithm: str) -> None:
    output, text = run(encrypt(make_pdf(), user="s3cret", algorithm=algorithm), password="s3cret")
    assert output.result["encrypted"] is True
    assert output.result["pages_extracted"] == 3
    assert "alpha apple first" in text
    assert "charlie cherry last" in text
    assert output.result["metadata"]["title"] == "Quarterly Report"


def test_owner_password_opens_it_too(run: Run) -> None:
    data = encrypt(make_pdf(), user="s3cret", owner="b0ss")
    assert "bravo" in run(data, password="b0ss")[1]


def test_wrong_password_is_its_own_error(run: Run, tmp_path: Path) -> None:
    error = failure(run, encrypt(make_pdf(), user="s3cret"), tmp_path, password="guess")
    assert error.code == "pdf_bad_password"
    assert "guess" not in error.message


@pytest.mark.parametrize("algorithm", ["RC4-40", "AES-128", "AES-256"])
def test_owner_password_only_pdf_opens_with_the_empty_password(run: Run, algorithm: str) -> None:
    output, text = run(encrypt(make_pdf(), user="", owner="b0ss", algorithm=algorithm))
    assert output.result["encrypted"] is True
    assert "bravo banana middle" in text


def test_password_for_an_unencrypted_pdf_is_ignored(run: Run) -> None:
    output, _ = run(make_pdf(), password="unused")
    assert output.result["encrypted"] is False
    assert output.result["pages_extracted"] == 3


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_aes_without_the_cryptography_package_is_a_clear_error(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    data = encrypt(make_pdf(), user="", owner="b0ss", algorithm=algorithm)
    # What pypdf falls back to when neither cryptography nor pycryptodome can be imported.
    for name in ("CryptAES", "aes_cbc_decrypt", "aes_cbc_encrypt", "aes_ecb_decrypt", "aes_ecb_encrypt"):
        monkeypatch.setattr(pypdf._encryption, name, getattr(_fallback, name))
    error = failure(run, data, tmp_path)
    assert error.code == "pdf_crypto_unavailable"
    assert "cryptography" in error.message


# ---- broken and hostile files -----------------------------------------------------------------


BROKEN: dict[str, Callable[[bytes], bytes]] = {
    "truncated-in-half": lambda pdf: pdf[: len(pdf) // 2],
    "truncated-end": lambda pdf: pdf[:-40],
    "garbage-after-header": lambda pdf: b"%PDF-1.4\n" + bytes(range(256)) * 40,
    "text-after-header": lambda pdf: b"%PDF-1.7\nthis is not really a PDF\n",
    "header-only": lambda pdf: b"%PDF-",
    "cyclic-page-tree": lambda pdf: raw_pdf(
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>",
    ),
    "pages-not-a-dictionary": lambda pdf: raw_pdf(b"<< /Type /Catalog /Pages 2 0 R >>", b"42"),
    "no-catalog": lambda pdf: raw_pdf(b"<< /Foo 1 >>"),
    "garbled-content-stream": lambda pdf: raw_pdf(
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length 20 >>\nstream\nBT ] ] ] << >> Tj ET\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ),
}


@pytest.mark.parametrize("breakage", BROKEN.values(), ids=BROKEN.keys())
def test_broken_pdfs_fail_cleanly(run: Run, tmp_path: Path, breakage: Callable[[bytes], bytes]) -> None:
    error = failure(run, breakage(make_pdf()), tmp_path)
    assert error.code == "pdf_invalid"
    assert leftovers(tmp_path) == []


def test_unexpected_exceptions_inside_pypdf_are_pdf_invalid(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> str:
        raise KeyError("/secret/server/path")

    monkeypatch.setattr(pypdf.PageObject, "extract_text", explode)
    error = failure(run, make_pdf(), tmp_path)
    assert error.code == "pdf_invalid"
    assert "secret" not in error.message
    assert leftovers(tmp_path) == []


def test_other_missing_dependencies_are_pdf_unsupported(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def needs_pillow(*args: Any, **kwargs: Any) -> str:
        raise DependencyError("pillow is required to do image extraction")

    monkeypatch.setattr(pypdf.PageObject, "extract_text", needs_pillow)
    assert failure(run, make_pdf(), tmp_path).code == "pdf_unsupported"


def test_memory_errors_are_not_disguised(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def exhaust(*args: Any, **kwargs: Any) -> str:
        raise MemoryError

    monkeypatch.setattr(pypdf.PageObject, "extract_text", exhaust)
    with pytest.raises(MemoryError):
        run(make_pdf())


def test_pypdf_safety_limits_are_pdf_too_complex(run: Run, tmp_path: Path) -> None:
    with pypdf.apply_configuration(page_tree_maximum_depth=1):
        nested = raw_pdf(
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
            b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
            b"<< /Type /Page /MediaBox [0 0 200 200] >>",
        )
        error = failure(run, nested, tmp_path)
    assert error.code == "pdf_too_complex"


def test_too_many_pages_is_refused_before_extracting(run: Run, tmp_path: Path) -> None:
    recorder = Recorder()
    error = failure(run, make_pdf(), tmp_path, limits=Limits(max_pdf_pages=2), recorder=recorder)
    assert error.code == "pdf_too_many_pages"
    assert "3 pages" in error.message
    assert "2" in error.message
    assert recorder.calls == []
    assert leftovers(tmp_path) == []


def test_exactly_the_page_limit_is_fine(run: Run) -> None:
    assert run(make_pdf(), limits=Limits(max_pdf_pages=3))[0].result["pages_extracted"] == 3


# ---- params -----------------------------------------------------------------------------------


BAD_PARAMS: list[dict[str, Any]] = [
    {"layout": "sideways"},
    {"first_page": 0},
    {"last_page": 0},
    {"first_page": 10_000_000},
    {"first_page": 3, "last_page": 2},
    {"password": "x" * 5000},
    {"pages": "1-3"},
]


@pytest.mark.parametrize("params", BAD_PARAMS)
def test_bad_params_are_refused_by_the_model(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="validation error"):
        PdfTextParams.model_validate(params)


# ---- through the API --------------------------------------------------------------------------


def pdf_job(client: TestClient, data: bytes, **kwargs: Any) -> str:
    kwargs.setdefault("name", "report.pdf")
    return submit(client, data, processor="pdf-text", content_type="application/pdf", **kwargs)["id"]


def test_end_to_end_upload_extract_download(client: TestClient, worker: LocalWorker) -> None:
    job_id = pdf_job(client, make_pdf())
    worker.drain()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["file"]["content_type"] == "application/pdf"
    assert job["progress"] == 1.0
    result = job["result"]
    assert result["page_count"] == 3
    assert result["pages_extracted"] == 3
    assert result["metadata"]["title"] == "Quarterly Report"

    response = client.get(f"/v1/jobs/{job_id}/result")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert "report.txt" in disposition
    text = response.content.decode("utf-8")
    words = [line for lines in PAGES for line in lines]
    positions = [text.index(word) for word in words]
    assert positions == sorted(positions)
    assert text.count("\f") == 2
    assert result["characters"] == len(text) - 2


def test_end_to_end_with_password_and_range(client: TestClient, worker: LocalWorker) -> None:
    data = encrypt(make_pdf(), user="s3cret")
    job_id = pdf_job(client, data, params={"password": "s3cret", "first_page": 3})
    worker.drain()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["result"]["encrypted"] is True
    text = client.get(f"/v1/jobs/{job_id}/result").text
    assert "charlie cherry last" in text
    assert "alpha" not in text


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (encrypt(make_pdf(), user="s3cret"), "pdf_encrypted"),
        (make_pdf()[:1000], "pdf_invalid"),
        (b"%PDF-1.4\n" + bytes(range(256)) * 40, "pdf_invalid"),
    ],
    ids=["encrypted", "truncated", "garbage"],
)
def test_failures_through_the_api_have_codes_and_no_paths(
    client: TestClient, worker: LocalWorker, data_dir: Path, data: bytes, code: str
) -> None:
    job_id = pdf_job(client, data)
    worker.drain()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == code
    assert job["attempts"] == 1  # not retried
    for text in (job["error"]["message"], job["message"] or ""):
        assert str(data_dir) not in text
        assert "Traceback" not in text
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[tuple[TestClient, LocalWorker]]:
    app = create_app(make_settings(tmp_path / "capped", max_pdf_pages=2), dispatcher=InMemoryDispatcher())
    with TestClient(app, raise_server_exceptions=False) as client:
        services: Services = client.app_state["services"]
        yield client, burst_worker(services)


def test_page_cap_setting_through_the_api(capped: tuple[TestClient, LocalWorker]) -> None:
    client, worker = capped
    too_many = pdf_job(client, make_pdf())
    fits = pdf_job(client, make_pdf(PAGES[:2]))
    worker.drain()
    failed = client.get(f"/v1/jobs/{too_many}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "pdf_too_many_pages"
    assert client.get(f"/v1/jobs/{fits}").json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("content", "name", "sniffed"),
    [
        (b"just some words, not a PDF\n", "fake.pdf", "text/plain"),
        (png_bytes(), "picture.pdf", "image/png"),
    ],
    ids=["text", "png"],
)
def test_non_pdfs_are_415_at_submit(client: TestClient, content: bytes, name: str, sniffed: str) -> None:
    response = post_file(client, content, name=name, content_type="application/pdf", processor="pdf-text")
    assert response.status_code == 415, response.text
    problem = response.json()
    assert problem["content_type"] == sniffed
    assert problem["accepts"] == ["application/pdf"]
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize("params", BAD_PARAMS)
def test_bad_params_are_422_at_submit(client: TestClient, params: dict[str, Any]) -> None:
    response = post_file(
        client, make_pdf(), name="r.pdf", content_type="application/pdf", processor="pdf-text", params=params
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_processor_listing(client: TestClient) -> None:
    items = {p["name"]: p for p in client.get("/v1/processors").json()["items"]}
    pdf = items["pdf-text"]
    assert pdf["accepts"] == ["application/pdf"]
    assert pdf["description"]
    schema = pdf["params_schema"]
    assert set(schema["properties"]) == {"password", "first_page", "last_page", "layout"}
    assert schema["additionalProperties"] is False
