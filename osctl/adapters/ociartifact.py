"""Files kept in a registry as OCI artifacts: one tag, one manifest, one layer holding the file.

The release metadata (TUF) travels beside the OS images it vouches for, in the same registry, so
that a host needs nothing but its registry, and a bundle that copies repositories carries it.
The shape is the OCI image manifest used for artifacts (what ORAS writes): the empty config
``{}``, one layer of ``LAYER_TYPE`` whose title annotation is the file name, under a tag that is
the file name (``timestamp.json``, ``3.root.json``). Distribution 2.8 stores it as it is.

Reading refuses anything else: a manifest that is not one such layer, or a layer larger than the
caller allows, is a ``RegistryError`` naming the file; what the bytes mean is for TUF to judge.
"""

from __future__ import annotations

import json

from osctl.adapters.registry import Registry
from osctl.errors import RegistryError
from osctl.models.refs import Digest

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.osctl.tuf.metadata.v1+json"
LAYER_TYPE = "application/vnd.osctl.tuf.metadata.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
TITLE = "org.opencontainers.image.title"


def put_file(registry: Registry, name: str, data: bytes) -> Digest:
    """Publish ``data`` under the tag ``name``; the manifest's digest."""
    layer = registry.push_blob(data)
    config = registry.push_blob(EMPTY)
    return registry.push_manifest(name, manifest(name, layer, len(data), config), MANIFEST_TYPE)


def manifest(name: str, layer: Digest, size: int, config: Digest) -> bytes:
    """The artifact manifest of one file: the same bytes in a registry and in a bundle, so a
    bundle's copy of the release metadata pushes back under the digest it had."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": config, "size": len(EMPTY)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer, "size": size, "annotations": {TITLE: name}}],
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def get_file(registry: Registry, name: str, max_length: int) -> bytes:
    """The file published under the tag ``name``; ``NotFoundError`` when there is no such tag.

    At most ``max_length`` bytes: the layer's declared size is checked before its blob is asked
    for, and the blob must hash to the layer's digest (``Registry.blob``).
    """
    body, _media_type = registry.manifest_body(name, accept=MANIFEST_TYPE)
    try:
        doc = json.loads(body)
        layers = doc["layers"]
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            raise ValueError("not one layer")
        layer = layers[0]
        if layer.get("mediaType") != LAYER_TYPE:
            raise ValueError(f"its layer is {str(layer.get('mediaType'))[:60]!r}, not {LAYER_TYPE}")
        size, digest = layer.get("size"), Digest(layer.get("digest"))
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("its layer has no byte count")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise RegistryError(f"the registry at {registry.host} holds {registry.name}:{name} in a form that is not "
                            f"a metadata artifact ({exc})", hint="republish the metadata with osctl release") from None
    if size > max_length:
        raise RegistryError(f"{registry.name}:{name} is {size} bytes, more than the {max_length} allowed for it",
                            hint="the registry is broken or hostile")
    data = registry.blob(digest, name)
    if len(data) != size:
        raise RegistryError(f"{registry.name}:{name}: the layer is {len(data)} bytes, not the {size} its manifest says")
    return data
