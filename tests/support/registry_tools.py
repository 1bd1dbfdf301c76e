"""Shaping the local registry for tests and benchmarks, through its HTTP API and the SDK.

Used to make many tags cheaply (blob mounts and manifest PUTs, no image data moved), to build
and push OS versions that differ only in their version, and to remove what a test pushed.
Never used by osctl itself.
"""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request

import docker

V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI = "application/vnd.oci.image.manifest.v1+json"  # what osctl's metadata artifacts (<image>-tuf) are


def _request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def get_manifest(registry: str, repo: str, ref: str) -> tuple[bytes, str]:
    status, headers, body = _request("GET", f"http://{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": V2})
    assert status == 200, f"GET manifest {repo}:{ref}: {status} {body[:200]!r}"
    return body, headers["Docker-Content-Digest"]


def copy_tags(registry: str, src_repo: str, src_tag: str, dst_repo: str, tags: list[str]) -> str:
    """Make ``dst_repo:<tag>`` for every tag, all naming the manifest of ``src_repo:src_tag``."""
    body, digest = get_manifest(registry, src_repo, src_tag)
    manifest = json.loads(body)
    for blob in [manifest["config"], *manifest["layers"]]:
        status, _, text = _request("POST", f"http://{registry}/v2/{dst_repo}/blobs/uploads/"
                                   f"?mount={blob['digest']}&from={src_repo}")
        assert status == 201, f"mounting {blob['digest']} into {dst_repo}: {status} {text[:200]!r}"
    for tag in tags:
        status, _, text = _request("PUT", f"http://{registry}/v2/{dst_repo}/manifests/{tag}", body,
                                   {"Content-Type": V2})
        assert status == 201, f"PUT {dst_repo}:{tag}: {status} {text[:200]!r}"
    return digest


def delete_repository(registry: str, repo: str) -> None:
    """Delete every manifest of ``repo``, images and OCI artifacts alike (the registry keeps the
    empty repository name)."""
    status, _, body = _request("GET", f"http://{registry}/v2/{repo}/tags/list")
    tags = (json.loads(body).get("tags") or []) if status == 200 else []
    digests = set()
    for tag in tags:
        status, headers, _ = _request("HEAD", f"http://{registry}/v2/{repo}/manifests/{tag}",
                                      headers={"Accept": f"{V2}, {OCI}"})
        if status == 200:
            digests.add(headers["Docker-Content-Digest"])
    for digest in digests:
        _request("DELETE", f"http://{registry}/v2/{repo}/manifests/{digest}")


def delete_manifest(registry: str, repo: str, digest: str) -> None:
    """Delete one manifest of ``repo`` by digest (every tag naming it goes with it)."""
    status, _, text = _request("DELETE", f"http://{registry}/v2/{repo}/manifests/{digest}")
    assert status == 202, f"DELETE {repo}@{digest}: {status} {text[:200]!r}"


def untag_local(client: docker.DockerClient, repository: str) -> None:
    """Drop every name the engine gives an image under ``repository`` (tags and digests); the
    images themselves stay when other names hold them."""
    for image in client.api.images():  # one listing: images.list() inspects each, racing other tests' removals
        for ref in [*(image.get("RepoTags") or []), *(image.get("RepoDigests") or [])]:
            if ref.startswith((f"{repository}:", f"{repository}@")):
                try:
                    client.images.remove(ref, noprune=True)
                except docker.errors.APIError:
                    pass


def build_image(client: docker.DockerClient, tag: str, dockerfile: str, files: dict[str, str] | None = None) -> str:
    """Build a small image from a Dockerfile and files given as text; returns its id."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in {"Dockerfile": dockerfile, **(files or {})}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True)
    return str(image.id)


def push(client: docker.DockerClient, ref: str) -> None:
    repo, tag = ref.rsplit(":", 1)
    for event in client.images.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in event, f"pushing {ref}: {event['error']}"


def os_version_variant(client: docker.DockerClient, source: str, target_repo: str, version: str,
                       manifest_text: str, files: dict[str, str] | None = None) -> str:
    """Build ``target_repo:version`` FROM ``source`` with its label and manifest set to ``version``,
    push it, and return the reference. ``manifest_text`` is the source's release.yaml; ``files``
    (absolute path in the image -> text) are added too."""
    lines = [f"version: {version}" if line.startswith("version:") else line for line in manifest_text.splitlines()]
    ref = f"{target_repo}:{version}"
    extra = {f"extra{i}": (path, text) for i, (path, text) in enumerate(sorted((files or {}).items()))}
    build_image(client, ref,
                f"FROM {source}\nCOPY release.yaml /usr/lib/osctl/release.yaml\n"
                + "".join(f"COPY {name} {path}\n" for name, (path, _) in extra.items())
                + f"LABEL io.osctl.os.version={version}\n",
                {"release.yaml": "\n".join(lines) + "\n", **{name: text for name, (_, text) in extra.items()}})
    push(client, ref)
    return ref


def remove_variants(client: docker.DockerClient, registry: str, repo: str, refs: list[str]) -> None:
    """Undo ``os_version_variant``s: the test repository in the registry, and the local images."""
    delete_repository(registry, repo.split("/", 1)[1])
    for ref in refs:
        try:
            client.images.remove(ref, noprune=False)
        except docker.errors.APIError:
            pass
