"""Which optional parts of pipenb are installed, and what to install when one is missing.

The base distribution (``pipenb-fleet``) carries only what an agent and the engine need, so a
worker host stays small. The control plane and the management commands need the ``[server]``
extra, DataFrames and the notebook need ``[jupyter]``. A command that needs a missing extra says
so in one line, naming the extra and how to install it from the wheel, instead of failing with
``ModuleNotFoundError`` somewhere deep in an import.

The distribution is installed from the wheel that ``make dist`` builds (or that a pipenb server
serves): the name is not published on the public package index, so the messages never tell
anyone to install it from there.
"""

from __future__ import annotations

import importlib.util

from pipenb.errors import UsageError

#: The distribution's name (``pyproject.toml``). ``pipenb`` on the public index is another project.
DIST = "pipenb-fleet"

#: The modules each extra brings (the first missing one is named in the message).
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("sqlalchemy", "alembic", "requests"),
    "jupyter": ("pandas", "IPython", "ipywidgets", "jupyter_server"),
    "postgres": ("psycopg",),
}


def missing(extra: str) -> str | None:
    """The first module of ``extra`` that is not installed, or None if all are."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def install_hint(extra: str) -> str:
    wheel = DIST.replace("-", "_") + "-VERSION-py3-none-any.whl"
    return (
        f"install the [{extra}] extra from pipenb's wheel: pip install '{wheel}[{extra}]' "
        f"(`make dist` builds it into dist/; a pipenb server serves it at "
        f"/pipenb/api/v1/agent/wheel)"
    )


def message(extra: str, what: str, module: str) -> str:
    return f"{what} needs {module}, which is not installed: {install_hint(extra)}"


def require(extra: str, what: str) -> None:
    """Raise UsageError naming the extra ``what`` (a command) needs, if it is not installed."""
    module = missing(extra)
    if module is not None:
        raise UsageError(message(extra, what, module))
