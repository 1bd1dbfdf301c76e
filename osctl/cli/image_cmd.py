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
    """Validate TARGET: a release.yaml file, a version of --image, or an image reference with
    its registry (127.0.0.1:5000/osctl/os:v1.4); osctl never pulls from a registry not named.

    Exit 0 when it is a valid OS image (or manifest), 2 with the first problem otherwise.
    """
    from osctl.operations import osimage

    if Path(target).is_file() or target.endswith((".yaml", ".yml")):
        manifest = osimage.validate_manifest_file(Path(target))
        result = {"target": target, "version": manifest.version, "services": sorted(manifest.services),
                  "manifest": manifest.model_dump(mode="json")}
    else:
        ref = osimage.image_target(target, lambda: app.settings.require_image(), pull=not no_pull)
        report = osimage.inspect_os_image(app.engine, ref, host_id=app.settings.host_id, pull=not no_pull)
        result = {"target": str(ref), "version": report.version, "services": sorted(report.manifest.services),
                  "image_id": report.image.id, "boot_artifacts": {path: len(data) for path, data in report.artifacts.items()},
                  "manifest": report.manifest.model_dump(mode="json")}
    if as_json:
        render.print_json({"valid": True, **result})
    else:
        render.stdout.print(f"[green]valid[/]: {result['target']} is OS version {result['version']} "
                            f"with services {', '.join(result['services'])}")
