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


# -- fleet: etcd endpoints and group ------------------------------------------------------------
def test_fleet_precedence_option_env_file_default(tmp_path: Path) -> None:
    assert Settings(root_option=str(tmp_path), env={}).etcd_endpoints == ()
    assert Settings(root_option=str(tmp_path), env={}).group == "default"
    assert Settings(root_option=str(tmp_path), env={}).source_of("etcd_endpoints") == "unset"
    assert Settings(root_option=str(tmp_path), env={}).source_of("group") == "default"
    write_config(tmp_path, "fleet:\n  etcd: [http://10.0.0.1:2379, http://10.0.0.2:2379]\n  group: file-group\n")
    from_file = Settings(root_option=str(tmp_path), env={})
    assert from_file.etcd_endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert from_file.group == "file-group"
    assert from_file.source_of("etcd_endpoints") == from_file.source_of("group") == "settings file"
    env = {"OSCTL_ETCD": "http://127.0.0.1:2379, http://127.0.0.1:22379/,", "OSCTL_GROUP": "env-group"}
    from_env = Settings(root_option=str(tmp_path), env=env)
    assert from_env.etcd_endpoints == ("http://127.0.0.1:2379", "http://127.0.0.1:22379")
    assert from_env.group == "env-group"
    assert from_env.source_of("etcd_endpoints") == from_env.source_of("group") == "environment"
    from_opt = Settings(root_option=str(tmp_path), env=env, etcd_option=("http://a:2379", "http://b:2379,http://a:2379"),
                        group_option="opt-group")
    assert from_opt.etcd_endpoints == ("http://a:2379", "http://b:2379")
    assert from_opt.group == "opt-group"
    assert from_opt.source_of("etcd_endpoints") == from_opt.source_of("group") == "option"
    assert Settings(root_option=str(tmp_path), env={}, etcd_option="http://c:2379").etcd_endpoints == ("http://c:2379",)


def test_group_given_only_in_the_file_keeps_the_default_source(tmp_path: Path) -> None:
    write_config(tmp_path, "fleet:\n  etcd: [http://10.0.0.1:2379]\n")
    settings = Settings(root_option=str(tmp_path), env={})
    assert (settings.group, settings.source_of("group")) == ("default", "default")


@pytest.mark.parametrize(("kwargs", "env", "words"), [
    ({"etcd_option": "10.0.0.1:2379"}, {}, "--etcd: '10.0.0.1:2379' is not an etcd endpoint"),
    ({}, {"OSCTL_ETCD": "http://ok:2379,ftp://x"}, "OSCTL_ETCD: 'ftp://x' is not an etcd endpoint"),
    ({}, {"OSCTL_ETCD": " , "}, "OSCTL_ETCD: ' , ' names no etcd endpoint"),
    ({"group_option": "a/b"}, {}, "--group: 'a/b' is not a fleet group name"),
    ({}, {"OSCTL_GROUP": "has space"}, "OSCTL_GROUP: 'has space' is not a fleet group name"),
])
def test_bad_fleet_values_are_one_line(tmp_path: Path, kwargs: dict[str, str], env: dict[str, str],
                                       words: str) -> None:
    settings = Settings(root_option=str(tmp_path), env=env, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UsageError) as caught:
        settings.group if "group" in words else settings.etcd_endpoints  # noqa: B018
    assert caught.value.message.startswith(words) and "\n" not in caught.value.message


def test_bad_fleet_values_in_the_file_name_key_and_line(tmp_path: Path) -> None:
    write_config(tmp_path, "fleet:\n  group: web\n  etcd: [http://10.0.0.1:2379, 10.0.0.2]\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3:\d+: fleet.etcd\[1\]: '10.0.0.2' is not an etcd endpoint"):
        Settings(root_option=str(tmp_path), env={}).etcd_endpoints  # noqa: B018


def test_require_etcd_says_how_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        Settings(root_option=str(tmp_path), env={}).require_etcd()
    assert "OSCTL_ETCD" in (caught.value.hint or "") and "--etcd" in (caught.value.hint or "")
    assert Settings(root_option=str(tmp_path), env={"OSCTL_ETCD": "http://e:2379"}).require_etcd() == ("http://e:2379",)
