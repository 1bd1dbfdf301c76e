"""A real Distribution registry with TLS and htpasswd auth, for tests that need one.

The plain registry on 127.0.0.1:5000 answers anyone over http; real registries do neither. This
module starts ``/usr/bin/docker-registry serve`` on a free loopback port with a certificate from a
CA made here with openssl, basic auth from an htpasswd file (bcrypt), the CA installed where the
Docker engine looks (``/etc/docker/certs.d/127.0.0.1:<port>/ca.crt``), and a DOCKER_CONFIG folder
whose ``config.json`` holds the credentials, as ``docker login`` would write it.

The ``tls_registry`` fixture (session-scoped) is registered for every test by ``tests/conftest.py``.

Everything it creates is removed afterwards: the process, the certs.d folder, the local image
references under its address. Registry data and keys live in a temporary folder.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import docker
import pytest

from tests.support.hosts import OS_REPO

REGISTRY_BINARY = "/usr/bin/docker-registry"
ENGINE_CERTS = Path("/etc/docker/certs.d")
START_TIMEOUT = 30.0


@dataclass
class TlsRegistry:
    """A running TLS+auth registry and what a client needs to use it."""

    host: str  # "127.0.0.1:<port>"
    port: int
    ca: Path  # the CA certificate (also installed in the engine's certs.d)
    docker_config: Path  # a folder holding config.json with the credentials for ``host``
    username: str
    password: str
    client: docker.DockerClient
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    certs_dir: Path = ENGINE_CERTS
    pushed: dict[str, str] = field(default_factory=dict)  # ref -> digest

    @property
    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}

    def push(self, source: str = f"{OS_REPO}:v1.4", repository: str = "osctl/os", tag: str = "v1.4") -> str:
        """Tag ``source`` (pulled from the plain registry if absent) as ``host/repository:tag``, push it.

        Returns the manifest digest the registry reported for the push.
        """
        try:
            image = self.client.images.get(source)
        except docker.errors.ImageNotFound:
            image = self.client.images.pull(source)
        target = f"{self.host}/{repository}"
        image.tag(target, tag)
        digest = ""
        for event in self.client.images.push(target, tag=tag, auth_config=self.auth_config, stream=True, decode=True):
            if "error" in event:
                raise AssertionError(f"pushing {target}:{tag} failed: {event['error']}")
            digest = (event.get("aux") or {}).get("Digest", digest)
        assert digest.startswith("sha256:"), f"the push of {target}:{tag} reported no digest"
        self.pushed[f"{target}:{tag}"] = digest
        return digest

    def local_refs(self) -> list[str]:
        """Every local image reference (tag or digest) under this registry's address."""
        refs: list[str] = []
        for image in self.client.images.list():
            for ref in (image.attrs.get("RepoTags") or []) + (image.attrs.get("RepoDigests") or []):
                if ref.startswith(f"{self.host}/"):
                    refs.append(ref)
        return refs

    def forget_local(self) -> None:
        """Remove the engine's references under this address (the layers stay: other tags share them)."""
        for ref in self.local_refs():
            try:
                self.client.images.remove(ref, noprune=True)
            except docker.errors.NotFound:
                pass


# -- certificates --------------------------------------------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {args[0]} failed: {proc.stderr}"


def make_ca(folder: Path, name: str = "ca") -> Path:
    """A self-signed CA: ``<name>.key`` and ``<name>.crt`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-sha256",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=osctl test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=folder)
    return folder / f"{name}.crt"


def make_server_cert(folder: Path, ca: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A server certificate for ``ip`` (as an IP SAN) signed by ``ca``; returns (cert, key)."""
    (folder / "server.ext").write_text(
        f"subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={ip}", cwd=folder)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", "server.ext", "-out", "server.crt", cwd=folder)
    return folder / "server.crt", folder / "server.key"


def docker_config_for(folder: Path, host: str, username: str, password: str) -> Path:
    """A DOCKER_CONFIG folder as ``docker login host`` leaves it (file store, no helper)."""
    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder


# -- the process ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str, context: ssl.SSLContext) -> bool:
    """True once the registry answers at all (401 without credentials counts)."""
    try:
        urllib.request.urlopen(url, timeout=2, context=context).close()
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except OSError:
        return False
    return True


def _start(workdir: Path, port: int, cert: Path, key: Path, htpasswd: Path) -> subprocess.Popen[bytes]:
    config = workdir / "registry.yml"
    config.write_text(json.dumps({  # JSON is YAML; no YAML writer needed
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16),
                 "tls": {"certificate": str(cert), "key": str(key)}},
        "auth": {"htpasswd": {"realm": "osctl-test", "path": str(htpasswd)}},
    }))
    with open(workdir / "registry.log", "wb") as log:
        return subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def tls_registry(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRegistry]:
    if not Path(REGISTRY_BINARY).exists():
        pytest.fail(f"{REGISTRY_BINARY} is missing; run scripts/setup first", pytrace=False)
    workdir = tmp_path_factory.mktemp("tls-registry")
    ca = make_ca(workdir / "pki")
    cert, key = make_server_cert(workdir / "pki", ca)
    username, password = "osctl-tester", secrets.token_urlsafe(18)
    htpasswd = workdir / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()  # cheap: checked per request
    htpasswd.write_text(f"{username}:{hashed}\n")
    context = ssl.create_default_context(cafile=str(ca))

    process, port = None, 0
    for _ in range(3):  # the free port may be taken between choosing it and the registry binding it
        port = _free_port()
        process = _start(workdir, port, cert, key, htpasswd)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline and not _answers(
                f"https://127.0.0.1:{port}/v2/", context):
            time.sleep(0.1)
        if process.poll() is None and _answers(f"https://127.0.0.1:{port}/v2/", context):
            break
        _stop(process)
        process = None
    if process is None:
        log = (workdir / "registry.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"the TLS registry did not answer within {START_TIMEOUT:g} s:\n{log}", pytrace=False)

    host = f"127.0.0.1:{port}"
    engine_dir = ENGINE_CERTS / host  # a leftover of a crashed run for this very port is ours to replace
    registry = TlsRegistry(host, port, ca, docker_config_for(workdir / "docker-config", host, username, password),
                           username, password, docker_client, workdir, process)
    try:
        engine_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca, engine_dir / "ca.crt")
        yield registry
    finally:
        _stop(process)
        shutil.rmtree(engine_dir, ignore_errors=True)
        registry.forget_local()
