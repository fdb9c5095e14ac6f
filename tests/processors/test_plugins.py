"""Plugins: a real package installed with pip and found by its entry point; broken ones reported."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.processors.registry import ENTRY_POINT_GROUP, PluginError, build_registry, load_spec
from filejobs.testing import submit
from tests.conftest import REPO, burst_worker, make_settings

EXAMPLE = REPO / "examples" / "filejobs-wordfreq"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the example plugin into a folder of its own (offline: hatchling is a dev dependency)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(EXAMPLE)],
        check=True,
    )  # fmt: skip
    assert any(target.glob("filejobs_wordfreq-*.dist-info/entry_points.txt"))
    return target


def test_installed_plugin_is_found_by_its_entry_point(
    installed_example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(installed_example))
    registry = build_registry()
    entry = registry.get("word-frequency")
    assert entry is not None
    assert entry.spec == "filejobs_wordfreq:WordFrequency"
    assert registry.errors == []


def test_a_job_runs_through_the_installed_plugin(
    installed_example: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # On sys.path, as an installed package would be; the worker's child process inherits the path.
    monkeypatch.syspath_prepend(str(installed_example))
    settings = make_settings(tmp_path / "data", processors=[])
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        listed = {item["name"]: item for item in client.get("/v1/processors").json()["items"]}
        assert listed["word-frequency"]["accepts"] == ["text/*"]
        assert listed["word-frequency"]["params_schema"]["properties"]["top"]["maximum"] == 1000
        text = b"the cat and the hat and the bat\n" * 3
        job_id = submit(client, text, name="rhyme.txt", processor="word-frequency", params={"top": 2})["id"]
        assert burst_worker(client.app_state["services"]).drain() == 1
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["top"] == [["the", 9], ["and", 6]]
        assert job["result"]["total_words"] == 24
        download = client.get(f"/v1/jobs/{job_id}/result")
        assert download.text.splitlines() == ["word,count", "the,9", "and,6"]
        assert "rhyme.txt.words.csv" in download.headers["content-disposition"]
        refused = client.post("/v1/jobs", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + bytes(64))},
                              data={"processor": "word-frequency"})  # fmt: skip
        assert refused.status_code == 415


def _fake_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """What an installed package with entry points looks like to importlib.metadata."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


BROKEN_MODULE = """
raise RuntimeError("this plugin is broken at import time")
"""
NOT_A_PROCESSOR = """
class Thing:
    name = "thing"
"""


def test_broken_plugins_are_reported_and_the_service_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_plugin.py").write_text(BROKEN_MODULE)
    (site / "not_a_processor.py").write_text(NOT_A_PROCESSOR)
    _fake_distribution(site, "broken", {"a": "broken_plugin:Anything", "b": "not_a_processor:Thing",
                                        "c": "missing_module:X", "d": "no-colon-here"})  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    settings = make_settings(tmp_path / "data", processors=["filejobs.processors.inspect:Inspect"])
    caplog.set_level(logging.ERROR, logger="filejobs.processors.registry")
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        names = {item["name"] for item in client.get("/v1/processors").json()["items"]}
        assert {"inspect", "thumbnail", "csv-profile", "pdf-text"} <= names
        assert client.get("/readyz").status_code == 200
        registry = client.app_state["services"].registry
    errors = "\n".join(registry.errors)
    assert "broken_plugin:Anything" in errors
    assert "broken at import time" in errors
    assert "not a subclass" in errors
    assert "missing_module:X" in errors
    assert "'module:attribute'" in errors
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "processor not loaded" in logged
    assert "broken_plugin:Anything" in logged


CLASHING = """
from filejobs.processors.inspect import Inspect


class Impostor(Inspect):
    description = "Claims a built-in's name."
"""


def test_a_plugin_cannot_take_a_name_already_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clashing_plugin.py").write_text(CLASHING)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = build_registry(["clashing_plugin:Impostor", "tests.sample_processors:Sleep"] * 2)
    entry = registry.get("inspect")
    assert entry is not None
    assert entry.spec == "filejobs.processors.inspect:Inspect"  # the built-in keeps its name
    assert registry.get("sleep") is not None  # the same spec twice is one plugin, no error
    assert [e for e in registry.errors if "clashing_plugin:Impostor" in e] == [
        "'clashing_plugin:Impostor': a processor named 'inspect' is already registered"
    ]


def test_load_spec_refuses_what_is_not_a_processor_class() -> None:
    with pytest.raises(PluginError, match="not a subclass"):
        load_spec("tests.sample_processors:ALL")
