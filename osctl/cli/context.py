"""The per-invocation context handed to every command: settings and a lazily made engine.

Nothing heavy happens until a command asks for it: ``osctl --help`` imports neither docker nor
pydantic, and a command that needs no engine never connects to one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from osctl.adapters.engine import Engine
    from osctl.domain.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    root: str | None = None
    host_id: str | None = None
    image: str | None = None
    etcd: str | None = None
    group: str | None = None
    trust_root: str | None = None
    json: bool = False
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from osctl.domain.settings import Settings

            self._settings = Settings(self.root, self.host_id, self.image, etcd_option=self.etcd,
                                      group_option=self.group, trust_root_option=self.trust_root)
            self._settings.check_file()
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from osctl.adapters.engine import Engine

            self._engine = Engine()
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


pass_app = click.make_pass_decorator(AppContext)


def json_option(func: F) -> F:
    """``--json`` on a command; the global ``osctl --json`` means the same."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        app = ctx.find_object(AppContext)
        return bool(value or (app is not None and app.json))

    return click.option("--json", "as_json", is_flag=True, callback=callback,
                        help="Print the result as JSON on stdout.")(func)


def from_option(func: F) -> F:
    """``--from FILE``: take new versions from a bundle (docs/bundles.md) instead of the registry."""

    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise click.BadParameter("names no file", param_hint="--from")
        app = ctx.find_object(AppContext)
        if value is not None and app is not None:
            app.settings.bundle_option = value
        return value

    return click.option("--from", "bundle", metavar="FILE", callback=callback, expose_value=False,
                        help="Take the version from this bundle (osctl bundle create); no registry is asked.")(func)
