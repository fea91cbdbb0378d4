"""Command-line plumbing shared by `lmmdata` and `lmmtrain`: options tied to config fields, usage errors.

Options default to None ("not given") so that a YAML file and the dataclass
defaults still apply; the help text therefore takes the default from the config
dataclass itself, so what `--help` shows and what runs cannot disagree. Help is
plain text (typer's rich markup is off), so brackets in help are never eaten.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

import typer

try:  # newer typer runs on its own copy of click; older typer on click itself
    from typer._click.exceptions import UsageError
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover
    from click import UsageError, get_current_context

from .config import ConfigError, MissingOptions, resolve
from .stats import console

APP_SETTINGS = dict(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)


def shown(value: Any) -> str:
    """A default as the help text shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field `name` (None when it has none)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def option(cls: type, name: str, *decls: str, help: str, default: str | None = None, **kw: Any) -> Any:
    """A typer option for field `name` of config class `cls`, its help ending in `[default: X]`.

    `default` replaces the shown default where the field's value means something else
    (None = "all cores", say); a field with no default and no `default` shows none.
    """
    value = field_default(cls, name)
    text = default if default is not None else (None if value is None else shown(value))
    return typer.Option(None, *decls, help=help.rstrip() + (f" [default: {text}]" if text else ""), **kw)


def usage_error(message: str) -> NoReturn:
    """Exit 2 with click's usage message (wrong command line), like typer's own checks."""
    raise UsageError(message, get_current_context(silent=True))


def param_label(name: str) -> str:
    """How the current command spells the parameter for field `name`: '-o/--out', or 'IN' for an argument."""
    ctx = get_current_context(silent=True)
    for p in ctx.command.params if ctx else ():
        if p.name == name:
            return "/".join(p.opts) if p.param_type_name == "option" else (p.metavar or p.name.upper())
    return name


def resolve_or_exit(cls: type, config: str | None, **flags: Any) -> Any:
    """`resolve` for a command: missing options exit 2 naming the flag, bad settings exit 1."""
    try:
        return resolve(cls, config, **flags)
    except MissingOptions as e:
        exit_missing(e)
    except ConfigError as e:
        fail(e)


def exit_missing(e: MissingOptions) -> NoReturn:
    """Exit 2 naming the missing options as the command line spells them."""
    usage_error("missing " + ", ".join(param_label(n) for n in e.names)
                + " (give it on the command line or in the --config file)")


def fail(e: BaseException | str) -> NoReturn:
    """Print a bad-setting error (the message says how to fix it) and exit 1."""
    console.print(f"[bold red]error:[/] {e}", highlight=False)
    raise typer.Exit(1)
