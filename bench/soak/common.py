"""What every soak shares: sampling a process from /proc, the RSS slope, tables, the JSON file.

Imports the helpers of ``bench/checkin_load.py`` (``proc_sample``, ``pct``, ``ms``) rather than
copying them: ``run.py`` puts ``bench/`` on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from checkin_load import pct, proc_sample

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
OUT = BENCH / "out"


# ---------------------------------------------------------------------------- /proc
def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Sample:
    t: float  # seconds since the start of the soak's window
    cpu_s: float  # utime + stime of the process
    rss_mb: float
    runq_s: float  # time ready to run but without a CPU
    fds: int | None = None


@dataclass
class ProcSeries:
    """A process sampled every ``every`` seconds from ``t0`` (monotonic) until cancelled."""

    pid: int
    t0: float
    every: float = 10.0
    samples: list[Sample] = field(default_factory=list)

    def take(self) -> Sample | None:
        s = proc_sample(self.pid)
        if s is None:
            return None
        x = Sample(time.monotonic() - self.t0, s[0], s[1], s[2], fd_count(self.pid))
        self.samples.append(x)
        return x

    async def run(self, on_sample: Any = None) -> None:
        """Sample at t0, t0 + every, ... (a late slot is skipped, not made up in a burst)."""
        await asyncio.sleep(max(0.0, self.t0 - time.monotonic()))
        while True:
            x = self.take()
            if x is None:
                return
            if on_sample is not None:
                on_sample(x)
            k = int((time.monotonic() - self.t0) // self.every) + 1
            await asyncio.sleep(max(0.0, self.t0 + k * self.every - time.monotonic()))

    def cpu_pct(self, a: float, b: float) -> float:
        """Average CPU % of one core between window times ``a`` and ``b`` (nearest samples)."""
        inside = [s for s in self.samples if a - 0.5 <= s.t <= b + 0.5]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].t - inside[0].t) * 100

    def runq_pct(self, a: float, b: float) -> float:
        inside = [s for s in self.samples if a - 0.5 <= s.t <= b + 0.5]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1].runq_s - inside[0].runq_s) / (inside[-1].t - inside[0].t) * 100

    def rss_summary(self, duration: float, warmup: float) -> dict[str, Any]:
        """RSS at the start, middle and end of the window, its max, and the slope after warm-up."""
        inside = [s for s in self.samples if -0.5 <= s.t <= duration + 0.5]
        if not inside:
            return {}

        def at(t: float) -> float:
            return min(inside, key=lambda s: abs(s.t - t)).rss_mb

        after = [(s.t, s.rss_mb) for s in inside if s.t >= warmup]
        return {
            "start": round(at(0), 1),
            "after_warmup": round(at(warmup), 1),
            "middle": round(at(duration / 2), 1),
            "end": round(at(duration), 1),
            "max": round(max(s.rss_mb for s in inside), 1),
            "warmup_s": warmup,
            "slope_mb_per_min": round(slope(after) * 60, 3),
            "samples_after_warmup": len(after),
        }

    def fd_summary(self) -> dict[str, Any]:
        fds = [s.fds for s in self.samples if s.fds is not None]
        return {"start": fds[0], "end": fds[-1], "max": max(fds)} if fds else {}


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points (y per x); nan with fewer than 3 points."""
    if len(points) < 3:
        return float("nan")
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of latencies in seconds."""
    lat = sorted(latencies)
    return {
        "p50": round(pct(lat, 50) * 1000, 2),
        "p90": round(pct(lat, 90) * 1000, 2),
        "p99": round(pct(lat, 99) * 1000, 2),
        "max": round((lat[-1] if lat else float("nan")) * 1000, 2),
    }


# ---------------------------------------------------------------------------- context
def machine() -> dict[str, Any]:
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 1024 / 1024
    except OSError:
        mem = float("nan")
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(mem, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average": round(os.getloadavg()[0], 2),
    }


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pipenb"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return head + (" (uncommitted changes under pipenb/)" if dirty else "")


def header(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "soak": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "params": params,
    }


def write_json(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"soak-{name}.json"

    def default(x: Any) -> Any:
        if isinstance(x, float):
            return None
        raise TypeError

    # NaN is not JSON: written as null
    def clean(x: Any) -> Any:
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    path.write_bytes(orjson.dumps(clean(result), option=orjson.OPT_INDENT_2, default=default))
    return path


# ---------------------------------------------------------------------------- printing
def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table, numbers right-aligned."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    num = [all(_numeric(r[i]) for r in cells) if cells else False for i in range(len(headers))]
    out = [
        "  ".join(h.rjust(w) if n else h.ljust(w) for h, w, n in zip(headers, widths, num)),
        "  ".join("-" * w for w in widths),
    ]
    for r in cells:
        out.append("  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, num)))
    return "\n".join(line.rstrip() for line in out)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "", 1).replace("-", "", 1).isdigit() or s == "-"


def fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if isinstance(x, float):
        return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.2f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def say(msg: str) -> None:
    print(msg, flush=True)


def python() -> str:
    return sys.executable
