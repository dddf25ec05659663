"""``(did you mean 'route'?)``: the nearest known name to a misspelt one, for error messages.

Unknown keys, components, options, functions and template parameters are all reported with the
closest known name; one function keeps how close is close enough, and the wording, the same.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any


def did_you_mean(word: Any, options: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """`` (did you mean 'x'?)`` with the option nearest ``word`` written by ``show``, or ``""``
    when none is near enough (difflib's ratio 0.6)."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {show(close[0])}?)" if close else ""
