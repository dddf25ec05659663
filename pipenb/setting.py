"""Settings declared once: a dataclass field per setting, with its help text and flag in metadata.

A component's settings (``pipenb.server.settings.ServerSettings``, ``pipenb.agent.settings``)
are one dataclass. Each field is made with :func:`setting`, which records what the command line
and Jupyter need to know about it; ``add_flags`` generates the argparse options (each also a
``PIPENB_*`` variable, through ``pipenb.cli.options.option``) and
``pipenb.jupyter_ext.traits.traits_for`` the traitlets. A new field is therefore a flag and a
traitlet at once, or says in ``no_cli=`` / ``no_jupyter=`` why not (``tests/cli/test_settings_declared``
holds every field to that). This module imports only the standard library: the agent and the
CLI load it without the server's or Jupyter's dependencies.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MISSING: Any = dataclasses.MISSING


class _Unset:
    """``shown=`` not given: the command line shows the field's own default."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Setting:
    """What a setting needs besides its name and default, kept in the field's metadata."""

    help: str
    flag: str | None = None  # None: --NAME-WITH-DASHES
    parse: Callable[[str], Any] | None = None  # None: the field's type (str, int, float)
    shown: Any = UNSET  # the default as the command line writes it (e.g. "1MiB")
    no_cli: str = ""  # why there is no flag ("" : there is one)
    no_jupyter: str = ""  # why there is no traitlet ("" : there is one)
    env: str | None = None  # None: PIPENB_ and the flag's name


def setting(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    shown: Any = UNSET,
    no_cli: str = "",
    no_jupyter: str = "",
    env: str | None = None,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field that is also a flag and a traitlet (see the module docstring)."""
    meta = {"setting": Setting(help, flag, parse, shown, no_cli, no_jupyter, env)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Declared:
    """One declared setting: the field's name, default and value type with its metadata."""

    name: str
    default: Any
    type: type
    meta: Setting

    @property
    def flag(self) -> str:
        return self.meta.flag or "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def declared(cls: type) -> list[Declared]:
    """The settings of the dataclass ``cls`` made with :func:`setting`, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("setting")
        if meta is None:
            continue
        default = f.default if f.default is not MISSING else None
        out.append(Declared(f.name, default, _value_type(hints[f.name]), meta))
    return out


def _value_type(hint: Any) -> type:
    """``str | None`` -> str, ``float`` -> float, ``list[str]`` -> list."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) is not list:
        hint = args[0]
    return typing.get_origin(hint) or hint


def add_flags(parser: Any, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one option per declared setting of ``cls`` (except those in ``skip``, which the
    command adds by hand because it words or parses them its own way)."""
    from pipenb.cli.options import option

    for s in declared(cls):
        if s.meta.no_cli or s.name in skip:
            continue
        default = s.default if s.meta.shown is UNSET else s.meta.shown
        if s.type is bool:
            option(
                parser,
                s.flag,
                help=s.meta.help,
                default=bool(default),
                flag_action=True,
                env=s.meta.env,
            )
            continue
        parse = s.meta.parse or (s.type if s.type in (int, float) else str)
        option(parser, s.flag, help=s.meta.help, default=default, type=parse, env=s.meta.env)


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The declared settings of ``cls`` that ``args`` has, by field name."""
    return {s.name: getattr(args, s.dest) for s in declared(cls) if hasattr(args, s.dest)}
