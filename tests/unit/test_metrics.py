"""What Prometheus sees of a host: the exposition text, parsed as a scraper parses it.

The host side is a real supervisor on a fake engine (tests/support/fake_engine.py) writing its
real state files; the collectors read those files as they would on a host. The agent side is
fed through the hook the agent calls after every check.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from ruamel.yaml import YAML

from osctl.adapters.metricsserver import serve
from osctl.cli.main import main
from osctl.domain import bootpointer, servicestate
from osctl.domain.journal import HISTORY_KEEP, Journal
from osctl.domain.settings import Settings, read_settings_file
from osctl.errors import ConfigError, EngineUnavailable, UsageError
from osctl.models.events import AgentEvent
from osctl.models.fleet import Rollout
from osctl.models.listen import ListenAddress
from osctl.models.services import ServicesState
from osctl.models.store import BootPointer
from osctl.operations.agent import Step, Wait
from osctl.operations.metrics import AgentMetrics, host_registry
from osctl.operations.supervisor import Policy, Supervisor
from tests.support.fake_engine import CHAIN_RELEASE, FakeEngine, store_version
from tests.support.metrics import Samples, free_port, named, parse, value

REPO = Path(__file__).resolve().parents[2]


def samples(registry: CollectorRegistry) -> Samples:
    """What a scrape of ``registry`` returns, parsed as Prometheus parses it."""
    return parse(generate_latest(registry).decode())


# ---------------------------------------------------------------------------- addresses

@pytest.mark.parametrize(("text", "host", "port"), [
    (":9101", "127.0.0.1", 9101), ("127.0.0.1:9101", "127.0.0.1", 9101), ("0.0.0.0:80", "0.0.0.0", 80),
    ("[::1]:9101", "::1", 9101), ("metrics.example:9101", "metrics.example", 9101), (" :1 ", "127.0.0.1", 1),
])
def test_listen_addresses(text: str, host: str, port: int) -> None:
    address = ListenAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert ListenAddress.parse(str(address)) == address  # written back as it reads


@pytest.mark.parametrize(("text", "says"), [
    ("9101", "not a listen address (use HOST:PORT or :PORT"), (":0", "the port must be a number from 1 to 65535"),
    (":65536", "from 1 to 65535"), (":http", "from 1 to 65535"), ("host:", "from 1 to 65535"),
    ("::1:9101", "an IPv6 address goes in brackets"), ("[1.2.3.4]:80", "is not an IPv6 address"),
    ("[::1]9101", "not a listen address"), ("bad host:80", "'bad host' is not a host name or IP address"),
    ("300.1.1.1:80", "is not a host name or IP address"), (":٩١٠١", "from 1 to 65535"), ("", "not a listen address"),
])
def test_bad_listen_addresses_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        ListenAddress.parse(text)
    assert says in str(caught.value)


def test_the_setting_is_checked_where_it_is_written(tmp_path: Path) -> None:
    config = tmp_path / "etc/osctl/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("metrics:\n  supervise: ':9101'\n  agent: 9102\n")
    with pytest.raises(ConfigError) as caught:
        read_settings_file(tmp_path)
    assert caught.value.message.startswith(f"invalid settings: {config}:3:3: metrics.agent: 9102 is not a listen "
                                           "address")
    config.write_text("metrics: {supervise: ':9101', agent: '[::1]:9102'}\n")
    metrics = read_settings_file(tmp_path).metrics
    assert metrics.supervise == ListenAddress("127.0.0.1", 9101) and metrics.agent == ListenAddress("::1", 9102)
    # cloud-init apply writes the settings back from the model: the address stays text.
    assert read_settings_file(tmp_path).model_dump(mode="json", exclude_defaults=True) == {
        "metrics": {"supervise": "127.0.0.1:9101", "agent": "[::1]:9102"}}


@pytest.mark.parametrize("command", ["supervise", "agent"])
def test_a_bad_metrics_option_is_one_line(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["--root", str(tmp_path), "--host-id", "unit", command, "--metrics", "9101"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[0] == ("error: Invalid value for '--metrics': '9101' is not a listen address "
                                   "(use HOST:PORT or :PORT, e.g. 127.0.0.1:9101, :9101 or [::1]:9101)")
    assert "Traceback" not in err and len(err.splitlines()) == 2  # the line, and where to look


def test_a_taken_port_is_one_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError) as caught:
            serve(ListenAddress("127.0.0.1", port), CollectorRegistry())
    assert caught.value.message == f"cannot serve metrics on 127.0.0.1:{port}: address already in use"


def test_supervise_with_a_taken_port_exits_with_one_line(tmp_path: Path) -> None:
    """As a user runs it: the supervisor holds the host, cannot open its endpoint, says so, exits."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_HOST": "unix:///nonexistent.sock"}
        proc = subprocess.run([sys.executable, "-m", "osctl", "--root", str(tmp_path), "--host-id", "unit",
                               "supervise", "--metrics", f":{port}"],
                              capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "hint:", "Traceback"))]
    assert errors == [f"error: cannot serve metrics on 127.0.0.1:{port}: address already in use",
                      "hint: give another HOST:PORT (--metrics, or the metrics: section of the settings file)"]


def test_the_endpoint_serves_over_http_and_survives_a_broken_collector() -> None:
    class Broken(Collector):
        calls = 0

        def collect(self):  # type: ignore[no-untyped-def]
            Broken.calls += 1
            if Broken.calls == 1:
                raise RuntimeError("a bug")
            return []

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())
    server = serve(ListenAddress("127.0.0.1", free_port()), registry)
    try:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url, timeout=5)
        assert caught.value.code == 500 and caught.value.read() == b"collecting metrics failed: RuntimeError\n"
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b""
    finally:
        server.close()


# ---------------------------------------------------------------------------- the host

def supervised(root: Path) -> tuple[Supervisor, FakeEngine, Settings]:
    """v1.0 stored, committed and its set brought up by a real supervisor on the fake engine."""
    store_version(root, CHAIN_RELEASE)
    bootpointer.write(root, BootPointer(default="v1.0"))
    servicestate.write_services(root, ServicesState(version="v1.0", desired="up"))
    fake = FakeEngine()
    fake.exits_when_started("network", 0)
    settings = Settings(root_option=str(root), host_id_option="unit-metrics", env={})
    sup = Supervisor(settings, policy=Policy(backoff_min=0.01, backoff_max=0.01), engine_factory=lambda: fake)  # type: ignore[arg-type]
    sup.reconcile(fake, fresh=True)  # type: ignore[arg-type]
    return sup, fake, settings


def test_versions_services_and_restarts(tmp_path: Path) -> None:
    sup, fake, settings = supervised(tmp_path)
    registry, _ = host_registry(settings, lambda: fake)  # type: ignore[arg-type,return-value]
    found = samples(registry)
    assert named(found, "osctl_host_info") == {
        (("host_id", "unit-metrics"), ("next_boot", "v1.0"), ("running", "v1.0")): 1.0}
    # The one-shot (network) is done, not down: only long-running services have an "up".
    assert named(found, "osctl_service_up") == {(("service", s),): 1.0 for s in ("console", "ntp", "syslog")}
    assert named(found, "osctl_service_wanted") == {(("service", s),): 1.0 for s in ("console", "ntp", "syslog")}
    assert named(found, "osctl_service_restarts_total") == {
        (("service", s),): 0.0 for s in ("console", "network", "ntp", "syslog")}

    sup._on_event(fake, fake.exit(fake.id_of("syslog"), 137))  # type: ignore[arg-type]  # killed
    assert value(samples(registry), "osctl_service_up", service="syslog") == 0.0
    sup._restart_due(fake)  # type: ignore[arg-type]  # the first restart is immediate
    found = samples(registry)
    assert value(found, "osctl_service_up", service="syslog") == 1.0
    assert value(found, "osctl_service_restarts_total", service="syslog") == 1.0
    assert value(found, "osctl_service_restarts_total", service="ntp") == 0.0
    assert value(found, "osctl_service_failed", service="syslog") == 0.0

    servicestate.write_services(tmp_path, ServicesState(version="v1.0", desired="up", disabled=["console"]))
    assert value(samples(registry), "osctl_service_wanted", service="console") == 0.0


def test_a_scrape_without_the_engine_still_serves_the_records(tmp_path: Path) -> None:
    _sup, _fake, settings = supervised(tmp_path)
    made = []

    def no_engine() -> FakeEngine:
        made.append(1)
        raise EngineUnavailable("cannot reach the Docker engine")

    registry, _ = host_registry(settings, no_engine)  # type: ignore[arg-type]
    for scrape in (1, 2):
        found = samples(registry)
        assert named(found, "osctl_service_up") == {}
        assert value(found, "osctl_service_restarts_total", service="syslog") == 0.0
        assert value(found, "osctl_host_info", host_id="unit-metrics", running="v1.0", next_boot="v1.0") == 1.0
        assert value(found, "osctl_metrics_errors_total", part="engine") == scrape
        assert value(found, "osctl_metrics_errors_total", part="services") == 0.0
    assert len(made) == 2, "each scrape tries the engine again"


def test_transactions_count_by_kind_and_result_and_never_go_down(tmp_path: Path) -> None:
    settings = Settings(root_option=str(tmp_path), host_id_option="unit-metrics", env={})
    registry, _ = host_registry(settings, FakeEngine)  # type: ignore[arg-type]
    journal = Journal(tmp_path)

    def finish(kind: str, to: str, result: str) -> None:
        journal.finish(journal.begin(kind, "v1.4", to), result)  # type: ignore[arg-type]

    found = samples(registry)
    assert value(found, "osctl_transactions_total", kind="upgrade", result="rolled-back") == 0.0
    assert named(found, "osctl_last_transaction_info") == {}
    finish("upgrade", "v1.5", "committed")
    finish("rollback", "v1.4", "committed")
    finish("upgrade", "v1.6", "rolled-back")
    assert samples(registry) == (found := samples(registry)), "a scrape counts nothing twice"
    assert value(found, "osctl_transactions_total", kind="upgrade", result="committed") == 1.0
    assert value(found, "osctl_transactions_total", kind="rollback", result="committed") == 1.0
    assert value(found, "osctl_transactions_total", kind="upgrade", result="rolled-back") == 1.0
    assert named(found, "osctl_last_transaction_info") == {
        (("from_version", "v1.4"), ("kind", "upgrade"), ("result", "rolled-back"), ("to_version", "v1.6")): 1.0}
    finished = value(found, "osctl_last_transaction_timestamp_seconds")
    assert finished is not None and abs(finished - datetime.now(UTC).timestamp()) < 60
    assert value(found, "osctl_transaction_in_progress") == 0.0
    # The history keeps the last 100: the oldest leave it, the counters keep them.
    for _ in range(HISTORY_KEEP):
        finish("upgrade", "v1.5", "committed")
    found = samples(registry)
    assert len(journal.history().entries) == HISTORY_KEEP
    assert value(found, "osctl_transactions_total", kind="upgrade", result="committed") == HISTORY_KEEP + 1
    assert value(found, "osctl_transactions_total", kind="upgrade", result="rolled-back") == 1.0
    journal.begin("downgrade", "v1.5", "v1.4")
    assert value(samples(registry), "osctl_transaction_in_progress") == 1.0


# ---------------------------------------------------------------------------- the agent

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def test_the_agents_phase_last_check_and_rollout() -> None:
    clock = iter([1000.0, 1030.0])
    agent = AgentMetrics("web", clock=lambda: next(clock))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(agent)
    found = samples(registry)
    assert value(found, "osctl_agent_phase", phase="idle") == 0.0  # no check yet: no phase is 1
    assert value(found, "osctl_agent_last_check_timestamp_seconds") is None
    rollout = Rollout(target="v1.5", max_concurrent=3, seed=7, failure_budget=2, started_at=NOW, updated_at=NOW)
    agent.on_tick(Step("waiting-slot", "v1.5", "every slot of the group is taken", Wait(soon=True)), rollout)
    agent.on_tick(Step("rolled-back", "v1.5", "rolled back to v1.4: service ntp failed"),
                  rollout.model_copy(update={"state": "paused"}))
    found = samples(registry)
    assert {labels[0][1] for labels, v in named(found, "osctl_agent_phase").items() if v == 1} == {"rolled-back"}
    assert len(named(found, "osctl_agent_phase")) == 11  # every phase, so a query sees a 0 rather than nothing
    assert value(found, "osctl_agent_checks_total", phase="waiting-slot") == 1.0
    assert value(found, "osctl_agent_checks_total", phase="rolled-back") == 1.0
    assert value(found, "osctl_agent_last_check_timestamp_seconds") == 1030.0
    assert named(found, "osctl_agent_rollout_info") == {
        (("group", "web"), ("state", "paused"), ("target", "v1.5")): 1.0}
    assert value(found, "osctl_agent_target_info", target="v1.5") == 1.0
    assert value(found, "osctl_agent_rollout_failure_budget") == 2.0
    assert value(found, "osctl_agent_rollout_failures") == 0.0
    # A check that swaps: the phase moves with the agent's events, before the check ends.
    agent.on_event(AgentEvent("swapping", "v1.4 -> v1.5"))
    agent.on_event(AgentEvent("slot", "slot 0 for v1.5"))  # a moment, not a phase
    found = samples(registry)
    assert {labels[0][1] for labels, v in named(found, "osctl_agent_phase").items() if v == 1} == {"swapping"}
    assert value(found, "osctl_agent_checks_total", phase="rolled-back") == 1.0  # no check ended meanwhile
    assert value(found, "osctl_agent_last_check_timestamp_seconds") == 1030.0


def test_every_metric_is_documented_and_every_documented_one_exists(tmp_path: Path) -> None:
    """docs/metrics.md's table against what the collectors expose (a counter's family is named without _total)."""
    sup, fake, settings = supervised(tmp_path)
    Journal(tmp_path).finish(Journal(tmp_path).begin("upgrade", None, "v1.0"), "committed")
    agent = AgentMetrics("web", clock=lambda: 1.0)
    agent.on_tick(Step("idle", "v1.0", "runs v1.0"),
                  Rollout(target="v1.0", max_concurrent=1, seed=1, started_at=NOW, updated_at=NOW))
    registry, _ = host_registry(settings, lambda: fake, agent)  # type: ignore[arg-type,return-value]
    exposed = {family.name for family in text_string_to_metric_families(generate_latest(registry).decode())}
    doc = (REPO / "docs/metrics.md").read_text()
    documented = {re.sub(r"_total$", "", name)
                  for name in re.findall(r"^\| `(osctl_[a-z_]+)", doc, flags=re.MULTILINE)}
    assert exposed == documented
    # The example alerts (checked with promtool: docs/metrics.md) use only names that exist.
    rules = YAML(typ="safe").load((REPO / "examples/osctl-alerts.yml").read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"\bosctl_[a-z_]+", rule["expr"])}
    assert used and used <= {s for family in text_string_to_metric_families(generate_latest(registry).decode())
                             for s in {family.name, family.name + "_total"}}
    assert " ".join(rules[0]["expr"].split()) in " ".join(doc.split()), "the alert in docs/metrics.md is the one in examples/osctl-alerts.yml"
