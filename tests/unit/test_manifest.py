"""Release manifests: what the image contract accepts, and how it explains what it refuses."""

from __future__ import annotations

import pytest

from osctl.domain.manifest import parse_manifest
from osctl.domain.servicegraph import levels, start_order, stop_order
from osctl.errors import ManifestError

GOOD = """\
version: v1.4
services:
  network:
    oneshot: true
    restart: "no"
    network_mode: host
    command: "sh -c 'echo up'"
  syslog:
    command: ["/bin/syslogd", "-n", "-O", "/var/log/messages"]
    volumes: ["logs:/var/log", "/etc/osctl:/etc/osctl:ro"]
    network_mode: none
    depends_on: {network: {condition: service_completed_successfully}}
    healthcheck: {test: ["CMD", "/bin/pidof", "syslogd"], interval: 1s, timeout: 2s, retries: 3, start_period: 0s}
  ntp:
    command: ["/bin/ntpd", "-n"]
    depends_on: [syslog]
  status:
    depends_on: {syslog: {condition: service_healthy}}
boot:
  kernel: /boot/vmlinuz
  initrd: /boot/initrd.img
  cmdline: "console=ttyS0"
min_upgrade_from: v1.2
"""


def error_of(text: str, **kwargs: str) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, "release.yaml", **kwargs)
    return caught.value


def test_valid_manifest_is_read_with_defaults() -> None:
    manifest = parse_manifest(GOOD, "release.yaml", expected_version="v1.4")
    syslog = manifest.services["syslog"]
    assert syslog.healthcheck is not None and syslog.healthcheck.interval == 1.0
    assert [(v.source, v.target, v.read_only) for v in syslog.volumes] == [
        ("logs", "/var/log", False), ("/etc/osctl", "/etc/osctl", True)]
    assert manifest.services["network"].command == ["sh", "-c", "echo up"]
    assert manifest.services["network"].restart_policy == "no"
    assert manifest.services["ntp"].restart_policy == "always"
    assert manifest.services["ntp"].depends_on["syslog"].condition == "service_started"
    assert manifest.services["ntp"].network_mode == "bridge"


def test_service_graph_orders_dependencies_first_and_stops_in_reverse() -> None:
    services = parse_manifest(GOOD, "release.yaml").services
    assert levels(services) == [["network"], ["syslog"], ["ntp", "status"]]
    order = start_order(services)
    assert order.index("network") < order.index("syslog") < order.index("ntp")
    assert stop_order(services) == list(reversed(order))


def test_unknown_key_names_its_path_line_and_a_suggestion() -> None:
    err = error_of(GOOD.replace("    healthcheck:", "    helthcheck:"))
    assert err.issues[0].path == "services.syslog.helthcheck"
    assert err.issues[0].line == 13
    assert "did you mean 'healthcheck'" in err.message
    assert err.message.startswith("invalid release manifest: release.yaml:13:5: services.syslog.helthcheck")


def test_unknown_top_level_key() -> None:
    err = error_of(GOOD + "kernel_args: quiet\n")
    assert err.issues[0].path == "kernel_args" and "unknown key" in err.issues[0].message


def test_dependency_on_a_missing_service_names_it() -> None:
    err = error_of(GOOD.replace("depends_on: [syslog]", "depends_on: [sylog]"))
    assert "unknown service 'sylog'" in err.message and "did you mean 'syslog'" in err.message


def test_dependency_cycle_is_named() -> None:
    text = GOOD.replace("    depends_on: {network: {condition: service_completed_successfully}}\n",
                        "    depends_on: [ntp]\n")
    err = error_of(text)
    assert "dependency cycle: ntp -> syslog -> ntp" in err.message


def test_self_dependency() -> None:
    err = error_of(GOOD.replace("depends_on: [syslog]", "depends_on: [ntp]"))
    assert "cannot depend on itself" in err.message


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    [
        ("interval: 1s", "interval: soon", "services.syslog.healthcheck.interval", "not a duration"),
        ("network_mode: none", "network_mode: hst", "services.syslog.network_mode", "is not one of"),
        ('restart: "no"', "restart: always", "services.network", "cannot use restart: always"),
        ("version: v1.4", "version: latest", "version", "not a version"),
        ('["CMD", "/bin/pidof", "syslogd"]', '["RUN", "x"]', "services.syslog.healthcheck.test", "CMD"),
        ('"logs:/var/log"', '"logs"', "services.syslog.volumes", "not a volume"),
        ('"logs:/var/log"', '"logs:var/log"', "services.syslog.volumes", "absolute path"),
        ("kernel: /boot/vmlinuz", "kernel: boot/vmlinuz", "boot.kernel", "absolute path"),
        ("  ntp:\n", "  NTP:\n", "services.NTP", "not a service name"),
        ("{condition: service_healthy}", "{condition: healthy}", "services.status.depends_on.syslog.condition", "is not one of"),
    ],
)
def test_bad_values_are_explained(old: str, new: str, path: str, words: str) -> None:
    assert old in GOOD
    err = error_of(GOOD.replace(old, new, 1))
    assert any(i.path.startswith(path) and words in i.message for i in err.issues), err.issues


def test_semantic_conditions_need_what_they_wait_for() -> None:
    err = error_of(GOOD.replace("depends_on: [syslog]", "depends_on: {network: {condition: service_healthy}}"))
    assert "needs a healthcheck on 'network'" in err.message
    err = error_of(GOOD.replace("depends_on: [syslog]",
                                "depends_on: {syslog: {condition: service_completed_successfully}}"))
    assert "not a oneshot service" in err.message


def test_version_must_match_the_tag() -> None:
    err = error_of(GOOD, expected_version="v1.5")
    assert "'v1.4' differs from the image tag 'v1.5'" in err.message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "version: [\n", "\x00\x01", "a: b: c\n", "services: !!python/object:os.system x\n"])
def test_broken_documents_are_refused_not_crashed(text: str) -> None:
    err = error_of(text)
    assert err.message.startswith("invalid release manifest: release.yaml")


def test_duplicate_keys_are_refused() -> None:
    err = error_of(GOOD.replace("  ntp:\n", "  syslog:\n  ntp:\n", 1))
    assert "not valid YAML" in err.message


def test_every_problem_is_reported_at_once() -> None:
    err = error_of(GOOD.replace("interval: 1s", "interval: x").replace("network_mode: none", "network_mode: y"))
    assert len(err.issues) == 2 and "(and 1 more)" in err.message


def test_alias_bombs_are_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 9)]
    err = error_of("\n".join(lines) + "\n")
    assert "YAML aliases expand to more than" in err.message


def test_duplicate_keys_do_not_quote_their_values() -> None:
    err = error_of("version: v1.4\npassword: hunter2\npassword: swordfish\n")
    assert "duplicate key" in err.message and "hunter2" not in err.message and "swordfish" not in err.message
