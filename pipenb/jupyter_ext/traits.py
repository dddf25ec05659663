"""Traitlets generated from a settings dataclass (``pipenb.setting``), one per declared field.

The extension's configurable settings are the server's settings: declaring them again as
traitlets by hand is how Jupyter fell behind the command line (5 of the server's settings where
``pipenb server`` had more). ``traits_for`` makes the traitlets from the dataclass instead, and
``settings_from`` reads them back into it.
"""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Float, Integer, TraitType, Unicode

from pipenb.setting import declared

_TRAITS: dict[type, type[TraitType]] = {str: Unicode, float: Float, int: Integer, bool: Bool}


def traits_for(cls: type) -> dict[str, TraitType]:
    """One ``config=True`` traitlet per declared setting of ``cls`` that Jupyter can use."""
    out = {}
    for s in declared(cls):
        if s.meta.no_jupyter:
            continue
        trait = _TRAITS[s.type]
        out[s.name] = trait(s.default, allow_none=s.default is None, help=s.meta.help).tag(
            config=True
        )
    return out


def settings_from(app: Any, cls: type, **given: Any) -> Any:
    """An instance of the dataclass ``cls`` from ``app``'s traitlets, ``given`` overriding."""
    values = {s.name: getattr(app, s.name) for s in declared(cls) if not s.meta.no_jupyter}
    values.update(given)
    return cls(**values)
