"""What ``osctl status`` asks the engine: one listing of the host's system containers."""

from __future__ import annotations

from osctl.models.engine import ContainerInfo
from osctl.operations.hoststatus import _system_containers


def test_status_counts_running_containers_from_one_listing() -> None:
    """status reads the engine's listing (no inspect per container): paused and restarting
    count as running, as inspect's State.Running has them; one per service and version."""
    def info(service: str, version: str, state: str) -> ContainerInfo:
        labels = {"io.osctl.host": "h1", "io.osctl.role": "service", "io.osctl.service": service,
                  "io.osctl.version": version}
        return ContainerInfo(f"id-{service}-{version}-{state}", service, labels, state, "img")

    class Engine:
        asked: list[dict[str, str]] = []

        def containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
            self.asked.append(labels)
            return [info("ntp", "v1.4", "running"), info("syslog", "v1.4", "paused"),
                    info("acpid", "v1.4", "restarting"), info("console", "v1.4", "exited"),
                    info("ntp", "v1.3", "exited"), info("ntp", "v1.3", "exited")]

        def inspect(self, _container_id: str) -> None:
            raise AssertionError("status must not inspect each container")

    engine = Engine()
    found = _system_containers(engine, "h1")  # type: ignore[arg-type]
    assert engine.asked == [{"io.osctl.host": "h1", "io.osctl.role": "service"}]
    assert sorted(found) == [("v1.3", False), ("v1.4", False), ("v1.4", True), ("v1.4", True), ("v1.4", True)]
