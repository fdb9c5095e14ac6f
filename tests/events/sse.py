"""A small, strict reader of ``text/event-stream`` for the tests (the spec's parsing rules)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True)
class Comment:
    text: str


class LineParser:
    """Lines in, events and comments out: feed it each line (without its line break)."""

    def __init__(self) -> None:
        self.retry: int | None = None
        self._fields: dict[str, str] = {}
        self._data: list[str] = []

    def feed(self, line: str) -> Event | Comment | None:
        """What ``line`` completes, if anything."""
        if line == "":
            fields, data = self._fields, self._data
            self._fields, self._data = {}, []
            if data or "event" in fields:
                return Event(fields.get("event", "message"), "\n".join(data), fields.get("id"))
            return None  # e.g. the retry field alone
        if line.startswith(":"):
            return Comment(line[1:].strip())
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "retry":
            self.retry = int(value)
        else:
            self._fields[name] = value
        return None


class EventStream:
    """Events and comments from an open streaming response, one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, (response.status_code, response.read())
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers
        self.response = response
        self._parser = LineParser()
        self._lines = response.iter_lines()

    @property
    def retry(self) -> int | None:
        return self._parser.retry

    def __iter__(self) -> Iterator[Event | Comment]:
        return self

    def __next__(self) -> Event | Comment:
        """The next event or comment; StopIteration when the server ended the stream."""
        for line in self._lines:
            if (item := self._parser.feed(line)) is not None:
                return item
        raise StopIteration

    def event(self) -> Event:
        """The next event, skipping comments."""
        for item in self:
            if isinstance(item, Event):
                return item
        raise AssertionError("the stream ended")

    def rest(self) -> list[Event]:
        """Every event until the server ends the stream."""
        return [item for item in self if isinstance(item, Event)]
