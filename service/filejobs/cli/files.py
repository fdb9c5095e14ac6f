"""Which files a ``filejobs submit`` sends: PATH arguments expanded, filtered by globs.

* A file argument is sent as it is, under its own name (filters and the hidden rule do not apply:
  naming a file is asking for it).
* A folder argument is walked recursively; each file's *relative path* is its path below that
  folder, with ``/`` separators (``photos/2024/a.jpg`` given ``photos`` is ``2024/a.jpg``). It is
  what ``--include`` / ``--exclude`` match and where ``--results`` puts the file's result.
* Globs are :mod:`fnmatch` patterns (``*`` also matches ``/``), tried against the relative path and
  against the bare name: ``*.jpg`` matches at any depth, ``raw/*`` everything below ``raw``. A file
  is taken when it matches some ``--include`` (or none was given) and no ``--exclude``. A folder
  whose path or name matches an ``--exclude`` is not entered at all (``--exclude node_modules``).
* Hidden files and folders (a name starting with ``.``) are skipped unless ``--hidden``.
* Symbolic links to files are followed; links to folders are not entered (no loops).
* ``skip`` paths (the ledger, the results folder) are never taken, so a re-run does not submit its
  own bookkeeping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path


@dataclass(frozen=True)
class Source:
    path: Path  # absolute
    relpath: str  # posix, relative to the folder argument (or the bare name)
    size: int
    mtime_ns: int


class SourceError(ValueError):
    """A PATH argument that does not exist or two arguments giving the same relative path."""


def _matches(relpath: str, patterns: list[str]) -> bool:
    name = relpath.rsplit("/", 1)[-1]
    return any(fnmatchcase(relpath, p) or fnmatchcase(name, p) for p in patterns)


def wanted(relpath: str, include: list[str], exclude: list[str]) -> bool:
    return (not include or _matches(relpath, include)) and not _matches(relpath, exclude)


def _walk(root: Path, include: list[str], exclude: list[str], hidden: bool, skip: set[Path]) -> list[Source]:
    found: list[Source] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(directory)
        prefix = base.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if (hidden or not d.startswith("."))
            and not _matches(prefix + d, exclude)
            and (base / d).resolve() not in skip
        )
        for name in filenames:
            relpath = prefix + name
            if (not hidden and name.startswith(".")) or not wanted(relpath, include, exclude):
                continue
            path = base / name
            try:
                stat = path.stat()  # follows a link to a file
            except OSError:
                continue  # a dangling link, or gone since listed
            if not path.is_file() or path.resolve() in skip:
                continue
            found.append(Source(path.absolute(), relpath, stat.st_size, stat.st_mtime_ns))
    return found


def collect(
    paths: list[Path],
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    hidden: bool = False,
    skip: list[Path] | None = None,
) -> list[Source]:
    """Every file the arguments name, sorted by relative path; raises :class:`SourceError`."""
    include, exclude = list(include or ()), list(exclude or ())
    skipped = {p.resolve() for p in skip or ()}
    sources: list[Source] = []
    for path in paths:
        if path.is_dir():
            sources.extend(_walk(path, include, exclude, hidden, skipped))
        elif path.is_file():
            stat = path.stat()
            sources.append(Source(path.absolute(), path.name, stat.st_size, stat.st_mtime_ns))
        else:
            raise SourceError(f"{path}: no such file or folder")
    by_relpath: dict[str, Source] = {}
    unique: list[Source] = []
    for source in sources:
        other = by_relpath.setdefault(source.relpath, source)
        if other is source:
            unique.append(source)
        elif other.path.resolve() != source.path.resolve():
            raise SourceError(
                f"{other.path} and {source.path} have the same relative path {source.relpath!r}; "
                "their results would overwrite each other: submit them in separate batches"
            )
    return sorted(unique, key=lambda s: s.relpath)
