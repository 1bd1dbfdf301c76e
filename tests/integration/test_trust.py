"""Signed releases (issue #14), as a host sees them: real TUF metadata in the real registry.

Each test has a repository of its own (copies of the shipped versions) and a publisher that
builds the metadata straight with python-tuf (``tests.support.tuf_publisher``), not with
``osctl release``: the host is checked against metadata it did not make. Every refusal is
checked the way a user meets it: exit code 7, one ``error:`` line naming the reason, and
nothing changed (not stored, the boot pointer and the running version as they were).
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
from securesystemslib.signer import CryptoSigner

from osctl.adapters.etcd import Etcd
from osctl.domain import fleetkeys
from tests.support import fleet_sim, registry_tools
from tests.support.etcd_cluster import EtcdCluster
from tests.support.faults import assert_clear_error
from tests.support.hosts import OS_REPO, REGISTRY, Host, shipped_manifest
from tests.support.proxies import FlakyProxy
from tests.support.services import LONG_RUNNING, running_sets
from tests.support.tuf_publisher import ReleaseRepo, root_version_of

UNTRUSTED = 7  # ExitCode.UNTRUSTED: the documented exit code of every trust refusal


# ---------------------------------------------------------------- helpers


def trusted_host(make_host: Callable[[], Host], repo: ReleaseRepo) -> Host:
    host = make_host()
    host.image = repo.image
    host.extra_env["OSCTL_TRUST_ROOT"] = str(repo.root_file)
    host.extra_env["COLUMNS"] = "200"  # rich fits a table to 80 columns when not on a terminal
    return host


def ok(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    proc = host.osctl(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


def refused(host: Host, *args: str, says: tuple[str, ...]) -> str:
    """Run a command the host must refuse as untrusted; its one error line."""
    return assert_clear_error(host.osctl(*args), UNTRUSTED, *says)


def versions(host: Host, *args: str) -> dict[str, dict[str, object]]:
    data = host.osctl_json("list-versions", *args)
    assert isinstance(data, list)
    return {row["version"]: row for row in data}


def stored(host: Host) -> set[str]:
    folder = host.root / "var/lib/osctl/store"
    return {p.stem for p in folder.glob("*.json")} if folder.exists() else set()


def pointer(host: Host) -> dict[str, object]:
    path = host.root / "boot/osctl/boot.json"
    return json.loads(path.read_text()) if path.exists() else {}  # type: ignore[no-any-return]


def running(client: docker.DockerClient, host: Host) -> set[str]:
    """The versions with system containers of the host; each must be wholly up."""
    sets = running_sets(client, host)
    for version, services in sets.items():
        assert services == LONG_RUNNING[version], f"{version} runs {services}"
    return set(sets)


def engine_names(client: docker.DockerClient, repository: str) -> set[str]:
    """The names (tags, digests) the engine gives images under ``repository``."""
    return {ref for image in client.api.images()  # one listing: images.list() inspects each image
            for ref in [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]
            if ref.startswith((f"{repository}:", f"{repository}@"))}


def warnings(proc: subprocess.CompletedProcess[str]) -> int:
    return sum(line.startswith("warning:") for line in proc.stderr.splitlines())


def dead_registry(host: Host) -> None:
    """Point the host at a closed loopback port: registry and metadata unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host.image = f"127.0.0.1:{sock.getsockname()[1]}/{host.image.split('/', 1)[1]}"


# ---------------------------------------------------------------- refusals of new content


def test_unsigned_tag_is_refused_and_nothing_is_stored(make_host: Callable[[], Host],
                                                       release_repo: Callable[..., ReleaseRepo],
                                                       docker_client: docker.DockerClient) -> None:
    repo = release_repo()
    repo.sign("v1.3", "v1.4")
    host = trusted_host(make_host, repo)
    refused(host, "pull", "v1.5", says=("v1.5 is not signed by the release keys", "refused"))
    refused(host, "upgrade", "--to", "v1.5", says=("v1.5 is not signed by the release keys",))
    row = versions(host)["v1.5"]
    assert row["stored"] is False and row["signed"] is False and row["available"] is True
    assert stored(host) == set() and pointer(host) == {}
    assert engine_names(docker_client, repo.image) == set(), "nothing was pulled"
    plan = host.osctl_json("upgrade", "--dry-run")  # the newest is what the keys sign, not the newest tag
    assert isinstance(plan, dict) and plan["to_version"] == "v1.4", plan
    ok(host, "pull", "v1.4")  # what is signed is taken
    assert stored(host) == {"v1.4"}


def test_the_signed_digest_is_installed_whatever_the_tag_points_at(make_host: Callable[[], Host],
                                                                   release_repo: Callable[..., ReleaseRepo],
                                                                   docker_client: docker.DockerClient) -> None:
    repo = release_repo()
    repo.sign("v1.3", "v1.4")
    name, source = repo.image.split("/", 1)[1], OS_REPO.split("/", 1)[1]
    host = trusted_host(make_host, repo)

    # The tag v1.4 moves to another image after signing: the signed one is pulled by its digest.
    moved = registry_tools.copy_tags(REGISTRY, source, "v1.5", name, ["v1.4"])
    assert moved != repo.signed_digest("v1.4")
    ok(host, "pull", "v1.4")
    record = json.loads((host.root / "var/lib/osctl/store/v1.4.json").read_text())
    assert record["digest"] == repo.signed_digest("v1.4") and record["verified"] is True
    assert f"{repo.image}@{repo.signed_digest('v1.4')}" in engine_names(docker_client, repo.image), "pulled by digest"
    row = versions(host)["v1.4"]
    assert row["registry_digest"] == moved and row["signed_digest"] == row["digest"] == repo.signed_digest("v1.4")
    assert "tag-moved" in ok(host, "list-versions").stdout

    # The registry no longer holds the signed digest of v1.3 (its tag names other content): refused.
    registry_tools.delete_manifest(REGISTRY, name, repo.signed_digest("v1.3"))
    registry_tools.copy_tags(REGISTRY, source, "v1.6", name, ["v1.3"])
    refused(host, "pull", "v1.3", says=(f"{repo.image} holds no image with the digest the release keys sign for v1.3",))
    assert stored(host) == {"v1.4"}


def test_stored_versions_offline_expired_and_revoked(make_host: Callable[[], Host],
                                                     release_repo: Callable[..., ReleaseRepo],
                                                     docker_client: docker.DockerClient) -> None:
    """One host through the offline rule: stored and verified versions are switched to without
    the registry and on expired metadata (one warning each time); new content never installs on
    expired metadata; versions revoked after they were stored are refused for rollback,
    downgrade and upgrade, and still are once the registry is gone."""
    repo = release_repo()
    repo.sign("v1.3", "v1.4", "v1.5", "v1.6")
    host = trusted_host(make_host, repo)
    ok(host, "upgrade", "--to", "v1.5")
    ok(host, "pull", "v1.3")
    ok(host, "pull", "v1.6")

    dead_registry(host)  # registry and metadata unreachable; the store records keep their repository
    proc = ok(host, "downgrade", "--to", "v1.3")
    assert warnings(proc) == 1 and "could not be refreshed" in proc.stderr, proc.stderr
    assert running(docker_client, host) == {"v1.3"}

    host.image = repo.image
    expired = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    repo.timestamp(expires=expired)  # nobody renewed it: a freeze, or a publisher who stopped
    refused(host, "upgrade", "--to", "v1.4",
            says=("expired", f"timestamp.json expired 2h ago (at {expired.isoformat()})", "freeze"))
    assert "v1.4" not in stored(host)
    proc = ok(host, "rollback")  # to v1.5, stored and verified: fine on expired metadata
    assert warnings(proc) == 1 and "expired" in proc.stderr, proc.stderr
    assert running(docker_client, host) == {"v1.5"}

    # Renewed metadata revokes two versions the host stored.
    repo.revoke("v1.3", "CVE-2026-0001: sshd accepts any password")
    repo.revoke("v1.6", "bad build")
    before = pointer(host)
    assert before["default"] == "v1.5" and before["previous"] == "v1.3"
    cve = ("v1.3 is revoked: CVE-2026-0001: sshd accepts any password", "refused")
    refused(host, "rollback", says=cve)
    refused(host, "downgrade", "--to", "v1.3", says=cve)
    refused(host, "upgrade", "--to", "v1.6", says=("v1.6 is revoked: bad build", "refused"))

    # A revocation the host has seen wins offline too.
    dead_registry(host)
    refused(host, "rollback", says=cve)
    assert pointer(host) == before and running(docker_client, host) == {"v1.5"}
    assert stored(host) == {"v1.3", "v1.5", "v1.6"}


def test_a_command_refreshes_the_metadata_once_even_when_that_fails(make_host: Callable[[], Host],
                                                                    release_repo: Callable[..., ReleaseRepo]) -> None:
    """A switch to a stored version checks it twice (the plan, then the pull). A refresh that
    failed is not tried again in the same command: offline, each try costs the registry's whole
    retry budget, and its answer would not change."""
    repo = release_repo()
    repo.sign("v1.3", "v1.4")
    host = trusted_host(make_host, repo)
    ok(host, "pull", "v1.4")
    repo.timestamp(expires=datetime.now(UTC) - timedelta(hours=1))
    name = repo.image.split("/", 1)[1]
    with FlakyProxy("503", 0) as proxy:  # forwards everything, and says what was asked
        host.image = f"{proxy.address}/{name}"
        proc = ok(host, "upgrade", "--stage", "--to", "v1.4")
    assert pointer(host)["trial"] == "v1.4" and warnings(proc) == 1, proc.stderr
    asked = [p for p in proxy.paths if p == f"GET /v2/{name}-tuf/manifests/timestamp.json"]
    assert len(asked) == 1, proxy.paths


# ---------------------------------------------------------------- the metadata itself


def test_replayed_and_forged_metadata_are_refused(make_host: Callable[[], Host],
                                                  release_repo: Callable[..., ReleaseRepo]) -> None:
    repo = release_repo()
    repo.sign("v1.3")
    repo.sign("v1.4")  # version 2 of timestamp, snapshot and targets
    host = trusted_host(make_host, repo)
    assert versions(host)["v1.4"]["signed"] is True  # the host trusts version 2 of each

    repo.replay("timestamp.json", index=0)  # timestamp version 1 again
    refused(host, "upgrade", "--to", "v1.4", says=("rollback attack", "timestamp version 1 must be >= 2"))
    repo.timestamp(snapshot_version=1)  # a new timestamp naming the old snapshot
    refused(host, "pull", "v1.4", says=("rollback attack", "snapshot version must be >= 2"))
    repo.timestamp(signers=[CryptoSigner.generate_ecdsa()])  # a key the root does not name
    refused(host, "pull", "v1.4", says=("not signed by the keys the trusted root names",))
    assert stored(host) == set() and pointer(host) == {}

    repo.timestamp()  # the publisher's own, newer than anything replayed: trusted again
    ok(host, "pull", "v1.4")


def test_a_host_on_root_v1_follows_two_rotations(make_host: Callable[[], Host],
                                                 release_repo: Callable[..., ReleaseRepo]) -> None:
    repo = release_repo()
    repo.sign("v1.3")
    host = trusted_host(make_host, repo)
    versions(host)
    old_timestamp_keys = repo.keys["timestamp"]
    assert repo.rotate("root") == 2
    assert repo.rotate("timestamp") == 3
    repo.sign("v1.5")  # after both rotations

    ok(host, "pull", "v1.5")
    assert root_version_of((host.root / "var/lib/osctl/tuf/root.json").read_bytes()) == 3
    assert root_version_of(repo.root_file.read_bytes()) == 1, "the host was given root v1"
    repo.timestamp(signers=old_timestamp_keys)  # the rotated-out key no longer counts
    refused(host, "pull", "v1.3", says=("not signed by the keys the trusted root names",))


def test_a_new_root_needs_two_of_the_three_root_keys(make_host: Callable[[], Host],
                                                      release_repo: Callable[..., ReleaseRepo]) -> None:
    repo = release_repo(root_keys=3, root_threshold=2)
    repo.sign("v1.3")
    host = trusted_host(make_host, repo)
    versions(host)
    repo.rotate("root", old_root_signers=1)
    repo.sign("v1.4")
    refused(host, "pull", "v1.4", says=("not signed by the keys the trusted root names", "root was signed by 1/2"))
    assert stored(host) == set()
    repo.resign_root(old_root_signers=2)  # two of the three old root keys, and the new ones
    ok(host, "pull", "v1.4")
    assert root_version_of((host.root / "var/lib/osctl/tuf/root.json").read_bytes()) == 2


# ---------------------------------------------------------------- what the host shows


def test_list_versions_shows_signed_revoked_and_expiry(make_host: Callable[[], Host],
                                                       release_repo: Callable[..., ReleaseRepo]) -> None:
    repo = release_repo()
    repo.sign("v1.3", "v1.4", "v1.5")
    repo.revoke("v1.5", "breaks DHCP")
    repo.floor("v1.4", "v1.3 leaks its host keys")
    floor = "revoked: older than the signed minimum version v1.4: v1.3 leaks its host keys"
    host = trusted_host(make_host, repo)

    rows = versions(host)
    assert list(rows) == ["v1.6", "v1.5", "v1.4", "v1.3"]
    expires = rows["v1.4"]["expires"]
    assert isinstance(expires, str) and datetime.fromisoformat(expires) > datetime.now(UTC)
    assert rows["v1.4"]["signed"] is True and rows["v1.4"]["revoked"] is None
    assert rows["v1.5"]["signed"] is True and rows["v1.5"]["revoked"] == "revoked: breaks DHCP"
    assert rows["v1.6"]["signed"] is False and rows["v1.6"]["expires"] is None
    assert rows["v1.3"]["signed"] is True and rows["v1.3"]["revoked"] == floor
    refused(host, "pull", "v1.6", says=("v1.6 is not signed",))
    refused(host, "pull", "v1.3", says=(f"v1.3 is {floor}",))
    assert stored(host) == set()

    proc = ok(host, "list-versions")
    table = {line.split()[0]: line.rstrip() for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert proc.stdout.splitlines()[0].split()[-2:] == ["TRUST", "WHY"]
    assert " unsigned" in table["v1.6"]
    assert " revoked " in table["v1.5"] and table["v1.5"].endswith("revoked: breaks DHCP")
    assert " signed" in table["v1.4"] and "revoked" not in table["v1.4"]
    assert " revoked " in table["v1.3"] and table["v1.3"].endswith(floor)
    assert "the release metadata saying so is valid until" in proc.stderr
    assert "warning" not in proc.stderr


def test_without_a_root_nothing_is_verified_and_that_is_said_once(host: Host) -> None:
    proc = host.osctl("list-versions", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {row["signed"] for row in json.loads(proc.stdout)} == {None}
    assert proc.stderr.count("no trust root is configured") == 1, proc.stderr
    proc = ok(host, "upgrade", "--stage", "--to", "v1.4")  # checked twice (the plan, the pull), said once
    assert proc.stderr.count("warning:") == 1 and "not verified" in proc.stderr, proc.stderr
    assert pointer(host)["trial"] == "v1.4"


# ---------------------------------------------------------------- boot and the fleet


def test_a_trial_revoked_after_staging_falls_back_at_boot(make_host: Callable[[], Host],
                                                          release_repo: Callable[..., ReleaseRepo],
                                                          docker_client: docker.DockerClient) -> None:
    repo = release_repo()
    repo.sign("v1.3", "v1.4")
    host = trusted_host(make_host, repo)
    ok(host, "upgrade", "--to", "v1.3")
    ok(host, "upgrade", "--stage", "--to", "v1.4")
    assert pointer(host)["trial"] == "v1.4"
    repo.revoke("v1.4", "does not boot on EFI 1.x")
    assert versions(host)["v1.4"]["revoked"]  # the host has seen it

    dead_registry(host)  # boot never waits for the network: what the host has seen decides
    result = host.osctl_json("boot")
    assert isinstance(result, dict)
    assert result["version"] == "v1.3" and result["trial"] == "v1.4" and result["trial_result"] == "fell-back"
    assert "revoked: does not boot on EFI 1.x" in result["reason"]
    assert running(docker_client, host) == {"v1.3"}
    assert pointer(host)["default"] == "v1.3" and pointer(host)["trial"] is None


def test_a_target_revoked_during_a_rollout_is_refused_and_pauses_it(
        make_host: Callable[[], Host], release_repo: Callable[..., ReleaseRepo], etcd_cluster: EtcdCluster,
        docker_client: docker.DockerClient) -> None:
    repo = release_repo()
    repo.sign("v1.3", "v1.4")
    group = f"t{uuid.uuid4().hex[:8]}"
    first, second = hosts = [trusted_host(make_host, repo) for _ in range(2)]
    for host in hosts:  # the root as a fleet gets it: in the settings file, not the environment
        fleet_sim.write_config(host, etcd_cluster.endpoints, group)
        with open(host.root / "etc/osctl/config.yaml", "a") as config:
            config.write(f"trust: {{root: {repo.root_file}}}\n")
        del host.extra_env["OSCTL_TRUST_ROOT"]
    proc = fleet_sim.fleet_cli(etcd_cluster.endpoints, group, "rollout", "--to", "v1.4", "--failure-budget", "1",
                               "--no-stage", env=first.env())  # `agent --once` would stop at "staged"
    assert proc.returncode == 0, proc.stderr

    proc = fleet_sim.osctl(first, "agent", "--once")
    assert proc.returncode == 0, proc.stderr
    assert running(docker_client, first) == {"v1.4"}

    repo.revoke("v1.4", "eats disks")
    proc = fleet_sim.fleet_cli(etcd_cluster.endpoints, group, "rollout", "--to", "v1.4", env=first.env())
    assert proc.returncode == UNTRUSTED and "v1.4 is revoked: eats disks; not rolled out" in proc.stderr
    with Etcd(etcd_cluster.endpoints) as etcd:
        since = etcd.revision() + 1
        proc = fleet_sim.osctl(second, "agent", "--once")
        assert proc.returncode == 0, proc.stderr
        published = [e.value for e in etcd.history(fleetkeys.host_key(group, second.host_id), since)
                     if e.kind == "put"]
    assert published[-1]["phase"] == "refused" and "v1.4 is revoked: eats disks" in published[-1]["last_result"]
    assert stored(second) == set() and running(docker_client, second) == set()

    status = fleet_sim.fleet_status(etcd_cluster.endpoints, group)
    rollout = status["rollout"]
    assert rollout["state"] == "paused" and "failure budget spent" in rollout["reason"], rollout
    assert [(f["host_id"], "revoked: eats disks" in f["reason"]) for f in rollout["failures"]] == [
        (second.host_id, True)]


def test_a_root_shipped_in_the_os_image_is_trusted_and_tag_only_service_images_are_refused(
        host: Host, publish: Callable[..., str], tmp_path: Path) -> None:
    """No root configured: the version the host boots ships one (/usr/lib/osctl/trust/root.json),
    and from then on the host enforces it. A signed version whose release.yaml names a service
    image by tag alone is refused: its signature does not cover what that tag points at."""
    manifest = shipped_manifest("v1.5")  # names node-exporter by tag, as the source file does
    assert "node-exporter:1.0\n" in manifest
    repo = publish("v1.7", manifest)
    release = ReleaseRepo(repo, tmp_path / "release")
    digest = registry_tools.get_manifest(REGISTRY, "osctl/node-exporter", "1.0")[1]
    pinned = manifest.replace("node-exporter:1.0\n", f"node-exporter:1.0@{digest}\n")
    publish("v1.8", pinned, {"/usr/lib/osctl/trust/root.json": release.root_file.read_text()})
    release.sign("v1.7", "v1.8")
    host.image = repo

    ok(host, "upgrade", "--to", "v1.8", "--yes")  # no root yet: installed unverified, with a warning
    trust = host.osctl_json("status")["trust"]  # type: ignore[index]
    assert trust["origin"] == "OS image v1.8" and trust["enforced"], trust
    assert versions(host)["v1.8"]["signed"] is True
    refused(host, "downgrade", "--to", "v1.7", "--yes",
            says=("v1.7 names service images by tag alone", "node-exporter"))
    assert stored(host) == {"v1.8"}
