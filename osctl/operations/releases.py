"""Which tags of the registry are OS versions a host can take, known without pulling them.

A tag can look like a version and still not be one: its image has no ``io.osctl.os.version``
label (not an OS image), or a label that names another version, or a release manifest inside
that says another (only a pull finds that one). ``list-versions`` shows such tags as invalid,
with why; ``upgrade`` without ``--to`` and the agent take the newest *valid* release, so one
bad tag cannot block every update (it would fail, and fail again at every check).

How it is known without a pull: the image config blob's labels, read from the registry
(``Registry.image_labels``: bounded, checked against its digest) once per config digest and kept
(``domain.imagefacts``); and what an earlier pull of the same manifest digest found. A tag
pushed again with a fixed image has new digests, so it is judged again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from osctl.adapters.registry import Registry
from osctl.constants import LABEL_OS_VERSION
from osctl.domain.imagefacts import NO_LABEL, ImageFacts
from osctl.errors import UsageError
from osctl.models.refs import Digest
from osctl.models.registry import TagManifest, Unreadable
from osctl.models.version import try_parse


@dataclass(frozen=True)
class RemoteTag:
    """A version tag as the registry serves it, judged: ``invalid`` says why it is not an OS version."""

    tag: str
    manifest: TagManifest | None  # None when the registry's manifest was unreadable
    invalid: str | None = None


def judge_tags(registry: Registry, tags: list[str], facts: ImageFacts) -> dict[str, RemoteTag]:
    """Every tag still in the registry, judged; a tag gone since it was listed is left out."""
    found = registry.manifests(tags)
    manifests = {tag: m for tag, m in found.items() if isinstance(m, TagManifest)}
    labels = _version_labels(registry, manifests.values(), facts)
    judged = {tag: RemoteTag(tag, None, f"unreadable: {m.reason}") for tag, m in found.items()
              if isinstance(m, Unreadable)}
    for tag, manifest in manifests.items():
        judged[tag] = RemoteTag(tag, manifest, _why_invalid(tag, manifest, labels, facts))
    return judged


def newest_valid_release(registry: Registry, facts: ImageFacts) -> str:
    """The newest released (not pre-release) version tag that is a valid OS version.

    Judged newest first, one tag at a time: usually the first one is it, and a repository of
    200 tags costs a few requests, not 400.
    """
    versions = sorted((v for v in map(try_parse, registry.tags()) if v is not None and not v.is_prerelease),
                      reverse=True)
    skipped: list[str] = []
    for version in versions:
        judged = judge_tags(registry, [version.tag], facts).get(version.tag)
        if judged is not None and judged.invalid is None:
            return version.tag
        if judged is not None:
            skipped.append(f"{version.tag} ({judged.invalid})")
    if skipped:
        raise UsageError(f"{registry.repository} holds no valid released version; not OS images: "
                         + "; ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""),
                         hint="name one with --to V, or publish a valid one")
    raise UsageError(f"{registry.repository} holds no released version", hint="name one with --to V")


def _version_labels(registry: Registry, manifests: Iterable[TagManifest],
                    facts: ImageFacts) -> dict[Digest, str | Unreadable]:
    """config digest -> its version label ('' for none), from the facts kept or the registry."""
    known: dict[Digest, str | Unreadable] = {}
    wanted: dict[Digest, str] = {}
    for manifest in manifests:
        if manifest.config is None or manifest.config in known:
            continue
        label = facts.version_label(manifest.config)
        if label is None:
            wanted.setdefault(manifest.config, manifest.tag)
        else:
            known[manifest.config] = label
    for config, labels in registry.image_labels_many(wanted).items():
        if isinstance(labels, Unreadable):
            known[config] = labels
        else:
            label = labels.get(LABEL_OS_VERSION) or NO_LABEL
            facts.remember_label(config, label)
            known[config] = label
    return known


def _why_invalid(tag: str, manifest: TagManifest, labels: dict[Digest, str | Unreadable],
                 facts: ImageFacts) -> str | None:
    failure = facts.failure(manifest.digest)
    if failure is not None:
        return failure
    if manifest.config is None:  # a manifest list: the platform's image is judged when pulled
        return None
    label = labels.get(manifest.config, NO_LABEL)
    if isinstance(label, Unreadable):
        return f"unreadable: {label.reason}"
    if label == NO_LABEL:
        return f"no {LABEL_OS_VERSION} label: not an osctl OS image"
    if label != tag:
        return f"its {LABEL_OS_VERSION} label says {label[:40]!r}, not {tag!r}"
    return None
