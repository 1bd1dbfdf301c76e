"""``osctl release``: sign OS versions with the release keys (TUF) and publish the metadata."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from osctl.cli import render
from osctl.cli.context import AppContext, json_option, pass_app

if TYPE_CHECKING:
    from osctl.adapters.tufrepo import RepositoryStatus
    from osctl.operations.release import Publication, Release, ReleaseOutcome

_DAYS = re.compile(r"(\d+)d(.*)")

keys_option = click.option(
    "--keys", required=True, envvar="OSCTL_RELEASE_KEYS", show_envvar=True, metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The release keys folder (root.json, keys/, metadata/).")
out_option = click.option(
    "--out", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
    help="Also write the plain TUF layout into DIR, for a static web server (trust.metadata_url).")


def _release(app: AppContext, keys: Path, out: Path | None = None, *, image_needed: bool = True) -> Release:
    from osctl.operations.release import Release

    image = app.settings.require_image() if image_needed else app.settings.image
    return Release(keys, image, out=out)


def _expiry(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """Seconds from ``36h``, ``90m``, ``1d12h`` (days on top of osctl's durations)."""
    if value is None:
        return None
    from osctl.models.base import parse_duration

    days, rest = 0, value.strip()
    if match := _DAYS.fullmatch(rest):
        days, rest = int(match.group(1)), match.group(2)
    try:
        return days * 86400 + (parse_duration(rest) if rest else 0.0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration (use e.g. 24h, 90m, 2d)") from None


@click.group()
def release() -> None:
    """Sign OS versions with the release keys (TUF) and publish the metadata beside the images.

    Versions are looked up in the OS image repository (--image / OSCTL_IMAGE); the metadata goes
    to <image>-tuf in the same registry. Hosts given DIR/root.json install only what it vouches for.
    """


@release.command()
@keys_option
@click.option("--root-keys", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="How many root keys to make.")
@click.option("--root-threshold", default=1, show_default=True, type=click.IntRange(min=1), metavar="K",
              help="How many root keys must sign a new root.")
@out_option
@pass_app
def init(app: AppContext, keys: Path, root_keys: int, root_threshold: int, out: Path | None) -> None:
    """Make a new keys folder: keys for the four roles and their first metadata.

    Keep the root keys (DIR/keys/root) offline; they are needed only to rotate keys.
    """
    outcome = _release(app, keys, out, image_needed=False).init(root_keys, root_threshold)
    root = next(role for role in outcome.status.roles if role.role == "root")
    render.stdout.print(f"created {keys}: {root.threshold} of {len(root.keyids)} root key(s) must sign a new root; "
                        "one key each for targets, snapshot and timestamp")
    render.stdout.print(f"hosts trust {keys / 'root.json'} (root v{root.version})")
    _published(outcome.publication)


@release.command()
@keys_option
@click.option("--min-version", metavar="V", help="Revoke every version older than V (the anti-rollback floor).")
@click.option("--reason", metavar="TEXT", help="Why the versions below --min-version are revoked.")
@out_option
@click.argument("versions", nargs=-1, metavar="[V]...")
@pass_app
def sign(app: AppContext, keys: Path, min_version: str | None, reason: str | None, out: Path | None,
         versions: tuple[str, ...]) -> None:
    """Sign each version V: its image manifest's digest and length, as the registry serves it now.

    With --min-version alone, only the floor rises.
    """
    outcome = _release(app, keys, out).sign(list(versions), min_version, reason)
    for target in outcome.targets:
        render.stdout.print(f"[green]signed[/] {target.version} {target.digest[:19]} ({target.length} bytes)")
    for target in outcome.unchanged:
        render.stdout.print(f"{target.version} was already signed ({target.digest[:19]})")
    if outcome.floor is not None:
        why = f" ({outcome.floor.reason})" if outcome.floor.reason else ""
        render.stdout.print(f"minimum version {outcome.floor.version}: every older version is revoked{why}")
    _roles(outcome)
    _published(outcome.publication)


@release.command()
@keys_option
@click.argument("version", metavar="V")
@click.option("--reason", required=True, metavar="TEXT", help="Why; hosts show it when they refuse V.")
@out_option
@pass_app
def revoke(app: AppContext, keys: Path, version: str, reason: str, out: Path | None) -> None:
    """Revoke signed version V: it stays listed, and hosts refuse to install or boot it."""
    outcome = _release(app, keys, out).revoke(version, reason)
    for target in outcome.targets:
        render.stdout.print(f"[red]revoked[/] {target.version}: {target.revoked}")
    _roles(outcome)
    _published(outcome.publication)


@release.command()
@keys_option
@click.option("--expiry", metavar="DURATION", callback=_expiry,
              help="How long the new timestamp is valid, e.g. 24h, 90m, 2d.  [default: 1 day]")
@out_option
@pass_app
def timestamp(app: AppContext, keys: Path, expiry: float | None, out: Path | None) -> None:
    """Sign a fresh timestamp (run it from a timer): hosts notice a freeze when it expires."""
    outcome = _release(app, keys, out).timestamp(expiry)
    if outcome.renewed:
        render.stdout.print(f"signed again before they expire: {', '.join(outcome.renewed)}")
    stamp = next(role for role in outcome.status.roles if role.role == "timestamp")
    from osctl.adapters.tufrepo import iso

    render.stdout.print(f"timestamp v{stamp.version}, expires {iso(stamp.expires)}")
    _published(outcome.publication)


@release.command()
@keys_option
@click.argument("role", metavar="ROLE", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@click.option("--expiry", metavar="DURATION", callback=_expiry,
              help="How long the new version is valid, e.g. 365d.  [default: the role's: root 365 days, "
                   "targets 90, snapshot 7, timestamp 1]")
@out_option
@pass_app
def renew(app: AppContext, keys: Path, role: str, expiry: float | None, out: Path | None) -> None:
    """Sign ROLE again with the same keys and a new expiry (the root before its year is up)."""
    outcome = _release(app, keys, out).renew(role, expiry)
    from osctl.adapters.tufrepo import iso

    renewed = next(state for state in outcome.status.roles if state.role == role)
    render.stdout.print(f"{role} v{renewed.version}, expires {iso(renewed.expires)}")
    _roles(outcome)
    _published(outcome.publication)


@release.command()
@keys_option
@click.argument("role", metavar="ROLE", type=click.Choice(["root", "targets", "snapshot", "timestamp"]))
@out_option
@pass_app
def rotate(app: AppContext, keys: Path, role: str, out: Path | None) -> None:
    """New keys for ROLE (root, targets, snapshot or timestamp); a new root names them, and
    hosts follow the chain of roots."""
    outcome = _release(app, keys, out).rotate(role)
    shown = ", ".join(keyid[:12] for keyid in outcome.new_keyids)
    render.stdout.print(f"rotated the {role} keys: new key(s) {shown}; the old ones were removed")
    _roles(outcome)
    _published(outcome.publication)


@release.command()
@keys_option
@json_option
@pass_app
def status(app: AppContext, keys: Path, as_json: bool) -> None:
    """The signed versions, the revoked ones, the floor, and each role's version, expiry and keys."""
    state = _release(app, keys, image_needed=False).status()
    if as_json:
        render.print_json(status_document(keys, state))
        return
    from rich.markup import escape
    from rich.table import Table

    from osctl.adapters.tufrepo import iso

    doc = status_document(keys, state)
    versions = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("VERSION", "STATE", "DIGEST", "LENGTH"):
        versions.add_column(column)
    for row in doc["versions"]:
        if row["revoked"]:
            state_text = f"[red]revoked[/]: {escape(row['revoked_reason'] or '')}"
        elif row["below_floor"]:
            state_text = f"[red]below the floor[/] {escape(doc['floor']['version'])}"
        else:
            state_text = "[green]signed[/]"
        versions.add_row(escape(row["version"]), state_text, row["digest"].removeprefix("sha256:")[:12],
                         str(row["length"]))
    if doc["versions"]:
        render.stdout.print(versions)
    else:
        render.stdout.print("no signed versions yet")
    if state.floor is not None:
        why = f" ({escape(state.floor.reason)})" if state.floor.reason else ""
        render.stdout.print(f"floor: {escape(state.floor.version)}{why}, since {state.floor.at}")
    roles = Table(box=None, pad_edge=False, header_style="bold")
    roles.add_column("ROLE")
    roles.add_column("VERSION")
    roles.add_column("EXPIRES", no_wrap=True)
    roles.add_column("KEYS", no_wrap=True)
    roles.add_column("KEY IDS", overflow="fold")
    for role in state.roles:
        roles.add_row(role.role, str(role.version), iso(role.expires),
                      f"{role.threshold} of {len(role.keyids)}, {role.keys_here} here",
                      " ".join(keyid[:8] for keyid in role.keyids))
    render.stdout.print(roles)


def status_document(keys: Path, state: RepositoryStatus) -> dict[str, Any]:
    """``release status --json``: versions newest first, the floor, the roles."""
    from osctl.models.version import try_parse

    floor = try_parse(state.floor.version) if state.floor else None

    def below(version: str) -> bool:
        parsed = try_parse(version)
        return floor is not None and parsed is not None and parsed < floor

    versioned = sorted((t for t in state.targets if try_parse(t.version) is not None),
                       key=lambda t: try_parse(t.version), reverse=True)
    others = [t for t in state.targets if try_parse(t.version) is None]
    return {
        "keys": str(keys),
        "floor": None if state.floor is None else {"version": state.floor.version, "reason": state.floor.reason,
                                                   "at": state.floor.at},
        "versions": [{**t.as_dict(), "below_floor": below(t.version)} for t in versioned + others],
        "roles": [role.as_dict() for role in state.roles],
    }


def _roles(outcome: ReleaseOutcome) -> None:
    if not outcome.signed_roles:
        render.stdout.print("nothing changed; the current metadata is published again")
        return
    versions = {role.role: role.version for role in outcome.status.roles}
    render.stdout.print("new metadata: " + ", ".join(f"{role} v{versions[role]}" for role in outcome.signed_roles))


def _published(publication: Publication) -> None:
    if publication.written:
        render.stdout.print(f"wrote {len(publication.written)} files to {publication.out}")
    if publication.repository:
        render.stdout.print(f"published {', '.join(publication.files)} to {publication.repository}")
    else:
        render.info("not published: no --image or OSCTL_IMAGE; the next release command publishes everything")
