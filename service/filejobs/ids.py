"""Job ids: UUIDv7 strings, so they sort by creation time yet stay unguessable.

Layout (RFC 9562, method 1): 48-bit Unix milliseconds, a 12-bit counter that keeps ids from one
process strictly increasing within a millisecond (seeded at random each millisecond), and 62 random
bits. Sorting ids sorts jobs by creation, which keyset pagination relies on.
"""

from __future__ import annotations

import os
import re
import threading
import time

_lock = threading.Lock()
_last_millis = 0
_counter = 0
#: Random bytes drawn from the OS a block at a time: ``os.urandom`` releases the GIL, and taking it
#: back on the event loop waits for whichever thread holds it (a busy upload path made three
#: such calls per upload). Each byte is handed out once.
_RANDOM_BLOCK = 4096
_random = b""
_random_at = 0


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the OS's CSPRNG (as ``os.urandom``), drawn in blocks."""
    global _random, _random_at
    with _lock:
        if _random_at + size > len(_random):
            _random, _random_at = os.urandom(max(_RANDOM_BLOCK, size)), 0
        chunk = _random[_random_at : _random_at + size]
        _random_at += size
        return chunk


def random_hex(size: int) -> str:
    """``size`` random bytes as hex (an unguessable name)."""
    return random_bytes(size).hex()


def new_job_id() -> str:
    """A fresh UUIDv7 string."""
    global _last_millis, _counter
    drawn = random_bytes(10)
    with _lock:
        millis = time.time_ns() // 1_000_000
        if millis > _last_millis:
            _last_millis = millis
            _counter = int.from_bytes(drawn[8:], "big") & 0x7FF  # room to count upwards
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter spent: borrow the next millisecond
                _last_millis += 1
                _counter = 0
        millis, counter = _last_millis, _counter
    rand = int.from_bytes(drawn[:8], "big") & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    text = f"{value:032x}"  # str(uuid.UUID(int=value)), without building the UUID
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


#: The canonical text of a UUIDv7 (lower-case hex, RFC 9562 variant bits ``10``): the only form
#: ``str(uuid.UUID(...))`` gives for one, so exactly the strings :func:`new_job_id` can return.
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the form of an id we issue (keeps junk out of queries and paths)."""
    return _JOB_ID.fullmatch(value) is not None
