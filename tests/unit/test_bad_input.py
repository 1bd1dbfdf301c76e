"""Bad input everywhere: arbitrary versions and mutated manifests never crash osctl.

No engine and no registry: the image is a loopback port where nothing listens. Each test is
listed in the run's fault summary (the ``fault`` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osctl.cli.main import main
from osctl.models.version import try_parse
from tests.support.faults import FaultRecord

MANIFEST = (Path(__file__).resolve().parents[2] / "system-images/versions/v1.5/release.yaml").read_text()
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str]:
    code, _, err = run_both(capsys, root, *args)
    return code, err


def run_both(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(["--root", str(root), "--host-id", "fuzz", "--image", "127.0.0.1:1/osctl/os", *args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


versions = st.one_of(st.text(max_size=40), st.from_regex(r"v?[0-9.]{0,8}[-+]?[a-z0-9.]{0,6}", fullmatch=True))


@pytest.mark.parametrize("command", [("pull",), ("upgrade", "--to"), ("pin",)])
def test_arbitrary_versions(fault: Callable[[str], FaultRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            command: tuple[str, ...]) -> None:
    fault(f"arbitrary version strings to osctl {' '.join(command)}")

    @SETTINGS
    @given(version=versions)
    def check(version: str) -> None:
        if try_parse(version) is not None or version.startswith("-") or not version or "\x00" in version:
            return  # a version by osctl's own rule (needs the registry), or an option/argv quirk
        code, err = run(capsys, tmp_path, *command, version)
        assert code == 2, (version, code, err)
        assert "Traceback" not in err and err.count("error:") == 1, err

    check()


def mutate(data: st.DataObject) -> str:
    return mutate_lines(MANIFEST, data)


def mutate_lines(text: str, data: st.DataObject) -> str:
    """Drop, duplicate, replace, cut, indent or garble a few lines of a YAML document."""
    lines = text.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "replace", "truncate", "indent", "junk"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = data.draw(st.text(max_size=30)) + "\n"
        elif op == "truncate":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        elif op == "indent":
            lines[i] = " " + lines[i]
        else:
            lines[i] = lines[i].replace(":", data.draw(st.sampled_from([": [", ": {", "::", ": !!python/object", ": &a"])), 1)
        if not lines:
            break
    return "".join(lines)


def test_mutated_manifests(fault: Callable[[str], FaultRecord], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    fault("mutated release.yaml to osctl image validate")
    target = tmp_path / "release.yaml"

    @SETTINGS
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        target.write_text(mutate(data), encoding="utf-8", errors="surrogatepass")
        code, err = run(capsys, tmp_path, "image", "validate", str(target))
        assert code in (0, 2), (code, err)
        assert "Traceback" not in err

    check()


USER_DATA = (Path(__file__).resolve().parents[2] / "examples/user-data/extra-service.yaml").read_text()


def test_mutated_user_data(fault: Callable[[str], FaultRecord], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    fault("mutated #cloud-config to osctl cloud-init validate/show")
    target = tmp_path / "user-data"

    @SETTINGS
    @given(data=st.data(), command=st.sampled_from(["validate", "show"]))
    def check(data: st.DataObject, command: str) -> None:
        text = mutate_lines(USER_DATA, data)
        target.write_text(text, encoding="utf-8", errors="surrogatepass")
        code, out, err = run_both(capsys, tmp_path, "cloud-init", command, str(target))
        assert "Traceback" not in err + out, err
        if command == "validate":  # a checker: 0 valid, 1 errors (listed with line and column), 2 warnings
            assert code in (0, 1, 2), (code, err, text)
            assert code != 1 or f"{target}:" in out, out
        else:
            assert code in (0, 2), (code, err, text)
            assert code == 0 or len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err

    check()


COMMANDS = [["list-versions"], ["status"], ["pull"], ["upgrade"], ["downgrade"], ["rollback"], ["pin"], ["unpin"],
            ["prune"], ["boot"], ["service", "list"], ["service", "logs"], ["service", "up"], ["service", "down"],
            ["service", "restart"], ["image", "validate"], ["cloud-init", "show"], ["cloud-init", "validate"],
            ["cloud-init", "apply"], ["service"], ["image"], ["cloud-init"]]
WORDS = ["--to", "--json", "--offline", "--all", "--keep", "--dry-run", "--yes", "--stage", "--force", "--no-pull",
         "--health-timeout", "--quiet", "--strict", "v1.5", "v1.3", "v2", "-1", "0", "3", "1e9", "nan", "syslog",
         "ntp", "--", "-", "/dev/null", "/nonexistent", "."]


def test_arbitrary_command_lines(fault: Callable[[str], FaultRecord], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Any command line, with no engine and no registry: exit 0 or one error line, never a traceback."""
    fault("arbitrary command lines (no engine, no registry)")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    token = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=12))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(command=st.sampled_from(COMMANDS), args=st.lists(token, max_size=4))
    def check(command: list[str], args: list[str]) -> None:
        if any("\x00" in a for a in args):
            return  # argv cannot hold NUL
        code, err = run(capsys, tmp_path, *command, *args)
        assert "Traceback" not in err and "internal error" not in err, (command, args, err)
        assert code == 0 or len([line for line in err.splitlines() if line.startswith("error:")]) == 1 \
            or err.startswith("Usage:"), (command, args, code, err)

    check()
