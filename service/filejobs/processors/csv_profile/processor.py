"""``csv-profile``: streams a CSV of any size and reports its dialect and a profile of every column.

The file is read once, in constant memory: 256 KiB chunks are decoded incrementally, cut into
lines (never longer than :data:`MAX_LINE_CHARS`) and fed to the ``csv`` module, whose rows are
gathered in batches of about :data:`BATCH_CELLS` cells and handed column by column to
:class:`filejobs.processors.csv_profile.columns.Column`.

Detection, on the first 64 KiB (more, up to 1 MiB, until it holds a few whole lines):

* encoding: a BOM, else UTF-8 if the sample decodes as UTF-8, else charset-normalizer's guess
  (``filejobs.sniff.text_encoding``); bytes that later turn out not to decode are replaced by
  U+FFFD and counted in ``decode_errors`` (the job still succeeds). A named ``encoding`` is one
  :mod:`filejobs.processors.csv_profile.encoding` accepts; anything decoding still raises is ``csv_encoding``;
* delimiter: each of ``,`` ``;`` tab ``|`` is tried with the csv module itself on the sample (so
  quoted fields count as they should); the one giving the most rows with the same number (≥ 2) of
  fields wins, ties going to that order, and ``,`` when none splits anything. (``csv.Sniffer`` is
  not used: its regular expressions take quadratic time on hostile input, ~2 s for 16 KB of
  ``,"``);
* header: columns whose values below the first row have a type (number, boolean, date) vote: a
  first-row cell that does not fit its column's type says "header", one that fits says "data". With
  no typed column, the first row is a header unless one of its cells is itself a number, boolean
  or date. The ``header`` param overrides it.

Rows: blank lines are skipped. A row with another number of fields than the first row is counted
in ``malformed_rows`` (the first ten by line number in ``malformed_lines``) and still profiled by
position: missing fields count as nulls, extra ones are ignored. A record the csv module refuses (a
field over its 128 KiB limit) is counted there too and gives no values. Bytes that do not decode
are replaced and counted; a NUL character, or a line over 4 Mi characters, fails the job.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
from collections import Counter
from collections.abc import Iterator
from itertools import chain, islice
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, field_validator

from filejobs.processors.base import Context, Output, Processor, ProcessorError
from filejobs.processors.csv_profile.columns import NULL_TOKENS, STRING, Column, fits, infer_type
from filejobs.processors.csv_profile.encoding import (
    ERROR_HANDLER,
    decode_errors,
    decoding,
    reading_encoding,
    reset_decode_errors,
    usable_encoding,
)
from filejobs.processors.hyperloglog import DistinctCounter
from filejobs.sniff import SNIFF_BYTES, looks_binary, text_encoding

CHUNK_BYTES = 256 * 1024
HEAD_MAX_BYTES = 1024 * 1024
MAX_LINE_CHARS = 4 * 1024 * 1024
BATCH_CELLS = 2048  # small batches stay in the CPU cache: faster than big ones
SAMPLE_ROWS = 200
MALFORMED_LINES_KEPT = 10
# Distinct values are counted exactly up to these bounds, shared by all columns (each column gets
# an equal share, at most EXACT_VALUES_MAX values and EXACT_CHARS_MAX characters), then estimated
# with a HyperLogLog sketch. The exact sets are what most of the memory goes to: ~100 bytes a value.
EXACT_VALUES_MAX = 32_768
EXACT_CHARS_MAX = 1 << 20
EXACT_VALUES_BUDGET = 262_144
EXACT_CHARS_BUDGET = 16 << 20
DELIMITERS = (",", ";", "\t", "|")
# Characters str.splitlines() breaks lines at besides \r and \n; csv only knows \r and \n.
_OTHER_LINE_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


class CsvProfileParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delimiter: str | None = Field(
        default=None,
        min_length=1,
        max_length=1,
        description="The field delimiter (one character); detected when left out.",
    )
    encoding: str | None = Field(
        default=None,
        max_length=64,
        description="The text encoding (a Python codec name such as 'utf-8' or 'cp1252'); "
        "detected when left out.",
    )
    header: bool | None = Field(
        default=None, description="Whether the first row is a header; detected when left out."
    )
    sample_values: int = Field(
        default=5, ge=0, le=50, description="How many distinct sample values to report per column."
    )
    max_columns: int = Field(
        default=1000, ge=1, le=5000, description="Refuse files with more columns than this."
    )

    @field_validator("delimiter")
    @classmethod
    def _usable_delimiter(cls, value: str | None) -> str | None:
        if value is not None and value in '"\r\n\x00':
            raise ValueError("the delimiter cannot be a quote, a line break or NUL")
        return value

    @field_validator("encoding")
    @classmethod
    def _usable_encoding(cls, value: str | None) -> str | None:
        return None if value is None else usable_encoding(value)


class _Dialect(csv.Dialect):
    delimiter = ","
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\n"
    quoting = csv.QUOTE_MINIMAL
    strict = False


def _dialect(delimiter: str, skip_initial_space: bool = False) -> type[csv.Dialect]:
    return type("Detected", (_Dialect,), {"delimiter": delimiter, "skipinitialspace": skip_initial_space})


# ---- detection --------------------------------------------------------------------------------


def _read_head(handle: BinaryIO) -> tuple[bytes, bool]:
    """The first bytes, enough for a few whole lines; and whether they are the whole file."""
    head = handle.read(SNIFF_BYTES)
    while len(head) < HEAD_MAX_BYTES and head.count(b"\n") < 5:
        more = handle.read(SNIFF_BYTES)
        if not more:
            return head, True
        head += more
    complete = not handle.read(1)
    return head, complete


def _detect_encoding(head: bytes) -> str:
    if looks_binary(head[:SNIFF_BYTES]):
        raise ProcessorError("csv_not_text", "The file is not text (binary content); it cannot be a CSV.")
    encoding = text_encoding(head)
    if encoding is None:
        raise ProcessorError("csv_not_text", "The file's text encoding could not be recognised.")
    return codecs.lookup(encoding).name


def _sample_rows(text: str, dialect: type[csv.Dialect], complete: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), dialect):
            if row:
                rows.append(row)
                if len(rows) > SAMPLE_ROWS:
                    break
    except csv.Error:
        pass
    if not complete and len(rows) > 1:
        rows.pop()  # the sample may have cut it short
    return rows[:SAMPLE_ROWS]


def _detect_delimiter(text: str, complete: bool) -> str:
    best, best_score = ",", 0.0
    for delimiter in DELIMITERS:
        rows = _sample_rows(text, _dialect(delimiter), complete)
        if not rows:
            continue
        width, count = Counter(map(len, rows)).most_common(1)[0]
        score = count / len(rows)
        if width >= 2 and score > best_score:
            best, best_score = delimiter, score
    return best


def _skips_initial_space(rows: list[list[str]]) -> bool:
    """Whether every non-empty field after a delimiter starts with a space (``a, b, c``)."""
    after = [field for row in rows for field in row[1:] if field]
    return bool(after) and all(field.startswith(" ") for field in after)


def detect_header(rows: list[list[str]]) -> bool:
    """Whether the first sample row looks like a header (see the module docstring)."""
    if not rows:
        return False
    first = rows[0]
    rest = [row for row in rows[1:] if len(row) == len(first)]
    votes = 0
    for index, cell in enumerate(first):
        values = {row[index] for row in rest} - NULL_TOKENS
        kind = infer_type(values)
        if kind is None or kind == STRING or cell in NULL_TOKENS:
            continue
        votes += -1 if fits(kind, cell) else 1
    if votes:
        return votes > 0
    return all(cell in NULL_TOKENS or infer_type({cell}) == STRING for cell in first)


# ---- reading ----------------------------------------------------------------------------------


class _Lines:
    """Decoded lines of the file for the csv module, with progress, cancellation and limits."""

    def __init__(self, handle: BinaryIO, encoding: str, size: int, ctx: Context) -> None:
        self._handle = handle
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=ERROR_HANDLER)
        self._size = size
        self._ctx = ctx
        self.consumed = 0
        self._reported = 0.0

    def chunks(self) -> Iterator[list[str] | io.StringIO]:
        carry = ""
        while True:
            self._ctx.check_cancelled()
            data = self._handle.read(CHUNK_BYTES)
            self.consumed += len(data)
            text = self._decoder.decode(data, final=not data)
            if "\x00" in text:
                raise ProcessorError(
                    "csv_not_text",
                    f"The file contains a NUL character (near byte {self.consumed}): it is not a text CSV.",
                )
            if carry:
                text = carry + text
            if not data:
                if text:
                    yield self._split(text)
                return
            cut = text.rfind("\n")
            if cut < 0:
                cut = text.rfind("\r", 0, len(text) - 1)  # old Mac line ends; never split a \r\n
            carry = text[cut + 1 :]
            if len(carry) > MAX_LINE_CHARS:
                raise ProcessorError(
                    "csv_line_too_long",
                    f"A line is longer than {MAX_LINE_CHARS} characters (near byte {self.consumed}).",
                )
            if cut >= 0:
                yield self._split(text[: cut + 1])
            self._progress()

    @staticmethod
    def _split(text: str) -> list[str] | io.StringIO:
        if any(char in text for char in _OTHER_LINE_BREAKS):
            return io.StringIO(text, newline="")  # splits at \r, \n and \r\n only
        return text.splitlines(keepends=True)

    def _progress(self) -> None:
        if not self._size:
            return
        fraction = min(self.consumed / self._size, 1.0)
        if fraction - self._reported >= 0.005:
            self._reported = fraction
            self._ctx.progress(fraction, None)


def _line_count(row: list[str]) -> int:
    """How many lines a parsed row took: one, plus the line breaks inside its quoted fields."""
    text = "".join(row)
    if "\n" not in text and "\r" not in text:
        return 1
    return 1 + text.count("\n") + text.count("\r") - text.count("\r\n")


class _Profile:
    """The columns and row counts of one file."""

    def __init__(self, names: list[str], params: CsvProfileParams) -> None:
        width = len(names)
        self.width = width
        self.batch_rows = max(16, min(4096, BATCH_CELLS // width))
        exact_values = max(64, min(EXACT_VALUES_MAX, EXACT_VALUES_BUDGET // width))
        exact_chars = max(16 * 1024, min(EXACT_CHARS_MAX, EXACT_CHARS_BUDGET // width))
        precision = 14 if width <= 1000 else 12
        self.columns = [
            Column(
                name,
                sample_limit=params.sample_values,
                distinct=DistinctCounter(exact_values, exact_chars, precision),
            )
            for name in names
        ]
        self.row_count = 0
        self.malformed = 0
        self.malformed_lines: list[int] = []

    def malformed_row(self, line: int) -> None:
        self.malformed += 1
        if len(self.malformed_lines) < MALFORMED_LINES_KEPT:
            self.malformed_lines.append(line)

    def fix_rows(self, batch: list[list[str]], start: int, line: int) -> None:
        """Drop blank lines from ``batch[start:]`` and count, pad or cut rows of the wrong width.
        ``line`` is the last line read before ``batch[start]``."""
        width = self.width
        rows = batch[start:]
        del batch[start:]
        for row in rows:
            first_line = line + 1
            if len(self.malformed_lines) < MALFORMED_LINES_KEPT:
                line += _line_count(row)
            if len(row) == width:
                batch.append(row)
            elif row:  # an empty row is a blank line
                self.malformed_row(first_line)
                batch.append(row[:width] if len(row) > width else row + [""] * (width - len(row)))

    def flush(self, batch: list[list[str]]) -> None:
        self.row_count += len(batch)
        for column, cells in zip(self.columns, zip(*batch, strict=True), strict=True):
            column.update(cells)


class CsvProfile(Processor):
    name = "csv-profile"
    version = "1"
    description = (
        "Profiles a CSV/TSV file of any size in one streaming pass: encoding, delimiter and header "
        "detection, row count, malformed rows, and per column the inferred type (integer, float, "
        "boolean, date, datetime, string), null count, distinct estimate, min/max and sample values."
    )
    accepts = ("text/csv", "text/tab-separated-values", "text/plain")
    Params = CsvProfileParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, CsvProfileParams)
        size = ctx.input_path.stat().st_size
        with open(ctx.input_path, "rb") as handle:
            head, complete = _read_head(handle)
            if not head.strip():
                raise ProcessorError("csv_empty", "The file is empty: there is no row to profile.")
            encoding = params.encoding or _detect_encoding(head)
            reading = reading_encoding(encoding, head)
            with decoding(encoding):
                text = head.decode(reading, errors=ERROR_HANDLER)
            if not complete:
                cut = max(text.rfind("\n"), text.rfind("\r"))
                text = text[: cut + 1] if cut >= 0 else text
            delimiter = params.delimiter or _detect_delimiter(text, complete)
            rows = _sample_rows(text, _dialect(delimiter), complete)
            skip_space = _skips_initial_space(rows)
            dialect = _dialect(delimiter, skip_space)
            if skip_space:
                rows = _sample_rows(text, dialect, complete)
            has_header = params.header if params.header is not None else detect_header(rows)

            handle.seek(0)
            reset_decode_errors()
            lines = _Lines(handle, reading, size, ctx)
            reader = csv.reader(chain.from_iterable(lines.chunks()), dialect)
            # Rows are lists: without this, the cyclic GC would walk every batch again and again
            # (~4 % of the time). Nothing here makes reference cycles.
            collecting = gc.isenabled()
            gc.disable()
            try:
                with decoding(encoding):
                    profile = self._read(reader, has_header, params, ctx)
            finally:
                if collecting:
                    gc.enable()
            replaced = decode_errors()
        ctx.progress(1.0, None)
        bom = head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        return Output(
            result={
                "encoding": "utf-8" if encoding == "utf-8-sig" else encoding,
                "bom": bom,
                "delimiter": delimiter,
                "skip_initial_space": skip_space,
                "has_header": has_header,
                "header": [column.name for column in profile.columns],
                "column_count": profile.width,
                "row_count": profile.row_count,
                "malformed_rows": profile.malformed,
                "malformed_lines": profile.malformed_lines,
                "decode_errors": replaced,
                "columns": [column.result() for column in profile.columns],
            }
        )

    def _read(self, reader: Any, has_header: bool, params: CsvProfileParams, ctx: Context) -> _Profile:
        first: list[str] | None = None
        try:
            for row in reader:
                if row:
                    first = row
                    break
        except csv.Error as exc:
            raise ProcessorError("csv_malformed", f"The first row cannot be read: {exc}.") from None
        if first is None:
            raise ProcessorError("csv_empty", "The file has no rows: only blank lines.")
        width = len(first)
        if width > params.max_columns:
            raise ProcessorError(
                "csv_too_many_columns",
                f"The file has {width} columns; at most {params.max_columns} are profiled "
                "(raise the 'max_columns' param, up to 5000).",
            )
        if has_header:
            names = [cell[:256] if cell else f"col_{index}" for index, cell in enumerate(first, 1)]
        else:
            names = [f"col_{index}" for index in range(1, width + 1)]
        profile = _Profile(names, params)
        batch: list[list[str]] = [] if has_header else [first]
        rows_per_batch = profile.batch_rows
        while True:
            start, line = len(batch), reader.line_num
            wanted = rows_per_batch - start
            failed = False
            try:
                batch.extend(islice(reader, wanted))  # rows read before an error stay in batch
            except csv.Error:  # e.g. a field over the csv module's size limit: skip the record
                failed = True
            got = len(batch) - start
            if got and set(map(len, batch[start:] if start else batch)) != {width}:
                profile.fix_rows(batch, start, line)
            if failed:
                profile.row_count += 1
                profile.malformed_row(reader.line_num)
                continue
            if got < wanted:
                break
            if len(batch) >= rows_per_batch:
                profile.flush(batch)
                batch = []
                ctx.check_cancelled()
        if batch:
            profile.flush(batch)
        return profile


__all__ = ["CsvProfile", "CsvProfileParams", "detect_header"]
