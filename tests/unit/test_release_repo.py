"""The release side of signed releases (``osctl release``) without a registry: what it signs and
publishes must be what python-tuf's own client (``tuf.ngclient.Updater``) accepts, and what a
host will act on (lengths, hashes, revocations, the floor, key rotation, thresholds).

The registry is an in-memory fake (manifests to sign, and the ``<image>-tuf`` artifacts it
receives); the client reads the plain layout the commands write with ``out``. The real
registry and an independent client (tuf-js) are in tests/integration/test_release.py and
tests/integration/test_tufjs_interop.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import DownloadHTTPError, UnsignedMetadataError
from tuf.api.metadata import Metadata
from tuf.ngclient import FetcherInterface, Updater

from osctl.adapters import ociartifact
from osctl.cli.main import main
from osctl.errors import NotFoundError, OsctlError, RegistryUnavailable, TrustError, UsageError
from osctl.models.refs import Digest
from osctl.operations.release import Release

IMAGE = "127.0.0.1:5000/osctl/os"
V2 = "application/vnd.docker.distribution.manifest.v2+json"
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


# -- an in-memory registry ------------------------------------------------------------------
class FakeRegistries:
    """Every repository of one registry: manifests by (repository, tag), blobs by digest."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.down = False

    def __call__(self, repository: str, push: bool = False) -> FakeRegistry:
        return FakeRegistry(self, repository, push)

    def image(self, tag: str, marker: str = "") -> bytes:
        body = json.dumps({"schemaVersion": 2, "mediaType": V2, "marker": f"{tag}{marker}",
                           "config": {"mediaType": "c", "size": 1, "digest": "sha256:" + "c" * 64},
                           "layers": []}).encode()
        self.manifests[(IMAGE, tag)] = (body, V2)
        return body


class FakeRegistry:
    def __init__(self, world: FakeRegistries, repository: str, push: bool) -> None:
        self.world, self.repository, self.push = world, repository, push
        self.host, _, self.name = repository.partition("/")

    def manifest_body(self, tag: str, accept: str = "") -> tuple[bytes, str]:
        if (self.repository, tag) not in self.world.manifests:
            raise NotFoundError(f"{self.repository}:{tag} does not exist in the registry")
        return self.world.manifests[(self.repository, tag)]

    def blob(self, digest: Digest, what: str) -> bytes:
        return self.world.blobs[digest]

    def push_blob(self, data: bytes) -> Digest:
        assert self.push, "pushed through a registry made without push=True"
        if self.world.down:
            raise RegistryUnavailable(f"cannot reach the registry at {self.host}: connection refused")
        digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        self.world.blobs[digest] = data
        return digest

    def push_manifest(self, tag: str, body: bytes, media_type: str) -> Digest:
        self.world.manifests[(self.repository, tag)] = (body, media_type)
        return Digest("sha256:" + hashlib.sha256(body).hexdigest())


# -- python-tuf's client on a plain folder ----------------------------------------------------
class FolderFetcher(FetcherInterface):
    """Serves ``http://repo.test/<name>`` from a folder; a missing file is a 404."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = self.folder / url.rsplit("/", 1)[-1]
        if not path.is_file():
            raise DownloadHTTPError(f"{path.name} not found", 404)
        return iter([path.read_bytes()])


def client(tmp_path: Path, root: bytes, folder: Path, name: str = "client") -> Updater:
    """A host's Updater: trusted metadata kept in ``tmp_path/name`` across calls, like a host's."""
    cache = tmp_path / name
    cache.mkdir(exist_ok=True)
    trusted = cache / "root.json"
    bootstrap = trusted.read_bytes() if trusted.exists() else root
    return Updater(str(cache), "http://repo.test/", fetcher=FolderFetcher(folder), bootstrap=bootstrap)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world() -> FakeRegistries:
    world = FakeRegistries()
    for tag in ("v1.2", "v1.3", "v1.4", "v1.5"):
        world.image(tag)
    return world


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def release(tmp_path: Path, world: FakeRegistries, clock: Clock) -> Release:
    return Release(tmp_path / "keys", IMAGE, out=tmp_path / "out", registry=world, now=clock)


def signed_part(folder: Path, name: str) -> dict[str, Any]:
    return json.loads((folder / name).read_bytes())["signed"]  # type: ignore[no-any-return]


def snapshot_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


# -- init ------------------------------------------------------------------------------------
def test_init_makes_private_keys_and_a_root_that_python_tuf_accepts(tmp_path: Path, release: Release,
                                                                     world: FakeRegistries) -> None:
    outcome = release.init(root_keys=3, root_threshold=2)
    keys = tmp_path / "keys"
    pems = sorted((keys / "keys").rglob("*.pem"))
    assert sorted(p.parent.name for p in pems) == ["root", "root", "root", "snapshot", "targets", "timestamp"]
    for pem in pems:
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600, pem
    for folder in [keys / "keys", *(p.parent for p in pems)]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    root = signed_part(keys, "root.json")
    assert root["roles"]["root"]["threshold"] == 2 and len(root["roles"]["root"]["keyids"]) == 3
    assert root["consistent_snapshot"] is True
    assert root["expires"] == "2027-11-29T12:00:00Z", "root: a year"

    updater = client(tmp_path, (keys / "root.json").read_bytes(), tmp_path / "out")
    updater.refresh()
    assert updater.get_targetinfo("v1.4") is None

    published = {name for repo, name in world.manifests if repo == f"{IMAGE}-tuf"}
    assert published == {"1.root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"}
    assert outcome.publication.repository == f"{IMAGE}-tuf"
    tuf_repo = world(f"{IMAGE}-tuf")
    for name in published:
        assert ociartifact.get_file(tuf_repo, name, 1 << 20) == (tmp_path / "out" / name).read_bytes()


def test_init_refuses_a_folder_in_use_and_bad_thresholds(tmp_path: Path, release: Release) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists and is not an empty folder"):
        release.init()
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["notes.txt"]
    with pytest.raises(UsageError, match="--root-threshold must be between 1 and the number of root keys"):
        Release(tmp_path / "other", IMAGE).init(root_keys=2, root_threshold=3)
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no staging folder left"


def test_init_without_an_image_writes_the_keys_and_publishes_nothing(tmp_path: Path) -> None:
    outcome = Release(tmp_path / "keys", None, out=tmp_path / "out").init()
    assert outcome.publication.repository is None and outcome.publication.files == ()
    assert (tmp_path / "keys" / "root.json").is_file() and (tmp_path / "out" / "timestamp.json").is_file()


# -- sign ------------------------------------------------------------------------------------
def test_sign_lists_each_version_with_its_manifest_length_hash_and_custom_data(
        tmp_path: Path, release: Release, world: FakeRegistries) -> None:
    release.init()
    outcome = release.sign(["v1.3", "v1.4"])
    assert [t.version for t in outcome.targets] == ["v1.3", "v1.4"]
    assert outcome.signed_roles == ("targets", "snapshot", "timestamp")

    updater = client(tmp_path, (tmp_path / "keys" / "root.json").read_bytes(), tmp_path / "out")
    updater.refresh()
    body, _ = world.manifests[(IMAGE, "v1.4")]
    info = updater.get_targetinfo("v1.4")
    assert info is not None
    digest = hashlib.sha256(body).hexdigest()
    assert info.length == len(body) and info.hashes == {"sha256": digest}
    assert info.custom == {"version": "v1.4", "repository": IMAGE, "digest": f"sha256:{digest}", "media_type": V2}
    assert updater.get_targetinfo("v1.5") is None, "only what was signed"
    published = {name for repo, name in world.manifests if repo == f"{IMAGE}-tuf"}
    assert {"2.targets.json", "2.snapshot.json", "timestamp.json"} <= published


def test_signing_again_changes_nothing_and_a_moved_tag_is_refused(tmp_path: Path, release: Release,
                                                                  world: FakeRegistries) -> None:
    release.init()
    release.sign(["v1.4"])
    again = release.sign(["v1.4"])
    assert again.signed_roles == () and [t.version for t in again.unchanged] == ["v1.4"]
    assert again.status.roles[1].version == 2, "targets were not signed again"

    world.image("v1.4", marker="-tampered")
    before = snapshot_of(tmp_path / "keys")
    with pytest.raises(TrustError, match="v1.4 is signed as sha256:.*now names sha256:.*never changes"):
        release.sign(["v1.4", "v1.5"])
    assert snapshot_of(tmp_path / "keys") == before


@pytest.mark.parametrize(("versions", "error", "message"), [
    (["v1.9"], NotFoundError, "osctl/os:v1.9 does not exist in the registry"),
    (["latest"], UsageError, "'latest' is not a version"),
    (["v1.4", "v1.9"], NotFoundError, "v1.9 does not exist"),
])
def test_sign_refuses_what_is_not_a_version_in_the_registry_and_changes_nothing(
        tmp_path: Path, release: Release, versions: list[str], error: type[Exception], message: str) -> None:
    release.init()
    before = snapshot_of(tmp_path / "keys")
    with pytest.raises(error, match=message):
        release.sign(versions)
    assert snapshot_of(tmp_path / "keys") == before


# -- revoke and the floor ----------------------------------------------------------------------
def test_a_revoked_version_stays_listed_with_its_reason(tmp_path: Path, release: Release, clock: Clock) -> None:
    release.init()
    release.sign(["v1.3", "v1.4"])
    clock.now = T0 + timedelta(hours=2)
    release.revoke("v1.3", "CVE-2026-1234: remote root in sshd")

    updater = client(tmp_path, (tmp_path / "keys" / "root.json").read_bytes(), tmp_path / "out")
    updater.refresh()
    info = updater.get_targetinfo("v1.3")
    assert info is not None
    assert info.custom["revoked"] == {"reason": "CVE-2026-1234: remote root in sshd", "at": "2026-11-29T14:00:00Z"}
    assert "revoked" not in updater.get_targetinfo("v1.4").custom  # type: ignore[union-attr]

    with pytest.raises(UsageError, match="already revoked"):
        release.revoke("v1.3", "again")
    with pytest.raises(UsageError, match="v1.3 is revoked .*stays revoked"):
        release.sign(["v1.3"])


def test_revoking_an_unsigned_version_is_refused(tmp_path: Path, release: Release) -> None:
    release.init()
    release.sign(["v1.4"])
    before = snapshot_of(tmp_path / "keys")
    with pytest.raises(NotFoundError, match="v1.5 is not signed, so it cannot be revoked"):
        release.revoke("v1.5", "never signed")
    with pytest.raises(UsageError, match="--reason must say why"):
        release.revoke("v1.4", "   ")
    assert snapshot_of(tmp_path / "keys") == before


def test_the_floor_is_signed_in_targets_and_only_goes_up(tmp_path: Path, release: Release) -> None:
    release.init()
    outcome = release.sign(["v1.3", "v1.4"], min_version="v1.4", reason="v1.3 leaks keys")
    assert outcome.floor is not None and outcome.floor.version == "v1.4"

    updater = client(tmp_path, (tmp_path / "keys" / "root.json").read_bytes(), tmp_path / "out")
    updater.refresh()  # the field is inside what the targets key signed
    targets = signed_part(tmp_path / "out", "2.targets.json")
    assert targets["x-osctl-floor"] == {"version": "v1.4", "reason": "v1.3 leaks keys", "at": "2026-11-29T12:00:00Z"}

    with pytest.raises(UsageError, match="the minimum version is v1.4; it only goes up, not to v1.3"):
        release.sign([], min_version="v1.3")
    with pytest.raises(UsageError, match="the minimum version v1.5 is not signed"):
        release.sign([], min_version="v1.5")
    with pytest.raises(UsageError, match="--reason goes with --min-version"):
        release.sign(["v1.5"], reason="why")
    raised = release.sign(["v1.5"], min_version="v1.5")
    assert raised.floor is not None and raised.status.floor == raised.floor
    assert "reason" not in signed_part(tmp_path / "out", "3.targets.json")["x-osctl-floor"]


# -- timestamp ---------------------------------------------------------------------------------
def test_timestamp_bumps_only_the_timestamp_until_the_snapshot_would_expire_first(
        tmp_path: Path, release: Release, clock: Clock) -> None:
    release.init()
    release.sign(["v1.4"])
    clock.now = T0 + timedelta(hours=1)
    outcome = release.timestamp(expiry=6 * 3600)
    assert outcome.signed_roles == ("timestamp",) and outcome.renewed == ()
    stamp = signed_part(tmp_path / "out", "timestamp.json")
    assert stamp["version"] == 3 and stamp["expires"] == "2026-11-29T19:00:00Z"
    assert stamp["meta"]["snapshot.json"]["version"] == 2

    clock.now = T0 + timedelta(days=6, hours=12)  # the snapshot (7 days) expires within the next day
    outcome = release.timestamp()
    assert outcome.renewed == ("snapshot",) and outcome.signed_roles == ("snapshot", "timestamp")
    assert signed_part(tmp_path / "out", "3.snapshot.json")["expires"] == "2026-12-13T00:00:00Z"
    updater = client(tmp_path, (tmp_path / "keys" / "root.json").read_bytes(), tmp_path / "out")
    updater.refresh()  # python-tuf compares expiry with the real clock: these are all in the future

    with pytest.raises(UsageError, match="--expiry must be longer than zero"):
        release.timestamp(expiry=0)


def test_renewing_the_root_keeps_its_keys_and_a_client_follows(tmp_path: Path, release: Release,
                                                               clock: Clock) -> None:
    release.init()
    release.sign(["v1.4"])
    keys = tmp_path / "keys"
    root_v1 = (keys / "root.json").read_bytes()
    client(tmp_path, root_v1, tmp_path / "out").refresh()

    clock.now = T0 + timedelta(days=300)  # the root's year is nearly up
    outcome = release.renew("root")
    assert outcome.signed_roles == ("root",)
    renewed = signed_part(keys, "root.json")
    assert renewed["version"] == 2 and renewed["expires"] == "2028-09-24T12:00:00Z"
    assert renewed["keys"] == json.loads(root_v1)["signed"]["keys"], "no key changed"
    updater = client(tmp_path, root_v1, tmp_path / "out")  # the same host follows to root v2
    updater.refresh()
    assert signed_part(tmp_path / "client", "root.json")["version"] == 2


# -- rotation and thresholds -------------------------------------------------------------------
def test_rotating_the_timestamp_key_is_followed_by_a_client(tmp_path: Path, release: Release) -> None:
    release.init()
    release.sign(["v1.4"])
    keys = tmp_path / "keys"
    root_v1 = (keys / "root.json").read_bytes()
    client(tmp_path, root_v1, tmp_path / "out").refresh()
    old = {p.name for p in (keys / "keys" / "timestamp").iterdir()}

    outcome = release.rotate("timestamp")
    new = {p.name for p in (keys / "keys" / "timestamp").iterdir()}
    assert new == {f"{outcome.new_keyids[0]}.pem"} and not old & new, "the old key is gone"
    assert outcome.signed_roles == ("root", "timestamp")
    assert signed_part(keys, "root.json")["roles"]["timestamp"]["keyids"] == list(outcome.new_keyids)

    updater = client(tmp_path, root_v1, tmp_path / "out")  # the same host, its trusted metadata kept
    updater.refresh()
    assert signed_part(tmp_path / "client", "root.json")["version"] == 2
    assert updater.get_targetinfo("v1.4") is not None


def test_a_client_on_root_v1_follows_two_root_rotations_to_v3(tmp_path: Path, release: Release) -> None:
    release.init(root_keys=3, root_threshold=2)
    release.sign(["v1.4"])
    root_v1 = (tmp_path / "keys" / "root.json").read_bytes()
    release.rotate("root")
    release.rotate("root")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.root.json")) == ["1.root.json", "2.root.json",
                                                                               "3.root.json"]
    v2 = Metadata.from_bytes((tmp_path / "out" / "2.root.json").read_bytes())
    v1_keys = set(Metadata.from_bytes(root_v1).signed.roles["root"].keyids)
    assert len(v1_keys & set(v2.signatures)) == 3 and len(set(v2.signatures) - v1_keys) == 3, \
        "root v2 carries the old root keys' signatures and the new ones'"

    updater = client(tmp_path, root_v1, tmp_path / "out")
    updater.refresh()
    assert signed_part(tmp_path / "client", "root.json")["version"] == 3
    assert updater.get_targetinfo("v1.4") is not None


def test_one_of_three_root_keys_is_not_enough(tmp_path: Path, release: Release) -> None:
    release.init(root_keys=3, root_threshold=2)
    keys = tmp_path / "keys"
    root_v1 = (keys / "root.json").read_bytes()
    offline = tmp_path / "offline"
    offline.mkdir()
    pems = sorted((keys / "keys" / "root").iterdir())
    for pem in pems[1:]:
        shutil.move(pem, offline / pem.name)

    # osctl will not sign a root with one key of a 2-of-3 root ...
    before = snapshot_of(keys)
    with pytest.raises(TrustError, match="needs 2 of its 3 keys and 1 is in .*keys/root"):
        release.rotate("targets")
    assert snapshot_of(keys) == before, "nothing written, not even the new targets key"

    # ... and python-tuf's client refuses such a root when someone else makes it.
    forged = Metadata.from_bytes(root_v1)
    forged.signed.version = 2
    forged.signed.roles["timestamp"].threshold = 1
    signer = CryptoSigner(load_pem_private_key(pems[0].read_bytes(), None),
                          forged.signed.get_key(pems[0].stem))
    forged.sign(signer)
    (tmp_path / "out" / "2.root.json").write_bytes(forged.to_bytes())
    with pytest.raises(UnsignedMetadataError):
        client(tmp_path, root_v1, tmp_path / "out").refresh()

    for pem in offline.iterdir():  # the keys come back from the safe: now it signs
        shutil.move(pem, keys / "keys" / "root" / pem.name)
    (tmp_path / "out" / "2.root.json").unlink()
    release.rotate("targets")
    client(tmp_path, root_v1, tmp_path / "out", name="client2").refresh()


def test_rotating_an_unknown_role_is_refused(tmp_path: Path, release: Release) -> None:
    release.init()
    with pytest.raises(UsageError, match="'delegated' is not a role; the roles are root, targets, snapshot, timestamp"):
        release.rotate("delegated")


# -- the keys folder ---------------------------------------------------------------------------
def test_a_missing_keys_folder_is_named(tmp_path: Path, world: FakeRegistries) -> None:
    release = Release(tmp_path / "nowhere", IMAGE, registry=world)
    for attempt in (lambda: release.sign(["v1.4"]), lambda: release.revoke("v1.4", "x"),
                    release.timestamp, lambda: release.rotate("timestamp"), release.status):
        with pytest.raises(NotFoundError, match="nowhere is not a release keys folder"):
            attempt()
    assert not (tmp_path / "nowhere").exists()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path, release: Release) -> None:
    release.init()
    pem = next((tmp_path / "keys" / "keys" / "timestamp").iterdir())
    pem.chmod(0o640)
    with pytest.raises(UsageError, match="readable by others \\(mode 0640\\); refused"):
        release.timestamp()


def test_a_failed_publish_keeps_the_signed_state_and_the_next_command_publishes_it(
        tmp_path: Path, release: Release, world: FakeRegistries) -> None:
    release.init()
    world.down = True
    with pytest.raises(OsctlError, match="signed and saved in .*keys, but publishing to .*-tuf failed") as caught:
        release.sign(["v1.4"])
    assert caught.value.exit_code == RegistryUnavailable.exit_code
    assert release.status().targets[0].version == "v1.4"
    world.down = False
    release.timestamp()
    published = {name for repo, name in world.manifests if repo == f"{IMAGE}-tuf"}
    assert {"2.targets.json", "2.snapshot.json"} <= published


# -- the command line --------------------------------------------------------------------------
def test_release_status_json_shows_versions_revocations_floor_and_roles(
        tmp_path: Path, release: Release, capsys: pytest.CaptureFixture[str]) -> None:
    release.init(root_keys=2, root_threshold=2)
    release.sign(["v1.2", "v1.3", "v1.4", "v1.5"], min_version="v1.3", reason="too old")
    release.revoke("v1.4", "broken network")
    code = main(["release", "status", "--keys", str(tmp_path / "keys"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    versions = {row["version"]: row for row in doc["versions"]}
    assert list(versions) == ["v1.5", "v1.4", "v1.3", "v1.2"]
    assert versions["v1.4"]["revoked"] is True and versions["v1.4"]["revoked_reason"] == "broken network"
    assert versions["v1.2"]["revoked"] is False and versions["v1.2"]["below_floor"] is True
    assert versions["v1.5"]["digest"].startswith("sha256:") and versions["v1.5"]["revoked"] is False
    assert doc["floor"]["version"] == "v1.3" and doc["floor"]["reason"] == "too old"
    roles = {role["role"]: role for role in doc["roles"]}
    assert roles["root"]["threshold"] == 2 and len(roles["root"]["keyids"]) == 2 and roles["root"]["keys_here"] == 2
    assert roles["targets"]["version"] == 3 and roles["timestamp"]["expires"] == "2026-11-30T12:00:00Z"


def test_release_commands_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSCTL_IMAGE", raising=False)
    monkeypatch.delenv("OSCTL_RELEASE_KEYS", raising=False)
    code = main(["--root", str(tmp_path), "release", "status", "--keys", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "is not a release keys folder" in err
    assert "Traceback" not in err
    code = main(["--root", str(tmp_path), "release", "timestamp", "--keys", str(tmp_path / "none")])
    assert code == 2 and "no OS image repository is configured" in capsys.readouterr().err
    code = main(["--root", str(tmp_path), "--image", IMAGE, "release", "timestamp", "--keys", str(tmp_path),
                 "--expiry", "soon"])
    assert code == 2 and "'soon' is not a duration" in capsys.readouterr().err
    monkeypatch.setenv("OSCTL_RELEASE_KEYS", str(tmp_path / "from-env"))
    code = main(["--root", str(tmp_path), "release", "init"])
    assert code == 0 and (tmp_path / "from-env" / "root.json").is_file()


def test_a_root_that_a_commit_did_not_finish_is_never_published(tmp_path: Path, release: Release,
                                                                 world: FakeRegistries) -> None:
    release.init()
    (tmp_path / "keys" / "metadata" / "2.root.json").write_bytes(b"{}")  # written, then the power went
    outcome = release.timestamp()
    assert "2.root.json" not in outcome.publication.files and "2.root.json" not in outcome.publication.written
    assert (f"{IMAGE}-tuf", "2.root.json") not in world.manifests
