"""Job ids: :func:`is_job_id` accepts exactly the canonical text of a UUIDv7."""

from __future__ import annotations

import random
import uuid

from filejobs.ids import is_job_id, new_job_id, random_bytes


def by_uuid(value: str) -> bool:
    """The definition: a UUIDv7 (RFC 9562 variant) written as ``str(uuid.UUID)`` writes it."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 7 and str(parsed) == value


def test_is_job_id_agrees_with_the_uuid_definition() -> None:
    rng = random.Random(20)
    issued = [new_job_id() for _ in range(200)]
    candidates = [*issued, "", "not-an-id", "../../etc/passwd", "0" * 26, issued[0] + "\n"]
    candidates += [value.upper() for value in issued[:5]]
    candidates += ["{" + value + "}" for value in issued[:5]]
    candidates += ["urn:uuid:" + value for value in issued[:5]]
    candidates += [value.replace("-", "") for value in issued[:5]]
    candidates += [str(uuid.uuid4()) for _ in range(50)]
    candidates += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    alphabet = "0123456789abcdefABCDEF-{}x \n"
    for value in issued[:100]:  # one character changed, anywhere
        at = rng.randrange(len(value))
        candidates.append(value[:at] + rng.choice(alphabet) + value[at + 1 :])
    for value in candidates:
        assert is_job_id(value) == by_uuid(value), value
    assert all(is_job_id(value) for value in issued)
    assert sum(map(is_job_id, candidates)) > len(issued)  # random UUIDs of the right form pass too


def test_new_job_ids_are_uuid7_text_and_increase() -> None:
    issued = [new_job_id() for _ in range(5000)]  # more than one block of pooled random bytes
    for value in issued:
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert str(parsed) == value
    assert issued == sorted(issued)
    assert len(set(issued)) == len(issued)


def test_random_bytes_are_never_handed_out_twice() -> None:
    drawn = [random_bytes(16) for _ in range(1000)]  # several blocks
    assert all(len(value) == 16 for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert len(random_bytes(10_000)) == 10_000  # larger than a block
