"""Helpers for the Prometheus tests: find a process's /metrics address, scrape it, read samples
with prometheus_client's own parser."""

from __future__ import annotations

import gzip
import re
import socket
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ServiceProcess, wait_until

_ADDRESS = re.compile(r"http://([0-9.]+):(\d+)/metrics")


def metrics_port(proc: ServiceProcess) -> int:
    """The port of the /metrics a process logged it serves."""

    def logged() -> int | None:
        proc.wait_for_log("/metrics")
        found = _ADDRESS.search(proc.log())
        return int(found.group(2)) if found else None

    return wait_until(logged, message=lambda: f"a /metrics address in:\n{proc.log()}")


@dataclass
class Scrape:
    """One scrape, parsed: families by name, and every sample by (name, labels)."""

    families: dict[str, Metric]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Every sample called ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return [
            (dict(key), value)
            for (sample, key), value in self.samples.items()
            if sample == name and want <= set(key)
        ]


def parse(text: str) -> Scrape:
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in families.values()
        for s in family.samples
    }
    return Scrape(families, samples)


def scrape(port: int, headers: Mapping[str, str] | None = None) -> Scrape:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers=dict(headers or {})
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        body = answer.read()
        if answer.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return parse(body.decode())


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def bucket_counts(scrape_: Scrape, family: str, **labels: str) -> list[tuple[float, float]]:
    """(le, count) of a histogram's series, in the order of ``le``."""
    found = [
        (float(key["le"]), value) for key, value in scrape_.series(f"{family}_bucket", **labels)
    ]
    return sorted(found)
