"""Test hosts on the real engine: a host id, a root, and osctl run as a user would run it.

Every host a test makes has a host id starting with ``osctltest-`` and a root of its own; what
is labelled with that host id is removed after the test (``remove``, ``host_objects``), and at
the end of the session the run fails if anything of a host this session made is still on the
engine (``leftovers_of_test_hosts``). Nothing without a test host label is ever touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker

from osctl.domain.naming import HOLD_REPOSITORY

TEST_HOST_PREFIX = "osctltest-"
REGISTRY = os.environ.get("OSCTL_REGISTRY", "127.0.0.1:5000")
OS_REPO = os.environ.get("OSCTL_IMAGE", f"{REGISTRY}/osctl/os")
TEST_REPO = f"{REGISTRY}/osctl-test"  # images the tests build themselves
HOST_LABEL = "io.osctl.host"
SESSION_HOSTS: set[str] = set()  # the hosts this test session made: the only ones it checks and removes
SYSTEM_IMAGES = Path(__file__).resolve().parents[2] / "system-images"


@dataclass
class Host:
    """One simulated host: its id, its root, and a way to run osctl as a user would."""

    host_id: str
    root: Path
    image: str = OS_REPO
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSCTL_")}
        return {**env, "OSCTL_ROOT": str(self.root), "OSCTL_HOST_ID": self.host_id,
                "OSCTL_IMAGE": self.image, **self.extra_env}

    def osctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "osctl", *args], capture_output=True, text=True,
                              env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL)

    def osctl_json(self, *args: str) -> object:
        proc = self.osctl(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def listed_containers(client: docker.DockerClient, selector: dict[str, str]) -> list[docker.models.containers.Container]:
    """Containers matching ``selector`` (labels), stopped ones too. The SDK inspects each listed
    container: one removed meanwhile (by osctl, or another test process on the same engine) is a
    404; list again."""
    for _ in range(5):
        try:
            return client.containers.list(all=True, filters=selector)  # type: ignore[no-any-return]
        except docker.errors.NotFound:
            time.sleep(0.1)
    return client.containers.list(all=True, filters=selector)  # type: ignore[no-any-return]


def _image_tags(client: docker.DockerClient) -> list[str]:
    """Every image tag on the engine, from one listing: ``images.list()`` inspects each image
    afterwards, and one removed meanwhile (by another test process) fails it with a 404."""
    return [t for image in client.api.images() for t in image.get("RepoTags") or [] if t != "<none>:<none>"]


def host_objects(client: docker.DockerClient, host_id: str) -> list[tuple[str, str]]:
    """Containers, volumes and image hold tags of one host."""
    selector = {"label": f"{HOST_LABEL}={host_id}"}
    holds = f"{HOLD_REPOSITORY}/{host_id.lower()}/"
    return ([("container", c.name) for c in listed_containers(client, selector)]
            + [("volume", v.name) for v in client.volumes.list(filters=selector)]
            + [("tag", t) for t in _image_tags(client) if t.startswith(holds)])


def leftovers_of_test_hosts(client: docker.DockerClient) -> list[tuple[str, str]]:
    selector = {"label": HOST_LABEL}
    found = [("container", c.name, c.labels) for c in listed_containers(client, selector)]
    found += [("volume", v.name, v.attrs.get("Labels") or {}) for v in client.volumes.list(filters=selector)]
    found += [("tag", t, {HOST_LABEL: t.split("/")[1]}) for t in _image_tags(client)
              if t.startswith(f"{HOLD_REPOSITORY}/")]  # hold tags carry the host id lower-cased, as ours are
    return [(kind, name) for kind, name, labels in found if labels.get(HOST_LABEL, "") in SESSION_HOSTS]


def remove(client: docker.DockerClient, kind: str, name: str) -> None:
    try:
        if kind == "container":
            client.containers.get(name).remove(force=True)
        elif kind == "tag":
            client.images.remove(name, noprune=True)
        else:
            client.volumes.get(name).remove(force=True)
    except (docker.errors.NotFound, docker.errors.APIError):
        pass


def remove_all(client: docker.DockerClient, objects: list[tuple[str, str]]) -> None:
    """``remove`` each of ``objects`` (from ``host_objects``): the containers side by side, then
    the volumes and hold tags, which a container still using them would keep. One at a time,
    a 20-host fleet's 100 containers took most of a minute."""
    containers = [o for o in objects if o[0] == "container"]
    others = [o for o in objects if o[0] != "container"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for batch in (containers, others):
            list(pool.map(lambda o: remove(client, *o), batch))


def registry_tags(repository: str) -> list[str]:
    """The registry's own answer, read without osctl, to check osctl against."""
    name = repository.split("/", 1)[1]
    with urllib.request.urlopen(f"http://{REGISTRY}/v2/{name}/tags/list?n=1000", timeout=10) as resp:
        return sorted(json.load(resp).get("tags") or [])


def shipped_manifest(version: str) -> str:
    """A shipped version's release.yaml, as built into its image."""
    return (SYSTEM_IMAGES / "versions" / version / "release.yaml").read_text().replace("${REGISTRY}", REGISTRY)
