"""A hostile or broken registry against real osctl commands and the real engine (issue #19).

The registry is ``tests/support/stub_registry.py`` on 127.0.0.1, serving crafted answers; the
host's OS image repository is set to it. What a user would notice is asserted: the exit code
(an OsctlError's, never 70), one error line, and that nothing outside the host was touched
(a named volume of another host survives every command).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from osctl.domain import bootpointer
from osctl.domain.store import Store
from osctl.models.store import BootPointer
from tests.support.hosts import Host
from tests.support.store_records import store_version
from tests.support.stub_registry import StubRegistry

NAME = "hostile/os"
PATH_DIGEST = "sha256:/../../../../volumes/{victim}"  # 4 x '..' climbs out of /images/127.0.0.1:P/hostile/os@
LABEL = "io.osctl.os.version"
INTERNAL_ERROR = 70


@pytest.fixture
def stub() -> Iterator[StubRegistry]:
    with StubRegistry() as served:
        yield served


@pytest.fixture
def hostile(host: Host, stub: StubRegistry) -> Host:
    """The test's host, its OS image repository in the stub registry."""
    host.image = stub.repository(NAME)
    return host


@pytest.fixture
def victim(make_host: Callable[[], Host], docker_client: docker.DockerClient) -> Iterator[str]:
    """A named volume of ANOTHER host on the same engine: no command of ours may remove it."""
    other = make_host()
    name = f"osctl-{other.host_id}-data"
    docker_client.volumes.create(name, labels={"io.osctl.host": other.host_id, "io.osctl.volume": "data"})
    yield name


def survives(client: docker.DockerClient, volume: str) -> bool:
    try:
        client.volumes.get(volume)
    except docker.errors.NotFound:
        return False
    return True


def one_error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The failure as a user sees it: an OsctlError's exit code and one error line saying ``words``."""
    assert proc.returncode not in (0, INTERNAL_ERROR), (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def rows(host: Host) -> dict[str, dict[str, object]]:
    proc = host.osctl("list-versions", "--json")
    assert proc.returncode == 0, proc.stderr
    return {row["version"]: row for row in json.loads(proc.stdout)}


# -- item 1: a digest is only ever a digest --------------------------------------------------------
@pytest.mark.parametrize("command", [("pull", "v2.0"), ("upgrade", "--to", "v2.0", "-y"), ("upgrade", "-y"),
                                     ("downgrade", "--to", "v2.0", "-y")])
def test_a_path_in_the_digest_header_never_reaches_the_engine(hostile: Host, stub: StubRegistry, victim: str,
                                                              docker_client: docker.DockerClient,
                                                              command: tuple[str, ...]) -> None:
    stub.tags(NAME, ["v2.0"])
    stub.image(NAME, "v2.0", {LABEL: "v2.0"}, digest=PATH_DIGEST.format(victim=victim))
    if command[0] == "downgrade":  # something to come down from
        store_version(Store(hostile.root), "v3.0")
        bootpointer.write(hostile.root, BootPointer(default="v3.0"))
    proc = hostile.osctl(*command)
    one_error_line(proc, "v2.0")
    assert "not a digest" in proc.stderr or "not a sha256 digest" in proc.stderr
    assert survives(docker_client, victim)
    assert all("/blobs/" not in path for _, path in stub.seen), "nothing was pulled"


@pytest.mark.parametrize("where", ["config", "layer"])
def test_a_path_in_a_manifest_digest_is_a_malformed_manifest(hostile: Host, stub: StubRegistry, victim: str,
                                                             docker_client: docker.DockerClient, where: str) -> None:
    evil = {"size": 1, "digest": PATH_DIGEST.format(victim=victim)}
    good = {"size": 1, "digest": "sha256:" + "0" * 64}
    stub.tags(NAME, ["v2.0"])
    stub.manifest(NAME, "v2.0", {"schemaVersion": 2, "config": evil if where == "config" else good,
                                 "layers": [evil] if where == "layer" else []})
    one_error_line(hostile.osctl("pull", "v2.0"), "malformed manifest", "v2.0")
    assert survives(docker_client, victim)
    assert "unreadable" in str(rows(hostile)["v2.0"]["invalid"])
    assert survives(docker_client, victim)


def test_list_versions_and_prune_leave_the_other_hosts_volume(hostile: Host, stub: StubRegistry, victim: str,
                                                              docker_client: docker.DockerClient) -> None:
    stub.tags(NAME, ["v2.0", "v1.0"])
    stub.image(NAME, "v2.0", {LABEL: "v2.0"}, digest=PATH_DIGEST.format(victim=victim))
    stub.image(NAME, "v1.0", {LABEL: "v1.0"})
    found = rows(hostile)
    assert found["v2.0"]["invalid"] and "not a digest" in str(found["v2.0"]["invalid"])
    assert found["v2.0"]["digest"] is None and found["v1.0"]["invalid"] is None
    assert hostile.osctl("prune", "--keep", "0").returncode == 0
    assert survives(docker_client, victim)


# -- items 5 and 6: bad tags are shown as such, never chosen; malformed answers are errors ---------
def test_invalid_tags_are_listed_with_why_and_never_chosen(hostile: Host, stub: StubRegistry) -> None:
    store_version(Store(hostile.root), "v0.9")
    stub.tags(NAME, ["v0.9", "v1.0", "v1.1", "v1.2", "v1.3", "latest"])
    stub.image(NAME, "v1.0", {LABEL: "v1.0"})
    stub.image(NAME, "v1.1", {LABEL: "v1.0"})  # the label names another version
    stub.image(NAME, "v1.2", None)  # no label: not an OS image
    stub.manifest(NAME, "v1.3", {"schemaVersion": 2, "config": {"size": "abc", "digest": "sha256:" + "0" * 64},
                                 "layers": 5})
    found = rows(hostile)
    assert found["v0.9"]["stored"] and not found["v0.9"]["available"]  # the stored version is still listed
    assert found["v1.0"]["invalid"] is None and found["v1.0"]["available"]
    assert "label says 'v1.0', not 'v1.1'" in str(found["v1.1"]["invalid"])
    assert f"no {LABEL} label" in str(found["v1.2"]["invalid"])
    assert "config.size is 'abc'" in str(found["v1.3"]["invalid"])
    table = hostile.osctl("list-versions")
    assert table.returncode == 0 and "invalid" in table.stdout and "WHY" in table.stdout, table.stderr

    plan = hostile.osctl("upgrade", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["to_version"] == "v1.0"  # the newest valid release, not v1.3


def test_only_invalid_releases_is_one_error_saying_why(hostile: Host, stub: StubRegistry) -> None:
    stub.tags(NAME, ["v1.0", "v1.1"])
    stub.manifest(NAME, "v1.1", {"schemaVersion": 2, "config": {"size": 1, "digest": "sha256:" + "0" * 64},
                                 "layers": 5})
    stub.image(NAME, "v1.0", None)
    one_error_line(hostile.osctl("upgrade", "-y"), "no valid released version", "v1.1 (unreadable", "v1.0 (no ")


def test_a_remembered_pull_failure_makes_a_tag_invalid(hostile: Host, stub: StubRegistry) -> None:
    """What only a pull can find (the release manifest inside) is kept by digest, for the next listing."""
    from osctl.domain.imagefacts import ImageFacts
    from osctl.models.refs import Digest

    stub.tags(NAME, ["v1.0", "v1.1"])
    stub.image(NAME, "v1.0", {LABEL: "v1.0"})
    bad = stub.image(NAME, "v1.1", {LABEL: "v1.1"})
    ImageFacts(hostile.root).remember_failure(Digest(bad), "invalid release manifest: version: 'v9' differs")
    assert "differs" in str(rows(hostile)["v1.1"]["invalid"])
    assert json.loads(hostile.osctl("upgrade", "--dry-run", "--json").stdout)["to_version"] == "v1.0"


@pytest.mark.parametrize(("answer", "why"), [
    ({"schemaVersion": 2, "config": {"size": "abc", "digest": "sha256:" + "0" * 64}, "layers": []}, "config.size"),
    ({"schemaVersion": 2, "config": {"size": 1, "digest": "sha256:" + "0" * 64}, "layers": 5}, "layers is int"),
    ([1, 2, 3], "not a JSON object"),
    (b"{" + b" " * (5 << 20) + b"}", "more than 4 MiB"),
])
def test_a_malformed_manifest_is_one_clear_error(hostile: Host, stub: StubRegistry, answer: object, why: str) -> None:
    stub.tags(NAME, ["v1.0"])
    stub.manifest(NAME, "v1.0", answer)
    one_error_line(hostile.osctl("pull", "v1.0"), why, "v1.0")


@pytest.mark.parametrize("tags", [{"v1.0": 1}, ["v1.0", 7]])
def test_a_tag_list_that_is_not_strings_still_lists_what_is_stored(hostile: Host, stub: StubRegistry,
                                                                   tags: object) -> None:
    store_version(Store(hostile.root), "v0.9")
    stub.tags(NAME, tags)
    proc = hostile.osctl("list-versions", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [row["version"] for row in json.loads(proc.stdout)] == ["v0.9"]
    assert "not a list of strings" in proc.stderr
    one_error_line(hostile.osctl("upgrade", "-y"), "not a list of strings")


# -- image validate: never a registry nobody named --------------------------------------------------
@pytest.mark.parametrize("target", ["latest", "osctl/os:v1.4", "busybox"])
def test_image_validate_never_goes_to_a_registry_not_named(hostile: Host, stub: StubRegistry, target: str) -> None:
    proc = hostile.osctl("image", "validate", target)
    one_error_line(proc)
    assert proc.returncode == 2 and stub.seen == []


def test_the_agent_takes_the_newest_valid_release(tmp_path: Path, stub: StubRegistry) -> None:
    """Without a pinned version or a rollout the agent converges to the newest release: never an invalid one."""
    from osctl.domain.settings import Settings
    from osctl.operations.agent import Agent
    from osctl.operations.agenthost import LocalHost

    (tmp_path / "etc/osctl").mkdir(parents=True)
    (tmp_path / "etc/osctl/config.yaml").write_text("update: {policy: download-only}\n")
    store_version(Store(tmp_path), "v1.5")
    stub.tags(NAME, ["v1.5", "v1.6", "v1.7"])
    stub.image(NAME, "v1.5", {LABEL: "v1.5"})
    stub.image(NAME, "v1.6", {LABEL: "v1.5"})
    stub.manifest(NAME, "v1.7", {"schemaVersion": 2, "config": {"size": "abc"}, "layers": 5})
    settings = Settings(env={"OSCTL_ROOT": str(tmp_path), "OSCTL_HOST_ID": "hostile-agent",
                             "OSCTL_IMAGE": stub.repository(NAME)})
    step = Agent(settings, LocalHost(settings, None)).tick()  # type: ignore[arg-type]  # a stored target needs no engine
    assert (step.phase, step.target) == ("staged", "v1.5"), step


def test_a_rollout_of_a_tag_that_is_not_an_os_image_is_refused(hostile: Host, stub: StubRegistry) -> None:
    """Judged like list-versions judges it, before etcd is asked: every host would fail on it."""
    stub.tags(NAME, ["v1.2"])
    stub.image(NAME, "v1.2", None)  # no label: not an OS image
    proc = hostile.osctl("--etcd", "http://127.0.0.1:9", "--group", "g1", "fleet", "rollout", "--to", "v1.2")
    one_error_line(proc, "v1.2 is not a valid OS version", f"no {LABEL} label")
