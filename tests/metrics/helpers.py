"""Reading a Prometheus exposition back: samples by name and labels, with 0 for a missing one."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One exposition's samples. Counters are process-global, so tests compare two scrapes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name{labels}`` (exactly those labels), 0.0 when absent."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def __sub__(self, before: Scrape) -> Delta:
        return Delta(self, before)


class Delta:
    """``after - before`` per sample."""

    def __init__(self, after: Scrape, before: Scrape) -> None:
        self.after = after
        self.before = before

    def value(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)
