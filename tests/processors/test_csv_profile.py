"""The ``csv-profile`` processor on real CSV files written by the tests, run directly and through the API."""

from __future__ import annotations

import codecs
import hashlib
import random
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.jobs.worker import LocalWorker
from filejobs.processors.base import Cancelled, Context, ProcessorError
from filejobs.processors.csv_profile import CsvProfile, CsvProfileParams
from filejobs.processors.csv_profile import processor as csv_profile
from filejobs.processors.csv_profile.columns import infer_type
from filejobs.processors.csv_profile.processor import detect_header
from filejobs.processors.hyperloglog import DistinctCounter, HyperLogLog
from filejobs.sniff import sniff
from filejobs.testing import post_file, submit

# ---- helpers --------------------------------------------------------------------------------


def make_context(
    path: Path,
    *,
    progress: Callable[[float, str | None], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Context:
    out = path.parent / "out"
    out.mkdir(exist_ok=True)
    return Context(
        input_path=path,
        output_dir=out,
        file_name=path.name,
        content_type="text/csv",
        progress=progress or (lambda fraction, message: None),
        cancelled=cancelled or (lambda: False),
    )


def write(tmp_path: Path, data: bytes | str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def profile(tmp_path: Path, data: bytes | str, **params: Any) -> dict[str, Any]:
    path = write(tmp_path, data)
    output = CsvProfile().run(make_context(path), CsvProfileParams(**params))
    assert output.file is None
    return output.result


def failure(tmp_path: Path, data: bytes | str, **params: Any) -> ProcessorError:
    path = write(tmp_path, data)
    with pytest.raises(ProcessorError) as caught:
        CsvProfile().run(make_context(path), CsvProfileParams(**params))
    return caught.value


def column(result: dict[str, Any], name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [col for col in result["columns"] if col["name"] == name]
    assert len(matches) == 1, f"no single column {name!r} in {[c['name'] for c in result['columns']]}"
    return matches[0]


def types(result: dict[str, Any]) -> dict[str, str]:
    return {col["name"]: col["type"] for col in result["columns"]}


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def write_big_csv(path: Path, size: int, *, seed: int = 7) -> int:
    """About ``size`` bytes of a realistic table: a unique id, numbers, flags, dates, text.
    Returns the number of data rows."""
    rng = random.Random(seed)
    cities = ["Zürich", "Köln", "Paris", "New York, NY", 'The "Big" Apple', "Lyon"]
    written = 0
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        written += out.write("id,amount,active,day,moment,city,note\n")
        while written < size:
            lines = []
            for _ in range(1000):
                rows += 1
                city = rng.choice(cities)
                quoted = '"' + city.replace('"', '""') + '"' if ("," in city or '"' in city) else city
                note = "" if rows % 7 else '"line one\nline two"'
                lines.append(
                    f"{rows},{rng.uniform(-1000, 1000):.2f},{rng.choice(('true', 'false'))},"
                    f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                    f"2024-03-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00,"
                    f"{quoted},{note}\n"
                )
            written += out.write("".join(lines))
    return rows


# ---- dialect: delimiter, quoting, encodings, line endings -----------------------------------


def test_types_min_max_and_samples_of_an_ordinary_csv(tmp_path: Path) -> None:
    result = profile(
        tmp_path,
        "id,price,in_stock,released,updated,title\n"
        "1,9.99,true,2024-01-05,2024-01-05T10:00:00,Alpha\n"
        "2,19.5,false,2023-12-31,2024-02-01T08:30:00,Beta\n"
        "3,5,true,2024-06-30,2023-11-11T23:59:59,Gamma\n",
    )
    assert result["encoding"] == "utf-8"
    assert result["bom"] is False
    assert result["delimiter"] == ","
    assert result["has_header"] is True
    assert result["header"] == ["id", "price", "in_stock", "released", "updated", "title"]
    assert result["column_count"] == 6
    assert result["row_count"] == 3
    assert result["malformed_rows"] == 0
    assert result["malformed_lines"] == []
    assert result["decode_errors"] == 0
    assert types(result) == {
        "id": "integer",
        "price": "float",
        "in_stock": "boolean",
        "released": "date",
        "updated": "datetime",
        "title": "string",
    }
    assert column(result, "id") | {"samples": None} == {
        "name": "id",
        "type": "integer",
        "null_count": 0,
        "distinct": 3,
        "distinct_exact": True,
        "min": 1,
        "max": 3,
        "samples": None,
    }
    assert (column(result, "price")["min"], column(result, "price")["max"]) == (5.0, 19.5)
    assert (column(result, "released")["min"], column(result, "released")["max"]) == (
        "2023-12-31",
        "2024-06-30",
    )
    assert (column(result, "updated")["min"], column(result, "updated")["max"]) == (
        "2023-11-11T23:59:59",
        "2024-02-01T08:30:00",
    )
    assert column(result, "title")["samples"] == ["Alpha", "Beta", "Gamma"]
    assert column(result, "title")["min"] is None
    assert column(result, "in_stock")["min"] is None


def test_quoted_fields_with_delimiters_quotes_and_newlines(tmp_path: Path) -> None:
    result = profile(
        tmp_path,
        'id,text,n\n1,"hello\nworld",3\n2,"a,b",4\n3,"say ""hi""",5\n4,"two\r\nbreaks\nhere",6\n5,x\n',
    )
    assert result["row_count"] == 5
    assert types(result) == {"id": "integer", "text": "string", "n": "integer"}
    assert column(result, "text")["samples"] == [
        "hello\nworld",
        "a,b",
        'say "hi"',
        "two\r\nbreaks\nhere",
        "x",
    ]
    # The short row is on line 9: rows 1 and 4 took two and three lines.
    assert result["malformed_rows"] == 1
    assert result["malformed_lines"] == [9]


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    result = profile(tmp_path, b"\xef\xbb\xbfname,age\nAnn,31\nBob,42\n")
    assert result["encoding"] == "utf-8"
    assert result["bom"] is True
    assert result["header"] == ["name", "age"]
    assert types(result) == {"name": "string", "age": "integer"}


def test_semicolon_delimiter_with_decimal_commas(tmp_path: Path) -> None:
    result = profile(tmp_path, "name;price;qty\nA;1,5;3\nB;2,25;4\nC;3;5\n")
    assert result["delimiter"] == ";"
    assert result["header"] == ["name", "price", "qty"]
    # A decimal comma is not a number here: the column is a string, its values intact.
    assert types(result) == {"name": "string", "price": "string", "qty": "integer"}
    assert column(result, "price")["samples"] == ["1,5", "2,25", "3"]


def test_tab_delimiter(tmp_path: Path) -> None:
    result = profile(tmp_path, "a\tb\tc\n1\t2.5\thello, world\n2\t3\tbye\n")
    assert result["delimiter"] == "\t"
    assert types(result) == {"a": "integer", "b": "float", "c": "string"}


def test_pipe_delimiter(tmp_path: Path) -> None:
    result = profile(tmp_path, "a|b\n1|x\n2|y\n")
    assert result["delimiter"] == "|"
    assert result["header"] == ["a", "b"]


def test_delimiter_and_encoding_params_override_detection(tmp_path: Path) -> None:
    data = "a:b\n1:x\n2:y\n".encode("cp1252")
    result = profile(tmp_path, data, delimiter=":", encoding="cp1252")
    assert result["delimiter"] == ":"
    assert result["encoding"] == "cp1252"
    assert types(result) == {"a": "integer", "b": "string"}


def test_latin1_file_is_detected_and_decoded(tmp_path: Path) -> None:
    text = "name,city,score\n" + "".join(f"José {i},Zürich Köln Malmö Besançon,{i}\n" for i in range(200))
    data = text.encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    result = profile(tmp_path, data)
    assert result["encoding"] not in ("utf-8", "utf-16")
    assert result["decode_errors"] == 0
    assert column(result, "city")["samples"] == ["Zürich Köln Malmö Besançon"]
    assert column(result, "name")["samples"][0] == "José 0"
    assert column(result, "score")["type"] == "integer"


def test_bytes_that_do_not_decode_later_are_replaced_and_counted(tmp_path: Path) -> None:
    # 100 KB of ASCII (read as UTF-8), then latin-1 bytes the detection sample never saw.
    head = "id,city\n" + "".join(f"{i},Paris\n" for i in range(12_000))
    data = head.encode() + "12000,Zürich\n12001,Köln\n".encode("latin-1")
    result = profile(tmp_path, data)
    assert result["encoding"] == "utf-8"
    assert result["decode_errors"] == 2
    assert result["row_count"] == 12_002
    assert column(result, "city")["distinct"] == 3  # Paris, Z\ufffdrich, K\ufffdln
    # Told the encoding, the same file decodes cleanly.
    fixed = profile(tmp_path, data, encoding="latin-1")
    assert fixed["decode_errors"] == 0
    assert fixed["encoding"] == "iso8859-1"


def test_utf16_with_bom(tmp_path: Path) -> None:
    result = profile(tmp_path, "a,b\n1,x\n2,y\n".encode("utf-16"))
    assert result["encoding"] == "utf-16"
    assert result["bom"] is True
    assert result["row_count"] == 2
    assert types(result) == {"a": "integer", "b": "string"}


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_a_named_byte_order_reads_with_or_without_a_bom(tmp_path: Path, encoding: str) -> None:
    """``utf-16``/``utf-32`` are refused at submit (see below): the byte order is named instead, and
    a BOM the file starts with anyway is skipped, not part of the first column's name."""
    text = "a,b\n1,x\n2,y\n"
    bom = {"16-le": codecs.BOM_UTF16_LE, "16-be": codecs.BOM_UTF16_BE}.get(encoding[4:], b"")
    bom = bom or {"32-le": codecs.BOM_UTF32_LE, "32-be": codecs.BOM_UTF32_BE}[encoding[4:]]
    for data in (text.encode(encoding), bom + text.encode(encoding)):
        result = profile(tmp_path, data, encoding=encoding)
        assert result["encoding"] == encoding
        assert result["header"] == ["a", "b"]
        assert result["row_count"] == 2
        assert result["decode_errors"] == 0


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "idna", "punycode", "undefined"])
def test_a_decode_failure_in_the_processor_is_csv_encoding(tmp_path: Path, encoding: str) -> None:
    """Whatever decoding raises while the file is read (here an encoding the params model now
    refuses, as a job stored before would still carry) fails the job with ``csv_encoding``, never
    ``processor_crashed``."""
    path = write(tmp_path, "a,b\n1,x\n2,y\n")
    params = CsvProfileParams.model_construct(encoding=encoding)
    with pytest.raises(ProcessorError) as caught:
        CsvProfile().run(make_context(path), params)
    assert caught.value.code == "csv_encoding"
    assert encoding in caught.value.message
    assert "filejobs.csv_profile" not in caught.value.message


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"], ids=["crlf", "cr", "lf"])
def test_line_endings(tmp_path: Path, newline: str) -> None:
    rows = ["a,b,c", "1,x,2024-01-01", "2,y,2024-01-02", "3,z,2024-01-03"]
    result = profile(tmp_path, newline.join(rows) + newline)
    assert result["row_count"] == 3
    assert result["malformed_rows"] == 0
    assert types(result) == {"a": "integer", "b": "string", "c": "date"}
    assert column(result, "c")["max"] == "2024-01-03"


def test_spaces_after_delimiters_are_skipped_when_every_field_has_one(tmp_path: Path) -> None:
    result = profile(tmp_path, "a, b, c\n1, 2.5, x\n4, 5, y\n")
    assert result["skip_initial_space"] is True
    assert result["header"] == ["a", "b", "c"]
    assert types(result) == {"a": "integer", "b": "float", "c": "string"}


def test_a_single_column_file(tmp_path: Path) -> None:
    data = b"name\nalice\nbob\n\ncarol\n"
    assert sniff(data) == "text/plain"  # accepted: csv-profile takes text/plain
    result = profile(tmp_path, data)
    assert result["delimiter"] == ","
    assert result["header"] == ["name"]
    assert result["row_count"] == 3  # the blank line is no row


# ---- header ---------------------------------------------------------------------------------


def test_no_header_is_detected_and_columns_are_named(tmp_path: Path) -> None:
    result = profile(tmp_path, "1,2024-01-01,x\n2,2024-01-02,y\n3,2024-01-03,z\n")
    assert result["has_header"] is False
    assert result["header"] == ["col_1", "col_2", "col_3"]
    assert result["row_count"] == 3
    assert column(result, "col_1")["min"] == 1


def test_header_param_overrides_detection(tmp_path: Path) -> None:
    data = "alice,paris\nbob,rome\n"
    assert profile(tmp_path, data)["has_header"] is True  # all strings: a header by default
    forced = profile(tmp_path, data, header=False)
    assert forced["has_header"] is False
    assert forced["header"] == ["col_1", "col_2"]
    assert forced["row_count"] == 2
    assert profile(tmp_path, "1,2\n3,4\n", header=True)["header"] == ["1", "2"]


def test_empty_header_cells_get_generated_names(tmp_path: Path) -> None:
    result = profile(tmp_path, ",value\n0,10\n1,20\n")
    assert result["header"] == ["col_1", "value"]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([["id", "price"], ["1", "2.5"], ["2", "3"]], True),
        ([["1", "2.5"], ["2", "3"]], False),
        ([["name", "city"], ["ann", "paris"]], True),
        ([["2024-01-01", "x"], ["2024-01-02", "y"]], False),
        ([["when", "ok"], ["2024-01-02", "yes"]], True),
        ([["1", "2", "3"]], False),
        ([["a", "b", "c"]], True),
    ],
)
def test_detect_header(rows: list[list[str]], expected: bool) -> None:
    assert detect_header(rows) is expected


# ---- values: nulls, types, samples ----------------------------------------------------------


def test_missing_values_and_null_tokens(tmp_path: Path) -> None:
    result = profile(tmp_path, "a,b,c\n1,,x\nNULL,x,\nNA,,\n4,N/A,y\n,null,NaN\n")
    assert column(result, "a") | {"samples": None} == {
        "name": "a",
        "type": "integer",
        "null_count": 3,
        "distinct": 2,
        "distinct_exact": True,
        "min": 1,
        "max": 4,
        "samples": None,
    }
    assert column(result, "b")["null_count"] == 4
    assert column(result, "b")["samples"] == ["x"]
    assert column(result, "c")["null_count"] == 3
    assert column(result, "c")["distinct"] == 2


def test_an_all_empty_column_is_a_string_column_of_nulls(tmp_path: Path) -> None:
    result = profile(tmp_path, "a,b\n1,\n2,\n")
    assert column(result, "b") == {
        "name": "b",
        "type": "string",
        "null_count": 2,
        "distinct": 0,
        "distinct_exact": True,
        "min": None,
        "max": None,
        "samples": [],
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "-2", "+3", "0", "-0", "123456789012345678901234567890"], "integer"),
        (["1", "2.5", "-3"], "float"),  # ints mixed with floats
        (["1e3", ".5", "5.", "-0.25"], "float"),
        (["02134", "10001"], "string"),  # zip codes keep their zeros
        (["007"], "string"),
        (["01.5", "2.5"], "string"),
        (["0.5", "0"], "float"),
        (["inf", "1.5"], "string"),
        (["1e999"], "string"),  # not finite
        (["1_000"], "string"),
        (["١٢"], "string"),  # Arabic-Indic digits: int() reads them, a CSV should not
        ([" 1", "2"], "string"),  # values are not trimmed
        (["0", "1"], "integer"),
        (["true", "false", "TRUE", "False"], "boolean"),
        (["yes", "no", "Y", "n", "T", "f"], "boolean"),
        (["true", "false", "0", "1"], "string"),
        (["2024-01-02", "1999-12-31"], "date"),
        (["2024-02-30"], "string"),
        (["2024-W01-1"], "string"),  # ISO week date: fromisoformat reads it, we do not
        (["20240102"], "integer"),
        (["2024-01-02T10:00:00", "2024-01-02 11:30"], "datetime"),
        (["2024-01-02T10:00:00Z", "2024-01-02T10:00:00+02:00", "2024-01-02T10:00:00.123456"], "datetime"),
        (["2024-01-02", "2024-01-03T00:00:01"], "datetime"),
        (["2024-01-02x10:00"], "string"),
        (["2024-01-02", "hello"], "string"),
    ],
)
def test_type_rules(values: list[str], expected: str) -> None:
    assert infer_type(set(values)) == expected


def test_types_widen_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_profile, "BATCH_CELLS", 1)  # 16-row batches
    rows = ["n,d,b,s"]
    rows += [f"{i},2024-01-{i % 28 + 1:02d},true,{i}" for i in range(40)]
    rows += ["2.5,2024-02-01T10:00:00,false,2024-01-01"]
    rows += [f"{i},2024-01-01,no,x" for i in range(40)]
    result = profile(tmp_path, "\n".join(rows) + "\n")
    assert result["row_count"] == 81
    assert types(result) == {"n": "float", "d": "datetime", "b": "boolean", "s": "string"}
    assert column(result, "n") | {"samples": None, "distinct": None} == {
        "name": "n",
        "type": "float",
        "null_count": 0,
        "distinct": None,
        "distinct_exact": True,
        "min": 0.0,
        "max": 39.0,
        "samples": None,
    }
    assert column(result, "d")["min"] == "2024-01-01"
    assert column(result, "d")["max"] == "2024-02-01T10:00:00"
    assert column(result, "s")["min"] is None


def test_datetime_min_max_with_offsets(tmp_path: Path) -> None:
    result = profile(
        tmp_path,
        "t\n2024-01-02T10:00:00+02:00\n2024-01-02T09:30:00Z\n2024-01-02T16:00:00\n"
        "2024-01-02T12:00:00-05:00\n2024-01-02T07:00:00\n",
    )
    t = column(result, "t")
    assert t["type"] == "datetime"
    # Naive and aware mixed: aware values compare as UTC (08:00, 09:30 and 17:00 UTC).
    assert t["min"] == "2024-01-02T07:00:00"
    assert t["max"] == "2024-01-02T12:00:00-05:00"
    aware = profile(tmp_path, "t\n2024-01-02T10:00:00+02:00\n2024-01-02T09:30:00+00:00\n")
    assert column(aware, "t")["min"] == "2024-01-02T10:00:00+02:00"


def test_samples_are_first_distinct_values_truncated(tmp_path: Path) -> None:
    long = "x" * 100
    result = profile(tmp_path, f"v\nb\na\nb\n\nc\n{long}\nd\ne\n", sample_values=5)
    assert column(result, "v")["samples"] == ["b", "a", "c", "x" * 63 + "…", "d"]
    none = profile(tmp_path, "v\na\n", sample_values=0)
    assert column(none, "v")["samples"] == []


# ---- malformed rows -------------------------------------------------------------------------


def test_ragged_rows_are_counted_padded_and_reported_by_line(tmp_path: Path) -> None:
    data = "a,b,c\r\n1,2,3\r\n4,5\r\n6,7,8,9\r\n\r\n10,11,12\r\n13\r\n"
    result = profile(tmp_path, data)
    assert result["row_count"] == 5
    assert result["malformed_rows"] == 3
    assert result["malformed_lines"] == [3, 4, 7]
    # Missing fields count as nulls; extra fields are ignored.
    assert column(result, "c")["null_count"] == 2
    assert column(result, "a")["max"] == 13
    assert column(result, "c")["max"] == 12


def test_only_the_first_ten_malformed_lines_are_listed(tmp_path: Path) -> None:
    data = "a,b\n" + "".join("1\n" if i % 2 else "1,2\n" for i in range(100))
    result = profile(tmp_path, data)
    assert result["malformed_rows"] == 50
    assert result["malformed_lines"] == [3, 5, 7, 9, 11, 13, 15, 17, 19, 21]


def test_a_field_over_the_csv_size_limit_is_a_malformed_row_not_a_failure(tmp_path: Path) -> None:
    huge = "y" * 200_000
    result = profile(tmp_path, f'a,b\n1,x\n2,"{huge}"\n3,z\n')
    assert result["malformed_rows"] == 1
    assert result["malformed_lines"] == [3]
    assert result["row_count"] == 3
    assert column(result, "a")["distinct"] == 2  # the broken record gives no values


# ---- size, memory, progress, cancellation ---------------------------------------------------


def test_a_wide_file(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(800))
    rows = "\n".join(",".join(str(r * 1000 + i) for i in range(800)) for r in range(30))
    result = profile(tmp_path, header + "\n" + rows + "\n")
    assert result["column_count"] == 800
    assert result["row_count"] == 30
    assert {col["type"] for col in result["columns"]} == {"integer"}
    assert column(result, "c799")["max"] == 29799


def test_more_columns_than_max_columns_fail_cleanly(tmp_path: Path) -> None:
    data = ",".join(f"c{i}" for i in range(1500)) + "\n" + ",".join("1" * 1500) + "\n"
    error = failure(tmp_path, data)
    assert error.code == "csv_too_many_columns"
    assert "1500 columns" in error.message
    assert failure(tmp_path, "a,b,c\n1,2,3\n", max_columns=2).code == "csv_too_many_columns"
    assert profile(tmp_path, data, max_columns=2000)["column_count"] == 1500


def peak_memory(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_file_is_profiled_in_constant_memory(tmp_path: Path) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small_rows = write_big_csv(small, 5_000_000)
    large_rows = write_big_csv(large, 20_000_000)
    results: list[dict[str, Any]] = []

    def run(path: Path) -> Callable[[], object]:
        return lambda: results.append(CsvProfile().run(make_context(path), CsvProfileParams()).result)

    peak_small = peak_memory(run(small))
    peak_large = peak_memory(run(large))
    assert peak_large < 16 * 2**20, f"peak {peak_large / 2**20:.1f} MiB"
    assert peak_large < peak_small * 1.2, (peak_small, peak_large)

    result = results[1]
    assert result["row_count"] == large_rows > small_rows
    assert result["malformed_rows"] == 0
    assert types(result) == {
        "id": "integer",
        "amount": "float",
        "active": "boolean",
        "day": "date",
        "moment": "datetime",
        "city": "string",
        "note": "string",
    }
    ids = column(result, "id")
    assert (ids["min"], ids["max"]) == (1, large_rows)
    assert ids["distinct_exact"] is False
    assert abs(ids["distinct"] - large_rows) < 0.03 * large_rows
    assert column(result, "city")["distinct"] == 6
    assert column(result, "note")["null_count"] == large_rows - large_rows // 7
    assert column(result, "note")["samples"] == ["line one\nline two"]


def test_progress_rises_to_one_and_cancellation_stops_the_run(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    write_big_csv(path, 3_000_000)
    seen: list[float] = []
    CsvProfile().run(
        make_context(path, progress=lambda fraction, message: seen.append(fraction)), CsvProfileParams()
    )
    assert len(seen) > 5
    assert seen == sorted(seen)
    assert seen[-1] == 1.0

    calls: list[float] = []
    with pytest.raises(Cancelled):
        CsvProfile().run(
            make_context(
                path, progress=lambda fraction, message: calls.append(fraction), cancelled=lambda: bool(calls)
            ),
            CsvProfileParams(),
        )
    assert len(calls) == 1  # stopped right after the first progress report


# ---- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n\n\r\n", b"   \n"], ids=["empty", "blank-lines", "spaces"])
def test_empty_files_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    assert failure(tmp_path, data).code == "csv_empty"


def test_binary_files_fail_as_not_text(tmp_path: Path) -> None:
    assert failure(tmp_path, png_bytes()).code == "csv_not_text"
    assert failure(tmp_path, random.Random(3).randbytes(10_000)).code == "csv_not_text"


def test_a_nul_byte_after_the_sniffed_start_fails_as_not_text(tmp_path: Path) -> None:
    head = "".join(f"{i},x\n" for i in range(20_000)).encode()
    assert len(head) > 64 * 1024
    error = failure(tmp_path, b"a,b\n" + head + b"1,\x00\x01\x02\n")
    assert error.code == "csv_not_text"
    assert "NUL" in error.message


def test_hostile_quoting_is_detected_in_linear_time(tmp_path: Path) -> None:
    # csv.Sniffer needs minutes for this (quadratic regular expressions); detection here parses.
    error = failure(tmp_path, ',"' * 40_000)
    assert error.code == "csv_too_many_columns"
    result = profile(tmp_path, ',"' * 40_000, max_columns=5000, delimiter=";")
    assert (result["column_count"], result["row_count"]) == (1, 0)


def test_a_line_without_end_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_profile, "MAX_LINE_CHARS", 100_000)
    error = failure(tmp_path, "a,b\n1,2\n" + "x," * 200_000)
    assert error.code == "csv_line_too_long"


# ---- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"sample_values": 51},
        {"sample_values": -1},
        {"max_columns": 0},
        {"max_columns": 5001},
        {"delimiter": ";;"},
        {"delimiter": '"'},
        {"delimiter": "\n"},
        {"encoding": "klingon-8"},
        {"encoding": "base64"},  # a codec, but not a text encoding
        {"encoding": "rot13"},
        {"encoding": "utf-16"},  # needs a BOM the file may not have: name the byte order
        {"encoding": "utf-32"},
        {"encoding": "idna"},  # text codecs that cannot decode a byte stream with replacement
        {"encoding": "punycode"},
        {"encoding": "undefined"},
        {"header": "maybe"},
        {"unknown": 1},
    ],
)
def test_bad_params_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="validation error"):
        CsvProfileParams(**params)


def test_encoding_param_is_normalised() -> None:
    assert CsvProfileParams(encoding="Latin-1").encoding == "iso8859-1"
    assert CsvProfileParams(encoding="UTF8").encoding == "utf-8"


# ---- distinct counting ----------------------------------------------------------------------


def signed_hash(value: str) -> int:
    """A deterministic 64-bit hash (the processor uses hash(), randomised per process)."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little", signed=True)


@pytest.mark.parametrize("count", [0, 1, 10, 1_000, 20_000, 100_000, 300_000])
def test_hyperloglog_estimates_within_two_percent(count: int) -> None:
    sketch = HyperLogLog(14)
    values = [signed_hash(f"value-{i}") for i in range(count)]
    for start in range(0, count, 5000):  # in batches, as the columns add them, with repeats
        sketch.add_hashes(values[start : start + 5000])
        sketch.add_hashes(values[max(0, start - 2000) : start + 1000])
    estimate = sketch.estimate()
    assert abs(estimate - count) <= max(0.02 * count, 0.5), estimate


def test_hyperloglog_memory_is_its_registers() -> None:
    sketch = HyperLogLog(12)
    sketch.add_hashes(signed_hash(str(i)) for i in range(50_000))
    assert len(sketch.registers) == 4096
    assert abs(sketch.estimate() - 50_000) < 0.05 * 50_000
    with pytest.raises(ValueError, match="p must be"):
        HyperLogLog(30)


def test_distinct_counter_is_exact_then_estimates() -> None:
    counter = DistinctCounter(exact_limit=1000, char_limit=1 << 20)
    counter.add({"a", "b"})
    counter.add({"b", "c"})
    assert (counter.count(), counter.exact) == (3, True)
    for start in range(0, 100_000, 1000):
        counter.add({f"v{i}" for i in range(start, start + 1000)})
    assert counter.exact is False
    assert abs(counter.count() - 100_003) < 0.03 * 100_003
    # Long values switch to the sketch early, whatever their number.
    long_values = DistinctCounter(exact_limit=1000, char_limit=10_000)
    long_values.add({f"{i:>2000}" for i in range(10)})
    assert long_values.exact is False
    assert long_values.count() == 10


def test_distinct_of_a_high_cardinality_column_is_an_estimate(tmp_path: Path) -> None:
    data = "id,group\n" + "".join(f"user-{i},{i % 10}\n" for i in range(100_000))
    result = profile(tmp_path, data)
    ids, groups = column(result, "id"), column(result, "group")
    assert ids["distinct_exact"] is False
    assert abs(ids["distinct"] - 100_000) < 0.04 * 100_000
    assert (groups["distinct"], groups["distinct_exact"]) == (10, True)


# ---- through the API ------------------------------------------------------------------------


def test_end_to_end_through_the_api(client: TestClient, worker: LocalWorker) -> None:
    data = b'\xef\xbb\xbfid;name;joined\n1;"Smith; John";2024-01-02\n2;"Doe\nJane";\n3;Ann;2024-03-04\n'
    job_id = submit(client, data, name="people.csv", processor="csv-profile", content_type="text/csv")["id"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["file"]["content_type"] in ("text/csv", "text/plain")
    worker.drain()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    result = client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    body = result.json()
    assert body == job["result"]
    assert (body["delimiter"], body["bom"], body["row_count"]) == (";", True, 3)
    assert types(body) == {"id": "integer", "name": "string", "joined": "date"}
    assert column(body, "joined")["null_count"] == 1
    assert column(body, "name")["samples"] == ["Smith; John", "Doe\nJane", "Ann"]


def test_params_reach_the_processor(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(
        client,
        b"1,2\n3,4\n",
        name="n.csv",
        processor="csv-profile",
        params={"header": True, "sample_values": 1},
    )["id"]
    worker.drain()
    result = client.get(f"/v1/jobs/{job_id}").json()["result"]
    assert result["header"] == ["1", "2"]
    assert column(result, "1")["samples"] == ["3"]


def test_a_failing_csv_fails_the_job_with_its_code(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(
        client, b"a,b,c\n1,2,3\n", name="w.csv", processor="csv-profile", params={"max_columns": 2}
    )["id"]
    worker.drain()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "csv_too_many_columns"
    assert job["attempts"] == 1  # a clean failure is not retried


@pytest.mark.parametrize(
    "content",
    [png_bytes(), random.Random(5).randbytes(4096), b"id,name\n1,\x00\x00\x00\n"],
    ids=["png", "random-bytes", "nul-bytes"],
)
def test_binary_uploaded_as_csv_is_415_at_submit(client: TestClient, content: bytes) -> None:
    response = post_file(client, content, name="data.csv", content_type="text/csv", processor="csv-profile")
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert "text/csv" in problem["accepts"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_empty_upload_is_refused_at_submit(client: TestClient) -> None:
    response = post_file(client, b"", name="empty.csv", content_type="text/csv", processor="csv-profile")
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "The uploaded file is empty."


@pytest.mark.parametrize(
    "content",
    [
        b"BMI,age,height\n22.1,40,180\n23.5,31,175\n",  # starts like a BMP ("BM")
        b"P1,P2,P3\n1,2,3\n4,5,6\n",  # starts like a PBM image ("P1")
        b'id,text\n1,"multi\nline"\n2,x\n',  # quoted newline: sniffed as text/plain
        b"a\tb\n1\t2\n3\t4\n",
        b"only\none\ncolumn\n",
    ],
    ids=["bmi", "p1", "quoted-newline", "tsv", "one-column"],
)
def test_ordinary_csvs_are_accepted_at_submit(
    client: TestClient, worker: LocalWorker, content: bytes
) -> None:
    job_id = submit(client, content, name="t.csv", processor="csv-profile", content_type="text/csv")["id"]
    worker.drain()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["result"]["row_count"] >= 2


@pytest.mark.parametrize(
    "params",
    [
        {"sample_values": 1000},
        {"delimiter": "ab"},
        {"encoding": "nope"},
        {"encoding": "utf-16"},
        {"encoding": "utf-32"},
        {"encoding": "idna"},
        {"encoding": "punycode"},
        {"encoding": "undefined"},
        {"colour": "red"},
        {"max_columns": 0},
    ],
)
def test_bad_params_are_422_at_submit(client: TestClient, params: dict[str, Any]) -> None:
    response = post_file(client, b"a,b\n1,2\n", name="x.csv", processor="csv-profile", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "Invalid params for processor 'csv-profile'."
    assert client.get("/v1/jobs").json()["items"] == []


def test_processor_listing_shows_types_and_params(client: TestClient) -> None:
    items = client.get("/v1/processors").json()["items"]
    (entry,) = [item for item in items if item["name"] == "csv-profile"]
    assert set(entry["accepts"]) == {"text/csv", "text/tab-separated-values", "text/plain"}
    schema = entry["params_schema"]
    assert set(schema["properties"]) == {"delimiter", "encoding", "header", "sample_values", "max_columns"}
    assert schema["additionalProperties"] is False
