"""Reading /metrics as Prometheus does: the exposition text parsed with the library's own parser,
turned into what a test asserts on (a sample's name and labels, and its value)."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """(sample name, sorted labels) -> value, from exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(url: str, timeout: float = 5) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode())


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def named(found: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name``: its labels -> its value."""
    return {labels: v for (n, labels), v in found.items() if n == name}


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick; another process could take it
    before the caller does, which would show as a clear "address already in use")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
