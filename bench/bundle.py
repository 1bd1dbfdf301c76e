#!/usr/bin/env python3
"""Bundles: ``osctl bundle create`` and an install from the bundle, beside docker save and load.

Time and bytes, the peer's commands run on the same images in the same run.

    .venv/bin/python bench/bundle.py [--runs 5] [--size-mib 64] [--json PATH]

Set-up (not measured): one OS version, v6.4.0, built with the Docker SDK FROM the shipped
``osctl/os:v1.5`` plus a layer of ``--size-mib`` MiB of random (incompressible) data, with the
label ``io.osctl.os.version`` and ``/usr/lib/osctl/release.yaml`` set to v6.4.0 (v1.5's
manifest otherwise: six services, one of them from the separate ``osctl/node-exporter:1.0``
image), pushed to the repository ``osctl-bench/bundle-os`` of the local registry. A first,
unmeasured ``osctl bundle create`` names the images a bundle of it holds (``bundle inspect``):
the OS image and every service image its release manifest names; the peer saves exactly those.
The bench host ``bench-bundle`` has a temporary root and ``OSCTL_IMAGE`` set to that repository
(no trust root: the bundle is unsigned).

Per run (``--runs``, default 5; median and min..max), osctl and its peer one after the other,
the one that goes first alternating from run to run:

1. Create: ``osctl bundle create v6.4.0 -o FILE`` (copies the registry's bytes: manifests,
   configs, compressed layers) beside ``docker save -o FILE`` of the same images from the
   engine (Debian's client, matching the engine). Wall time of each command and the bytes of
   the file it wrote; each writes a new file (the old one is removed first, not timed).
2. Install: ``osctl pull v6.4.0 --from BUNDLE`` on a fresh host root, beside ``docker load -i
   SAVEFILE``. Before each, the OS image is removed from the engine (every name, osctl's hold
   tags included), so that both really load it; the service images stay in the engine in both
   cases (osctl loads only what the engine lacks; docker load reads its whole file), and so do
   the layers v6.4.0 shares with ``osctl/os:v1.5`` (as on a host running v1.5). Wall time of
   each command, and after each the engine must hold the image by its id. The part of osctl's
   install that is the engine load (the docker-archive streamed from the bundle, every blob
   hashed as it goes, and the engine's ``docker load`` of it) is timed in the same process:
   osctl runs through a shim that wraps ``Engine.load`` with a clock and changes nothing else.
   Besides the load, osctl's install checks the bundle's structure, verifies every blob's
   digest, reads the release manifest from the OS image's layers, checks the preflight
   space, the OS image contract (on the engine's copy) and stages the boot files in its store;
   docker load does none of this.

Everything is removed at the end, also after a failure or Ctrl-C: the bench host (``osctl
prune --keep 0``, its ``osctl-hold/bench-bundle/...`` tags, its root), the registry repository
(its manifests deleted through the registry API), the image built, a service image the bench
had to pull, and the temporary files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import docker

from common import (DOCKER, OSCTL, REGISTRY, Bench, BenchHost, Figure, Parser, Row, Section, clean_bench, figure,
                    main_alone, remove_images, run, run_alone, say)
from list_versions import release_text

BENCH_REPO = "osctl-bench/bundle-os"
SOURCE = f"{REGISTRY}/osctl/os:v1.5"
VERSION = "v6.4.0"
HOST_ID = "bench-bundle"
DEFAULT_RUNS = 5
DEFAULT_SIZE_MIB = 64
PAYLOAD = "/usr/lib/osctl-bench/payload"  # where the incompressible layer's file lies in the image
LOAD_MARK = "osctl-bench-engine-load-seconds"
# osctl's own entry point, with Engine.load timed: the seconds go to stderr on a line of their
# own. Should the method be gone, osctl runs unchanged and no load figure is reported.
SHIM = f"""
import sys, time
try:
    from osctl.adapters.engine import Engine
    _load = Engine.load
    def _timed(self, chunks):
        started = time.perf_counter()
        try:
            return _load(self, chunks)
        finally:
            sys.stderr.write("\\n{LOAD_MARK} %.6f\\n" % (time.perf_counter() - started))
    Engine.load = _timed
except (ImportError, AttributeError):
    pass
from osctl.cli.main import main
sys.argv[0] = "osctl"
sys.exit(main())
"""


def build_version(client: docker.DockerClient, ref: str, manifest_text: str, size_mib: int, scratch: Path) -> str:
    """Build ``ref`` FROM SOURCE: the random payload as a layer of its own, then the release
    manifest and the version label set to VERSION; returns the image id. The build context goes
    through a file, so the payload is never held in memory whole."""
    lines = [f"version: {VERSION}" if line.startswith("version:") else line for line in manifest_text.splitlines()]
    dockerfile = (f"FROM {SOURCE}\nCOPY payload {PAYLOAD}\nCOPY release.yaml /usr/lib/osctl/release.yaml\n"
                  f"LABEL io.osctl.os.version={VERSION}\n")
    context = scratch / "context.tar"
    with tarfile.open(context, "w") as tar:
        for name, data in (("Dockerfile", dockerfile.encode()), ("release.yaml", ("\n".join(lines) + "\n").encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        payload = scratch / "payload"
        with payload.open("wb") as out:
            for _ in range(size_mib):
                out.write(os.urandom(1 << 20))
        tar.add(payload, arcname="payload")
        payload.unlink()
    try:
        with context.open("rb") as fileobj:
            image, _log = client.images.build(fileobj=fileobj, custom_context=True, tag=ref, rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        raise SystemExit(f"bundle: building {ref} failed: {exc}") from None
    finally:
        context.unlink(missing_ok=True)
    repository, tag = ref.rsplit(":", 1)
    for event in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise SystemExit(f"bundle: pushing {ref} failed: {event['error']}")
    return str(image.id)


class BundleBench(Bench):
    name = "bundle"
    title = "bundle create and an install from it, beside docker save and docker load of the same images"

    def __init__(self, runs: int = DEFAULT_RUNS, size_mib: int = DEFAULT_SIZE_MIB) -> None:
        self.runs = runs
        self.size_mib = size_mib
        self.repo = f"{REGISTRY}/{BENCH_REPO}"
        self.ref = f"{self.repo}:{VERSION}"
        self.client: docker.DockerClient | None = None
        self.scratch: Path | None = None
        self.host: BenchHost | None = None
        self.image_id: str | None = None
        self.saved: list[str] = []  # what docker save writes: the OS image, then each service image
        self.pulled: list[str] = []  # service images the bench pulled (the engine lacked them)

    # -- set-up ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        if not Path(DOCKER[0]).exists():
            raise SystemExit(f"bundle: {DOCKER[0]} is missing: apt-get install docker.io (scripts/setup installs it)")
        self.client = client = docker.from_env()
        self.scratch = Path(tempfile.mkdtemp(prefix="osctl-bench-bundle-"))
        self.host = BenchHost(HOST_ID, self.scratch / "root", self.repo)
        self.host.fresh()
        client.images.pull(SOURCE)
        say(f"bundle: building {self.ref} (FROM osctl/os:v1.5 + {self.size_mib} MiB of random data) and pushing it ...")
        self.image_id = build_version(client, self.ref, release_text(client, SOURCE), self.size_mib, self.scratch)
        # A first bundle, not measured: what it holds is what the peer saves.
        first = self.scratch / "first.tar"
        self.host.osctl("bundle", "create", VERSION, "-o", str(first), "--quiet")
        held = self.host.osctl_json("bundle", "inspect", str(first))
        first.unlink()
        if [v["version"] for v in held["versions"]] != [VERSION]:
            raise SystemExit(f"bundle: the bundle of {VERSION} holds the versions {held['versions']}")
        services = [str(s["image"]) for s in held["services"]]
        for ref in services:
            try:
                client.images.get(ref)
            except docker.errors.ImageNotFound:
                client.images.pull(ref)
                self.pulled.append(ref)
        self.saved = [self.ref, *services]

    # -- one step each -------------------------------------------------------------------------
    def timed(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
        """Wall seconds of one command that must succeed, and its stderr."""
        started = time.perf_counter()
        proc = run(argv, env=env)
        return time.perf_counter() - started, proc.stderr

    def create(self, path: Path) -> tuple[float, float]:
        assert self.host is not None
        path.unlink(missing_ok=True)
        seconds, _ = self.timed([*OSCTL, "bundle", "create", VERSION, "-o", str(path), "--quiet"], self.host.env)
        return seconds, float(path.stat().st_size)

    def save(self, path: Path) -> tuple[float, float]:
        assert self.client is not None and self.image_id is not None
        path.unlink(missing_ok=True)
        # docker save writes the names it is given: the image must have this one, whichever install made it.
        self.client.api.tag(self.image_id, self.repo, VERSION)
        seconds, _ = self.timed([*DOCKER, "save", "-o", str(path), *self.saved])
        return seconds, float(path.stat().st_size)

    def without_image(self) -> None:
        """The OS image gone from the engine, every name of it (osctl's hold tags too)."""
        assert self.client is not None and self.image_id is not None
        problems = remove_images(self.client, [self.image_id])
        if problems:
            raise SystemExit(f"bundle: {problems[0]}")
        try:
            self.client.images.get(self.image_id)
        except docker.errors.ImageNotFound:
            return
        raise SystemExit(f"bundle: {self.image_id[:19]} is still in the engine after removing it")

    def loaded(self, how: str) -> None:
        assert self.client is not None and self.image_id is not None
        try:
            self.client.images.get(self.image_id)
        except docker.errors.ImageNotFound:
            raise SystemExit(f"bundle: after {how} the engine does not hold {self.image_id[:19]}") from None

    def install(self, bundle: Path) -> tuple[float, float | None]:
        """``osctl pull --from`` on a fresh root: wall seconds, and the engine load's (or None)."""
        assert self.host is not None
        self.without_image()
        self.host.fresh()
        python = str(Path(OSCTL[0]).parent / "python")
        started = time.perf_counter()
        proc = run([python, "-c", SHIM, "pull", VERSION, "--from", str(bundle), "--json"], env=self.host.env)
        seconds = time.perf_counter() - started
        self.loaded("osctl pull --from")
        try:
            record = json.loads(proc.stdout)
        except ValueError:
            raise SystemExit(f"bundle: osctl pull --json printed no JSON: {proc.stdout.strip()[:200]}") from None
        services = sorted(record.get("service_images") or {})
        if (record.get("version"), record.get("image_id"), record.get("already_stored")) != \
                (VERSION, self.image_id, False) or services != sorted(self.saved[1:]):
            raise SystemExit(f"bundle: osctl pull --from stored something else: {json.dumps(record)[:300]}")
        stderr = proc.stderr
        load = [float(line.split()[1]) for line in stderr.splitlines() if line.startswith(LOAD_MARK)]
        return seconds, (sum(load) if load else None)

    def load(self, saved: Path) -> float:
        self.without_image()
        seconds, _ = self.timed([*DOCKER, "load", "-q", "-i", str(saved)])
        self.loaded("docker load")
        return seconds

    # -- measuring ------------------------------------------------------------------------------
    def measure(self) -> Section:
        assert self.scratch is not None
        bundle, saved = self.scratch / "os.bundle.tar", self.scratch / "os.docker-save.tar"
        created: list[tuple[float, float]] = []
        peers: list[tuple[float, float]] = []
        installs: list[tuple[float, float | None]] = []
        loads: list[float] = []
        say(f"bundle: {self.runs} runs of bundle create / docker save, then osctl pull --from / docker load "
            f"({', '.join(self.saved)}) ...")
        for index in range(self.runs):
            if index % 2 == 0:
                created.append(self.create(bundle))
                peers.append(self.save(saved))
                installs.append(self.install(bundle))
                loads.append(self.load(saved))
            else:
                peers.append(self.save(saved))
                created.append(self.create(bundle))
                loads.append(self.load(saved))
                installs.append(self.install(bundle))
        return self.section(created, peers, installs, loads)

    def section(self, created: list[tuple[float, float]], peers: list[tuple[float, float]],
                installs: list[tuple[float, float | None]], loads: list[float]) -> Section:
        images = f"{len(self.saved)} images"
        f_create = figure(f"osctl bundle create ({images}, seconds)", [c[0] for c in created])
        f_save = figure("peer: docker save of the same images", [p[0] for p in peers], peer="docker")
        b_bundle = figure("bundle file (bytes)", [c[1] for c in created], unit="B")
        b_save = figure("peer: docker save file (bytes)", [p[1] for p in peers], unit="B", peer="docker")
        f_install = figure("osctl pull --from the bundle, fresh host (seconds)", [i[0] for i in installs])
        f_load = figure("peer: docker load -i of the save file", loads, peer="docker")
        figures: list[Figure] = [f_create, f_save, b_bundle, b_save, f_install]
        parts = [i[1] for i in installs if i[1] is not None]
        f_part = figure("  of which the engine load (stream, hash, docker load)", parts) \
            if len(parts) == len(installs) else None
        figures += [f_part, f_load] if f_part is not None else [f_load]
        size = f"{self.size_mib} MiB layer"
        rows = [Row(f"bundle create, v1.5 + {size}, {images}", f_create, peer=f_save),
                Row(f"bundle bytes, v1.5 + {size}", b_bundle, peer=b_save),
                Row(f"install from a bundle, v1.5 + {size}", f_install, peer=f_load)]
        services = ", ".join(self.saved[1:]) or "no service image"
        notes = [(
            f"  bundle: {self.ref} (FROM osctl/os:v1.5 plus {self.size_mib} MiB of random data) and {services}. "
            "bundle create copies the registry's bytes (compressed layers, the manifests as served) from the local "
            "registry; docker save writes the engine's uncompressed layers. The install: the OS image removed from "
            "the engine before each (its layers shared with v1.5 and the service images stay); osctl loads only the "
            "OS image, docker load reads its whole file. Besides the load, osctl's install checks the bundle, "
            "verifies every blob's digest, reads the release manifest from the layers, checks the OS image contract "
            "and the space, and stages the boot files; docker load does none of this.")]
        if f_part is not None:
            notes.append(f"  osctl's install outside the engine load (start-up, checks, manifest, preflight, boot "
                         f"files): {f_install.median - f_part.median:.2f} s of {f_install.median:.2f} s (medians)")
        return Section(self.title, rows, [(self.title, figures)], notes)

    # -- clean-up ----------------------------------------------------------------------------------
    def clean(self) -> list[str]:
        client = self.client or docker.from_env()
        hosts = [self.host] if self.host is not None else []
        images = [self.image_id] if self.image_id else []
        problems = clean_bench(client, hosts, BENCH_REPO, images + self.pulled)
        self.pulled = []
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return problems


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"creates, saves, installs and loads (default {DEFAULT_RUNS})")
    parser.add_argument("--size-mib", type=int, default=DEFAULT_SIZE_MIB,
                        help=f"MiB of random data in the version's own layer (default {DEFAULT_SIZE_MIB})")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if args.runs < 1 or args.size_mib < 1:
        parser.error("--runs and --size-mib must be at least 1")
    try:
        run_alone(BundleBench(args.runs, args.size_mib), args.json_path)
    except (docker.errors.DockerException, OSError) as exc:  # the clean-up has run: one line, no trace
        raise SystemExit(f"bench/bundle.py: {type(exc).__name__}: {str(exc)[:300]}") from None


if __name__ == "__main__":
    main_alone(main)
