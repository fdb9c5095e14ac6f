"""Against a real ``filejobs serve``: a kill -9 between "job finished" and "webhook delivered"
loses nothing, and the ``filejobs webhooks`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from filejobs.testing import Server
from filejobs.testing.webhooks import Receiver
from tests.cli.helpers import run_cli, server_env
from tests.webhooks.conftest import wait_until

pytestmark = pytest.mark.e2e

ENV: dict[str, Any] = {
    "webhook_allow_http": "true",
    "webhook_allow_private": "true",
    "webhook_timeout": "2",  # a claim lasts WEBHOOK_TIMEOUT + 5 s: after a crash, due again then
    "webhook_retry_schedule": "0.2,0.2,0.2",
    "webhook_poll_interval": "0.1",
}


def _deliveries(server: Server, webhook_id: str) -> list[dict[str, Any]]:
    with server.client() as client:
        items: list[dict[str, Any]] = client.get(f"/v1/webhooks/{webhook_id}/deliveries").json()["items"]
    return items


def test_kill_9_mid_delivery_is_delivered_after_the_restart(tmp_path: Path) -> None:
    with Receiver() as receiver, Server(tmp_path / "data", env=server_env(**ENV)) as server:
        with server.client() as client:
            hook = client.post("/v1/webhooks", json={"url": receiver.url}).json()
            receiver.hang()  # the first attempt reaches the receiver and gets no answer
            job_id = client.post("/v1/jobs", files={"file": ("a.txt", b"abc\n", "text/plain")}).json()["id"]
        [held] = receiver.wait_count(1, timeout=30)
        assert json.loads(held.body)["data"]["id"] == job_id
        server.kill9()  # the job's row says succeeded; the delivery was never recorded as sent
        receiver.release()
        server.restart()
        receiver.wait_for(lambda requests: any(r.answered == 200 for r in requests[1:]), timeout=30)
        again = [r for r in receiver.requests[1:] if r.answered == 200]
        assert {r.webhook_id for r in again} == {held.webhook_id}  # the same event, the same id
        again[0].verify(hook["secret"])
        [delivery] = wait_until(
            lambda: (d := _deliveries(server, hook["id"])) and d[0]["status"] == "delivered" and d,
            what="the delivery recorded as delivered",
        )
        assert delivery["attempts"] >= 2
        with server.client() as client:
            assert client.get(f"/v1/jobs/{job_id}").json()["notification"] == "delivered"


def test_the_webhooks_commands(tmp_path: Path) -> None:
    with Receiver() as receiver, Server(tmp_path / "data", env=server_env(**ENV)) as server:
        url = server.base_url
        added = run_cli(
            "webhooks", "add", receiver.url, "-e", "job.failed", "--description", "ops", "--server", url
        )
        assert added.exit_code == 0, added.output
        webhook_id, _, _ = added.stdout.partition("  ")
        assert webhook_id.startswith("ep_")
        assert "whsec_" in added.stdout

        listed = run_cli("webhooks", "list", "--server", url, "--json")
        assert listed.exit_code == 0, listed.output
        [item] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert item["id"] == webhook_id
        assert item["events"] == ["job.failed"]
        assert item["secret"].endswith("…")

        rotated = run_cli("webhooks", "rotate", webhook_id, "--server", url, "--json")
        assert rotated.exit_code == 0, rotated.output
        assert json.loads(rotated.stdout)["secret"].startswith("whsec_")
        default = run_cli("webhooks", "rotate", "--default", "--server", url)
        assert default.exit_code == 0, default.output
        assert default.stdout.startswith("whsec_")
        assert run_cli("webhooks", "rotate", "--server", url).exit_code == 2

        refused = run_cli("webhooks", "add", "ftp://example.com/", "--server", url)
        assert refused.exit_code == 1
        assert "refused" in refused.stderr

        assert run_cli("webhooks", "remove", webhook_id, "--server", url).exit_code == 0
        missing = run_cli("webhooks", "remove", webhook_id, "--server", url)
        assert missing.exit_code == 1
        assert "No webhook" in missing.stderr


def test_the_clients_webhook_calls(tmp_path: Path) -> None:
    import asyncio

    from filejobs.client import AsyncClient, Client
    from filejobs.client.errors import FilejobsError

    with Receiver() as receiver, Server(tmp_path / "data", env=server_env(**ENV)) as server:
        with Client(server.base_url) as client:
            added = client.add_webhook(receiver.url, events=["job.succeeded"], description="sync")
            assert added.secret.startswith("whsec_")
            assert [w.id for w in client.webhooks()] == [added.id]
            assert client.rotate_webhook_secret(added.id).secret != added.secret
            assert client.rotate_default_secret().secret.startswith("whsec_")
            with pytest.raises(FilejobsError):
                client.add_webhook("ftp://x/")
            client.remove_webhook(added.id)
            assert client.webhooks() == []

        async def run() -> None:
            async with AsyncClient(server.base_url) as client:
                added = await client.add_webhook(receiver.url, description="async")
                assert [w.description for w in await client.webhooks()] == ["async"]
                assert (await client.rotate_webhook_secret(added.id)).secret != added.secret
                assert (await client.rotate_default_secret()).secret.startswith("whsec_")
                await client.remove_webhook(added.id)
                assert await client.webhooks() == []

        asyncio.run(run())


def test_several_http_processes_send_each_event_once(tmp_path: Path) -> None:
    """serve --processes 2: jobs finish in either process; only the sweeper-lock holder sends (the
    other's deliveries reach it through the database), each once."""
    env = server_env(**{**ENV, "api_processes": "2", "workers": "2"})
    with Receiver() as receiver, Server(tmp_path / "data", env=env) as server:
        with server.client() as client:
            hook = client.post("/v1/webhooks", json={"url": receiver.url}).json()
            job_ids = set()
            for n in range(12):  # over new connections: both processes take some
                with server.client() as fresh:
                    files = {"file": (f"{n}.txt", f"file {n}\n".encode(), "text/plain")}
                    job_ids.add(fresh.post("/v1/jobs", files=files).json()["id"])
        got = receiver.wait_for(lambda requests: len({r.webhook_id for r in requests}) >= 12, timeout=60)
        events = [r.verify(hook["secret"]) for r in got]
        assert {e["data"]["id"] for e in events if isinstance(e, dict)} == job_ids
        assert len(got) == 12  # each once
