"""Distinct counting in constant memory: exact up to a bound, then a HyperLogLog sketch.

:class:`HyperLogLog` takes 64-bit hashes (signed ints, as ``hash()`` gives on 64-bit builds) and
estimates how many distinct ones it saw with Ertl's improved estimator ("New cardinality
estimation algorithms for HyperLogLog sketches", 2017), which needs no empirical bias tables and
is accurate from a handful of values to billions. With ``p`` index bits it keeps ``2**p`` one-byte
registers; the standard error is about ``1.04 / sqrt(2**p)`` (0.8 % for ``p = 14``).

:class:`DistinctCounter` keeps the exact set of values while it is small and switches to a sketch
once it outgrows its bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import compress
from operator import contains

MASK64 = (1 << 64) - 1
# A hash h (unsigned, 64 bits) has rank > r exactly when h < 2**(64 - r). For signed ints (what
# hash() returns) that is: any value for r == 0, else 0 <= h < 2**(64 - r).
_ABOVE = (range(-(1 << 63), 1 << 64), *(range(1 << (64 - rank)) for rank in range(1, 65)))


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y = 1.0
    z = x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y = 1.0
    z = 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


class HyperLogLog:
    """A HyperLogLog sketch over 64-bit hashes."""

    __slots__ = ("_calls", "_floor", "_index_mask", "_q", "p", "registers")

    def __init__(self, p: int = 14) -> None:
        if not 4 <= p <= 18:
            raise ValueError("p must be between 4 and 18")
        self.p = p
        self._q = 64 - p
        self._index_mask = (1 << p) - 1
        self.registers = bytearray(1 << p)
        self._floor = 0  # a lower bound of min(registers), refreshed every 32 calls
        self._calls = 0

    def add_hashes(self, hashes: Iterable[int]) -> None:
        """Add hashes: signed 64-bit ints, as ``hash()`` returns on 64-bit builds.

        Once the sketch has seen a few thousand hashes most cannot raise their register, and the
        test for that runs in C: a hash's rank exceeds a register holding ``r`` exactly when the
        hash, read as a signed 64-bit int, is in ``_ABOVE[r]``. Only hashes that pass reach the
        Python loop. When every register is at least ``floor``, one ``filter`` drops most hashes
        before even that.
        """
        registers = self.registers
        mask = self._index_mask
        self._calls += 1
        if not self._calls % 32:
            self._floor = min(registers)
        floor = self._floor
        values = list(filter(_ABOVE[floor].__contains__, hashes)) if floor else list(hashes)
        above = map(_ABOVE.__getitem__, map(registers.__getitem__, map(mask.__and__, values)))
        p = self.p
        top = self._q + 1
        for value in compress(values, map(contains, above, values)):
            value &= MASK64
            index = value & mask
            rank = top - (value >> p).bit_length()
            if rank > registers[index]:
                registers[index] = rank

    def estimate(self) -> float:
        m = len(self.registers)
        q = self._q
        counts = [self.registers.count(k) for k in range(q + 2)]
        if counts[0] == m:
            return 0.0
        z = m * _tau(1.0 - counts[q + 1] / m)
        for k in range(q, 0, -1):
            z = 0.5 * (z + counts[k])
        z += m * _sigma(counts[0] / m)
        return m * m / (2.0 * math.log(2.0)) / z


class DistinctCounter:
    """Counts distinct strings: exactly while at most ``exact_limit`` of them, together at most
    ``char_limit`` characters long, were seen; then estimated by a :class:`HyperLogLog` over their
    ``hash()`` (which Python randomises per process: estimates, not exact counts, may differ by
    a fraction of a percent between runs)."""

    __slots__ = ("_chars", "_exact", "_p", "char_limit", "exact_limit", "sketch")

    def __init__(self, exact_limit: int = 32_768, char_limit: int = 1 << 20, p: int = 14) -> None:
        self.exact_limit = exact_limit
        self.char_limit = char_limit
        self._p = p
        self._exact: set[str] | None = set()
        self._chars = 0
        self.sketch: HyperLogLog | None = None

    def add(self, values: set[str]) -> set[str]:
        """Add a set of values. Returns those not seen before: exactly so while counting exactly,
        else all of ``values``."""
        if self._exact is None:
            assert self.sketch is not None
            self.sketch.add_hashes(map(hash, values))
            return values
        new = values - self._exact
        if not new:
            return new
        self._exact |= new
        self._chars += sum(map(len, new))
        if len(self._exact) > self.exact_limit or self._chars > self.char_limit:
            self.sketch = HyperLogLog(self._p)
            self.sketch.add_hashes(map(hash, self._exact))
            self._exact = None
        return new

    @property
    def exact(self) -> bool:
        return self._exact is not None

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        assert self.sketch is not None
        return round(self.sketch.estimate())
