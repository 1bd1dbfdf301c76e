"""``osctl image``: tools for people who build OS images."""

from __future__ import annotations

from pathlib import Path

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app


@click.group()
def image() -> None:
    """Check OS images against the image contract (docs/image-format.md)."""


@image.command()
@click.argument("target")
@click.option("--no-pull", is_flag=True, help="Fail instead of pulling an image the engine lacks.")
@json_option
@pass_app
def validate(app: AppContext, target: str, no_pull: bool, as_json: bool) -> None:
    """Validate TARGET: a release.yaml file, an image reference, or a version of --image.

    Exit 0 when it is a valid OS image (or manifest), 2 with the first problem otherwise.
    """
    from osctl.models.version import try_parse
    from osctl.operations import osimage

    if Path(target).is_file() or target.endswith((".yaml", ".yml")):
        manifest = osimage.validate_manifest_file(Path(target))
        result = {"target": target, "version": manifest.version, "services": sorted(manifest.services),
                  "manifest": manifest.model_dump(mode="json")}
    else:
        ref = f"{app.settings.require_image()}:{target}" if try_parse(target) and "/" not in target else target
        report = osimage.inspect_os_image(app.engine, ref, host_id=app.settings.host_id, pull=not no_pull)
        result = {"target": ref, "version": report.version, "services": sorted(report.manifest.services),
                  "image_id": report.image.id, "boot_artifacts": {path: len(data) for path, data in report.artifacts.items()},
                  "manifest": report.manifest.model_dump(mode="json")}
    if as_json:
        render.print_json({"valid": True, **result})
    else:
        render.stdout.print(f"[green]valid[/]: {result['target']} is OS version {result['version']} "
                            f"with services {', '.join(result['services'])}")
