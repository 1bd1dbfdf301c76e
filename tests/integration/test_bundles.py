"""Air-gapped hosts (issue #17): OS versions carried in a bundle file, against the real engine.

A bundle made by ``osctl bundle create`` must install on a host that has no registry at all
(the repository is deleted from the registry and its images from the engine before the host
uses the bundle), must be read by the independent tools (skopeo, ``docker load``), must be
refused in one line with nothing left behind when it is damaged or wrong, and must verify
against a host's trusted root exactly as the registry's metadata does.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support import registry_tools
from tests.support.faults import assert_clear_error
from tests.support.hosts import OS_REPO, REGISTRY, Host, shipped_manifest
from tests.support.tuf_publisher import ReleaseRepo

UNTRUSTED, USAGE = 7, 2


def ok(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    proc = host.osctl(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def refused(host: Host, *args: str, code: int, says: tuple[str, ...]) -> str:
    return assert_clear_error(host.osctl(*args), code, *says)


def stored(host: Host) -> set[str]:
    folder = host.root / "var/lib/osctl/store"
    return {p.stem for p in folder.glob("*.json")} if folder.exists() else set()


@pytest.fixture(scope="module")
def shipped_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the shipped v1.6 (unsigned), made once for the tests that only read it."""
    path = tmp_path_factory.mktemp("bundle") / "v1.6.tar"
    maker = Host(f"osctltest-{uuid.uuid4().hex[:10]}", path.parent / "maker-root")
    maker.root.mkdir()
    ok(maker, "bundle", "create", "v1.6", "-o", str(path))
    return path


@pytest.fixture
def absent_bundle(publish: Callable[..., str], docker_client: docker.DockerClient,
                  tmp_path: Path) -> tuple[Path, str, str]:
    """A bundle of v2.3, a version of the test's own that then leaves the registry and the
    engine: (bundle, repository, the OS image's config digest, i.e. its engine image id)."""
    repo = publish("v2.3", shipped_manifest("v1.5"))
    maker = Host(f"osctltest-{uuid.uuid4().hex[:10]}", tmp_path / "maker", image=repo)
    maker.root.mkdir()
    bundle = tmp_path / "absent.tar"
    ok(maker, "bundle", "create", "v2.3", "-o", str(bundle))
    image_id = docker_client.images.get(f"{repo}:v2.3").id
    registry_tools.delete_repository(REGISTRY, repo.split("/", 1)[1])
    docker_client.images.remove(f"{repo}:v2.3")
    return bundle, repo, image_id


# ---------------------------------------------------------------- no registry at all


def test_a_host_with_no_registry_installs_upgrades_and_downgrades_from_bundles(
        host: Host, publish: Callable[..., str], docker_client: docker.DockerClient, tmp_path: Path) -> None:
    repo = publish("v2.1", shipped_manifest("v1.5"))
    publish("v2.2", shipped_manifest("v1.5"))
    maker = Host(f"{host.host_id}m", tmp_path / "maker", image=repo)
    maker.root.mkdir()
    bundle = tmp_path / "os.tar"
    made = maker.osctl_json("bundle", "create", "v2.1", "v2.2", "-o", str(bundle))
    assert isinstance(made, dict) and set(made["versions"]) == {"v2.1", "v2.2"} and made["signed"] is False

    # The air gap: the repository leaves the registry and its images leave the engine.
    registry_tools.delete_repository(REGISTRY, repo.split("/", 1)[1])
    for tag in ("v2.1", "v2.2"):
        docker_client.images.remove(f"{repo}:{tag}")
    host.image = ""  # the host names no repository: it takes the bundle's

    seen = host.osctl_json("bundle", "inspect", str(bundle))
    assert isinstance(seen, dict) and [v["version"] for v in seen["versions"]] == ["v2.1", "v2.2"]
    assert seen["repository"] == repo and seen["signed"] is False

    ok(host, "upgrade", "--to", "v2.2", "--from", str(bundle), "-y")
    record = json.loads((host.root / "var/lib/osctl/store/v2.2.json").read_text())
    assert record["digest"] == made["versions"]["v2.2"], "the registry's digest, whichever way the version came"
    assert record["repository"] == repo
    assert docker_client.images.get(f"{repo}:v2.2").id == record["image_id"]

    ok(host, "downgrade", "--to", "v2.1", "--from", str(bundle), "-y")
    assert stored(host) == {"v2.1", "v2.2"}
    ok(host, "upgrade", "--to", "v2.2", "-y")  # stored: no bundle and no registry needed
    pointer = json.loads((host.root / "boot/osctl/boot.json").read_text())
    assert pointer["default"] == "v2.2" and pointer["previous"] == "v2.1"


def test_the_newest_release_in_the_bundle_is_the_default_target(host: Host, shipped_bundle: Path) -> None:
    plan = host.osctl_json("upgrade", "--from", str(shipped_bundle), "--dry-run")
    assert isinstance(plan, dict) and plan["to_version"] == "v1.6", plan


# ---------------------------------------------------------------- independent readers


def test_skopeo_reads_and_copies_the_bundle(shipped_bundle: Path, docker_client: docker.DockerClient) -> None:
    shown = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{shipped_bundle}:v1.6"],
                                      capture_output=True, text=True, check=True).stdout)
    assert shown["Labels"]["io.osctl.os.version"] == "v1.6"
    target = f"osctl-test/{uuid.uuid4().hex[:8]}/os"
    try:
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{shipped_bundle}:v1.6",
                        f"docker://{REGISTRY}/{target}:v1.6"], capture_output=True, text=True, check=True)
        copied = _manifest(target, "v1.6")
        source = _manifest(OS_REPO.split("/", 1)[1], "v1.6")
        assert [layer["digest"] for layer in copied["layers"]] == [layer["digest"] for layer in source["layers"]]
        assert copied["config"]["digest"] == source["config"]["digest"]
    finally:
        registry_tools.delete_repository(REGISTRY, target)


def _manifest(repo: str, tag: str) -> dict[str, Any]:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    req = urllib.request.Request(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_docker_load_reads_the_bundle(shipped_bundle: Path, docker_client: docker.DockerClient) -> None:
    loaded = docker_client.images.load(shipped_bundle.read_bytes())
    names = {tag for image in loaded for tag in image.tags}
    assert f"{OS_REPO}:v1.6" in names
    assert docker_client.images.get(f"{OS_REPO}:v1.6").labels["io.osctl.os.version"] == "v1.6"


# ---------------------------------------------------------------- bad bundles


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def _read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read()


def _os_layers(path: Path, version: str) -> list[str]:
    index = json.loads(_read_member(path, "index.json"))
    entry = next(e for e in index["manifests"] if e["annotations"]["org.opencontainers.image.ref.name"] == version)
    manifest = json.loads(_read_member(path, "blobs/sha256/" + entry["digest"].split(":")[1]))
    return [layer["digest"].split(":")[1] for layer in manifest["layers"]]


def _flip(source: Path, dest: Path, blob: str) -> Path:
    """A copy of ``source`` with one byte in the middle of the blob ``blob`` (hex) changed."""
    data = bytearray(source.read_bytes())
    member = next(m for m in _members(source) if m.name.endswith(blob))
    data[member.offset_data + member.size // 2] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize(("how", "says"), [("truncated", "cut short"), ("not a bundle", "not a tar file")])
def test_a_damaged_file_is_refused_in_one_line(host: Host, shipped_bundle: Path, tmp_path: Path, how: str,
                                               says: str) -> None:
    data = shipped_bundle.read_bytes()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(data[:len(data) * 2 // 3] if how == "truncated" else b"a shopping list, not a tar\n" * 100)
    refused(host, "pull", "v1.6", "--from", str(bad), code=USAGE, says=(str(bad), says))
    assert stored(host) == set()


@pytest.mark.parametrize("layer", ["base", "top"])
def test_a_blob_that_does_not_hash_stops_the_install_and_the_engine_keeps_nothing(
        host: Host, absent_bundle: tuple[Path, str, str], tmp_path: Path, docker_client: docker.DockerClient,
        layer: str) -> None:
    """The top layer holds the release manifest, read before anything is loaded; the base layer
    is first read while the images stream into the engine, which must then keep nothing."""
    bundle, repo, image_id = absent_bundle
    layers = _os_layers(bundle, "v2.3")
    bad = _flip(bundle, tmp_path / "bad.tar", layers[0] if layer == "base" else layers[-1])
    host.image = repo
    refused(host, "upgrade", "--to", "v2.3", "--from", str(bad), "-y", code=1, says=(str(bad), "does not hash"))
    assert stored(host) == set() and not (host.root / "boot/osctl/boot.json").exists()
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    ok(host, "pull", "v2.3", "--from", str(bundle))  # the undamaged bundle installs
    assert docker_client.images.get(f"{repo}:v2.3").id == image_id


def test_a_version_missing_from_the_bundle_is_named(host: Host, shipped_bundle: Path) -> None:
    line = refused(host, "upgrade", "--to", "v1.5", "--from", str(shipped_bundle), "-y", code=USAGE,
                   says=("v1.5", "v1.6"))
    assert "holds" in line
    assert stored(host) == set()


def test_a_bundle_of_another_repository_is_refused(host: Host, shipped_bundle: Path) -> None:
    host.image = f"{REGISTRY}/somebody/else"
    refused(host, "pull", "v1.6", "--from", str(shipped_bundle), code=USAGE,
            says=(OS_REPO, "somebody/else", "refused"))
    assert stored(host) == set()


def test_push_seeds_a_mirror_that_hosts_pull_the_same_digests_from(
        host: Host, absent_bundle: tuple[Path, str, str], docker_client: docker.DockerClient) -> None:
    bundle, _, image_id = absent_bundle
    mirror = f"{REGISTRY}/osctl-test/{uuid.uuid4().hex[:8]}/os"
    try:
        pushed = host.osctl_json("bundle", "push", str(bundle), "--image", mirror)
        assert isinstance(pushed, dict) and f"{mirror}:v2.3" in pushed["images"]
        again = host.osctl_json("bundle", "push", str(bundle), "--image", mirror)
        assert isinstance(again, dict) and again["blobs_sent"] == 0, "a second push sends nothing"
        host.image = mirror
        ok(host, "pull", "v2.3")  # from the mirror, as any host would
        record = json.loads((host.root / "var/lib/osctl/store/v2.3.json").read_text())
        seen = host.osctl_json("bundle", "inspect", str(bundle))
        assert isinstance(seen, dict) and record["digest"] == seen["versions"][0]["digest"]
        assert record["image_id"] == image_id
    finally:
        registry_tools.delete_repository(REGISTRY, mirror.split("/", 1)[1])
        registry_tools.untag_local(docker_client, mirror)


def test_user_data_pins_a_version_from_a_bundle_on_a_stick(host: Host, absent_bundle: tuple[Path, str, str]) -> None:
    bundle, repo, _ = absent_bundle
    stick = host.root / "media/stick"
    stick.mkdir(parents=True)
    bundle.rename(stick / "os.tar")
    host.image = ""
    user_data = host.root.parent / "user-data.yaml"
    user_data.write_text(f"#cloud-config\nosctl:\n  image: {repo}\n  version: v2.3\n  from: media/stick/os.tar\n")
    proc = ok(host, "cloud-init", "apply", "--user-data", str(user_data), "--json")
    report = json.loads(proc.stdout)
    assert "v2.3" in json.dumps(report), report
    assert json.loads((host.root / "boot/osctl/boot.json").read_text())["default"] == "v2.3"


# ---------------------------------------------------------------- signed bundles


def test_a_signed_bundle_verifies_offline_and_an_old_one_cannot_roll_back(
        make_host: Callable[[], Host], release_repo: Callable[..., ReleaseRepo], tmp_path: Path) -> None:
    repo = release_repo()
    repo.sign("v1.5")
    maker = make_host()
    maker.image = repo.image
    maker.extra_env["OSCTL_TRUST_ROOT"] = str(repo.root_file)
    old = tmp_path / "old.tar"
    assert maker.osctl_json("bundle", "create", "v1.5", "-o", str(old))["signed"] is True  # type: ignore[index]
    repo.sign("v1.6")  # newer metadata: every role's version goes up
    new = tmp_path / "new.tar"
    ok(maker, "bundle", "create", "v1.6", "-o", str(new))

    host = make_host()
    host.image = repo.image
    host.extra_env["OSCTL_TRUST_ROOT"] = str(repo.root_file)
    seen = host.osctl_json("bundle", "inspect", str(new))
    assert isinstance(seen, dict) and seen["signed"] is True and seen["verified"] == "yes", seen
    ok(host, "pull", "v1.6", "--from", str(new))
    record = json.loads((host.root / "var/lib/osctl/store/v1.6.json").read_text())
    assert record["verified"] is True and record["digest"] == repo.signed_digest("v1.6")
    refused(host, "pull", "v1.5", "--from", str(old), code=UNTRUSTED, says=("rollback",))
    assert stored(host) == {"v1.6"}


def test_an_unsigned_bundle_is_refused_by_a_host_that_trusts_release_keys(
        make_host: Callable[[], Host], release_repo: Callable[..., ReleaseRepo], shipped_bundle: Path) -> None:
    repo = release_repo()
    repo.sign("v1.6")
    host = make_host()
    host.image = OS_REPO
    host.extra_env["OSCTL_TRUST_ROOT"] = str(repo.root_file)
    refused(host, "pull", "v1.6", "--from", str(shipped_bundle), code=UNTRUSTED, says=("no release metadata",))
    assert stored(host) == set()

