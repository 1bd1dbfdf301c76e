"""Shared pieces of the benchmarks: timing whole commands, summarising, printing, JSON out.

Every figure is a median over repeated runs with its spread (min..max); a spread wider than
half the median is flagged, because such a figure says more about the machine than the tool.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.environ.get("OSCTL_VENV", REPO / ".venv")) / "bin"
OSCTL = [str(VENV_BIN / "osctl")]
DOCKER = ["/usr/bin/docker"]  # Debian's client, matching the engine (not a newer one on PATH)
REGISTRY = os.environ.get("OSCTL_REGISTRY", "127.0.0.1:5000")
sys.path.insert(0, str(REPO))


@dataclass
class Figure:
    name: str
    unit: str
    median: float
    low: float
    high: float
    runs: int
    goal: float | None = None
    peer: str | None = None

    @property
    def wide(self) -> bool:
        return self.median > 0 and (self.high - self.low) > 0.5 * self.median

    @property
    def meets_goal(self) -> bool | None:
        return None if self.goal is None else self.median <= self.goal


def figure(name: str, samples: Sequence[float], unit: str = "s", goal: float | None = None,
           peer: str | None = None) -> Figure:
    return Figure(name, unit, statistics.median(samples), min(samples), max(samples), len(samples), goal, peer)


def time_command(argv: list[str], runs: int, env: dict[str, str] | None = None, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``argv`` per run; every run must succeed."""
    samples = []
    for index in range(warmup + runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
        if index >= warmup:
            samples.append(elapsed)
    return samples


def report(title: str, figures: list[Figure], json_path: str | None = None) -> None:
    print(f"\n{title}")
    print(f"{'figure':48} {'median':>10} {'spread':>19} {'goal':>9}  ")
    for f in figures:
        scale = 1000.0 if f.unit == "s" else 1.0
        unit = "ms" if f.unit == "s" else f.unit
        goal = f"{f.goal * scale:.0f} {unit}" if f.goal is not None else ""
        verdict = {True: "ok", False: "MISSED", None: ""}[f.meets_goal]
        warn = "  (wide spread)" if f.wide else ""
        print(f"{f.name:48} {f.median * scale:7.1f} {unit:2} {f.low * scale:8.1f}..{f.high * scale:<8.1f} "
              f"{goal:>9}  {verdict}{warn}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")


def warn_wide(figures: list[Figure]) -> None:
    """One line per figure whose spread makes it untrustworthy."""
    for f in figures:
        if f.wide:
            print(f"warning: {f.name.strip()}: spread {f.low:.4g}..{f.high:.4g} {f.unit} is wider than half "
                  f"the median ({f.median:.4g}); the machine was busy, repeat before trusting it")
