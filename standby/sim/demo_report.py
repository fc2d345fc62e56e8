"""What ``standby demo`` shows: numbered step lines with timings (plain text, no terminal
tricks, so it reads the same in CI logs), the gateway's /metrics read with Prometheus' own
parser, and the closing summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Steps:
    """``[2/6] title`` ... indented notes ... ``(4.2 s)``. Writes to the stdout it was given at
    start: the trainer redirects ``sys.stdout`` while it trains, the demo's lines stay put."""

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.monotonic()
        self.heading(title)
        yield
        self.note(f"({time.monotonic() - start:.1f} s)")

    def heading(self, title: str) -> None:
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {title}")

    def note(self, text: str) -> None:
        self.say(f"      {text}")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Scrape:
    """One read of /metrics: every sample as (name, labels, value)."""

    samples: list[tuple[str, dict[str, str], float]]

    def total(self, name: str, **match: str) -> float:
        return sum(v for n, labels, v in self.samples if n == name and _matches(labels, match))

    def by(self, name: str, label: str, **match: str) -> dict[str, int]:
        """Sum of ``name`` per value of ``label`` (non-zero ones only)."""
        out: dict[str, int] = {}
        for n, labels, v in self.samples:
            if n == name and v and _matches(labels, match):
                out[labels[label]] = out.get(labels[label], 0) + round(v)
        return out

    def labels(self, name: str) -> list[dict[str, str]]:
        return [labels for n, labels, v in self.samples if n == name and v]


def _matches(labels: dict[str, str], match: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


def scrape(http: httpx.Client, base: str) -> Scrape:
    text = http.get(f"{base}/metrics", timeout=10).raise_for_status().text
    samples = [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    return Scrape(samples)


def counts(values: dict[str, int]) -> str:
    """``{"gemini": 41, "gemma": 9}`` -> ``gemini 41, gemma 9``."""
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"


def summary(result: dict[str, Any]) -> list[str]:
    """The closing lines; ``result`` is what the story gathered (see ``demo_story``)."""

    def scores(key: str) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in sorted(result[key].items())) or "none"

    return [
        f"  requests by backend:  {counts(result['by_backend'])}",
        f"  failover reasons:     {counts(result['reasons'])}",
        f"  fallback rate:        {result['rate_before']:.0%} before the outage, "
        f"{result['rate_outage']:.0%} during it",
        f"  pairs captured:       {result['pairs']} ({counts(result['splits'])})",
        f"  before training:      {scores('before')} (base tiny Gemma, simulated judge)",
        f"  after training:       {scores('scores')} (simulated judge; gate {result['gate']})",
        f"  one-step candidate:   {scores('rejected_scores')} (simulated judge; gate failed, "
        "not promoted)",
        f"  promoted version:     {result['version']} (gateway serves it: {result['serving']})",
        f"  wall time:            {result['wall_s']:.1f} s",
    ]
