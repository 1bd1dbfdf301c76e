"""The ``osctl`` command itself: global options, the command list, and the one place errors end.

Every ``OsctlError`` becomes one red line (plus a hint) and its exit code. Anything else that
reaches here is a bug: it is reported as such in one line, and ``--debug`` shows the traceback.
The entry point is ``osctl.cli.main.main``, which loads this module (and click) only when it
has more to do than print the top-level help.
"""

from __future__ import annotations

from typing import Any

import click

from osctl import __version__
from osctl.cli.context import AppContext

INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in osctl, not in what the user asked


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so a transaction rolls back as on Ctrl-C."""


# name -> (module:attribute, summary). ``osctl --help`` lists the commands from the summaries
# alone and so imports none of their modules. Each summary is the first sentence of the
# command's help; tests/unit/test_cli_lazy.py checks that they match, so they cannot drift.
COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("osctl.cli.agent_cmd:agent",
              "Apply the host's update policy (manual, download-only, auto) until SIGTERM."),
    "boot": ("osctl.cli.transaction_cmd:boot",
             "Start-up: recover, boot the trial or the default version, bring its services up."),
    "bundle": ("osctl.cli.bundle_cmd:bundle",
               "Carry OS versions to hosts with no registry: create, inspect and push bundles."),
    "cloud-init": ("osctl.cli.cloudinit_cmd:cloud_init",
                   "Check, show and apply cloud-init user data (docs/cloud-init.md)."),
    "downgrade": ("osctl.cli.transaction_cmd:downgrade",
                  "Switch the host to an older version (any stored one works offline)."),
    "fleet": ("osctl.cli.fleet_cmd:fleet", "Roll versions out to groups of hosts in coordinated waves (etcd)."),
    "image": ("osctl.cli.image_cmd:image", "Check OS images against the image contract (docs/image-format.md)."),
    "list-versions": ("osctl.cli.versions_cmd:list_versions",
                      "Show every version in the registry or on this host, newest first."),
    "pin": ("osctl.cli.versions_cmd:pin", "Keep stored VERSION through every prune."),
    "prune": ("osctl.cli.versions_cmd:prune",
              "Remove stored versions beyond the newest KEEP; never the running, next-boot, previous or pinned "
              "ones."),
    "pull": ("osctl.cli.versions_cmd:pull",
             "Pull VERSION and store it, so it can be booted or switched to without the network."),
    "release": ("osctl.cli.release_cmd:release",
                "Sign OS versions with the release keys (TUF) and publish the metadata beside the images."),
    "rollback": ("osctl.cli.transaction_cmd:rollback", "Switch back to the previous version."),
    "service": ("osctl.cli.service_cmd:service",
                "List, inspect, start and stop the system services of the active version."),
    "status": ("osctl.cli.status_cmd:status",
               "Show the host, its versions (running, next boot, previous), services, supervisor and trust."),
    "supervise": ("osctl.cli.supervise_cmd:supervise",
                  "Keep the active version's services running until SIGTERM (which leaves them running)."),
    "unpin": ("osctl.cli.versions_cmd:unpin", "Let prune remove VERSION again."),
    "upgrade": ("osctl.cli.transaction_cmd:upgrade",
                "Switch the host to a newer version (the first install, on a new host)."),
}


class LazyGroup(click.Group):
    """A group whose commands live in their own modules, imported only when one of them runs
    (or is asked for its own help). ``lazy``: name -> (``module:attribute``, summary)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        import importlib

        module, _, attr = self.lazy[name][0].partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]

    def summary(self, ctx: click.Context, name: str) -> click.Command | None:
        """A stand-in that has only the command's name and summary, for listing it."""
        if name in self.lazy:
            return click.Command(name, help=self.lazy[name][1])
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click.Group.format_commands, listing the stand-ins: shortened to the width as click does.
        commands = [(name, command) for name in self.list_commands(ctx)
                    if (command := self.summary(ctx, name)) is not None and not command.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in commands])


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="osctl")
# The environment variables are read by osctl.domain.settings, not by click, so that
# `osctl status` can say where each value came from.
@click.option("--root", metavar="DIR",
              help="The host's root folder; all state lives under it.  [env: OSCTL_ROOT; default: /]")
@click.option("--host-id", metavar="ID",
              help="The host's id.  [env: OSCTL_HOST_ID; default: <root>/etc/machine-id]")
@click.option("--image", metavar="REPO",
              help="OS image repository without a tag, e.g. 127.0.0.1:5000/osctl/os.  [env: OSCTL_IMAGE]")
@click.option("--etcd", metavar="URLS",
              help="etcd client URLs, comma-separated, for the fleet.  [env: OSCTL_ETCD; settings: fleet.etcd]")
@click.option("--group", metavar="G",
              help="The host's fleet group.  [env: OSCTL_GROUP; settings: fleet.group; default: default]")
@click.option("--trust-root", metavar="FILE",
              help="The release keys' root.json this host trusts (docs/trust.md).  [env: OSCTL_TRUST_ROOT; "
                   "settings: trust.root]")
@click.option("--json", "as_json", is_flag=True, help="Print data as JSON (same as each command's --json).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, root: str | None, host_id: str | None, image: str | None, etcd: str | None,
        group: str | None, trust_root: str | None, as_json: bool, debug: bool) -> None:
    """osctl replaces a host's operating system in toto: every OS version is a container
    image, every core service a container, and upgrades swap the whole set atomically."""
    app = AppContext(root=root, host_id=host_id, image=image, etcd=etcd, group=group, trust_root=trust_root,
                     json=as_json, debug=debug)
    ctx.obj = app
    ctx.call_on_close(app.close)

    _quiet_log(debug)


def _quiet_log(debug: bool) -> None:
    """osctl's log (retry waits, engine calls) is for --debug; users get warnings through the
    operations' callbacks, worded for them, so the log never clutters stderr otherwise."""
    import logging

    class WarningLine(logging.Handler):
        """Shows warnings as one ``warning:`` line each on stderr, nothing else."""

        def __init__(self) -> None:
            super().__init__(logging.WARNING)

        def emit(self, record: logging.LogRecord) -> None:
            from osctl.cli import render

            render.warn(record.getMessage())

    osctl_log = logging.getLogger("osctl")
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    elif not osctl_log.handlers:
        osctl_log.addHandler(logging.NullHandler())
        osctl_log.propagate = False
        # Damage found in a state file (repaired from its copy, or set aside) concerns the user,
        # and so does what trust could not check (nothing verified, metadata unreachable).
        for name in ("osctl.adapters.statefile", "osctl.operations.trust"):
            logging.getLogger(name).addHandler(WarningLine())


def run(args: list[str], debug: bool) -> int:
    """Run the command line ``args``; returns the exit code (never raises, never a traceback)."""
    import signal

    from osctl.errors import OsctlError

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated()

    if threading_main():
        signal.signal(signal.SIGTERM, terminate)  # `osctl supervise` installs its own
    try:
        result = cli.main(args=args, prog_name="osctl", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:  # one line, like every other error, and where to look
        command = exc.ctx.command_path if exc.ctx is not None else "osctl"
        _error(exc.format_message(), f"see '{command} --help'")
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt) as exc:  # click turns KeyboardInterrupt into Abort
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
            _error("terminated (SIGTERM); an interrupted change was undone or is finished by the next osctl boot")
            return 143
        _error("interrupted")
        return 130
    except OsctlError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _error(exc.message, exc.hint)
        return exc.exit_code
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the last line of defence: a bug, said in one line
        if debug:
            import traceback

            traceback.print_exc()
        _error(f"internal error: {type(exc).__name__}: {exc}",
               "this is a bug in osctl; re-run with --debug to see the traceback and report it")
        return INTERNAL_ERROR


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _error(message: str, hint: str | None = None) -> None:
    from osctl.cli import render

    render.error(message, hint)


def top_help() -> str:
    """``osctl --help`` as click prints it at the usual width (a terminal of 80 columns or more,
    or no terminal): what ``osctl.cli.helptext.TOP_HELP`` holds, so that the entry point can
    print it without loading click (``python -m osctl.cli.helptext`` writes it again)."""
    with click.Context(cli, info_name="osctl", terminal_width=78, **cli.context_settings) as ctx:
        return ctx.get_help() + "\n"
