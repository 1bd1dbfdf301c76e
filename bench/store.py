#!/usr/bin/env python3
"""Store: upgrades with a fresh pull of one changed layer and between stored versions, and the
disk cost of 10 stored versions that share a base.

    .venv/bin/python bench/store.py [--runs 5] [--disk-versions 10] [--json PATH]

The versions are built with system-images/build.py's own builder and layers, as the shipped
ones: v1.4's base and kernel layers and one top layer per version (release.yaml, os-release,
and the version's own initrd, about 1 MB, as build.py makes it). They go to the repository
``osctl-bench/store-os`` of the local registry.

1. Upgrade with a fresh pull: host ``bench-store-pull`` runs v8.0.0 (v1.4's six services);
   ``osctl upgrade --to v8.0.<i>`` (i = 1..runs) each pulls a version the engine has never
   seen, which shares every layer but the top one with the running version. Its registry is
   a TCP relay in front of the real one (127.0.0.1:<port>, tests/faults' StreamProxy, unthrottled)
   that counts what it passes from the registry to the host: the bytes on the wire during the
   whole upgrade, HTTP headers and osctl's own registry calls included. Beside it, in the same run: the plain
   engine's ``docker pull`` of like versions (v8.1.<i>) through the same relay. The floor is
   the changed layer itself: its compressed size in the registry's manifest.
2. Upgrade between stored versions on the same host and set: downgrade and upgrade between
   the last two, ``--runs`` times (osctl's own ``seconds``; the bytes show it stays offline).
3. Disk cost: host ``bench-store-disk`` stores v8.2.0 .. v8.2.9. On disk: the engine's overlay2
   directories of every layer those versions use (each once, all blocks: contents, directories,
   the engine's per-layer files), the engine's metadata of those layers and images (layerdb,
   imagedb), and the host's store under its root (records, boot files, boot entries). The sum
   of the unique layers is the content of those layers (file and symlink bytes), each once.
   Beside it: 10 full copies (the engine's size of each image, added up), what storing every
   version whole would take. Goal: on disk within 5 % of the unique layers.

Everything is removed at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import docker

from common import (DOCKER, REGISTRY, REPO, Bench, BenchHost, Goal, Parser, Row, Section, clean_bench, figure,
                    main_alone, parallel, remove_images, run, run_alone, say)
from tests.support.proxies import StreamProxy
from tests.support import registry_tools

sys.path.insert(0, str(REPO / "system-images"))
import build as sysbuild  # noqa: E402 - system-images/build.py: the builder of the shipped images

BENCH_REPO = "osctl-bench/store-os"
SHIPPED = "v1.4"  # its services and files; no service image of its own, so every byte is the OS image's


# -- the versions -------------------------------------------------------------------------------
def version_image(shipped: Any, repo: str, version: str) -> Any:
    """The shipped version's image plan, made into ``version``: the same base and kernel, a top
    layer of the same files, with the version's own manifest, os-release and initrd."""
    old, new = SHIPPED.encode(), version.encode()
    common = sysbuild.initrd_common(sysbuild.load_boot_cache(sysbuild.DEFAULT_BOOT_CACHE),
                                    sysbuild.BUSYBOX.read_bytes())
    files = {}
    for path, (data, mode) in shipped.files.items():
        files[path] = (sysbuild.initrd_image(version, common) if path == "rootfs/boot/initrd.img"
                       else data.replace(old, new), mode)
    labels = {key: value.replace(SHIPPED, version) for key, value in shipped.labels.items()}
    return dataclasses.replace(shipped, name=version, ref=f"{repo}:{version}", files=files, labels=labels)


def build_versions(client: docker.DockerClient, repo: str, versions: list[str]) -> dict[str, str]:
    """Build and push the versions with build.py, 4 at a time; returns version -> image id."""
    try:
        plan = sysbuild.plan(REGISTRY, "osctl/os", [SHIPPED])
        shipped = plan[-1]
        for parent in plan[:-1]:  # busybox, base and kernel: normally built by scripts/setup already
            if sysbuild.local_hash(client, parent.ref) != parent.hash:
                sysbuild.build(client, parent)

        def make(version: str) -> str:
            image = version_image(shipped, repo, version)
            sysbuild.build(client, image)
            sysbuild.push(client, image.ref)
            return str(client.api.inspect_image(image.ref)["Id"])

        return dict(zip(versions, parallel([lambda v=v: make(v) for v in versions], workers=4)))
    except sysbuild.BuildError as exc:
        raise SystemExit(f"building the store versions: {exc}") from None


def registry_manifest(repo_path: str, version: str) -> dict[str, Any]:
    body, _digest = registry_tools.get_manifest(REGISTRY, repo_path, version)
    return json.loads(body)


# -- disk ---------------------------------------------------------------------------------------
def tree_size(path: Path, seen: set[tuple[int, int]]) -> tuple[int, int]:
    """(content: bytes of files and symlinks, allocated: blocks of every entry) under ``path``;
    an inode already in ``seen`` (a hard link, a tree counted before) counts once."""
    content = allocated = 0
    if not path.exists():
        return 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        names = [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]
        for name in names:
            st = os.lstat(name)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            allocated += st.st_blocks * 512
            if not os.path.isdir(name) or os.path.islink(name):
                content += st.st_size
    return content, allocated


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The engine's layer chain ids (layerdb folder names) of an image's diff ids."""
    import hashlib

    chains: list[str] = []
    for diff in diff_ids:
        chains.append(diff if not chains else
                      "sha256:" + hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest())
    return chains


@dataclasses.dataclass
class Disk:
    layers_content: int
    layers_allocated: int
    engine_metadata: int
    store: int
    full_copies: int
    layer_count: int

    @property
    def total(self) -> int:
        return self.layers_allocated + self.engine_metadata + self.store


def disk_cost(client: docker.DockerClient, image_ids: list[str], root: Path) -> Disk:
    info = client.info()
    if info.get("Driver") != "overlay2":
        raise SystemExit(f"disk cost reads overlay2 layer folders; this engine uses {info.get('Driver')}")
    docker_root = Path(info["DockerRootDir"])
    layer_dirs: set[Path] = set()
    metadata: set[Path] = set()
    full = 0
    for image_id in image_ids:
        attrs = client.api.inspect_image(image_id)
        full += int(attrs["Size"])
        data = attrs["GraphDriver"]["Data"]
        for folder in [data.get("UpperDir") or ""] + (data.get("LowerDir") or "").split(":"):
            if folder:
                layer_dirs.add(Path(folder).parent)  # .../overlay2/<id>/diff -> .../overlay2/<id>
        for chain in chain_ids(attrs["RootFS"]["Layers"]):
            metadata.add(docker_root / "image/overlay2/layerdb/sha256" / chain.removeprefix("sha256:"))
        metadata.add(docker_root / "image/overlay2/imagedb/content/sha256" / image_id.removeprefix("sha256:"))
    seen: set[tuple[int, int]] = set()
    content = allocated = meta = 0
    for folder in layer_dirs:
        layer_content, _ = tree_size(folder / "diff", set())
        content += layer_content
        allocated += tree_size(folder, seen)[1]
    for path in metadata:
        meta += tree_size(path, seen)[1]
    store = tree_size(root, seen)[1]
    return Disk(content, allocated, meta, store, full, len(layer_dirs))


# -- the bench ----------------------------------------------------------------------------------
class StoreBench(Bench):
    name = "store"
    title = "upgrades with a fresh pull and between stored versions; disk cost of stored versions"

    def __init__(self, runs: int = 5, disk_versions: int = 10) -> None:
        self.runs = runs
        self.chain = [f"v8.0.{i}" for i in range(runs + 1)]  # installed, then each a fresh upgrade
        self.peers = [f"v8.1.{i}" for i in range(1, runs + 1)]  # docker pull, fresh, of like versions
        self.disk = [f"v8.2.{i}" for i in range(disk_versions)]
        self.client: docker.DockerClient | None = None
        self.relay: StreamProxy | None = None
        self.ids: dict[str, str] = {}
        self.puller: BenchHost | None = None
        self.keeper = BenchHost("bench-store-disk", REPO / ".run" / "bench-store-disk", f"{REGISTRY}/{BENCH_REPO}")

    def prepare(self) -> None:
        self.client = client = docker.from_env()
        self.relay = StreamProxy(rate=10**12)  # the rate is what it may send a second: no limit
        self.relay.start()
        say(f"store: building {len(self.chain) + len(self.peers) + len(self.disk)} versions with "
            f"system-images/build.py in {REGISTRY}/{BENCH_REPO} ...")
        self.ids = build_versions(client, f"{REGISTRY}/{BENCH_REPO}", self.chain + self.peers + self.disk)
        # Gone from the engine, so that each of these is a fresh pull (their base layers stay:
        # the shipped versions share them).
        problems = remove_images(client, [self.ids[v] for v in self.chain + self.peers])
        if problems:
            raise SystemExit(f"store: {problems[0]}")
        self.puller = BenchHost("bench-store-pull", REPO / ".run" / "bench-store-pull",
                                f"{self.relay.address}/{BENCH_REPO}")
        self.puller.fresh()
        self.keeper.fresh()
        self.puller.osctl("upgrade", "--to", self.chain[0], "--yes", "--json")

    def measure(self) -> Section:
        assert self.client is not None and self.relay is not None and self.puller is not None
        relay, host = self.relay, self.puller
        say(f"store: {self.runs} upgrades with a fresh pull, {self.runs} docker pulls, {self.runs} upgrades "
            f"between stored versions ...")
        fresh = [self.transaction(host, "upgrade", v) for v in self.chain[1:]]
        pulls = []
        for version in self.peers:
            before, t0 = relay.sent, time.perf_counter()
            run([*DOCKER, "pull", "-q", f"{relay.address}/{BENCH_REPO}:{version}"])
            wall = time.perf_counter() - t0
            pulls.append((wall, wall, float(relay.sent - before)))
        stored = [self.transaction(host, "downgrade" if i % 2 == 0 else "upgrade", self.chain[-2 + i % 2])
                  for i in range(self.runs)]
        layers = [registry_manifest(BENCH_REPO, v) for v in self.chain[1:]]
        top = [float(m["layers"][-1]["size"]) for m in layers]
        whole = [float(m["config"]["size"] + sum(layer["size"] for layer in m["layers"])) for m in layers]

        say(f"store: {self.keeper.host_id}: osctl pull of {len(self.disk)} versions, then what they take on disk ...")
        for version in self.disk:
            self.keeper.osctl("pull", version, "--quiet")
        disk = disk_cost(self.client, [self.ids[v] for v in self.disk], self.keeper.root)
        return self.section(fresh, pulls, stored, top, whole, disk)

    def transaction(self, host: BenchHost, verb: str, version: str) -> tuple[float, float, float]:
        """(osctl's seconds, process wall clock, bytes from the registry) of one (a docker
        pull's are the same, with its wall clock as its seconds)."""
        assert self.relay is not None
        before, t0 = self.relay.sent, time.perf_counter()
        result = host.osctl_json(verb, "--to", version, "--yes")
        wall = time.perf_counter() - t0
        if result.get("result") != "committed":
            raise SystemExit(f"osctl {verb} --to {version}: {result}")
        return float(result["seconds"]), wall, float(self.relay.sent - before)

    def section(self, fresh: list[tuple[float, ...]], pulls: list[tuple[float, ...]], stored: list[tuple[float, ...]],
                top: list[float], whole: list[float], disk: Disk) -> Section:
        def col(rows: list[tuple[float, ...]], i: int) -> list[float]:
            return [float(r[i]) for r in rows]

        n = len(self.disk)
        f_fresh = figure("osctl upgrade, fresh pull of one new layer (seconds)", col(fresh, 0))
        f_stored = figure("osctl upgrade, stored versions (seconds)", col(stored, 0))
        f_pull = figure("peer: docker pull of a like version", col(pulls, 1), peer="docker")
        b_fresh = figure("bytes from the registry, osctl upgrade with a fresh pull", col(fresh, 2), unit="B")
        b_pull = figure("peer: bytes from the registry, docker pull", col(pulls, 2), unit="B", peer="docker")
        b_top = figure("floor: the changed layer, compressed", top, unit="B")
        d_total = figure(f"disk: {n} stored versions, on disk", [float(disk.total)], unit="B")
        d_full = figure(f"peer: {n} full copies", [float(disk.full_copies)], unit="B", peer="copies")
        d_unique = figure("floor: the unique layers' content", [float(disk.layers_content)], unit="B")
        figures = [f_fresh, figure("  osctl process wall clock, fresh pull", col(fresh, 1)), f_pull, f_stored,
                   figure("  osctl process wall clock, stored", col(stored, 1)),
                   b_fresh,
                   b_pull, b_top, figure("  the whole image, compressed", whole, unit="B"),
                   figure("bytes from the registry, upgrade between stored versions", col(stored, 2), unit="B"),
                   d_total, d_full, d_unique]
        rows = [Row("upgrade, fresh pull of one new layer, 6 services", f_fresh, peer=f_pull),
                Row("upgrade, stored versions, 6 services", f_stored),
                Row("bytes pulled: upgrade, one new layer", b_fresh, peer=b_pull, floor=b_top),
                Row(f"disk: {n} stored versions sharing a base", d_total, peer=d_full, floor=d_unique,
                    goals=[Goal("<= 1.05x unique layers", 1.05 * disk.layers_content)])]
        overhead = statistics.median(col(fresh, 2)) - statistics.median(top)
        notes = [
            f"  fresh pull: osctl moved {statistics.median(col(fresh, 2)) / 1e3:.1f} KB from the registry "
            f"for a changed layer of "
            f"{statistics.median(top) / 1e3:.1f} KB, out of {statistics.median(whole) / 1e3:.0f} KB for the whole "
            f"image: {overhead / 1e3:.1f} KB of manifests, configs, HTTP and osctl's registry calls; docker pull "
            f"alone {statistics.median(col(pulls, 2)) / 1e3:.1f} KB. Peer time: docker pull alone, not an upgrade",
            f"  disk, {n} versions ({disk.layer_count} distinct layers): layers {disk.layers_allocated / 1e3:.0f} KB "
            f"on disk for {disk.layers_content / 1e3:.0f} KB of content, the engine's layer and image metadata "
            f"{disk.engine_metadata / 1e3:.0f} KB, osctl's store under the root {disk.store / 1e3:.0f} KB "
            f"(boot files, records, boot entries); {n} full copies would take {disk.full_copies / 1e3:.0f} KB",
        ]
        return Section(self.title, rows, [(self.title, figures)], notes)

    def clean(self) -> list[str]:
        hosts = [h for h in (self.puller, self.keeper) if h is not None]
        problems = clean_bench(self.client or docker.from_env(), hosts, BENCH_REPO, list(self.ids.values()))
        if self.relay is not None:
            self.relay.stop()
        return problems


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh-pull upgrades, docker pulls and stored upgrades")
    parser.add_argument("--disk-versions", type=int, default=10, help="versions stored for the disk cost")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if args.runs < 2 or args.disk_versions < 1:
        parser.error("--runs must be at least 2 and --disk-versions at least 1")
    run_alone(StoreBench(args.runs, args.disk_versions), args.json_path)


if __name__ == "__main__":
    main_alone(main)
