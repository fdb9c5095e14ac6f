"""Every submit carries an Idempotency-Key that is the same for the same file and options."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import anyio
import pytest

from filejobs.client import AsyncClient, Client, file_sha256, idempotency_key
from tests.client.fakes import Script, accepted

SHA = "ab" * 32


def test_the_key_is_stable_and_canonical() -> None:
    key = idempotency_key(SHA, 10, "thumbnail", {"size": 64, "format": "png"})
    assert key == idempotency_key(SHA.upper(), 10, "thumbnail", {"format": "png", "size": 64})
    assert len(key) == 64
    assert int(key, 16) >= 0
    # a fixed value: the key must not change between releases, or a re-run batch would resubmit
    assert (
        idempotency_key(SHA, 10, None, None)
        == "12cb0fecacf7c8f2a8bec2d3d39bd81f600a7137bcde4bc10047fa8d4610ebda"
    )
    assert idempotency_key(SHA, 10, None, None) == idempotency_key(SHA, 10, None, {})
    assert idempotency_key(SHA, 10, None, None, name="a.png") != idempotency_key(
        SHA, 10, None, None, name="b.png"
    )
    others = {
        idempotency_key("cd" * 32, 10, "thumbnail", {"size": 64, "format": "png"}),
        idempotency_key(SHA, 11, "thumbnail", {"size": 64, "format": "png"}),
        idempotency_key(SHA, 10, "inspect", {"size": 64, "format": "png"}),
        idempotency_key(SHA, 10, "thumbnail", {"size": 65, "format": "png"}),
        idempotency_key(SHA, 10, "thumbnail", {"size": 64}),
        idempotency_key(SHA, 10, None, {"size": 64, "format": "png"}),
    }
    assert key not in others
    assert len(others) == 6


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    content = bytes(range(256)) * 10_000
    path.write_bytes(content)
    assert file_sha256(path) == hashlib.sha256(content).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)


def _keys(script: Script) -> list[str]:
    return [r.headers["Idempotency-Key"] for r in script.requests]


def test_submit_sends_the_derived_key_every_time(text_file: Path, tmp_path: Path) -> None:
    script = Script(accepted())
    size = text_file.stat().st_size
    for _ in range(2):  # two clients: two runs of a batch
        with Client("http://filejobs.test", transport=script.transport()) as client:
            client.submit(text_file, processor="upper")
            client.submit(text_file, processor="sleep", params={"seconds": 1})
    first_upper, first_sleep, second_upper, second_sleep = _keys(script)
    sha, name = file_sha256(text_file), text_file.name
    assert first_upper == second_upper == idempotency_key(sha, size, "upper", None, name=name)
    assert first_sleep == second_sleep == idempotency_key(sha, size, "sleep", {"seconds": 1}, name=name)
    assert first_upper != first_sleep

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    same_name = elsewhere / text_file.name
    same_name.write_bytes(text_file.read_bytes())
    renamed = tmp_path / "renamed.txt"
    renamed.write_bytes(text_file.read_bytes())
    (tmp_path / "edited").mkdir()
    changed = tmp_path / "edited" / text_file.name
    changed.write_bytes(text_file.read_bytes() + b"!")
    with Client("http://filejobs.test", transport=script.transport()) as client:
        client.submit(same_name, processor="upper")  # same content, same name: the same request
        client.submit(renamed, processor="upper")  # same content, another file: another job
        client.submit(changed, processor="upper")
        client.submit(io.BytesIO(text_file.read_bytes()), filename=name, processor="upper")
        client.submit(text_file, processor="upper", idempotency_key="my-own-key")
    same, other_name, different, from_stream, given = _keys(script)[4:]
    assert same == from_stream == first_upper
    assert other_name != first_upper
    assert different != first_upper
    assert given == "my-own-key"


def test_async_submit_sends_the_same_key(text_file: Path) -> None:
    script = Script(accepted())

    async def main() -> None:
        async with AsyncClient("http://filejobs.test", transport=script.async_transport()) as client:
            await client.submit(text_file, processor="upper", params={"a": [1, 2]})

    anyio.run(main)
    assert _keys(script) == [
        idempotency_key(
            file_sha256(text_file), text_file.stat().st_size, "upper", {"a": [1, 2]}, name=text_file.name
        )
    ]


def test_headers_identify_the_client_and_carry_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(accepted())
    with Client("http://filejobs.test", api_key="s3cret", transport=script.transport()) as client:
        client.get("some-id")
    request = script.requests[0]
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["User-Agent"].startswith("filejobs-client/")

    monkeypatch.setenv("FILEJOBS_URL", "http://from-env.test:9000/prefix")
    monkeypatch.setenv("FILEJOBS_API_KEY", "env-key")
    with Client(transport=script.transport()) as client:
        assert client.base_url == "http://from-env.test:9000/prefix"
        client.get("other-id")
    request = script.requests[1]
    assert str(request.url) == "http://from-env.test:9000/prefix/v1/jobs/other-id"
    assert request.headers["Authorization"] == "Bearer env-key"
