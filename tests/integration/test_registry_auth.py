"""The registry adapter against real Distribution registries.

The TLS registry with basic auth (``tls_registry``) checks credentials from DOCKER_CONFIG, the
certs.d CA and that the digest osctl resolves is the one the engine records when it pulls; the
plain registry on 127.0.0.1:5000 checks tags and digests against the registry's own answers.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import docker
import pytest

from osctl.adapters.registry import Registry
from osctl.errors import ExitCode, NotFoundError, OsctlError, RegistryAuthError, RegistryUnavailable
from tests.support.hosts import OS_REPO, REGISTRY, Host, registry_tags
from tests.support.tls_registry import TlsRegistry, docker_config_for, make_ca

V2 = "application/vnd.docker.distribution.manifest.v2+json"
SHIPPED = ["v1.3", "v1.4", "v1.5", "v1.6"]


@pytest.fixture(scope="module")
def pushed(tls_registry: TlsRegistry) -> str:
    """The digest of osctl/os:v1.4 as pushed to the TLS registry."""
    return tls_registry.push()


def secure(tls: TlsRegistry, config: Path | None = None) -> Registry:
    return Registry(f"{tls.host}/osctl/os", docker_config=str(config or tls.docker_config))


# -- TLS + basic auth ------------------------------------------------------------------------
def test_tags_and_digests_with_docker_config_credentials(tls_registry: TlsRegistry, pushed: str) -> None:
    registry = secure(tls_registry)
    assert registry.base_url == f"https://{tls_registry.host}"  # the certs.d CA makes it https
    assert registry.tags() == ["v1.4"]
    found = registry.manifest("v1.4")
    assert (found.digest, found.media_type) == (pushed, V2) and found.size > 0
    assert registry.digest("v1.4") == pushed
    assert registry.manifests(["v1.4", "v0.0"]) == {"v1.4": found}
    with pytest.raises(NotFoundError, match=f"{tls_registry.host}/osctl/os:v0.0 does not exist"):
        registry.digest("v0.0")


def test_docker_config_env_var_supplies_the_credentials(tls_registry: TlsRegistry, pushed: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tls_registry.docker_config))
    assert Registry(f"{tls_registry.host}/osctl/os").digest("v1.4") == pushed


def test_wrong_password_is_refused_clearly(tls_registry: TlsRegistry, pushed: str,
                                           tmp_path: Path) -> None:
    wrong = "not-" + tls_registry.password
    config = docker_config_for(tmp_path / "wrong", tls_registry.host, tls_registry.username, wrong)
    with pytest.raises(RegistryAuthError) as info:
        secure(tls_registry, config).tags()
    message, hint = str(info.value), info.value.hint or ""
    assert message.startswith(f"authentication to {tls_registry.host} failed: the registry refused the credentials")
    assert f"docker login {tls_registry.host}" in hint and "DOCKER_CONFIG" in hint
    assert info.value.exit_code == ExitCode.USAGE
    assert wrong not in message + hint and tls_registry.password not in message + hint


def test_no_credentials_suggests_docker_login(tls_registry: TlsRegistry, pushed: str,
                                             tmp_path: Path) -> None:
    empty = tmp_path / "empty-config"
    empty.mkdir()
    with pytest.raises(RegistryAuthError) as info:
        secure(tls_registry, empty).manifest("v1.4")
    assert "requires credentials" in str(info.value)
    assert f"docker login {tls_registry.host}" in (info.value.hint or "")


def test_untrusted_certificate_is_not_retried(tls_registry: TlsRegistry, tmp_path: Path) -> None:
    other = tmp_path / "certs.d" / tls_registry.host
    make_ca(other, "ca")  # a CA that did not sign the registry's certificate
    registry = Registry(f"{tls_registry.host}/osctl/os", docker_config=str(tls_registry.docker_config),
                        certs_dir=str(tmp_path / "certs.d"))
    with pytest.raises(RegistryUnavailable, match="TLS failed .*certificate") as info:
        registry.tags()
    assert "after" not in str(info.value), "a certificate problem is not worth retrying"


def test_tls_registry_without_its_ca_says_so(tls_registry: TlsRegistry, tmp_path: Path) -> None:
    # Loopback without a certs.d CA means plain http, as for the engine; the registry speaks TLS only.
    registry = Registry(f"{tls_registry.host}/osctl/os", docker_config=str(tls_registry.docker_config),
                        certs_dir=str(tmp_path))
    with pytest.raises(OsctlError) as info:
        registry.tags()
    assert "ca.crt" in (info.value.hint or "")


def test_engine_pulls_through_tls_and_records_the_adapter_digest(tls_registry: TlsRegistry,
                                                                 pushed: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry speaks TLS only, so this pull went through TLS. Note that dockerd treats every
    # 127.0.0.0/8 registry as insecure (it would skip verification even without the certs.d CA),
    # so on loopback this proves the TLS+auth path works, not that the CA was required.
    ref = f"{tls_registry.host}/osctl/os"
    tls_registry.forget_local()  # the push recorded a digest too; let the pull record its own
    assert tls_registry.local_refs() == []
    monkeypatch.setenv("DOCKER_CONFIG", str(tls_registry.docker_config))
    client = docker.from_env(timeout=120)  # reads the credentials from DOCKER_CONFIG
    try:
        image = client.images.pull(ref, tag="v1.4")
        repo_digests = client.api.inspect_image(f"{ref}:v1.4")["RepoDigests"]
    finally:
        client.close()
    assert f"{ref}:v1.4" in image.tags
    expected = secure(tls_registry).digest("v1.4")
    assert f"{ref}@{expected}" in repo_digests
    assert expected == pushed


# -- the plain registry ------------------------------------------------------------------------
def head_digest(tag: str) -> str:
    """What ``curl -I -H 'Accept: <v2>'`` shows as Docker-Content-Digest."""
    name = OS_REPO.split("/", 1)[1]
    request = urllib.request.Request(f"http://{REGISTRY}/v2/{name}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": V2})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def test_plain_registry_tags_and_digests(registry: str, tmp_path: Path) -> None:
    adapter = Registry(OS_REPO, docker_config=str(tmp_path), certs_dir=str(tmp_path))
    tags = adapter.tags()
    assert set(SHIPPED) <= set(tags)
    assert sorted(tags) == registry_tags(OS_REPO)
    found = adapter.manifests(tags)
    for tag in SHIPPED:
        expected = head_digest(tag)
        assert adapter.manifest(tag).digest == expected
        assert adapter.digest(tag) == expected
        assert found[tag].digest == expected and found[tag].size > 0


def test_osctl_pull_and_list_through_tls_and_basic_auth(tls_registry: TlsRegistry, pushed: str,
                                                        host: Host) -> None:
    """The whole path a user takes: credentials from DOCKER_CONFIG, CA from certs.d."""
    host.image = f"{tls_registry.host}/osctl/os"
    host.extra_env["DOCKER_CONFIG"] = str(tls_registry.docker_config)
    proc = host.osctl("pull", "v1.4", "--quiet")
    assert proc.returncode == 0, proc.stderr
    listed = {row["version"]: row for row in host.osctl_json("list-versions")}  # type: ignore[union-attr]
    assert listed["v1.4"]["stored"] is True and listed["v1.4"]["available"] is True
    assert listed["v1.4"]["digest"] == pushed

    host.extra_env["DOCKER_CONFIG"] = str(host.root)  # no credentials there
    proc = host.osctl("list-versions", "--json")
    assert proc.returncode == 0 and "docker login" in proc.stderr, "warned, stored versions still listed"
