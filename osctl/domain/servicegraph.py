"""The service graph of a version: which service waits for which, and in what order they run.

Checked before anything starts (a cycle or a dangling dependency found halfway through a swap
would leave a host half-switched), and used to start each service as soon as what it depends
on is ready. Stopping needs no order (docs/image-format.md): every service gets its stop at
once, except one that asks to outlive its dependents.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from osctl.errors import Issue
from osctl.models.manifest import ServiceSpec


def check(services: Mapping[str, ServiceSpec]) -> list[Issue]:
    """Every relation problem: unknown or impossible dependencies, and dependency cycles."""
    issues: list[Issue] = []
    known = sorted(services)
    for name, spec in services.items():
        for dep, rule in spec.depends_on.items():
            path = f"services.{name}.depends_on.{dep}"
            if dep == name:
                issues.append(Issue(path, "a service cannot depend on itself"))
            elif dep not in services:
                close = difflib.get_close_matches(dep, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                issues.append(Issue(path, f"unknown service {dep!r} ({hint}known: {', '.join(known)})"))
            elif rule.condition == "service_healthy" and services[dep].healthcheck is None:
                issues.append(Issue(path, f"service_healthy needs a healthcheck on {dep!r}, which has none"))
            elif rule.condition == "service_completed_successfully" and not services[dep].oneshot:
                issues.append(Issue(path, f"{dep!r} is not a oneshot service, so it never completes"))
            elif spec.update_order == "start-first" and services[dep].update_order != "start-first":
                issues.append(Issue(path, f"a start-first service starts while the old set still runs, so what it "
                                          f"depends on must be start-first too: {dep!r} is stop-first"))
    if not issues:
        cycle = find_cycle(services)
        if cycle:
            issues.append(Issue(f"services.{cycle[0]}.depends_on", "dependency cycle: " + " -> ".join(cycle)))
    return issues


def find_cycle(services: Mapping[str, ServiceSpec]) -> list[str] | None:
    """One dependency cycle as ``[a, b, ..., a]``, or None. Deterministic: names are sorted."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(services[name].depends_on):
            if dep not in services:
                continue
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(services):
        if name not in state and (found := visit(name)):
            return found
    return None


def levels(services: Mapping[str, ServiceSpec]) -> list[list[str]]:
    """Services grouped so that each group depends only on earlier groups.

    Services within a group are independent and may start in parallel. The graph must have
    passed ``check`` (no cycles, no unknown dependencies).
    """
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            deps = [d for d in services[name].depends_on if d in services]
            depth[name] = 1 + max((level(d) for d in deps), default=-1)
        return depth[name]

    for name in services:
        level(name)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in sorted(depth):
        out[depth[name]].append(name)
    return out


def start_first(services: Mapping[str, ServiceSpec]) -> list[str]:
    """The services a swap hands over before the old set stops (``update_order: start-first``),
    in start order; ``check`` made sure they depend on nothing else."""
    return [name for name in start_order(services) if services[name].update_order == "start-first"]


def stop_waits(services: Mapping[str, ServiceSpec]) -> dict[str, set[str]]:
    """For each service that must outlive its dependents (``stop_after_dependents``), the
    services whose stops it waits for: those that depend on it directly. Every other service
    is stopped at once, so a set's stop costs its slowest stop, not one per dependency level."""
    return {name: {other for other, spec in services.items() if name in spec.depends_on}
            for name, spec in services.items() if spec.stop_after_dependents}


def start_order(services: Mapping[str, ServiceSpec]) -> list[str]:
    """A topological order: every service after the services it depends on."""
    return [name for group in levels(services) for name in group]


def stop_order(services: Mapping[str, ServiceSpec]) -> list[str]:
    """The reverse of the start order: dependents stop before what they depend on."""
    return list(reversed(start_order(services)))


def dependencies(services: Mapping[str, ServiceSpec], name: str) -> set[str]:
    """Everything ``name`` depends on, directly or through others (not ``name`` itself)."""
    found: set[str] = set()
    frontier = [name]
    while frontier:
        for dep in services[frontier.pop()].depends_on:
            if dep in services and dep not in found:
                found.add(dep)
                frontier.append(dep)
    found.discard(name)
    return found
