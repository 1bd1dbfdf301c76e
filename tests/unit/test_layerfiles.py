"""Files read out of layer blobs without the engine (osctl/adapters/layerfiles.py).

Layers are tars built here; what is asserted is what the engine would show for the same layers:
the top-most entry, whiteouts and opaque directories, links followed inside the image.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable, Iterator

import pytest

from osctl.adapters.layerfiles import (MAX_HEADER, Found, LayerStream, TarFormatError, find_files,
                                       tar_entries)
from osctl.errors import ImageFileError

Member = tuple[str, object]  # (name, bytes | ("link", target) | ("hard", target) | "dir" | "fifo")


def tar_bytes(members: list[Member], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, what in members:
            info = tarfile.TarInfo(name)
            data = None
            if isinstance(what, bytes):
                info.size, data = len(what), io.BytesIO(what)
            elif what == "dir":
                info.type = tarfile.DIRTYPE
            elif what == "fifo":
                info.type = tarfile.FIFOTYPE
            elif isinstance(what, tuple) and what[0] == "link":
                info.type, info.linkname = tarfile.SYMTYPE, str(what[1])
            elif isinstance(what, tuple) and what[0] == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(what[1])
            tar.addfile(info, data)
    return buf.getvalue()


def layer(members: list[Member], *, compress: bool = True, chunk: int = 1000) -> Callable[[], Iterator[bytes]]:
    blob = tar_bytes(members)
    if compress:
        blob = gzip.compress(blob)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(blob), chunk):
            yield blob[start:start + chunk]
    return chunks


def find(layers: list[Callable[[], Iterator[bytes]]], *paths: str, limit: int = 1 << 20,
         want: bool = True) -> dict[str, Found | None]:
    return find_files(layers, {path: want for path in paths}, limit=limit)


def data(found: Found | None) -> bytes | None:
    return found.data if found is not None else None


def test_the_top_most_layer_wins_and_lower_files_still_show() -> None:
    base = layer([("etc", "dir"), ("etc/os-release", b"base"), ("etc/hostname", b"box")])
    top = layer([("etc/os-release", b"top")])
    got = find([base, top], "/etc/os-release", "/etc/hostname", "/etc/missing")
    assert data(got["/etc/os-release"]) == b"top"
    assert data(got["/etc/hostname"]) == b"box"
    assert got["/etc/missing"] is None


def test_a_whiteout_hides_the_file_and_everything_below_a_directory() -> None:
    base = layer([("etc/a", b"a"), ("opt/tool/bin", b"x")])
    top = layer([("etc/.wh.a", b""), (".wh.opt", b"")])
    got = find([base, top], "/etc/a", "/opt/tool/bin")
    assert got == {"/etc/a": None, "/opt/tool/bin": None}


def test_an_opaque_directory_hides_lower_layers_but_keeps_its_own_entries() -> None:
    base = layer([("etc/old", b"old"), ("etc/kept", b"lower")])
    top = layer([("etc", "dir"), ("etc/.wh..wh..opq", b""), ("etc/kept", b"upper")])
    got = find([base, top], "/etc/old", "/etc/kept")
    assert got["/etc/old"] is None and data(got["/etc/kept"]) == b"upper"


def test_links_are_followed_inside_the_image_across_layers() -> None:
    base = layer([("boot/vmlinuz-6.1", b"kernel"), ("usr/lib/osctl/release.yaml", b"version: v1")])
    top = layer([("boot/vmlinuz", ("link", "vmlinuz-6.1")), ("lib", ("link", "usr/lib")),
                 ("abs", ("link", "/boot/vmlinuz")), ("up", ("link", "../../../boot/vmlinuz-6.1")),
                 ("bin/sh", ("hard", "boot/vmlinuz-6.1"))])
    got = find([base, top], "/boot/vmlinuz", "/lib/osctl/release.yaml", "/abs", "/up", "/bin/sh")
    assert got["/boot/vmlinuz"] == Found("/boot/vmlinuz-6.1", 6, b"kernel")
    assert data(got["/lib/osctl/release.yaml"]) == b"version: v1"
    assert data(got["/abs"]) == b"kernel" and data(got["/up"]) == b"kernel" and data(got["/bin/sh"]) == b"kernel"


def test_a_link_loop_is_one_error_naming_the_path() -> None:
    top = layer([("a", ("link", "b")), ("b", ("link", "a"))])
    with pytest.raises(ImageFileError, match=r"^/a: more than 8 symbolic links"):
        find([top], "/a")


def test_large_files_are_sized_but_not_held_and_unwanted_bytes_are_not_kept() -> None:
    top = layer([("boot/vmlinuz", b"k" * 5000), ("etc/x", b"small")])
    got = find([top], "/boot/vmlinuz", "/etc/x", limit=1000)
    assert got["/boot/vmlinuz"] == Found("/boot/vmlinuz", 5000, None)
    assert data(got["/etc/x"]) == b"small"
    assert find([top], "/etc/x", want=False)["/etc/x"] == Found("/etc/x", 5, None)


def test_directories_devices_and_files_in_the_way_are_not_files() -> None:
    top = layer([("etc", "dir"), ("run/pipe", "fifo"), ("usr", b"a file where a directory would be")])
    assert find([top], "/etc", "/run/pipe", "/usr/lib/x", "/") == {
        "/etc": None, "/run/pipe": None, "/usr/lib/x": None, "/": None}


def test_a_directory_in_an_upper_layer_replaces_a_lower_symlink() -> None:
    base = layer([("real/f", b"through the link"), ("d", ("link", "real"))])
    top = layer([("d", "dir")])
    assert find([base, top], "/d/f")["/d/f"] is None


def test_plain_tar_layers_dot_slash_names_and_dotdot_names() -> None:
    base = layer([("./etc/a", b"plain")], compress=False)
    top = layer([("../etc/a", b"escaped")])  # the engine refuses such a name; it never matches
    assert data(find([base, top], "/etc/a")["/etc/a"]) == b"plain"


def test_long_names_in_pax_and_gnu_headers() -> None:
    long = "d/" + "x" * 150 + "/file"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        blob = tar_bytes([(long, b"long")], fmt=fmt)
        assert data(find([lambda b=blob: iter([b])], "/" + long)["/" + long]) == b"long"


def test_lower_layers_are_not_read_once_every_path_is_answered() -> None:
    read: list[str] = []

    def counted(name: str, members: list[Member]) -> Callable[[], Iterator[bytes]]:
        inner = layer(members)

        def chunks() -> Iterator[bytes]:
            read.append(name)
            yield from inner()
        return chunks

    got = find([counted("base", [("etc/a", b"a")]), counted("top", [("etc/b", b"b")])], "/etc/b")
    assert data(got["/etc/b"]) == b"b" and read == ["top"]


@pytest.mark.parametrize("blob, problem", [
    (b"not a tar at all, not even 512 bytes", "ends inside a header"),
    (gzip.compress(b"\x01" * 2048, mtime=0), "bad checksum"),
    (gzip.compress(tar_bytes([("etc/a", b"a" * 3000)]), mtime=0)[:-40], "gzip stream is cut short"),
    (b"\x1f\x8b" + b"\x00" * 100, "not valid gzip"),
    (tar_bytes([("etc/a", b"a" * 3000)])[:1536], "cut short"),
], ids=["not a tar", "gzip of no tar", "gzip cut short", "not gzip", "tar cut short"])
def test_a_broken_layer_is_one_error_naming_the_layer(blob: bytes, problem: str) -> None:
    with pytest.raises(ImageFileError) as caught:
        find([layer([("x", b"x")]), lambda: iter([blob])], "/etc/a")
    assert str(caught.value).startswith("layer 2 of 2: not a readable tar layer") and problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_tar_entries_refuses_an_oversized_pax_record_and_a_missing_end_block() -> None:
    info = tarfile.TarInfo("x")
    info.pax_headers = {"comment": "c" * (MAX_HEADER + 10)}
    huge = info.tobuf(format=tarfile.PAX_FORMAT)
    with pytest.raises(TarFormatError, match="extended header"):
        list(tar_entries(LayerStream([huge])))
    no_end = tar_bytes([("a", b"a")])[:1024]
    with pytest.raises(TarFormatError, match="without the end-of-archive block"):
        list(tar_entries(LayerStream([no_end])))


def test_tar_entries_gives_names_kinds_sizes_and_offsets() -> None:
    blob = tar_bytes([("a", b"12345"), ("d", "dir"), ("l", ("link", "a"))], fmt=tarfile.USTAR_FORMAT)
    entries = list(tar_entries(LayerStream([blob])))
    assert [(e.name, e.kind, e.size, e.linkname, e.offset) for e in entries] == [
        ("a", "file", 5, "", 512), ("d/", "dir", 0, "", 1536), ("l", "symlink", 0, "a", 2048)]


def test_a_gzip_bomb_is_read_in_bounded_pieces() -> None:
    big = tar_bytes([("zeros", bytes(64 << 20)), ("etc/a", b"after")])
    blob = gzip.compress(big, compresslevel=1)
    assert len(blob) < 1 << 20
    got = find([lambda: iter([blob])], "/zeros", "/etc/a", limit=1024)
    assert got["/zeros"] == Found("/zeros", 64 << 20, None) and data(got["/etc/a"]) == b"after"


def test_a_layer_is_read_to_its_end_so_that_its_source_can_check_it() -> None:
    """Bytes after the tar's end block are still taken: a bundle's blob reader raises its
    IntegrityError only after its last chunk."""
    blob = gzip.compress(tar_bytes([("etc/a", b"a")]) + bytes(20000))

    class Damaged(Exception):
        pass

    def checked() -> Iterator[bytes]:
        yield from (blob[i:i + 100] for i in range(0, len(blob), 100))
        raise Damaged("does not hash")

    with pytest.raises(Damaged):
        find([checked], "/etc/a")
