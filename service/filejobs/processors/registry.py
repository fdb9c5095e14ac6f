"""Which processors exist: the built-ins, installed plugins, and those named in settings.

A plugin is a package that declares an entry point in the group ``filejobs.processors``::

    [project.entry-points."filejobs.processors"]
    wordfreq = "filejobs_wordfreq:WordFrequency"

For local experiments, ``FILEJOBS_PROCESSORS=module:attribute,...`` does the same. Each entry
keeps the ``module:attribute`` it came from, because worker processes import the processor
themselves: only that spec crosses the process boundary. A plugin that fails to load is logged
and left out; the service runs on.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points

from filejobs.processors.base import Processor

log = logging.getLogger(__name__)

BUILTIN: tuple[str, ...] = (
    "filejobs.processors.inspect:Inspect",
    "filejobs.processors.thumbnail:Thumbnail",
    "filejobs.processors.csv_profile:CsvProfile",
    "filejobs.processors.pdf_text:PdfText",
)
ENTRY_POINT_GROUP = "filejobs.processors"


class PluginError(Exception):
    """A processor spec that cannot be loaded."""


def load_spec(spec: str) -> type[Processor]:
    """Import ``module:attribute`` and check it is a processor class."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise PluginError(f"{spec!r} is not of the form 'module:attribute'")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"{spec!r} cannot be imported: {exc}") from exc
    except Exception as exc:  # a plugin's import-time crash must not take the service down
        raise PluginError(f"{spec!r} failed while importing: {exc!r}") from exc
    if not (isinstance(target, type) and issubclass(target, Processor)):
        raise PluginError(f"{spec!r} is not a subclass of filejobs.processors.base.Processor")
    if not getattr(target, "name", None) or not getattr(target, "description", None):
        raise PluginError(f"{spec!r} must set 'name' and 'description'")
    return target


@dataclass(frozen=True)
class Entry:
    spec: str
    processor: type[Processor]


class Registry:
    """Name → processor. Built with :func:`build_registry`."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: dict[str, Entry] = {}
        self.errors: list[str] = []
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        name = entry.processor.name
        if name in self._entries:
            self.errors.append(f"{entry.spec!r}: a processor named {name!r} is already registered")
            return
        self._entries[name] = entry

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[name] for name in self.names())


def plugin_specs() -> list[str]:
    """``module:attribute`` of every installed ``filejobs.processors`` entry point."""
    return [entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)]


def build_registry(extra: Iterable[str] = ()) -> Registry:
    """The built-in processors, installed plugins, then ``extra`` specs; broken ones are logged
    and left out."""
    registry = Registry()
    for spec in dict.fromkeys((*BUILTIN, *plugin_specs(), *extra)):
        try:
            registry.add(Entry(spec=spec, processor=load_spec(spec)))
        except PluginError as exc:
            registry.errors.append(str(exc))
    for error in registry.errors:
        log.error("processor not loaded: %s", error)
    return registry
