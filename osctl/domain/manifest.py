"""Reading a release manifest: YAML text in, a checked ``ReleaseManifest`` out, or every issue."""

from __future__ import annotations

from osctl.domain import binds, documents, servicegraph
from osctl.errors import Issue, ManifestError
from osctl.models.manifest import ReleaseManifest


def parse_manifest(text: str | bytes, source: str, *, expected_version: str | None = None,
                   check_binds: bool = True) -> ReleaseManifest:
    """Validate a manifest's structure, its service graph, its binds and, when known, its version.

    ``expected_version`` is the tag the manifest was found under; the manifest must agree with
    it, or a host could boot something other than what the operator chose. ``check_binds``
    False reads a stored manifest, whose binds were checked when it was stored (see
    ``osctl.domain.binds`` for why it must still load when they would be refused today).
    """
    parsed = documents.parse_yaml(text, source, ManifestError)

    def relations(manifest: ReleaseManifest, parsed: documents.ParsedYaml) -> list[Issue]:
        found = servicegraph.check(manifest.services) + (binds.check(manifest.services) if check_binds else [])
        issues = [_locate(i, parsed) for i in found]
        if expected_version is not None and manifest.version != expected_version:
            _, line, col = parsed.locate(["version"])
            issues.append(
                Issue("version", f"{manifest.version!r} differs from the image tag {expected_version!r}", line, col)
            )
        return issues

    return documents.validate(parsed, ReleaseManifest, source, ManifestError, extra_issues=relations)


def _locate(issue: Issue, parsed: documents.ParsedYaml) -> Issue:
    """Give a semantic issue the position of its key in the text."""
    _, line, column = parsed.locate(issue.path.split("."))
    return Issue(issue.path, issue.message, line, column)
