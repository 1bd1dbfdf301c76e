"""The manifest keys that say how a service is stopped and handed over in a swap (issue #16):
compose's ``stop_signal`` and ``stop_grace_period``, ``update_order`` and
``stop_after_dependents``; what they become on the container, and what is refused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from osctl.domain import servicegraph
from osctl.domain.containerspec import container_spec, spec_hash
from osctl.domain.manifest import parse_manifest
from osctl.errors import ManifestError
from osctl.models.manifest import ReleaseManifest

BASE = """\
version: v1.4
services:
  network: {oneshot: true, command: [/bin/true], network_mode: host}
  db:
    command: [/bin/db]
    update_order: start-first
    stop_grace_period: 1m30s
    stop_signal: sigint
    healthcheck: {test: [CMD, /bin/true], interval: 1s}
  web:
    command: [/bin/web]
    update_order: start-first
    depends_on: {db: {condition: service_healthy}}
  app:
    command: [/bin/app]
    depends_on: [db, network]
    stop_grace_period: 1.5
  logs:
    command: [/bin/logs]
    stop_after_dependents: true
  shipper:
    command: [/bin/ship]
    depends_on: [logs]
boot: {kernel: /boot/vmlinuz}
"""


def manifest(text: str = BASE) -> ReleaseManifest:
    return parse_manifest(text, "release.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        manifest(text)
    return "\n".join(f"{issue.path}: {issue.message}" for issue in caught.value.issues)


def test_the_keys_are_read_as_compose_spells_them() -> None:
    services = manifest().services
    assert (services["db"].stop_signal, services["db"].stop_grace_period) == ("SIGINT", 90.0)
    assert (services["app"].stop_signal, services["app"].stop_grace_period) == ("SIGTERM", 1.5)
    assert services["network"].update_order == "stop-first" and services["web"].update_order == "start-first"


def test_the_container_carries_its_stop_signal_and_whole_seconds_of_grace(tmp_path: Path) -> None:
    services = manifest().services
    spec = container_spec("h", tmp_path, "v1.4", "app", services["app"], {None: "sha256:" + "0" * 64})
    assert (spec.stop_signal, spec.stop_timeout) == ("SIGTERM", 2), "1.5 s is rounded up: the engine counts seconds"
    spec = container_spec("h", tmp_path, "v1.4", "db", services["db"], {None: "sha256:" + "0" * 64})
    assert (spec.stop_signal, spec.stop_timeout) == ("SIGINT", 90)


def test_a_service_without_the_new_keys_keeps_its_spec_hash(tmp_path: Path) -> None:
    """Containers made before these keys existed are not recreated by a newer osctl."""
    plain = manifest().services["shipper"]
    spec = container_spec("h", tmp_path, "v1.4", "shipper", plain, {None: "sha256:" + "0" * 64})
    before = {key: value for key, value in asdict(spec).items() if key not in ("stop_signal", "stop_timeout")}
    before["labels"] = {k: v for k, v in before["labels"].items() if k != "io.osctl.spec-hash"}
    body = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert spec.labels["io.osctl.spec-hash"] == hashlib.sha256(body.encode()).hexdigest()[:16]
    slower = container_spec("h", tmp_path, "v1.4", "shipper", plain.model_copy(update={"stop_grace_period": 30.0}),
                            {None: "sha256:" + "0" * 64})
    assert spec_hash(slower) != spec.labels["io.osctl.spec-hash"], "a new grace period is a new container"


@pytest.mark.parametrize(("old", "new", "words"), [
    ("stop_signal: sigint", "stop_signal: SIGSTOP", "'SIGSTOP' is not a signal a service can be stopped with"),
    ("stop_signal: sigint", "stop_signal: 2", "services.db.stop_signal: input should be a valid string"),
    ("stop_grace_period: 1m30s", "stop_grace_period: 2h", "7200 s is longer than the longest stop osctl waits for"),
    ("stop_grace_period: 1m30s", "stop_grace_period: -1", "is not a valid duration"),
    ("update_order: start-first\n    stop_grace_period", "update_order: rolling\n    stop_grace_period",
     "services.db.update_order: 'rolling' is not one of 'stop-first', 'start-first'"),
    ("network: {oneshot: true,", "network: {oneshot: true, update_order: start-first,",
     "start-first needs a long-running service"),
    ("command: [/bin/web]\n", "command: [/bin/web]\n    network_mode: host\n",
     "start-first cannot work with network_mode: host"),
    ("depends_on: {db: {condition: service_healthy}}", "depends_on: [app]",
     "services.web.depends_on.app: a start-first service starts while the old set still runs, so what it depends "
     "on must be start-first too: 'app' is stop-first"),
    ("stop_after_dependents: true", "stop_after_dependents: yes please", "services.logs.stop_after_dependents: input should be a valid boolean"),
])
def test_mistakes_are_explained_by_path(old: str, new: str, words: str) -> None:
    assert old in BASE
    assert words in error_of(BASE.replace(old, new, 1))


def test_a_swap_hands_over_start_first_services_in_start_order_and_stops_the_rest_at_once() -> None:
    services = manifest().services
    assert servicegraph.start_first(services) == ["db", "web"]
    assert servicegraph.stop_waits(services) == {"logs": {"shipper"}}, "only logs waits, and only for shipper"
