"""Per-column statistics for ``csv-profile``: type inference, nulls, distinct values, min/max, samples.

Columns are fed a batch of cells at a time (a tuple of strings). The per-cell work is done in C
where it can be: ``set(cells)`` dedups the batch, nulls are counted with ``tuple.count``, and only
the batch's *distinct* non-null values are parsed, with ``map(int, ...)``-style passes, and only
for the types the column can still be. Once a column is ``string`` it is never parsed again.

Type rules (the narrowest type that fits every non-null value of the column):

* ``integer``: optional sign and ASCII digits, no leading zero (``0`` itself is fine): ``007`` and
  zip codes such as ``02134`` are strings, so no information is lost.
* ``float``: what Python's ``float`` reads, in ASCII, finite (no ``inf``/``nan``), no spaces or
  underscores, same leading-zero rule (``0.5`` is a float, ``01.5`` is not). Integers mixed with
  floats make a float column.
* ``boolean``: only the words true/false, yes/no, t/f, y/n (lower, Title or UPPER case). ``0``/``1``
  columns are integers.
* ``date``: ISO 8601 ``YYYY-MM-DD``.
* ``datetime``: ISO 8601 ``YYYY-MM-DD`` then ``T`` or a space and a time, as Python's
  ``datetime.fromisoformat`` reads it (fractions and ``Z``/``+hh:mm`` offsets allowed). Dates mixed
  with datetimes make a datetime column.
* ``string``: anything else, and a column with no non-null value at all.

Null values: the empty string and ``NULL``, ``null``, ``Null``, ``NA``, ``N/A``, ``n/a``, ``#N/A``,
``NaN``, ``nan``, ``None``, ``none``, ``\\N``. Values are compared as they are, never trimmed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime
from itertools import repeat
from typing import Any

from filejobs.processors.hyperloglog import DistinctCounter

INTEGER = "integer"
FLOAT = "float"
BOOLEAN = "boolean"
DATE = "date"
DATETIME = "datetime"
STRING = "string"

NULL_TOKENS = frozenset(
    {"", "NULL", "null", "Null", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "None", "none", "\\N"}
)
_BOOL_WORDS = ("true", "false", "yes", "no", "t", "f", "y", "n")
BOOLEAN_WORDS = frozenset(variant for word in _BOOL_WORDS for variant in (word, word.title(), word.upper()))
SAMPLE_CHARS = 64

# Characters Python's int()/float() tolerate that a number in a CSV should not contain.
_NOT_IN_NUMBERS = ("_", " ", "\t", "\n", "\r", "\x0b", "\x0c")
_LAYOUT = slice(4, 11, 3)
_DATETIME_LAYOUTS = frozenset({"--T", "-- ", "--"})


def _joined(values: Iterable[str]) -> str:
    """The values as ``,v1,v2,...,``: one string for C-level screening of the whole batch."""
    return "," + ",".join(values) + ","


def _number_screen(joined: str) -> bool:
    return joined.isascii() and not any(char in joined for char in _NOT_IN_NUMBERS)


def _has_leading_zero(joined: str) -> bool:
    """Whether some value (in ``,v1,v2,...,`` form, all already parsed as numbers) has a zero
    followed by another digit at the start of its integer part: ``007``, ``-01.5``. Counted with
    ``str.count``: every ``,0`` must be ``,0,`` ``,0.`` ``,0e`` or ``,0E``."""
    for sign in ("", "-", "+"):
        prefix = "," + sign + "0"
        total = joined.count(prefix)
        if total and total != sum(joined.count(prefix + after) for after in (",", ".", "e", "E")):
            return True
    return False


def integer_range(values: set[str], joined: str) -> tuple[int, int] | None:
    """(min, max) if every value is an integer by the rules above, else None."""
    if not _number_screen(joined):
        return None
    try:
        numbers = list(map(int, values))
    except ValueError:
        return None
    if _has_leading_zero(joined):
        return None
    return min(numbers), max(numbers)


def float_range(values: set[str], joined: str) -> tuple[float, float] | None:
    """(min, max) if every value is a float by the rules above, else None."""
    if not _number_screen(joined) or "n" in joined or "N" in joined:  # nan, inf, infinity
        return None
    try:
        numbers = list(map(float, values))
    except ValueError:
        return None
    low, high = min(numbers), max(numbers)
    if not (math.isfinite(low) and math.isfinite(high)) or _has_leading_zero(joined):
        return None
    return low, high


def date_range(values: set[str], joined: str) -> tuple[str, str] | None:
    """(min, max) as ISO strings if every value is a ``YYYY-MM-DD`` date, else None."""
    if "W" in joined or not all(map((10).__eq__, map(len, values))):  # W: ISO week dates
        return None
    try:
        set(map(date.fromisoformat, values))
    except ValueError:
        return None
    return min(values), max(values)  # ISO dates sort as strings


def _utc_naive(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def datetime_range(values: set[str], *, need_time: bool) -> tuple[Any, str, Any, str] | None:
    """(min key, min value, max key, max value) if every value is an ISO date-time (or a date,
    unless ``need_time``), else None. Keys compare naive and aware values alike (aware ones as
    UTC)."""
    # The layout is the characters at offsets 4, 7 and 10: "--T", "-- ", or "--" for a date.
    lengths = set(map(len, values))
    joined = ""
    if len(lengths) == 1:  # slice the layout out of one joined string
        (length,) = lengths
        count = len(values)
        joined = "".join(values)
        if length < 10 or joined[4::length] + joined[7::length] != "-" * (2 * count):
            return None
        layouts = {"--" + separator for separator in set(joined[10::length])} if length > 10 else {"--"}
    else:
        layouts = set(map(str.__getitem__, values, repeat(_LAYOUT)))
    if not layouts <= _DATETIME_LAYOUTS or (need_time and layouts == {"--"}):
        return None
    try:
        moments = list(map(datetime.fromisoformat, values))
    except ValueError:
        return None
    if (
        joined
        and len(layouts) == 1
        and joined.count("-") == 2 * count
        and "+" not in joined
        and "Z" not in joined
    ):
        # One layout, one length, no offsets: ISO strings sort as the moments they name.
        low, high = min(values), max(values)
        return datetime.fromisoformat(low), low, datetime.fromisoformat(high), high
    ordered = list(values)  # the same order as moments: a set iterates the same way twice
    try:
        low_key, high_key = min(moments), max(moments)
    except TypeError:  # naive and aware values mixed: compare aware ones as UTC
        moments = list(map(_utc_naive, moments))
        low_key, high_key = min(moments), max(moments)
    return low_key, ordered[moments.index(low_key)], high_key, ordered[moments.index(high_key)]


def infer_type(values: set[str]) -> str | None:
    """The narrowest type of a set of non-null values (None when there are none)."""
    if not values:
        return None
    joined = _joined(values)
    if integer_range(values, joined) is not None:
        return INTEGER
    if float_range(values, joined) is not None:
        return FLOAT
    if values <= BOOLEAN_WORDS:
        return BOOLEAN
    if date_range(values, joined) is not None:
        return DATE
    if datetime_range(values, need_time=True) is not None:
        return DATETIME
    return STRING


def fits(kind: str, value: str) -> bool:
    """Whether one non-null value fits a column of type ``kind``."""
    own = infer_type({value})
    return own == kind or (own, kind) in {(INTEGER, FLOAT), (DATE, DATETIME)}


def _compare_keys(a: Any, b: Any) -> tuple[Any, Any]:
    try:
        a < b  # noqa: B015 - only to see whether they compare
        return a, b
    except TypeError:
        return _utc_naive(a), _utc_naive(b)


class Column:
    """The running profile of one column."""

    __slots__ = (
        "_sample_seen",
        "distinct",
        "kind",
        "max",
        "max_key",
        "min",
        "min_key",
        "name",
        "null_count",
        "sample_limit",
        "samples",
    )

    def __init__(self, name: str, *, sample_limit: int, distinct: DistinctCounter) -> None:
        self.name = name
        self.kind: str | None = None
        self.null_count = 0
        self.distinct = distinct
        self.min: Any = None
        self.max: Any = None
        self.min_key: Any = None  # for datetimes: what min/max compare by
        self.max_key: Any = None
        self.sample_limit = sample_limit
        self.samples: list[str] = []
        self._sample_seen: set[str] = set()

    def update(self, cells: tuple[str, ...]) -> None:
        """Add a batch of this column's cells."""
        if len(self.samples) < self.sample_limit:
            ordered = dict.fromkeys(cells)
            self._take_samples(ordered)
            values = set(ordered)
        else:
            values = set(cells)
        nulls = NULL_TOKENS.intersection(values)
        if nulls:
            self.null_count += sum(map(cells.count, nulls))
            values -= nulls
            if not values:
                return
        # Values seen before already fit the type and are within min/max: only new ones are
        # parsed (all of them once the column has too many distinct values to remember).
        new = self.distinct.add(values)
        if new and self.kind != STRING:
            self._infer(new)

    def _take_samples(self, ordered: Iterable[str]) -> None:
        for value in ordered:
            if value in NULL_TOKENS or value in self._sample_seen:
                continue
            self._sample_seen.add(value)
            self.samples.append(value if len(value) <= SAMPLE_CHARS else value[: SAMPLE_CHARS - 1] + "…")
            if len(self.samples) >= self.sample_limit:
                self._sample_seen = set()
                return

    def _infer(self, values: set[str]) -> None:
        kind = self.kind
        if kind is None:
            self._first(values)
            return
        if kind == BOOLEAN:
            if not values <= BOOLEAN_WORDS:
                self._to_string()
            return
        if kind == DATETIME:
            if not self._merge_datetimes(values, need_time=False):
                self._to_string()
            return
        joined = _joined(values)
        if kind == INTEGER:
            ints = integer_range(values, joined)
            if ints is not None:
                self._merge_numbers(ints)
                return
            floats = float_range(values, joined)
            if floats is None:
                self._to_string()
                return
            self.kind = FLOAT
            self.min, self.max = float(self.min), float(self.max)
            self._merge_numbers(floats)
        elif kind == FLOAT:
            floats = float_range(values, joined)
            if floats is None:
                self._to_string()
            else:
                self._merge_numbers(floats)
        elif kind == DATE:
            dates = date_range(values, joined)
            if dates is not None:
                self.min, self.max = min(self.min, dates[0]), max(self.max, dates[1])
                return
            self.kind = DATETIME
            self.min_key = datetime.fromisoformat(self.min)
            self.max_key = datetime.fromisoformat(self.max)
            if not self._merge_datetimes(values, need_time=False):
                self._to_string()

    def _first(self, values: set[str]) -> None:
        joined = _joined(values)
        ints = integer_range(values, joined)
        if ints is not None:
            self.kind = INTEGER
            self.min, self.max = ints
            return
        floats = float_range(values, joined)
        if floats is not None:
            self.kind = FLOAT
            self.min, self.max = floats
            return
        if values <= BOOLEAN_WORDS:
            self.kind = BOOLEAN
            return
        dates = date_range(values, joined)
        if dates is not None:
            self.kind = DATE
            self.min, self.max = dates
            return
        self.kind = DATETIME
        if not self._merge_datetimes(values, need_time=True):
            self._to_string()

    def _merge_numbers(self, bounds: tuple[Any, Any]) -> None:
        low, high = bounds
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high

    def _merge_datetimes(self, values: set[str], *, need_time: bool) -> bool:
        found = datetime_range(values, need_time=need_time)
        if found is None:
            return False
        low_key, low, high_key, high = found
        if self.min_key is None:
            self.min_key, self.min, self.max_key, self.max = found
            return True
        current, new = _compare_keys(self.min_key, low_key)
        if new < current:
            self.min_key, self.min = low_key, low
        current, new = _compare_keys(self.max_key, high_key)
        if new > current:
            self.max_key, self.max = high_key, high
        return True

    def _to_string(self) -> None:
        self.kind = STRING
        self.min = self.max = self.min_key = self.max_key = None

    def result(self) -> dict[str, Any]:
        kind = self.kind or STRING
        return {
            "name": self.name,
            "type": kind,
            "null_count": self.null_count,
            "distinct": self.distinct.count(),
            "distinct_exact": self.distinct.exact,
            "min": self.min if kind != STRING else None,
            "max": self.max if kind != STRING else None,
            "samples": list(self.samples),
        }
