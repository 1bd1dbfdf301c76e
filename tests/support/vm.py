"""Boot a folder as an EFI system partition in QEMU, the way a new user would try osctl's ESP.

No root-only tricks and no loop mounts: each ``VM.boot()``

1. builds a FAT32 image from the folder with mtools (``truncate``, ``mkfs.vfat -F 32``, ``mmd``,
   ``mcopy -s``), adding ``EFI/BOOT/BOOTX64.EFI`` = the cached systemd-boot
   (``<repo>/.run/boot/systemd-bootx64.efi``), so OVMF boots it as removable media; the folder
   itself is not changed by this;
2. runs ``qemu-system-x86_64 -accel tcg`` with OVMF (code read-only, a copy of the variable
   store kept per ``VM`` object, so EFI variables persist from one boot to the next as on a
   machine) and the image as a virtio disk, with a wall-clock timeout: a timeout kills the
   process group and fails with the serial console's tail;
3. parses the serial console: the ``osctl-boot:`` lines the shipped initrds print
   (``version=<v> entry=<LoaderEntrySelected or -> cmdline=<osctl.version= or ->``, then
   ``poweroff`` or ``panic``) and the kernel's panic line, into a ``Boot``;
4. copies the loader's writes back into the folder as a mounted ESP would show them:
   ``loader/entries/`` of the folder is made equal to the image's (systemd-boot renames a
   counting entry ``osctl-v1.6+2.conf`` -> ``osctl-v1.6+1-1.conf`` at each try; it never changes
   an entry's contents);
5. writes what the booted system would show to the files osctl reads through its settings
   (``boot.efivars``, ``boot.kernel_cmdline``): ``LoaderEntrySelected-<loader GUID>`` in the
   efivars folder (4 bytes of attributes, then the entry id in UTF-16LE, NUL-terminated) and a
   kernel command line, both from what the VM printed. When the boot did not reach userspace
   (a panic, or no ``osctl-boot`` line), osctl never ran on it, so both files are removed.

``unavailable()`` says why the harness cannot run here (``None`` when it can), for skips.

Measured on the 2-core development machine (tcg, one vCPU, otherwise idle): a boot takes 12 to
15 s: about 4.5 s of OVMF until it starts the loader, about 6 s until the kernel runs (mostly
the kernel's xz decompressor, as slow under tcg in a direct ``-kernel`` boot), about 3 s of
kernel and initrd; one that panics about a second more (``panic=1``, then ``-no-reboot`` exits).
On a busy machine boots took up to 22 s. Building the image takes well under a second.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOT_CACHE = Path(os.environ.get("OSCTL_DEV_STATE") or REPO / ".run") / "boot"  # scripts/setup fills it (lib.sh)
LOADER_EFI = BOOT_CACHE / "systemd-bootx64.efi"
KERNEL = BOOT_CACHE / "kernel" / "vmlinuz"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
QEMU = "qemu-system-x86_64"
TOOLS = (QEMU, "mkfs.vfat", "mmd", "mcopy", "mdir", "mdel", "truncate")

LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"  # systemd-boot's vendor GUID (Boot Loader Interface)
ENTRY_SELECTED = f"LoaderEntrySelected-{LOADER_GUID}"
EFI_VARIABLE_ATTRIBUTES = bytes([0x06, 0, 0, 0])  # BOOTSERVICE_ACCESS | RUNTIME_ACCESS, as efivarfs shows them

ENTRIES = "loader/entries"
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}  # no complaints about an image without a partition table
_REPORT = re.compile(r"osctl-boot: version=(?P<version>\S+) entry=(?P<entry>\S+) cmdline=(?P<cmdline>\S+)")
_END = re.compile(r"osctl-boot: (?P<end>poweroff|panic)\b")
_KERNEL_PANIC = re.compile(r"Kernel panic - not syncing: .*")
_COUNTER = re.compile(r"^(?P<id>.+?)\+\d+(?:-\d+)?\.conf$")  # osctl-v1.6+1-1.conf -> osctl-v1.6


def unavailable() -> str | None:
    """Why the harness cannot run on this machine, or ``None`` when it can."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += [str(path) for path in (OVMF_CODE, OVMF_VARS, LOADER_EFI, KERNEL) if not path.is_file()]
    if missing:
        return (f"the VM boot harness needs {', '.join(missing)} (scripts/setup installs qemu-system-x86, ovmf, "
                f"mtools, dosfstools and fills {BOOT_CACHE})")
    return None


class VMError(AssertionError):
    """The VM did not do what a boot does: it timed out, or QEMU or mtools failed."""


@dataclass(frozen=True)
class Boot:
    """What one boot showed on the serial console."""

    version: str | None  # the version its initrd reports (None: userspace never reported)
    entry: str | None  # LoaderEntrySelected as the initrd read it (None: not set, or no report)
    cmdline_version: str | None  # osctl.version= on the kernel command line, as the initrd read it
    panicked: bool  # the initrd said ``panic`` or the kernel panicked
    powered_off: bool  # the initrd said ``poweroff``: userspace ran to the end
    panic_line: str | None  # the kernel's "Kernel panic - not syncing: ..." line, if any
    seconds: float  # QEMU's wall-clock run time
    serial: str  # the whole serial console (OVMF, the loader, the kernel, the initrd)
    entries: tuple[str, ...] = field(default=())  # loader/entries/ in the image after the boot

    @property
    def reached_userspace(self) -> bool:
        """True when the booted system ran userspace to the end (what osctl needs to run)."""
        return self.powered_off and not self.panicked and self.version is not None

    def tail(self, lines: int = 40) -> str:
        return tail(self.serial, lines)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def parse_serial(serial: str) -> tuple[dict[str, str | None], bool, bool, str | None]:
    """(the report: version, entry, cmdline_version; panicked; powered_off; the kernel's panic line)."""
    report: dict[str, str | None] = {"version": None, "entry": None, "cmdline_version": None}
    found = _REPORT.search(serial)
    if found:
        report = {key: (None if value == "-" else value)
                  for key, value in (("version", found["version"]), ("entry", found["entry"]),
                                     ("cmdline_version", found["cmdline"]))}
    ends = {m["end"] for m in _END.finditer(serial)}
    panic_line = _KERNEL_PANIC.search(serial)
    panicked = "panic" in ends or panic_line is not None
    return report, panicked, "poweroff" in ends, panic_line[0].strip() if panic_line else None


def entry_selected_bytes(entry_id: str) -> bytes:
    """The efivarfs file of LoaderEntrySelected: the attributes, then UTF-16LE with a NUL."""
    return EFI_VARIABLE_ATTRIBUTES + (entry_id + "\0").encode("utf-16-le")


def _run(args: list[str], timeout: float = 60) -> str:
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **_MTOOLS_ENV})
    if proc.returncode != 0:
        raise VMError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


class VM:
    """One machine: an ESP folder, its own EFI variable store, and where osctl reads what booted.

    ``esp``: the folder to boot (osctl's ``boot.esp``). ``work``: a folder for the image, the
    variable store and the serial logs (one per boot, kept for reading after a failure).
    ``efivars`` / ``kernel_cmdline``: where to write what the booted system shows (osctl's
    ``boot.efivars`` folder and ``boot.kernel_cmdline`` file); ``None`` writes nothing.
    """

    def __init__(self, esp: Path, work: Path, *, efivars: Path | None = None, kernel_cmdline: Path | None = None,
                 timeout: float = 90, memory_mb: int = 512) -> None:
        self.esp, self.work = esp, work
        self.efivars, self.kernel_cmdline = efivars, kernel_cmdline
        self.timeout, self.memory_mb = timeout, memory_mb
        self.image = work / "esp.img"
        self.vars = work / "OVMF_VARS.fd"
        self.boots: list[Boot] = []
        self._qemu: subprocess.Popen[bytes] | None = None
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OVMF_VARS, self.vars)

    # ------------------------------------------------------------------ the image
    def build_image(self) -> None:
        """A FAT32 image holding the folder, and systemd-boot as the removable-media loader."""
        size = max(64 << 20, 2 * _size_of(self.esp) + (16 << 20))
        self.image.unlink(missing_ok=True)
        _run(["truncate", "-s", str(size), str(self.image)])
        _run(["mkfs.vfat", "-F", "32", "-n", "ESP", str(self.image)])
        img = ["-i", str(self.image)]
        top = sorted(str(p) for p in self.esp.iterdir())
        if top:
            _run(["mcopy", "-s", "-p", "-m", *img, *top, "::/"])
        for folder in ("::/EFI", "::/EFI/BOOT"):
            if not self._exists(folder):
                _run(["mmd", *img, folder])
        _run(["mcopy", "-o", *img, str(LOADER_EFI), "::/EFI/BOOT/BOOTX64.EFI"])

    def _exists(self, path: str) -> bool:
        return subprocess.run(["mdir", "-b", "-i", str(self.image), path], check=False, capture_output=True,
                              env={**os.environ, **_MTOOLS_ENV}, stdin=subprocess.DEVNULL).returncode == 0

    def image_entries(self) -> list[str]:
        """The file names under loader/entries/ in the image."""
        if not self._exists(f"::/{ENTRIES}"):
            return []
        listing = _run(["mdir", "-b", "-i", str(self.image), f"::/{ENTRIES}"])
        lines = [line.strip() for line in listing.splitlines()]
        return sorted(line.rsplit("/", 1)[-1] for line in lines if line and not line.endswith("/"))  # no folders

    def read_image_file(self, path: str) -> bytes:
        """One file of the image (``path`` relative to its root)."""
        target = self.work / "read.tmp"
        _run(["mcopy", "-n", "-o", "-i", str(self.image), f"::/{path}", str(target)])
        try:
            return target.read_bytes()
        finally:
            target.unlink(missing_ok=True)

    # ------------------------------------------------------------------ a boot
    def boot(self) -> Boot:
        """Build the image from the folder, boot it, mirror the loader's writes back, report."""
        self.build_image()
        serial = self.work / f"serial-{len(self.boots) + 1}.log"
        serial.unlink(missing_ok=True)
        args = [QEMU, "-accel", "tcg", "-m", str(self.memory_mb), "-nodefaults", "-display", "none",
                "-no-reboot", "-serial", f"file:{serial}",
                "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,file={self.vars}",
                "-drive", f"file={self.image},format=raw,if=virtio"]
        started = time.monotonic()
        proc = self._qemu = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise VMError(f"the VM did not power off within {self.timeout:g} s (boot {len(self.boots) + 1} of "
                          f"{self.esp}); serial console, last lines:\n{tail(_read(serial))}") from None
        self._qemu = None
        seconds = time.monotonic() - started
        text = _read(serial)
        if proc.returncode != 0:
            raise VMError(f"QEMU exited {proc.returncode}: {output.decode(errors='replace').strip()}\n"
                          f"serial console, last lines:\n{tail(text)}")
        report, panicked, powered_off, panic_line = parse_serial(text)
        self.mirror_entries()
        result = Boot(report["version"], report["entry"], report["cmdline_version"], panicked, powered_off,
                      panic_line, seconds, text, tuple(self.image_entries()))
        self.boots.append(result)
        self.write_booted_state(result)
        return result

    def close(self) -> None:
        """Kill QEMU's process group if a boot is still running (a timeout, an interrupted test)."""
        proc, self._qemu = self._qemu, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()

    # ------------------------------------------------------------------ back to the folder
    def mirror_entries(self) -> None:
        """Make the folder's loader/entries/ show what the image holds after the loader wrote.

        A name only in the folder whose counter the loader changed (same id before ``+``) is
        renamed to the image's name; other names only in the folder are removed; names only in
        the image are copied out. Contents are checked to be unchanged (the loader only renames).
        """
        folder = self.esp / ENTRIES
        in_image = set(self.image_entries())
        in_folder = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
        gone, new = sorted(in_folder - in_image), sorted(in_image - in_folder)
        for name in gone:
            renamed = [n for n in new if _entry_id(n) == _entry_id(name) and _COUNTER.match(n)]
            if len(renamed) == 1:
                os.rename(folder / name, folder / renamed[0])
                new.remove(renamed[0])
            else:
                (folder / name).unlink()
        for name in new:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(self.read_image_file(f"{ENTRIES}/{name}"))
        for name in sorted(in_image):
            if (folder / name).read_bytes() != self.read_image_file(f"{ENTRIES}/{name}"):
                raise VMError(f"the loader changed the contents of {ENTRIES}/{name}, not only its name")

    def write_booted_state(self, boot: Boot) -> None:
        """What osctl would read on the booted system: LoaderEntrySelected and /proc/cmdline."""
        selected = self.efivars / ENTRY_SELECTED if self.efivars is not None else None
        up = boot.reached_userspace
        if selected is not None:
            if up and boot.entry is not None:
                self.efivars.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
                selected.write_bytes(entry_selected_bytes(boot.entry))
            else:
                selected.unlink(missing_ok=True)
        if self.kernel_cmdline is not None:
            if up and boot.cmdline_version is not None:
                self.kernel_cmdline.parent.mkdir(parents=True, exist_ok=True)
                self.kernel_cmdline.write_text(self._cmdline(boot) + "\n")
            else:
                self.kernel_cmdline.unlink(missing_ok=True)

    def _cmdline(self, boot: Boot) -> str:
        """/proc/cmdline as systemd-boot 252 makes it from the entry it booted (observed):
        ``initrd=<path, backslashes>`` for each initrd line, then the entry's options. The entry
        is found by its id without the counter (the loader renamed it after reading it) and case; when it
        is not there or its options lack the ``osctl.version=`` the VM printed, just that word."""
        word = f"osctl.version={boot.cmdline_version}"
        folder = self.esp / ENTRIES
        wanted = _entry_id(boot.entry or "").lower()  # systemd-boot 252 reports entry ids lowercased
        named = [p for p in folder.glob("*.conf") if _entry_id(p.name).lower() == wanted]
        if len(named) != 1:
            return word
        initrds, options = [], ""
        for line in named[0].read_text().splitlines():
            key, value = [*line.split(None, 1), "", ""][:2]
            if key == "initrd":
                initrds.append("initrd=" + value.strip().replace("/", "\\"))
            elif key == "options":
                options = value.strip()
        if word not in options.split():
            return word
        return " ".join([*initrds, options])


def _entry_id(name: str) -> str:
    """An entry's id without its boot counter: osctl-v1.6+1-1.conf -> osctl-v1.6.conf."""
    found = _COUNTER.match(name)
    return f"{found['id']}.conf" if found else name


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace").replace("\r", "")
    except FileNotFoundError:
        return ""
