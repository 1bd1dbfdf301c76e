"""Building blocks for synthetic bundles in tests: digests and gzip layers made on the spot."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

from osctl.models.refs import Digest


def digest_of(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def gz_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(a gzip layer blob holding ``files``, its diff id: the digest of the tar inside)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0), digest_of(buf.getvalue())
