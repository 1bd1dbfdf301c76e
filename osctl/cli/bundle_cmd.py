"""``osctl bundle``: OS versions in one file, for hosts with no registry (docs/bundles.md)."""

from __future__ import annotations

from pathlib import Path

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app
from osctl.cli.progress import pull_bars

bundle_path = click.Path(dir_okay=False, path_type=Path)


@click.group()
def bundle() -> None:
    """Carry OS versions to hosts with no registry: create, inspect and push bundles."""


@bundle.command()
@click.argument("versions", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, type=bundle_path, metavar="FILE",
              help="The bundle to write (replaced only once it is complete).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@json_option
@pass_app
def create(app: AppContext, versions: tuple[str, ...], output: Path, quiet: bool, as_json: bool) -> None:
    """Write VERSIONS of --image, every service image they name and, with a trusted root, the
    signed metadata hosts verify them with, into one file that skopeo and docker load read too."""
    from osctl.operations.bundle import create as run

    with pull_bars(not (quiet or as_json)) as progress:
        created = run(app.settings, list(versions), output, progress=progress)
    if as_json:
        render.print_json(created.as_dict())
        return
    signed = "signed metadata included" if created.signed else "[yellow]unsigned[/] (no trust root configured)"
    render.stdout.print(f"[green]wrote[/] {created.path}: {', '.join(created.versions)}, {created.images} images, "
                        f"{render.size(created.bytes)}, {signed}, in {created.seconds:.1f}s")


@bundle.command()
@click.argument("file", type=bundle_path)
@json_option
@pass_app
def inspect(app: AppContext, file: Path, as_json: bool) -> None:
    """Show the versions and images FILE holds, their sizes, and whether it is signed."""
    from osctl.operations.bundle import inspect as run

    found = run(app.settings, file)
    if as_json:
        render.print_json(found.as_dict())
        return
    render.stdout.print(f"{found.path}: {render.size(found.bytes)}, OS image repository {found.repository or '(none)'}")
    for row in found.versions:
        render.stdout.print(f"  version {row['version']:<12} {str(row['digest'])[:19]}  {render.size(int(row['bytes']))}")
    for row in found.services:
        render.stdout.print(f"  service {row['image']}  {render.size(int(row['bytes']))}")
    if not found.signed:
        render.stdout.print("  [yellow]unsigned[/]: no release metadata inside; hosts with a trusted root refuse it")
    elif found.verified is None:
        render.stdout.print(f"  signed (metadata valid until {found.metadata_expires}); no trust root here to check it")
    elif found.verified == "yes":
        render.stdout.print(f"  [green]signed[/]: verifies against this host's trusted root "
                            f"(valid until {found.metadata_expires})")
    else:
        render.stdout.print(f"  [red]signed, but refused here[/]: {found.verified}")


@bundle.command()
@click.argument("file", type=bundle_path)
@click.option("--image", "image", metavar="REPO",
              help="Where the OS versions go (default: the repository they were made from); service images "
                   "go to the same registry host, the metadata to REPO-tuf.")
@json_option
@pass_app
def push(app: AppContext, file: Path, image: str | None, as_json: bool) -> None:
    """Put everything FILE holds into a registry (a mirror inside the air gap), byte for byte."""
    from osctl.models.refs import validate_repository
    from osctl.operations.bundle import push as run

    if image is not None:
        try:
            validate_repository(image)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--image") from None
    pushed = run(app.settings, file, image)
    if as_json:
        render.print_json(pushed.as_dict())
        return
    render.stdout.print(f"[green]pushed[/] {len(pushed.images)} images to {pushed.repository} "
                        f"({pushed.blobs_sent} blobs sent, {pushed.blobs_present} already there) "
                        f"in {pushed.seconds:.1f}s")

