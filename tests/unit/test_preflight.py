"""Preflight: the figures (layers the engine lacks, unpacked estimate, margins), the verdict per
filesystem (places on one device summed), the one-line refusal, free space measured on real
size-limited tmpfs mounts, and the progress bar's total. No engine: a stub answers its two calls."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from osctl.adapters import fsutil
from osctl.cli import progress as progress_mod
from osctl.cli import render
from osctl.domain import preflight as pf
from osctl.domain.settings import Settings
from osctl.domain.store import Store
from osctl.errors import ExitCode, SpaceError
from osctl.models.engine import PullProgress
from osctl.operations.preflight import measure, preflight
from tests.support.store_records import store_version

MIB = 1 << 20


def diff(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"diff {n}".encode()).hexdigest()


def blob(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"blob {n}".encode()).hexdigest()


def image(name: str, *layers: tuple[int, int], unpacked: int | None = None) -> pf.ImageNeed:
    """An image whose layers are (n, compressed size): blob n with diff n."""
    return pf.ImageNeed(name, tuple((blob(n), size, diff(n)) for n, size in layers), unpacked)


# ---------------------------------------------------------------- the figures

def test_chain_ids_follow_the_oci_definition() -> None:
    first = diff(1)
    second = "sha256:" + hashlib.sha256(f"{first} {diff(2)}".encode()).hexdigest()
    third = "sha256:" + hashlib.sha256(f"{second} {diff(3)}".encode()).hexdigest()
    assert pf.chain_ids([diff(1), diff(2), diff(3)]) == [first, second, third]
    assert pf.chain_ids([]) == []


def test_layers_come_as_triples_and_estimate_by_media_type() -> None:
    img = image("a", (1, 100))
    assert isinstance(img.layers[0], pf.Layer) and img.layers[0].size == 100
    assert img.layers[0].unpacked_estimate == 100 * pf.EXPANSION  # a registry's usual layer is gzip
    plain = pf.Layer(blob(2), 100, diff(2), "application/vnd.oci.image.layer.v1.tar")
    assert not plain.compressed and plain.unpacked_estimate == 100
    zstd = pf.Layer(blob(3), 100, diff(3), "application/vnd.oci.image.layer.v1.tar+zstd")
    assert zstd.compressed


def test_only_layers_the_engine_lacks_count() -> None:
    img = image("os", (1, 1000), (2, 2000), (3, 4000))
    present = set(pf.chain_ids([diff(1), diff(2)]))
    assert pf.engine_need([img], present) == (4000, 4000 * pf.EXPANSION)
    assert pf.engine_need([img], set(pf.chain_ids([diff(1), diff(2), diff(3)]))) == (0, 0)
    assert pf.engine_need([img], set()) == (7000, 7000 * pf.EXPANSION)


def test_the_same_diff_on_another_base_is_a_layer_to_fetch() -> None:
    """The engine stores a layer per ChainID: diff 2 over diff 9 is not diff 2 over diff 1."""
    present = set(pf.chain_ids([diff(9), diff(2)]))
    assert pf.engine_need([image("os", (1, 10), (2, 20))], present)[0] == 30


def test_a_layer_shared_by_two_images_counts_once() -> None:
    os_image = image("os", (1, 1000), (2, 2000))
    service = image("svc", (1, 1000), (2, 2000), (5, 300))
    assert pf.engine_need([os_image, service], set())[0] == 3300


def test_an_unknown_diff_id_counts_it_and_everything_above() -> None:
    layers = ((blob(1), 10, diff(1)), (blob(2), 20, ""), (blob(3), 40, diff(3)))
    img = pf.ImageNeed("os", layers)
    present = set(pf.chain_ids([diff(1), diff(2), diff(3)]))
    assert pf.engine_need([img], present)[0] == 60
    assert pf.engine_need([img, img], present)[0] == 120, "nothing says the unknown ones are shared"


def test_a_declared_unpacked_size_replaces_the_estimate() -> None:
    img = image("os", (1, 1000), (2, 3000), unpacked=10_000)
    assert pf.engine_need([img], set()) == (4000, 10_000)
    present = set(pf.chain_ids([diff(1)]))
    assert pf.engine_need([img], present) == (3000, 7500), "the missing layers' share of it"


def test_margin_has_a_floor_a_share_and_a_cap() -> None:
    assert pf.margin(1 << 30) == 32 * MIB
    assert pf.margin(100 * MIB) == 10 * MIB, "never more than a tenth of a small filesystem"
    assert pf.margin(10 << 30) == pf.math.ceil((10 << 30) * 0.01)
    assert pf.margin(1 << 42) == 1 << 30
    assert pf.margin(100 * MIB, floor=pf.ESP_MARGIN_FLOOR) == 1 * MIB
    assert pf.margin(40 * MIB) == 4 * MIB, "a small filesystem keeps a tenth, not most of itself"


def test_esp_need_counts_whole_clusters_and_the_slack() -> None:
    assert pf.esp_need(0) == 0
    assert pf.esp_need(1) == 4096 + 2 * 4096 + 64 * 1024


@pytest.mark.parametrize(("size", "text"), [(512 * 1024, "512.0 KiB"), (int(80.2 * MIB), "80.2 MiB"),
                                            (5 << 30, "5.00 GiB"), (int(1.25 * (1 << 30)), "1.25 GiB")])
def test_sizes_are_said_in_binary_units(size: int, text: str) -> None:
    assert pf.human(size) == text


# ---------------------------------------------------------------- the verdict

def place(name: str, need: int, free: int, device: int, margin: int = 32 * MIB, path: str = "/x") -> pf.PlaceNeed:
    return pf.PlaceNeed(name, path, need, free, margin, device)


def test_a_shortfall_names_the_place_both_numbers_and_the_hint() -> None:
    with pytest.raises(SpaceError) as caught:
        pf.check([place("host root", 88 * MIB, int(80.2 * MIB), 1)], subject="v1.6", keep_hint=2)
    err = caught.value
    assert err.exit_code == ExitCode.NO_SPACE == 8
    assert str(err) == ("not enough space for v1.6 on the host root (/x): needs 120.0 MiB "
                        "(incl. a 32.0 MiB margin), 80.2 MiB free")
    assert err.hint == "free space there, e.g. osctl prune --keep 2 removes the oldest stored versions"
    assert "\n" not in str(err)


def test_the_hint_says_n_when_no_number_helps() -> None:
    with pytest.raises(SpaceError) as caught:
        pf.check([place("host root", 100 * MIB, MIB, 1)])
    assert "osctl prune --keep N" in (caught.value.hint or "")
    assert "for the download on" in str(caught.value)


def test_places_on_one_device_are_summed_with_one_margin() -> None:
    root, esp = place("host root", 40 * MIB, 100 * MIB, 7, path="/r"), place("ESP", 40 * MIB, 100 * MIB, 7,
                                                                             margin=MIB, path="/r/boot")
    pf.check([root])
    pf.check([esp])
    with pytest.raises(SpaceError) as caught:
        pf.check([root, esp], subject="v1.6")
    assert str(caught.value) == ("not enough space for v1.6 on the host root (/r) and the ESP (/r/boot): "
                                 "needs 112.0 MiB (incl. a 32.0 MiB margin), 100.0 MiB free")
    pf.check([root, place("ESP", 40 * MIB, 100 * MIB, 8, margin=MIB)])  # another device: each fits


def test_every_short_filesystem_is_named_in_the_one_line() -> None:
    with pytest.raises(SpaceError) as caught:
        pf.check([place("engine data root", 500 * MIB, 10 * MIB, 1, path="/var/lib/docker"),
                  place("host root", 1 * MIB, 100 * MIB, 2),
                  place("ESP", 5 * MIB, 2 * MIB, 3, margin=MIB, path="/boot")])
    text = str(caught.value)
    assert "the engine data root (/var/lib/docker): needs 532.0 MiB" in text
    assert "; and on the ESP (/boot): needs 6.0 MiB (incl. a 1.0 MiB margin), 2.0 MiB free" in text
    assert "host root" not in text


def test_nothing_to_write_is_never_refused() -> None:
    pf.check([place("engine data root", 0, 0, 1)])


def test_figures_too_close_for_the_units_are_said_in_bytes() -> None:
    free = 100 * MIB
    with pytest.raises(SpaceError) as caught:
        pf.check([place("host root", free - 32 * MIB + 1000, free, 1)])
    assert f"({free + 1000} bytes)" in str(caught.value) and f"({free} bytes)" in str(caught.value)


def test_the_report_gives_the_figures_for_the_plan() -> None:
    places = [place("engine data root", 50 * MIB, 10 * MIB, 1, path="/d"), place("host root", MIB, 1 << 30, 2)]
    report = pf.SpaceReport(places, 12 * MIB, 38 * MIB, MIB,
                            [pf.Skipped("ESP", "/e", "why not")], subject="v1.6", keep_hint=3)
    data = report.as_dict()
    assert data["download"] == 12 * MIB and data["unpack_estimate"] == 38 * MIB and data["fits"] is False
    assert [(p["place"], p["fits"]) for p in data["places"]] == [("engine data root", False), ("host root", True)]
    assert data["skipped"] == [{"place": "ESP", "path": "/e", "why": "why not"}]
    lines = report.lines()
    assert lines[0] == "to download: 12.0 MiB (about 38.0 MiB unpacked), boot files: 1.0 MiB"
    assert "the engine data root (/d): needs 82.0 MiB (incl. a 32.0 MiB margin), 10.0 MiB free: DOES NOT FIT" in lines
    assert lines[-1] == "the ESP (/e): not checked, why not"
    with pytest.raises(SpaceError) as caught:
        report.check()
    assert "prune --keep 3" in (caught.value.hint or "")


# ---------------------------------------------------------------- real filesystems

@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """``make(name, MiB)``: a tmpfs of that size, unmounted afterwards (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def make(name: str, mib: int) -> Path:
        target = tmp_path / name
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_free_space_measures_the_filesystem(tmpfs: Callable[[str, int], Path], tmp_path: Path) -> None:
    fs = tmpfs("fs", 8)
    space = fsutil.free_space(fs)
    assert space.size == 8 * MIB and 7 * MIB < space.free <= 8 * MIB
    assert space.mount == str(fs) and space.path == str(fs)
    assert space.device != fsutil.free_space(tmp_path).device
    (fs / "two").write_bytes(b"x" * (2 * MIB))
    assert fsutil.free_space(fs).free <= space.free - 2 * MIB


def test_free_space_of_a_path_to_come_is_its_nearest_folder(tmpfs: Callable[[str, int], Path]) -> None:
    fs = tmpfs("fs", 8)
    space = fsutil.free_space(fs / "var/lib/osctl/store")
    assert space.path == str(fs) and space.size == 8 * MIB
    assert not (fs / "var").exists(), "measuring creates nothing"


class StubEngine:
    """The two questions preflight asks of the engine."""

    def __init__(self, data_root: str, chains: set[str] | None = None, address: str = "unix:///run/x.sock") -> None:
        self.address, self._root, self._chains = address, data_root, chains or set()
        self.asked = 0

    def data_root(self) -> str:
        return self._root

    def layer_chains(self) -> set[str]:
        self.asked += 1
        return self._chains


def settings_for(root: Path) -> Settings:
    return Settings(root_option=str(root), host_id_option="h1", env={})


def test_a_download_too_large_for_the_engine_is_refused_before_anything(tmpfs: Callable[[str, int], Path]) -> None:
    root, data = tmpfs("root", 64), tmpfs("docker", 8)
    engine = StubEngine(str(data))
    big = image("os", (1, 3 * MIB))  # 3 MiB + 9 MiB unpacked > 8 MiB
    with pytest.raises(SpaceError) as caught:
        preflight(settings_for(root), engine, [big], MIB, subject="v1.6")  # type: ignore[arg-type]
    text = str(caught.value)
    assert text.startswith(f"not enough space for v1.6 on the engine data root ({data}): needs 12.8 MiB "
                           "(incl. a 819.2 KiB margin), ")
    assert text.endswith(" MiB free") and "host root" not in text
    assert sorted(p.name for p in root.iterdir()) == [] and list(data.iterdir()) == []


def test_layers_the_engine_has_need_no_room(tmpfs: Callable[[str, int], Path]) -> None:
    root, data = tmpfs("root", 64), tmpfs("docker", 8)
    big = image("os", (1, 3 * MIB))
    engine = StubEngine(str(data), set(pf.chain_ids([diff(1)])))
    report = preflight(settings_for(root), engine, [big], MIB)  # type: ignore[arg-type]
    assert report.download == 0 and [p.place for p in report.places] == ["host root", "ESP"]


def test_the_host_root_and_its_esp_share_one_filesystem(tmpfs: Callable[[str, int], Path]) -> None:
    """Default ESP <root>/boot: 20 MiB of boot files fit a 44 MiB root once, not twice plus a margin."""
    root = tmpfs("root", 44)
    settings = settings_for(root)
    report = measure(settings, StubEngine("/nonexistent"), [], 20 * MIB)  # type: ignore[arg-type]
    assert [(p.place, p.path) for p in report.places] == [("host root", str(root)), ("ESP", str(root / "boot"))]
    assert report.places[0].device == report.places[1].device
    with pytest.raises(SpaceError, match=rf"on the host root \({root}\) and the ESP \({root}/boot\): needs 44\.5 MiB \(incl\. a 4\.4 MiB margin\)"):
        report.check()
    preflight(settings, StubEngine("/nonexistent"), [], 20 * MIB, esp_bytes=0)  # type: ignore[arg-type]


def test_a_separate_esp_is_checked_on_its_own(tmpfs: Callable[[str, int], Path]) -> None:
    root, boot = tmpfs("root", 128), tmpfs("esp", 16)
    (root / "etc/osctl").mkdir(parents=True)
    (root / "etc/osctl/config.yaml").write_text(f"boot:\n  esp: {boot}\n")
    settings = settings_for(root)
    preflight(settings, StubEngine("/nonexistent"), [], 12 * MIB)  # type: ignore[arg-type]
    with pytest.raises(SpaceError, match=rf"on the ESP \({boot}\): needs 16\.1 MiB \(incl\. a 1\.0 MiB margin\)"):
        preflight(settings, StubEngine("/nonexistent"), [], 15 * MIB)  # type: ignore[arg-type]


def test_an_engine_elsewhere_is_skipped_and_said(tmpfs: Callable[[str, int], Path]) -> None:
    root, data = tmpfs("root", 64), tmpfs("docker", 8)
    big = [image("os", (1, 30 * MIB))]
    remote = measure(settings_for(root), StubEngine(str(data), address="tcp://10.0.0.1:2376"), big, MIB)  # type: ignore[arg-type]
    assert remote.fits and remote.download == 30 * MIB
    assert remote.skipped == [pf.Skipped("engine data root", str(data), "the engine at tcp://10.0.0.1:2376 is on another machine")]
    hidden = measure(settings_for(root), StubEngine("/no/such/docker"), big, MIB)  # type: ignore[arg-type]
    assert hidden.skipped[0].why == "that folder is not on this machine" and hidden.fits
    assert "engine data root (/no/such/docker): not checked" in hidden.lines()[-1]


def test_nothing_to_fetch_asks_the_engine_nothing(tmp_path: Path) -> None:
    engine = StubEngine("/nonexistent")
    report = measure(settings_for(tmp_path), engine, [], 0)  # type: ignore[arg-type]
    assert engine.asked == 0 and report.places == [] and report.fits


def test_the_hint_removes_the_oldest_stored_version(tmpfs: Callable[[str, int], Path]) -> None:
    root = tmpfs("root", 64)
    for version in ("v1.3", "v1.4", "v1.5"):
        store_version(Store(root), version)
    with pytest.raises(SpaceError) as caught:
        preflight(settings_for(root), StubEngine("/nonexistent"), [], 40 * MIB)  # type: ignore[arg-type]
    assert "osctl prune --keep 2 removes" in (caught.value.hint or "")


# ---------------------------------------------------------------- the progress bar

def event(layer: str, status: str, current: int = 0, total: int = 0, image: str = "r/os@sha256:1") -> PullProgress:
    return PullProgress(image, layer, status, current, total)


def test_totals_count_downloads_once_and_not_what_exists() -> None:
    totals = progress_mod.Totals(300)
    for e in (event("a", "Downloading", 50, 100), event("a", "Downloading", 100, 100),
              event("a", "Extracting", 30, 100), event("b", "Already exists"),
              event("c", "Downloading", 20, 200), event("a", "Pull complete"),
              event("a", "Downloading", 100, 100, image="r/svc:1")):
        totals.add(e)
    assert totals.done == 120
    totals.add(event("c", "Download complete"))
    assert totals.done == 300


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(render, "stderr", Console(file=out, force_terminal=True, width=100))
    return out


def test_old_callers_get_per_image_bars(terminal: io.StringIO) -> None:
    with progress_mod.pull_bars(True) as update:
        assert update is not None
        update(event("a", "Downloading", 50, 100))
    assert "os@sha256:1" in terminal.getvalue() and progress_mod.TOTAL_LABEL not in terminal.getvalue()
    with progress_mod.pull_bars(False) as quiet:
        assert quiet is None


def test_the_bar_shows_bytes_of_the_total(terminal: io.StringIO) -> None:
    report = pf.SpaceReport([], 3 * MIB, 9 * MIB, 0)
    with progress_mod.pull_bars(True) as update:
        assert update is not None
        update(report)
        update(event("a", "Downloading", MIB, 2 * MIB))
    assert progress_mod.TOTAL_LABEL in terminal.getvalue() and "3.1 MB" in terminal.getvalue()
    with progress_mod.pull_bars(True, total=5 * MIB):
        pass
    assert "5.2/5.2 MB" in terminal.getvalue(), "a pull that ended well shows all of it"


def test_an_image_need_from_its_layers_and_diff_ids() -> None:
    from osctl.models.refs import Digest
    from osctl.models.registry import Descriptor

    gzip, plain = "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar"
    layers = [Descriptor(Digest(blob(1)), 1000, gzip), Descriptor(Digest(blob(2)), 50, plain)]
    need = pf.ImageNeed.of("os", layers, [diff(1), diff(2)])
    assert need.layers == (pf.Layer(blob(1), 1000, diff(1), gzip), pf.Layer(blob(2), 50, diff(2), plain))
    assert pf.engine_need([need], set(pf.chain_ids([diff(1)]))) == (50, 50)
    unlined = pf.ImageNeed.of("os", layers, [])
    assert [layer.diff_id for layer in unlined.layers] == ["", ""]
    assert pf.engine_need([unlined], set(pf.chain_ids([diff(1), diff(2)])))[0] == 1050, "unknown: all missing"
