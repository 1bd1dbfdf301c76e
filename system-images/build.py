#!/usr/bin/env python3
"""Build the osctl OS image family and push it to a registry.

    .venv/bin/python system-images/build.py --registry 127.0.0.1:5000 [--only v1.4] [--force] [--keys DIR]
                                            [--boot-cache DIR]

Why it looks like this:

* No Docker Hub, no internet: every image starts `FROM scratch` with Debian's static busybox
  (/bin/busybox), and the build contexts are assembled here, in memory, as tar archives.
* The engine is older than the docker CLI on PATH, so everything goes through the docker SDK
  (legacy builder, `client.api.build`), never the CLI.
* Images are stacked so that they share layers (osctl's disk-cost numbers rely on it):
      osctl/busybox:build  busybox + applet symlinks               (local only)
      osctl/base:build     + system-images/rootfs                  (local only)
      osctl/kernel:build   + /boot/vmlinuz, the Debian kernel      (local only)
      REGISTRY/osctl/os:vX.Y  + that version's small files         (pushed)
      REGISTRY/osctl/<service>:<ver>  busybox layer + its files    (pushed)
* The kernel and efivarfs.ko come from the boot cache (--boot-cache, default .run/boot) that
  scripts/setup fills from Debian's packages. Each version gets its own initrd, written here
  (initrd.py): busybox, efivarfs.ko and an /init from os/init.in that reports the version on
  the serial console and powers off, or panics for the versions in PANICKING_INITRD.
* A second run must be fast: each image's build context (files, modes, labels, the parent's
  hash, the busybox binary and the registry address) is hashed into the label
  `io.osctl.build-hash`. An image whose local copy carries the same hash, and which the
  registry already has, is neither built nor pushed.
* With `--keys DIR` (scripts/setup passes the development key set it made in .run/), the OS
  versions are then signed with `osctl release sign`, as a publisher would: signing what is
  already signed changes nothing, and the timestamp is renewed when it has less than half its
  life left, so hosts given DIR/root.json can install the family on any day. A signed version
  never changes, so when the family's content did, that development key set is made anew.
* Each OS version names its service images by digest too (`REPO:TAG@sha256:...`): the
  signature on the OS image then covers them (docs/trust.md).
* File times in the contexts are fixed, so a COPY of unchanged sources yields an identical
  layer, and the engine's layer cache is always used (even with --force): rebuilt images
  keep sharing the busybox and base layers, and the registry de-duplicates them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import initrd  # system-images/initrd.py: the cpio writer

HERE = Path(__file__).resolve().parent
BUSYBOX = Path("/bin/busybox")
DEFAULT_BOOT_CACHE = HERE.parent / ".run" / "boot"  # scripts/setup fills it ($OSCTL_BOOT_CACHE)
BOOT_CACHE_FILES = ("kernel/vmlinuz", "kernel/efivarfs.ko", "kernel/VERSION")
PANICKING_INITRD = {"v1.6"}  # broken on purpose: its /init exits, so the kernel panics
MTIME = 1_700_000_000  # fixed file time in build contexts: reproducible layers
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"

LABEL_HASH = "io.osctl.build-hash"
LABEL_OS_VERSION = "io.osctl.os.version"
LABEL_SERVICE_IMAGE = "io.osctl.service-image"
OCI_TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
OCI_DESCRIPTION = "org.opencontainers.image.description"



class BuildError(Exception):
    """A failure worth one clear line to the user, not a traceback."""


@dataclass(eq=False)  # identity: an image is built once even if listed twice
class Image:
    """One image to build: its tag, its in-memory build context and its labels."""

    name: str                       # short name for output and --only: "v1.4", "base", ...
    ref: str                        # the tag it gets, e.g. 127.0.0.1:5000/osctl/os:v1.4
    files: dict[str, tuple[bytes, int]]  # context path -> (content, mode)
    labels: dict[str, str]
    parent: Image | None = None     # built first; its hash is part of ours
    push: bool = False
    salt: str = ""                  # the registry address: it shows up in refs and manifests
    needs: list[Image] = field(default_factory=list)  # images to build first (not FROM)

    @property
    def hash(self) -> str:
        """A digest of everything that determines the image (cached; inputs never change)."""
        if not hasattr(self, "_hash"):
            h = hashlib.sha256()
            h.update(f"parent={self.parent.hash if self.parent else ''}\n".encode())
            h.update(f"salt={self.salt}\n".encode())
            for key, value in sorted(self.labels.items()):
                h.update(f"label {key}={value}\n".encode())
            for path, (data, mode) in sorted(self.files.items()):
                h.update(f"file {path} {mode:o} {len(data)}\n".encode())
                h.update(data)
            self._hash = h.hexdigest()
        return self._hash


# --- assembling the build contexts ----------------------------------------------------------

def read_tree(root: Path, prefix: str) -> dict[str, tuple[bytes, int]]:
    """All files under root, keyed by prefix/relative path, with normalised modes."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            rel = path.relative_to(root).as_posix()
            files[f"{prefix}/{rel}" if prefix else rel] = (path.read_bytes(), mode)
    return files


def dockerfile(path: Path) -> dict[str, tuple[bytes, int]]:
    return {"Dockerfile": (path.read_bytes(), 0o644)}


def tar_context(files: dict[str, tuple[bytes, int]]) -> io.BytesIO:
    """A tar build context with explicit, fixed-time directory entries (reproducible COPY)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({str(Path(p).parents[i]) for p in files
                       for i in range(len(Path(p).parents) - 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, MTIME
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


@dataclass(frozen=True)
class BootCache:
    """What the images take from the boot cache: the kernel and the efivarfs module it needs."""

    vmlinuz: bytes
    efivarfs: bytes
    kernel_version: str  # e.g. 6.1.0-57-amd64


def load_boot_cache(folder: Path) -> BootCache:
    missing = [name for name in BOOT_CACHE_FILES if not (folder / name).is_file()]
    if missing:
        raise BuildError(f"the boot cache {folder} has no {', '.join(missing)}: "
                         "run scripts/setup (as root), which fills it from Debian's packages")
    return BootCache(vmlinuz=(folder / "kernel/vmlinuz").read_bytes(),
                     efivarfs=(folder / "kernel/efivarfs.ko").read_bytes(),
                     kernel_version=(folder / "kernel/VERSION").read_text().strip())


def initrd_common(boot: BootCache, busybox: bytes) -> bytes:
    """The part of every initrd that does not depend on the version, compressed once.

    An initramfs may be several compressed cpio archives one after the other (the kernel
    unpacks each in turn), so each version's initrd is this archive followed by one holding
    its /init. /dev/console is here because the kernel opens it for /init before any /dev is
    mounted; /init mounts or makes everything else itself.
    """
    return initrd.initramfs([
        *(initrd.directory(d) for d in ("bin", "dev", "lib", "lib/modules", "proc", "sys")),
        initrd.directory("tmp", 0o1777),
        initrd.char_device("dev/console", 5, 1),
        initrd.file("bin/busybox", busybox, 0o755),
        initrd.file("lib/modules/efivarfs.ko", boot.efivarfs),
    ], mtime=MTIME)


def initrd_image(version: str, common: bytes) -> bytes:
    """The initrd of ``version``: ``initrd_common`` then its /init (os/init.in). Same inputs, same bytes."""
    init = (HERE / "os" / "init.in").read_text().replace("${VERSION}", version) \
        .replace("${PANIC}", "yes" if version in PANICKING_INITRD else "no")
    return common + initrd.initramfs([initrd.file("init", init.encode(), 0o755)], mtime=MTIME)


def versions() -> list[str]:
    """The OS versions (directories under versions/), oldest first."""
    from packaging.version import Version
    names = [p.name for p in (HERE / "versions").iterdir() if (p / "release.yaml").is_file()]
    return sorted(names, key=lambda v: Version(v.lstrip("v")))


def service_names() -> list[str]:
    return sorted(p.name for p in (HERE / "services").iterdir() if (p / "Dockerfile").is_file())


def render_manifest(version: str, registry: str):
    """release.yaml with ${REGISTRY} substituted, validated by osctl's own manifest validator.

    Only ${REGISTRY} and ${VERSION} are replaced (not string.Template): shell commands in the
    manifest may contain other $ signs. Validating here, with the very code osctl runs on a
    host, catches a mistake before an invalid image is pushed. Returns (text, manifest).
    """
    from osctl.domain.manifest import parse_manifest
    from osctl.errors import ManifestError

    text = (HERE / "versions" / version / "release.yaml").read_text()
    text = text.replace("${REGISTRY}", registry).replace("${VERSION}", version)
    try:
        manifest = parse_manifest(text, f"versions/{version}/release.yaml", expected_version=version)
    except ManifestError as exc:
        raise BuildError(exc.message) from None
    return text, manifest


def manifest_images(manifest) -> set[str]:
    return {svc.image for svc in manifest.services.values() if svc.image}


def plan(registry: str, repository: str, only: list[str],
         boot_cache: Path = DEFAULT_BOOT_CACHE) -> list[Image]:
    """Every image to build, in build order (parents and needed service images first)."""
    boot = load_boot_cache(boot_cache)
    busybox_bytes = BUSYBOX.read_bytes()
    busybox = Image(
        name="busybox", ref="osctl/busybox:build", salt=registry,
        files={**dockerfile(HERE / "busybox" / "Dockerfile"), "busybox": (busybox_bytes, 0o755)},
        labels={OCI_TITLE: "osctl busybox layer"})
    base = Image(
        name="base", ref="osctl/base:build", parent=busybox, salt=registry,
        files={**dockerfile(HERE / "base" / "Dockerfile"), **read_tree(HERE / "rootfs", "rootfs")},
        labels={OCI_TITLE: "osctl OS base"})
    kernel = Image(
        name="kernel", ref="osctl/kernel:build", parent=base, salt=registry,
        files={**dockerfile(HERE / "kernel" / "Dockerfile"), "boot/vmlinuz": (boot.vmlinuz, 0o644)},
        labels={OCI_TITLE: f"osctl kernel {boot.kernel_version}"})
    common = initrd_common(boot, busybox_bytes)

    services = {}
    for name in service_names():
        src = HERE / "services" / name
        tag = (src / "VERSION").read_text().strip()
        services[name] = Image(
            name=name, ref=f"{registry}/osctl/{name}:{tag}", parent=busybox, push=True,
            salt=registry, files=read_tree(src, ""),
            labels={OCI_TITLE: f"osctl {name}", OCI_VERSION: tag, LABEL_SERVICE_IMAGE: name})
    by_ref = {img.ref: img for img in services.values()}

    oses = []
    os_release = (HERE / "os" / "os-release.in").read_text()
    for v in versions():
        text, manifest = render_manifest(v, registry)
        ref = f"{registry}/{repository}:{v}"
        needs = []
        for image_ref in sorted(manifest_images(manifest) - {ref}):
            if image_ref not in by_ref:
                raise BuildError(f"versions/{v}/release.yaml: image {image_ref} is not built "
                                 f"here (known: {', '.join(by_ref) or 'none'})")
            needs.append(by_ref[image_ref])
        files = {
            **dockerfile(HERE / "os" / "Dockerfile"),
            **read_tree(HERE / "versions" / v / "rootfs", "rootfs"),
            "rootfs/usr/lib/osctl/release.yaml": (text.encode(), 0o644),
            "rootfs/etc/os-release": (os_release.replace("${VERSION}", v).encode(), 0o644),
            "rootfs/boot/initrd.img": (initrd_image(v, common), 0o644),
        }
        oses.append(Image(
            name=v, ref=ref, parent=kernel, push=True, salt=registry, files=files, needs=needs,
            labels={LABEL_OS_VERSION: v, OCI_VERSION: v, OCI_TITLE: "osctl",
                    OCI_DESCRIPTION: f"osctl OS {v}"}))

    wanted = [*oses, *services.values()]
    if only:
        unknown = set(only) - {img.name for img in wanted}
        if unknown:
            raise BuildError(f"--only {', '.join(sorted(unknown))}: unknown; choose from "
                             + ", ".join(img.name for img in wanted))
        wanted = [img for img in wanted if img.name in only]

    order: list[Image] = []

    def add(img: Image) -> None:
        for dep in [img.parent, *img.needs]:
            if dep is not None:
                add(dep)
        if img not in order:
            order.append(img)

    for img in sorted(wanted, key=lambda i: i in oses):  # service images before OS images
        add(img)
    return order


# --- talking to the engine and the registry -------------------------------------------------

def check_registry(registry: str) -> None:
    try:
        urllib.request.urlopen(f"http://{registry}/v2/", timeout=5).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 401:  # 401: answers, wants auth (docker login handles that)
            raise BuildError(f"registry {registry} answered HTTP {exc.code} on /v2/") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BuildError(f"registry {registry} is unreachable: {reason}") from None


def pin_service_images(img: Image) -> None:
    """Name each service image of an OS version by its digest too (``REPO:TAG@sha256:...``).

    The OS image is what the release keys sign; a service image it names by tag alone could be
    swapped in the registry without touching that signature, so hosts that enforce signed
    releases refuse such a manifest (docs/trust.md). The services were pushed before this image
    (``plan`` orders them first), so the registry knows their digests.
    """
    path = "rootfs/usr/lib/osctl/release.yaml"
    text, mode = img.files[path]
    for need in img.needs:
        digest = registry_digest(need.ref)
        text = re.sub(rf"(?m)(image:\s*[\"']?){re.escape(need.ref)}(?=[\"']?\s*$)", rf"\g<1>{need.ref}@{digest}",
                      text.decode()).encode()
    img.files[path] = (text, mode)
    from osctl.domain.manifest import parse_manifest  # the host's own validator, as render_manifest uses
    parse_manifest(text, f"versions/{img.name}/release.yaml", expected_version=img.name)


def registry_digest(ref: str) -> str:
    """The manifest digest REGISTRY/REPO:TAG has in the registry (a HEAD: no body moves)."""
    registry, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": MANIFEST_V2})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.headers["Docker-Content-Digest"]
    except (urllib.error.URLError, OSError, KeyError) as exc:
        raise BuildError(f"registry: HEAD manifest of {ref}: {getattr(exc, 'reason', exc)}") from None


def registry_hash(ref: str) -> str | None:
    """The build-hash label of REGISTRY/REPO:TAG as the registry serves it; None when absent.

    Read from the image config in the registry, so an image that is up to date there is never
    rebuilt (which would give it a new digest and move the tag) just because the engine's
    local copy was removed, e.g. by ``osctl prune``.
    """
    registry, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")

    def get(path: str, accept: str) -> bytes | None:
        req = urllib.request.Request(f"http://{registry}/v2/{repo}/{path}", headers={"Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return None
            raise BuildError(f"registry: GET {path} of {ref}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise BuildError(f"registry: GET {path} of {ref}: {getattr(exc, 'reason', exc)}") from None

    manifest = get(f"manifests/{tag}", MANIFEST_V2)
    if manifest is None:
        return None
    config = get(f"blobs/{json.loads(manifest)['config']['digest']}", "*/*")
    labels = (json.loads(config or b"{}").get("config") or {}).get("Labels") or {}
    return str(labels.get(LABEL_HASH, ""))


def connect():
    import os
    import docker
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # DockerException, requests' ConnectionError, ...
        raise BuildError(f"the Docker engine at {where} is unreachable: {exc}") from None


def local_hash(client, ref: str) -> str | None:
    import docker
    try:
        return (client.api.inspect_image(ref)["Config"].get("Labels") or {}).get(LABEL_HASH)
    except docker.errors.ImageNotFound:
        return None


def stream_errors(what: str, stream) -> list[dict]:
    """Read a build/push progress stream to the end; raise on its first error entry."""
    chunks = []
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
            raise BuildError(f"{what}: {str(detail).strip()}")
        chunks.append(chunk)
    return chunks


def build(client, img: Image) -> None:
    import docker
    try:
        stream_errors(f"building {img.ref}", client.api.build(
            fileobj=tar_context(img.files), custom_context=True, tag=img.ref,
            labels={**img.labels, LABEL_HASH: img.hash}, rm=True, forcerm=True,
            pull=False, decode=True))
    except docker.errors.APIError as exc:
        raise BuildError(f"building {img.ref}: {exc.explanation or exc}") from None
    if local_hash(client, img.ref) != img.hash:
        raise BuildError(f"building {img.ref}: the engine did not tag the new image")


def push(client, ref: str) -> None:
    import docker
    repo, _, tag = ref.rpartition(":")
    try:
        stream_errors(f"pushing {ref}", client.api.push(repo, tag=tag, stream=True, decode=True))
    except docker.errors.APIError as exc:
        raise BuildError(f"pushing {ref}: {exc.explanation or exc}") from None


# --- main ------------------------------------------------------------------------------------

def sign(keys: str, image: str, versions: list[str]) -> None:
    """Sign ``versions`` with the release keys and keep the timestamp fresh (``osctl release``)."""
    def release(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "osctl", "--image", image, "release", *args, "--keys", keys],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise BuildError(f"osctl release {args[0]} failed: {proc.stderr.strip()}")
        return proc

    t0 = time.monotonic()
    if release("sign", *versions, check=False).returncode == 7:
        # A signed version never changes (osctl refuses to sign other content under it). These
        # are development keys for a family rebuilt from source: when its content changed, the
        # keys are made anew, and hosts given the new root.json trust the new family.
        print(f"{'new keys':<13}{keys}: the family changed since it was signed", flush=True)
        shutil.rmtree(keys)
        release("init")
        release("sign", *versions)
    roles = {r["role"]: r for r in json.loads(release("status", "--json").stdout)["roles"]}
    expires = datetime.fromisoformat(roles["timestamp"]["expires"].replace("Z", "+00:00"))
    if expires - datetime.now(timezone.utc) < timedelta(hours=12):
        release("timestamp")
    print(f"{'signed':<13}{image + '-tuf':<42}{len(versions):>6} versions  {time.monotonic() - t0:5.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="127.0.0.1:5000", help="host:port (plain HTTP)")
    ap.add_argument("--repository", default="osctl/os", help="repository of the OS images")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="build only this version or service image (repeatable)")
    ap.add_argument("--force", action="store_true",
                    help="build and push even when up to date (the layer cache still applies)")
    ap.add_argument("--list", action="store_true", help="print the versions it would build")
    ap.add_argument("--keys", metavar="DIR", help="then sign the OS versions with the release keys in DIR")
    ap.add_argument("--boot-cache", metavar="DIR", type=Path, default=DEFAULT_BOOT_CACHE,
                    help="the kernel cache scripts/setup fills (default: %(default)s)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    try:
        if not BUSYBOX.is_file():
            raise BuildError(f"{BUSYBOX} is missing: apt-get install busybox-static")
        if args.list:  # needs no boot cache
            print("\n".join(v for v in versions() if not args.only or v in args.only))
            return 0
        images = plan(args.registry, args.repository, args.only, args.boot_cache)
        client = connect()
        check_registry(args.registry)
        for img in images:
            t0 = time.monotonic()
            if img.needs:
                pin_service_images(img)
            remote = registry_hash(img.ref) if img.push else None
            if img.push and not args.force and remote == img.hash:
                print(f"{'up-to-date':<13}{img.ref:<42}{'(registry)':>12}  {time.monotonic() - t0:14.1f}s", flush=True)
                continue
            fresh = not args.force and local_hash(client, img.ref) == img.hash
            if not fresh:
                build(client, img)
            pushed = False
            if img.push and (not fresh or remote != img.hash):
                push(client, img.ref)
                pushed = True
            status = ("built+pushed" if pushed else "built") if not fresh else \
                ("pushed" if pushed else "up-to-date")
            info = client.api.inspect_image(img.ref)
            print(f"{status:<13}{img.ref:<42}{info['Id'][7:19]}  {info['Size'] / 1e6:5.2f} MB"
                  f"  {time.monotonic() - t0:5.1f}s", flush=True)
        if args.keys:
            built = [img.name for img in images if LABEL_OS_VERSION in img.labels]
            sign(args.keys, f"{args.registry}/{args.repository}", built)
        print(f"done: {len(images)} images in {time.monotonic() - started:.1f}s", flush=True)
        return 0
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
