"""puremagic's matching, indexed: the same matches as ``puremagic.magic_string`` in a fraction of
the time.

puremagic compares the sample with each of its ~1,400 header signatures in a Python loop (about
1.5 ms per call, paid by every upload). Here the signatures are grouped once by offset and first
byte, so a sample is compared only with those that can match; footer and multi-part signatures and
the confidence ranking are puremagic's own. ``tests/test_sniff.py`` checks the two agree on every
signature puremagic knows.
"""

from __future__ import annotations

import functools
from typing import Any

import puremagic
from puremagic import main as _pm

Row = Any  # puremagic's PureMagic named tuple


@functools.cache
def _header_index() -> tuple[dict[int, dict[bytes, list[tuple[int, Row]]]], list[tuple[int, Row]]]:
    """Header signatures by offset, then by first byte (keeping puremagic's order); and the few
    that do not fit (negative offsets or empty patterns), tried one by one."""
    index: dict[int, dict[bytes, list[tuple[int, Row]]]] = {}
    others: list[tuple[int, Row]] = []
    for position, row in enumerate(_pm.magic_header_array):
        if row.offset < 0 or not row.byte_match:
            others.append((position, row))
            continue
        index.setdefault(row.offset, {}).setdefault(row.byte_match[:1], []).append((position, row))
    return index, others


def _header_matches(head: bytes) -> list[Row]:
    index, others = _header_index()
    found: list[tuple[int, Row]] = []
    size = len(head)
    for offset, by_first in index.items():
        if offset >= size:
            continue
        for position, row in by_first.get(head[offset : offset + 1], ()):
            end = offset + len(row.byte_match)
            if end <= size and head[offset:end] == row.byte_match:
                found.append((position, row))
    for position, row in others:
        end = row.offset + len(row.byte_match)
        if end <= size and head[row.offset : end] == row.byte_match:
            found.append((position, row))
    found.sort(key=lambda item: item[0])
    return [row for _, row in found]


def magic_string(sample: bytes) -> list[Any]:
    """What ``puremagic.magic_string(sample)`` returns (best first); raises ``PureError`` when
    nothing matches and ``ValueError`` for an empty sample, as it does."""
    if not sample:
        raise ValueError("Input was empty")
    head, foot = sample[: _pm.max_head], sample[-_pm.max_foot :]  # as _string_details
    matches = _header_matches(head)
    for row in _pm.magic_footer_array:
        start = row.offset
        end = row.offset + len(row.byte_match)
        area = foot[start:end] if end != 0 else foot[start:]
        if area == row.byte_match:
            matches.append(row)
    extra = set()
    for matched in matches:
        for row in _pm.multi_part_dict.get(matched.byte_match, ()):
            start = row.offset
            end = row.offset + len(row.byte_match)
            if row.offset < 0:
                area = foot[start:end] if end != 0 else foot[start:]
                if area == row.byte_match:
                    extra.add(
                        _pm.PureMagic(
                            byte_match=matched.byte_match + row.byte_match,
                            offset=row.offset,
                            extension=row.extension,
                            mime_type=row.mime_type,
                            name=row.name,
                        )
                    )
            elif end <= len(head) and head[start:end] == row.byte_match:
                extra.add(
                    _pm.PureMagic(
                        byte_match=head[matched.offset : end],
                        offset=row.offset,
                        extension=row.extension,
                        mime_type=row.mime_type,
                        name=row.name,
                    )
                )
    matches.extend(list(extra))
    info: list[Any] = _pm._confidence(matches, None)
    info.sort(key=lambda match: match.confidence, reverse=True)
    return info


PureError = puremagic.PureError
