"""Start-up with the cyclic garbage collector paused.

A command's start-up (importing argparse, asyncio, yaml and pydantic, building the option models,
validating the pipe) creates tens of thousands of objects that live as long as the process and
almost no cyclic garbage (W1's pipe: 836 objects). The collector would still run every 700
allocations and walk the older objects again as they pile up: 0.032 G of the 0.895 G
instructions ``pipenb run`` took to start (bench/README.md). So the start-up runs with it paused
and it is on again before the command's work begins. What the start-up made is frozen rather
than collected: otherwise the first collection after it walks all of it once more, and the few
cycles it left are not worth a full collection (0.012 G).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """The cyclic collector off inside the block, then as it was. With ``freeze`` every object
    alive is then moved out of the collector's generations (``gc.freeze``), as ``Engine.run``
    does when it starts: a block that runs a pipe next freezes a few milliseconds earlier."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_on:
            gc.enable()
