"""Files read out of an image's layer blobs, without the engine; and the tar reader that does it.

A bundle must be checked before anything of it reaches the engine: its release manifest and
boot artifacts are validated, and its version vouched for, first. So the files osctl needs
from an OS image are read here straight from the layer blobs (gzip or plain tar), resolving
what the engine would show: the top-most layer's entry wins, whiteouts (``.wh.<name>``) and
opaque directories (``.wh..wh..opq``) hide what lies below, and symbolic links are followed
inside the image.

The tar reader (``tar_entries``) is shared with the bundle reader (``ocibundle``): both read
archives from outside, so it keeps every bound itself. Python's ``tarfile`` would hold a pax
header of any size in memory and treats a damaged header in the middle as the end of the
archive; here a pax or long-name record is at most ``MAX_HEADER`` bytes, a damaged header is an
error naming its byte offset, and an archive must end with its end-of-archive block, so a file
cut short at a member boundary is told from a complete one. Nothing is ever extracted to disk:
member names are only compared with the names asked for.
"""

from __future__ import annotations

import posixpath
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from osctl.errors import ImageFileError

BLOCK = 512
MAX_HEADER = 1 << 20  # bytes of one pax or GNU long-name record held in memory
MAX_LINKS = 8  # symbolic links followed in a row before calling it a loop
_CHUNK = 1 << 20  # bytes decompressed or skipped at a time
_ZERO = bytes(BLOCK)
_NO_DATA = frozenset(b"123456")  # link, symlink, devices, dir, fifo: the size field carries no data
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"

Kind = Literal["file", "dir", "symlink", "hardlink", "other"]


class TarFormatError(ValueError):
    """The bytes are not a tar archive, or one damaged or cut short; says where."""


@dataclass(frozen=True)
class TarEntry:
    """One member: its name as the archive spells it (pax and GNU long names applied), what it
    is, how many data bytes follow its header, and where they begin in the (uncompressed) stream."""

    name: str
    kind: Kind
    size: int
    linkname: str
    offset: int
    typeflag: str


class TarSource(Protocol):
    """Bytes of a tar stream: ``read`` returns fewer than asked only at the end."""

    position: int

    def read(self, count: int) -> bytes: ...

    def skip(self, count: int) -> None: ...


def tar_entries(source: TarSource) -> Iterator[TarEntry]:
    """Every member of the archive in ``source``, in order; ``TarFormatError`` when it is broken.

    The caller may read (part of) a member's data from ``source`` before asking for the next
    one; what it leaves is skipped.
    """
    pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    while True:
        start = source.position
        block = source.read(BLOCK)
        if not block:
            raise TarFormatError(f"ends at byte {start} without the end-of-archive block (cut short?)")
        if len(block) < BLOCK:
            raise TarFormatError(f"ends inside a header at byte {start} (cut short?)")
        if block == _ZERO:
            return
        name, size, typeflag, linkname = _header(block, start)
        if typeflag in (b"x", b"g", b"L", b"K"):
            if size > MAX_HEADER:
                raise TarFormatError(f"has an extended header of {size} bytes at byte {start}, "
                                     f"more than the {MAX_HEADER} allowed")
            data = source.read(size)
            if len(data) < size:
                raise TarFormatError(f"ends inside an extended header at byte {start} (cut short?)")
            source.skip(_padded(size) - size)
            if typeflag == b"x":
                pax.update(_pax_records(data, start))
            elif typeflag == b"L":
                long_name = _text(data.split(b"\0", 1)[0])
            elif typeflag == b"K":
                long_link = _text(data.split(b"\0", 1)[0])
            continue  # a global header ("g") changes nothing osctl reads
        if "size" in pax:
            size = _pax_size(pax["size"], start)
        name = pax.get("path", long_name if long_name is not None else name)
        linkname = pax.get("linkpath", long_link if long_link is not None else linkname)
        pax, long_name, long_link = {}, None, None
        kind = _kind(typeflag)
        if typeflag and typeflag[0] in _NO_DATA:
            size = 0
        entry = TarEntry(name, kind, size, linkname, source.position, typeflag.decode("latin-1"))
        yield entry
        source.skip(_padded(size) - (source.position - entry.offset))


def _header(block: bytes, start: int) -> tuple[str, int, bytes, str]:
    """(name, size, typeflag, linkname) of a ustar, GNU or v7 header block."""
    stored = block[148:156]
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    try:
        expected = _number(stored)
    except ValueError:
        expected = -1
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b >= 0x80)
    if expected not in (unsigned, signed):
        raise TarFormatError(f"has a damaged header at byte {start} (bad checksum)")
    try:
        size = _number(block[124:136])
    except ValueError:
        raise TarFormatError(f"has a header at byte {start} whose size is not a number") from None
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":  # POSIX: a prefix may hold the first part of a long name
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    typeflag = block[156:157]
    return _text(name), size, (b"0" if typeflag == b"\0" else typeflag), _text(block[157:257].split(b"\0", 1)[0])


def _number(field: bytes) -> int:
    """An octal number, or GNU's base-256 for what does not fit; ValueError otherwise."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise ValueError("negative")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(0x30 <= b <= 0x37 for b in text):
        raise ValueError("not octal")
    return int(text, 8)


def _pax_records(data: bytes, start: int) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records."""
    out: dict[str, str] = {}
    at = 0
    while at < len(data) and data[at:at + 1] != b"\0":
        space = data.find(b" ", at, at + 20)
        length = data[at:space]
        if space < 0 or not length.isdigit() or int(length) <= space - at or at + int(length) > len(data):
            raise TarFormatError(f"has a malformed pax header at byte {start}")
        record = data[space + 1:at + int(length)]
        key, eq, value = record.rstrip(b"\n").partition(b"=")
        if not eq or not record.endswith(b"\n"):
            raise TarFormatError(f"has a malformed pax header at byte {start}")
        out[_text(key)] = _text(value)
        at += int(length)
    return out


def _pax_size(value: str, start: int) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 20:
        raise TarFormatError(f"has a pax header at byte {start} whose size is not a number")
    return int(value)


def _kind(typeflag: bytes) -> Kind:
    if typeflag in (b"0", b"7"):
        return "file"
    return {b"5": "dir", b"2": "symlink", b"1": "hardlink"}.get(typeflag, "other")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class LayerStream:
    """A layer blob's chunks as a ``TarSource``: gzip (told by its magic) is decompressed on the
    way, at most ``_CHUNK`` bytes at a time, so a decompression bomb costs time, never memory."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._raw = b""  # compressed bytes not yet given to zlib
        self._out = bytearray()  # tar bytes not yet read
        self._inflate: zlib._Decompress | None = None
        self._started = False
        self._done = False
        self.position = 0

    def _more_raw(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._raw += chunk
                return True
        return False

    def _fill(self, wanted: int) -> None:
        if not self._started:
            self._started = True
            while len(self._raw) < 2 and self._more_raw():
                pass
            if self._raw[:2] == b"\x1f\x8b":
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while len(self._out) < wanted and not self._done:
            if self._inflate is None:
                if not self._raw and not self._more_raw():
                    self._done = True
                self._out += self._raw
                self._raw = b""
                continue
            if not self._raw and not self._more_raw():
                if not self._inflate.eof:
                    raise TarFormatError("its gzip stream is cut short")
                self._done = True
                continue
            try:
                self._out += self._inflate.decompress(self._raw, _CHUNK)
            except zlib.error as exc:
                raise TarFormatError(f"is not valid gzip ({exc})") from None
            self._raw = self._inflate.unconsumed_tail
            if self._inflate.eof:  # concatenated gzip members are one stream; anything else after it is ignored
                rest = self._inflate.unused_data
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._raw = rest
                if not rest and not self._more_raw():
                    self._done = True
                elif self._raw[:2] != b"\x1f\x8b":
                    self._done = True

    def read(self, count: int) -> bytes:
        if len(self._out) < count:
            self._fill(count)
        data = bytes(self._out[:count])
        del self._out[:count]
        self.position += len(data)
        return data

    def skip(self, count: int) -> None:
        while count > 0:
            got = len(self.read(min(count, _CHUNK)))
            if not got:
                return
            count -= got

    def drain(self) -> None:
        """Take the blob's remaining chunks (padding after the tar's end) without decompressing
        them: a source that checks the blob's hash does so at its end, and the files read from
        it count only once that check has passed."""
        for _ in self._chunks:
            pass


@dataclass(frozen=True)
class Found:
    """A regular file found in the image: where (after links), its size, and its bytes when they
    were asked for and are at most the limit (else None)."""

    path: str
    size: int
    data: bytes | None


@dataclass
class _Query:
    """One asked-for path being resolved, layer by layer from the top."""

    asked: str
    path: str
    want: bool
    hops: int = 0
    dirs: set[str] | None = None  # ancestors a higher layer made directories

    def parts(self) -> list[str]:
        return [p for p in self.path.split("/") if p]


@dataclass(frozen=True)
class _Fact:
    kind: Kind
    size: int
    linkname: str
    data: bytes | None


def find_files(layers: Sequence[Callable[[], Iterator[bytes]]], paths: dict[str, bool], *,
               limit: int) -> dict[str, Found | None]:
    """Resolve absolute ``paths`` in the image made of ``layers`` (base first); None for a path
    that is not there or is not a regular file.

    Each callable yields one layer blob's bytes; layers are read from the top down, and no lower
    than needed: a file found in the top layer costs one layer's read. ``paths`` maps each path
    to whether its bytes are wanted; a file above ``limit`` bytes has ``data`` None. A path
    whose links go round more than ``MAX_LINKS`` times is an ``ImageFileError``; a layer that
    is not a tar archive is an ``ImageFileError`` naming the layer.
    """
    results: dict[str, Found | None] = {}
    pending = [_Query(asked, _normal(asked), want) for asked, want in paths.items()]
    while pending:
        redirected: list[_Query] = []
        open_queries = list(pending)
        for number in range(len(layers), 0, -1):
            if not open_queries:
                break
            facts = _scan_layer(layers[number - 1], open_queries, limit, f"layer {number} of {len(layers)}")
            still: list[_Query] = []
            for query in open_queries:
                outcome = _apply(query, facts, limit)
                if outcome == "open":
                    still.append(query)
                elif outcome == "redirect":
                    redirected.append(query)
                else:
                    results[query.asked] = outcome
            open_queries = still
        for query in open_queries:  # below the base layer: not there
            results[query.asked] = None
        for query in redirected:
            query.hops += 1
            if query.hops > MAX_LINKS:
                raise ImageFileError(query.asked, f"more than {MAX_LINKS} symbolic links in a row in the image")
            query.dirs = None
        pending = redirected
    return {asked: results.get(asked) for asked in paths}


def _normal(path: str) -> str:
    """An absolute, normalized path; '..' cannot climb above the root (as inside the image)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def _member_path(name: str) -> str | None:
    """A member name as an absolute path; None for one with '..' in it (the engine refuses those)."""
    parts = [part for part in name.split("/") if part and part != "."]
    return None if ".." in parts else "/" + "/".join(parts)


def _interesting(queries: list[_Query]) -> tuple[set[str], set[str]]:
    """(names whose entries decide the queries, the subset whose data may be wanted)."""
    names: set[str] = {"/" + _OPAQUE}
    data: set[str] = set()
    for query in queries:
        parts = query.parts()
        current = ""
        for part in parts:
            names.add(f"{current}/{_WHITEOUT}{part}")
            current = f"{current}/{part}"
            names.add(current)
            names.add(f"{current}/{_OPAQUE}")
        if query.want:
            data.add(query.path)
    return names, data


def _scan_layer(layer: Callable[[], Iterator[bytes]], queries: list[_Query], limit: int,
                which: str) -> dict[str, _Fact]:
    names, wanted = _interesting(queries)
    facts: dict[str, _Fact] = {}
    source = LayerStream(layer())
    try:
        for entry in tar_entries(source):
            path = _member_path(entry.name)
            if path is None or path not in names:
                continue
            data = None
            if entry.kind == "file" and path in wanted and entry.size <= limit:
                data = source.read(entry.size)
                if len(data) < entry.size:
                    raise TarFormatError(f"ends inside the data of {entry.name[:100]!r} (cut short?)")
            facts[path] = _Fact(entry.kind, entry.size, entry.linkname, data)
        source.drain()
    except TarFormatError as exc:
        raise ImageFileError(which, f"not a readable tar layer: it {exc}") from None
    return facts


def _apply(query: _Query, facts: dict[str, _Fact], limit: int) -> Found | None | str:
    """What one layer says about a query: ``"open"`` (look lower), ``"redirect"`` (a link: the
    query's path was changed, start again from the top), or the answer."""
    parts = query.parts()
    dirs = query.dirs if query.dirs is not None else set()
    query.dirs = dirs
    current = ""
    for index, part in enumerate(parts):
        parent, current = current, f"{current}/{part}"
        if f"{parent}/{_WHITEOUT}{part}" in facts:
            return None
        fact = facts.get(current)
        last = index == len(parts) - 1
        if fact is None:
            continue
        if fact.kind == "dir":
            if last:
                return None
            dirs.add(current)
            continue
        if current in dirs:  # a higher layer replaced this with a directory: nothing below is seen
            return None
        rest = "/".join(parts[index + 1:])
        if fact.kind == "symlink":
            base = posixpath.dirname(current) if not fact.linkname.startswith("/") else ""
            query.path = _normal(posixpath.join("/" + base, fact.linkname, rest))
            return "redirect"
        if fact.kind == "hardlink":
            query.path = _normal(posixpath.join("/" + fact.linkname, rest))
            return "redirect"
        if fact.kind == "file" and last:
            data = fact.data if query.want and fact.size <= limit else None
            return Found(current, fact.size, data)
        return None  # a device, or a file where a directory would have to be
    for depth in range(len(parts)):  # an opaque directory hides every lower layer below it
        if "/".join([""] + parts[:depth]) + f"/{_OPAQUE}" in facts:
            return None
    if not parts:
        return None  # the root is a directory
    return "open"
