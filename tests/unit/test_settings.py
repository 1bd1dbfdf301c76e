"""Settings: option beats environment beats settings file beats default."""

from __future__ import annotations

from pathlib import Path

import pytest

from osctl.domain.settings import Settings
from osctl.errors import ConfigError, UsageError


def write_config(root: Path, text: str) -> None:
    (root / "etc/osctl").mkdir(parents=True, exist_ok=True)
    (root / "etc/osctl/config.yaml").write_text(text)


def test_precedence_option_env_file(tmp_path: Path) -> None:
    write_config(tmp_path, "host_id: from-file\nimage: 127.0.0.1:5000/file/os\n")
    env = {"OSCTL_ROOT": str(tmp_path), "OSCTL_HOST_ID": "from-env"}
    assert Settings(env=env).host_id == "from-env"
    assert Settings(host_id_option="from-opt", env=env).host_id == "from-opt"
    assert Settings(env={"OSCTL_ROOT": str(tmp_path)}).host_id == "from-file"
    assert Settings(env=env).image == "127.0.0.1:5000/file/os"
    assert Settings(image_option="127.0.0.1:5000/opt/os", env=env).image == "127.0.0.1:5000/opt/os"
    assert Settings(env=env).source_of("host_id") == "environment"
    assert Settings(env=env).source_of("image") == "settings file"


def test_machine_id_is_created_once_and_then_kept(tmp_path: Path) -> None:
    first = Settings(root_option=str(tmp_path), env={}).host_id
    assert (tmp_path / "etc/machine-id").read_text().strip() == first
    assert Settings(root_option=str(tmp_path), env={}).host_id == first
    assert len(first) == 32


def test_existing_machine_id_is_used(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("0123abcd\n")
    assert Settings(root_option=str(tmp_path), env={}).host_id == "0123abcd"


def test_bad_settings_file_names_file_key_and_line(tmp_path: Path) -> None:
    write_config(tmp_path, "image: 127.0.0.1:5000/osctl/os\nimgae: x\n")
    with pytest.raises(ConfigError) as caught:
        Settings(root_option=str(tmp_path), env={}).image  # noqa: B018
    assert f"{tmp_path}/etc/osctl/config.yaml:2:1: imgae: unknown key (did you mean 'image'?)" in caught.value.message


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"host_id_option": "has space"}, "--host-id: 'has space' is not a host id"),
    ({"image_option": "127.0.0.1:5000/osctl/os:v1.4"}, "--image: '127.0.0.1:5000/osctl/os:v1.4' is not an image repository"),
])
def test_bad_option_values_are_explained(tmp_path: Path, kwargs: dict[str, str], words: str) -> None:
    settings = Settings(root_option=str(tmp_path), env={}, **kwargs)
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        settings.host_id if "host_id_option" in kwargs else settings.image  # noqa: B018


def test_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        Settings(root_option=str(tmp_path / "nope"), env={}).root  # noqa: B018


def test_require_image_says_how_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        Settings(root_option=str(tmp_path), env={}).require_image()
    assert "OSCTL_IMAGE" in (caught.value.hint or "")
