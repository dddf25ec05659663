"""Imports every built-in component so it registers itself in ``pipenb.lang.registry``."""

from pipenb.engine.actions import (  # noqa: F401
    convert,
    extract,
    fields,
    filter,
    mask,
    parse,
    timestamp,
)
from pipenb.engine.inputs import echo, exec, files, stdin  # noqa: F401
from pipenb.engine.outputs import discard, file, print  # noqa: F401
