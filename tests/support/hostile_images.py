"""OS images built from docs/image-format.md alone, for the attacks in tests/hostile/.

No Dockerfile and no base image: the root file system is written as a tar archive and imported
(``docker import``), which takes well under a second for a few small files, and can hold what a
build cannot easily make (symbolic link loops).
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Iterator

import docker

from tests.support.hosts import TEST_REPO

MANIFEST_PATH = "usr/lib/osctl/release.yaml"
KERNEL = b"\x7fELF not really a kernel\n"
GOOD_MANIFEST = "version: v1.4\nservices:\n  a: {command: [sleep, '9']}\nboot: {kernel: /boot/vmlinuz}\n"


def rootfs(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A tar archive of ``files`` (path -> content) and ``links`` (path -> target), with their folders."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folders = sorted({"/".join(p.split("/")[:i]) for p in [*files, *(links or {})]
                          for i in range(1, p.count("/") + 1)})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


@contextlib.contextmanager
def os_image(client: docker.DockerClient, manifest: str | bytes = GOOD_MANIFEST, *,
             files: dict[str, bytes] | None = None, links: dict[str, str] | None = None,
             version: str = "v1.4") -> Iterator[str]:
    """A local OS image ``TEST_REPO/hostile-<random>:<version>`` labelled as the contract says,
    with ``manifest`` at its path plus ``files`` and ``links``; removed afterwards."""
    content = {MANIFEST_PATH: manifest.encode() if isinstance(manifest, str) else manifest, **(files or {})}
    repo = f"{TEST_REPO}/hostile-{uuid.uuid4().hex[:8]}"
    client.api.import_image_from_data(rootfs(content, links), repository=repo, tag=version,
                                      changes=[f"LABEL io.osctl.os.version={version}"])
    ref = f"{repo}:{version}"
    try:
        yield ref
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(ref, force=True)
