"""What every output shares: the ``batch:`` and ``buffer:`` options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipenb.lang.registry import Options
from pipenb.lang.types import Duration, Size


class BatchOptions(Options):
    """``batch: {size: N, timeout: DURATION}``: write when N events wait or the oldest waited."""

    size: int = Field(default=1000, ge=1)
    timeout: Duration = 0.25


class OutputOptions(Options):
    """``buffer: disk`` (http-post, tcp, udp, syslog, file) keeps what the sink has not taken
    on disk (``pipenb.engine.outputs.disk``), bounded by ``buffer-size``."""

    batch: BatchOptions = BatchOptions()
    buffer: Literal["memory", "disk"] = "memory"
    buffer_size: Size = Field(default=1 << 30, ge=1 << 16)
