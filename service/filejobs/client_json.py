"""Parsing JSON a client sent, without Python's failure modes on hostile but valid JSON.

``json.loads`` raises ``RecursionError`` for arrays or objects nested about a thousand deep and
``ValueError`` for an integer of more than 4300 digits (CPython's limit on int-from-string
conversion); neither is a ``JSONDecodeError``, so a plain ``except JSONDecodeError`` lets them
through as a 500. :func:`loads` turns every way a text can fail into :class:`ClientJSONError`,
whose message says why in words fit for a problem's ``detail``, and bounds the nesting further (a
JSON nested deeper than :data:`MAX_DEPTH` would also fail later, when it is stored or hashed).
"""

from __future__ import annotations

import json
from typing import Any

#: Most levels of nested objects and arrays (the outermost counts as one).
MAX_DEPTH = 32
#: Most digits of an integer (CPython's default limit for converting a string to an int).
MAX_INT_DIGITS = 4300


class ClientJSONError(ValueError):
    """Not JSON this service takes. ``str()`` completes a sentence: "'params' <it>."."""


def loads(text: str | bytes, *, max_depth: int | None = MAX_DEPTH) -> Any:
    """The parsed value, or :class:`ClientJSONError`. ``max_depth=None``: only Python's own bound."""
    try:
        value = json.loads(text, parse_int=_parse_int)
    except ClientJSONError:
        raise
    except RecursionError:
        raise ClientJSONError(_too_deep(max_depth)) from None
    except json.JSONDecodeError as exc:
        raise ClientJSONError(f"is not valid JSON: {exc.msg} (at character {exc.pos})") from None
    except ValueError:  # UnicodeDecodeError of bytes, or any other refusal of the text
        raise ClientJSONError("is not valid JSON: it is not UTF-8 text") from None
    if max_depth is not None and _deeper_than(value, max_depth):
        raise ClientJSONError(_too_deep(max_depth))
    return value


def _parse_int(digits: str) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise ClientJSONError(f"holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _too_deep(limit: int | None) -> str:
    if limit is None:
        return "is nested too deeply"
    return f"is nested too deeply: at most {limit} levels of objects and arrays are allowed"


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` containers (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
