"""Pipe soak: ``pipenb run`` at full speed on a tailed file for a long time.

``bench/soak/soak-pipe.yml`` (``files`` input tailing one file; ``extract``, ``filter``,
``parse``, ``convert``, ``add``; a ``file`` output rotated at 64 MB, two old files kept) runs as
``python -m pipenb run`` while ``feeder.py`` appends lines from ``bench/gen_data.py`` to its
input, staying up to 64 MB ahead of it (so the pipe never waits for data) and rotating the input
by renaming it every 256 MB. The disk holds at most ~0.8 GB at any time.

Measured: events/s (from the progress line ``pipenb run`` prints every second on a terminal:
it runs on a pseudo-terminal here), and the pipe process's RSS, CPU and open file descriptors
every ``sample_every`` seconds. At the end the writer stops, the pipe catches up, and the lines
written are compared with the events the pipe read (a lost or doubled line shows there); then
the pipe is stopped with SIGINT (it drains and checkpoints) and must exit 0.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from common import BENCH, ROOT, ProcSeries, fmt, header, say, table, write_json

HERE = Path(__file__).resolve().parent
PIPE = HERE / "soak-pipe.yml"
PROGRESS = re.compile(rb"(\d+) in, (\d+) out, (\d+) errors")
MIN_FREE = 3 << 30  # bytes of free disk needed to start


@dataclass
class Config:
    duration: float = 600.0
    warmup: float = 120.0
    sample_every: float = 10.0
    lead: int = 64 << 20
    rotate: int = 256 << 20
    source_lines: int = 100_000

    def params(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Progress:
    """The newest progress line of ``pipenb run`` (read from its terminal in a thread)."""

    t: float = 0.0
    inp: int = 0
    out: int = 0
    errors: int = 0
    tail: bytearray = field(default_factory=bytearray)  # the last bytes seen (for errors)

    def follow(self, fd: int) -> None:
        buf = b""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not data:
                return
            self.tail = (self.tail + data)[-4000:]
            buf += data
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for part in reversed(parts):
                m = PROGRESS.search(part)
                if m:
                    self.t = time.monotonic()
                    self.inp, self.out, self.errors = (int(x) for x in m.groups())
                    break


@dataclass
class Feeder:
    """The writer's status lines (read from its stdout in a thread)."""

    last: dict[str, Any] = field(default_factory=dict)

    def follow(self, stream: Any) -> None:
        for line in stream:
            try:
                self.last = orjson.loads(line)
            except orjson.JSONDecodeError:
                pass


def run(cfg: Config) -> dict[str, Any]:
    return asyncio.run(_run(cfg))


async def _run(cfg: Config) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    from gen_data import ensure

    tmp = Path(tempfile.mkdtemp(prefix="pipenb-soak-pipe-"))
    free0 = shutil.disk_usage(tmp).free
    say(
        f"[pipe] work dir {tmp}: {free0 / 2**30:.1f} GB free "
        f"({shutil.disk_usage(tmp).total / 2**30:.0f} GB disk)"
    )
    if free0 < MIN_FREE:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"needs {MIN_FREE / 2**30:.0f} GB free in {tmp}, has {free0 / 2**30}")
    _, source = ensure(cfg.source_lines)
    inp, out, data = tmp / "in.log", tmp / "out.ndjson", tmp / "data"
    inp.touch()
    result = header("pipe", cfg.params())
    py = sys.executable
    master, slave = pty.openpty()
    pipe_proc: subprocess.Popen[bytes] | None = None
    feeder_proc: subprocess.Popen[str] | None = None
    prog, feed = Progress(), Feeder()
    try:
        pipe_proc = subprocess.Popen(
            [py, "-m", "pipenb", "run", str(PIPE), "--data-dir", str(data), "--reset",
             "--param", f"input={inp}", "--param", f"output={out}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT,
        )  # fmt: skip
        os.close(slave)
        slave = -1
        threading.Thread(target=prog.follow, args=(master,), daemon=True).start()
        feeder_proc = subprocess.Popen(
            [py, str(HERE / "feeder.py"), "--path", str(inp), "--source", source,
             "--reader-pid", str(pipe_proc.pid), "--lead", str(cfg.lead),
             "--rotate", str(cfg.rotate)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=feed.follow, args=(feeder_proc.stdout,), daemon=True).start()
        started = time.monotonic()
        while not prog.t and time.monotonic() - started < 60 and pipe_proc.poll() is None:
            await asyncio.sleep(0.1)  # imports; the window starts at the first progress line
        if not prog.t:
            raise RuntimeError(
                f"pipenb run printed no progress (code {pipe_proc.poll()}): "
                f"{prog.tail.decode(errors='replace')[-1500:]}"
            )
        t0 = time.monotonic()
        t_end = t0 + cfg.duration
        srv = ProcSeries(pipe_proc.pid, t0, cfg.sample_every)
        feeder_series = ProcSeries(feeder_proc.pid, t0, cfg.sample_every)
        points: list[dict[str, Any]] = []
        free_min = [free0]

        def on_sample(x: Any) -> None:
            free = shutil.disk_usage(tmp).free
            free_min[0] = min(free_min[0], free)
            points.append(
                {
                    "t": round(x.t, 1),
                    "events_in": prog.inp,
                    "events_out": prog.out,
                    "progress_t": prog.t - t0,  # when the counts were printed
                    "rss_mb": x.rss_mb,
                    "cpu_s": x.cpu_s,
                    "fds": x.fds,
                    "lines_written": feed.last.get("lines", 0),
                    "input_rotations": feed.last.get("rotations", 0),
                    "free_gb": round(free / 2**30, 2),
                }
            )
            if len(points) > 1:
                a, b = points[-2], points[-1]
                rate = (b["events_in"] - a["events_in"]) / max(
                    1e-9, b["progress_t"] - a["progress_t"]
                )
                say(
                    f"[pipe] t={x.t:5.0f} s  {rate:10,.0f} events/s  RSS {x.rss_mb:6.1f} MB  "
                    f"CPU {srv.cpu_pct(a['t'], b['t']):5.1f}%  fds {x.fds}  input rotations "
                    f"{b['input_rotations']}  free {b['free_gb']:.1f} GB  "
                    f"load average {os.getloadavg()[0]:.2f}"
                )
            if free < 1 << 30:
                raise RuntimeError(f"less than 1 GB free in {tmp}: stopping")

        task = asyncio.create_task(srv.run(on_sample))
        task2 = asyncio.create_task(feeder_series.run())
        while time.monotonic() < t_end:
            await asyncio.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
            if task.done():
                task.result()  # raises what on_sample raised
                raise RuntimeError(
                    f"the pipe exited early (code {pipe_proc.poll()}): "
                    f"{prog.tail.decode(errors='replace')[-1500:]}"
                )
        task.cancel()
        task2.cancel()
        # ---- the writer stops; the pipe catches up; then it is stopped
        feeder_proc.send_signal(signal.SIGTERM)
        feeder_proc.wait(30)
        await asyncio.sleep(0.2)  # its last status line
        written = feed.last.get("lines", 0)
        t_stop = time.monotonic()
        while prog.inp < written and time.monotonic() - t_stop < 60:
            await asyncio.sleep(0.2)
        caught_up = time.monotonic() - t_stop
        read = prog.inp
        await asyncio.sleep(1.5)  # the output flushes its last batch (timeout 0.25 s)
        pipe_proc.send_signal(signal.SIGINT)
        try:
            code = pipe_proc.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        result.update(
            figures(cfg, points, srv, feeder_series, feed.last, read, caught_up, code, free0,
                    free_min[0], prog)
        )  # fmt: skip
        result["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    finally:
        for p in (feeder_proc, pipe_proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for fd in (master, slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def figures(
    cfg: Config,
    points: list[dict[str, Any]],
    srv: ProcSeries,
    feeder: ProcSeries,
    fed: dict[str, Any],
    read: int,
    caught_up: float,
    code: int | None,
    free0: int,
    free_min: int,
    prog: Progress,
) -> dict[str, Any]:
    series = []
    for a, b in itertools.pairwise(points):
        dt = max(1e-9, b["progress_t"] - a["progress_t"])
        series.append(
            {
                "t": round(a["t"]),
                "events_per_s": round((b["events_in"] - a["events_in"]) / dt),
                "out_per_s": round((b["events_out"] - a["events_out"]) / dt),
                "cpu_pct": round((b["cpu_s"] - a["cpu_s"]) / max(1e-9, b["t"] - a["t"]) * 100, 1),
                "rss_mb": b["rss_mb"],
                "fds": b["fds"],
                "input_rotations": b["input_rotations"],
                "free_gb": b["free_gb"],
            }
        )
    window = [p for p in points if p["t"] <= cfg.duration + 0.5]
    first, last = window[0], window[-1]
    span = max(1e-9, last["progress_t"] - first["progress_t"])
    after = [s for s in series if s["t"] >= cfg.warmup]
    rates = sorted(s["events_per_s"] for s in series)
    from common import slope

    return {
        "window_s": round(span, 1),
        "events_in": last["events_in"] - first["events_in"],
        "events_per_s": round((last["events_in"] - first["events_in"]) / span),
        "events_per_s_min": rates[0] if rates else None,
        "events_per_s_max": rates[-1] if rates else None,
        "events_per_s_first_half": _mean(s["events_per_s"] for s in series[: len(series) // 2]),
        "events_per_s_second_half": _mean(s["events_per_s"] for s in series[len(series) // 2 :]),
        "events_per_s_slope_per_min": round(
            slope([(s["t"], s["events_per_s"]) for s in after]) * 60
        )
        if len(after) >= 3
        else None,
        "pipe": {
            "cpu_pct": round(srv.cpu_pct(0, cfg.duration), 1),
            "runq_pct": round(srv.runq_pct(0, cfg.duration), 1),
            "rss_mb": srv.rss_summary(cfg.duration, cfg.warmup),
            "fds": srv.fd_summary(),
        },
        "writer": {
            "cpu_pct": round(feeder.cpu_pct(0, cfg.duration), 1),
            "lines": fed.get("lines"),
            "bytes": fed.get("bytes"),
            "input_rotations": fed.get("rotations"),
            "waiting_for_reader_s": fed.get("waiting_s"),
        },
        "end": {
            "lines_written": fed.get("lines"),
            "events_read": read,
            "difference": read - (fed.get("lines") or 0),
            "caught_up_s": round(caught_up, 2),
            "events_out": prog.out,
            "errors": prog.errors,
            "exit_code": code,
            "last_output": prog.tail.decode(errors="replace")[-600:].replace("\r", "\n"),
        },
        "disk_free_gb": {"start": round(free0 / 2**30, 1), "min": round(free_min / 2**30, 1)},
        "series": series,
    }


def _mean(xs: Any) -> float | None:
    xs = list(xs)
    return round(sum(xs) / len(xs)) if xs else None


def summary(r: dict[str, Any]) -> str:
    p, e, w = r["pipe"], r["end"], r["writer"]
    rss = p["rss_mb"]
    rows = [
        ["pipe", f"bench/soak/soak-pipe.yml, {r['params']['duration']:g} s at full speed"],
        ["events read", f"{r['events_in']:,} in {r['window_s']:g} s: "
         f"{r['events_per_s']:,} events/s"],
        ["events/s per sample", f"min {fmt(r['events_per_s_min'])}, max "
         f"{fmt(r['events_per_s_max'])}; first half {fmt(r['events_per_s_first_half'])}, "
         f"second half {fmt(r['events_per_s_second_half'])}; slope after warm-up "
         f"{fmt(r['events_per_s_slope_per_min'])} events/s per min"],
        ["pipe CPU", f"{fmt(p['cpu_pct'])}% of one core; ready but waiting for a CPU "
         f"{fmt(p['runq_pct'])}% of the time"],
        ["pipe RSS", f"start {fmt(rss.get('start'))}, after warm-up "
         f"{fmt(rss.get('after_warmup'))}, middle {fmt(rss.get('middle'))}, end "
         f"{fmt(rss.get('end'))}, max {fmt(rss.get('max'))} MB"],
        ["RSS slope after warm-up", f"{fmt(rss.get('slope_mb_per_min'))} MB/min "
         f"(from {fmt(rss.get('warmup_s'))} s on)"],
        ["pipe open fds", str(p["fds"])],
        ["writer", f"{fmt(w['lines'])} lines, {fmt((w['bytes'] or 0) / 2**20)} MiB, "
         f"{w['input_rotations']} input rotations, {fmt(w['cpu_pct'])}% CPU, waited for the "
         f"reader {fmt(w['waiting_for_reader_s'])} s"],
        ["end", f"lines written {fmt(e['lines_written'])}, events read {fmt(e['events_read'])} "
         f"(difference {e['difference']}), caught up in {e['caught_up_s']} s; "
         f"{fmt(e['events_out'])} out, {e['errors']} errors; exit code {e['exit_code']}"],
        ["disk free", f"{r['disk_free_gb']['start']} GB at the start, min "
         f"{r['disk_free_gb']['min']} GB"],
    ]  # fmt: skip
    out = [table(["figure", "value"], rows), ""]
    cols = ["t", "events_per_s", "out_per_s", "cpu_pct", "rss_mb", "fds", "input_rotations"]
    out.append(
        table(
            ["t s", "events/s", "out/s", "CPU%", "RSS MB", "fds", "input rotations"],
            [[s[c] for c in cols] for s in r["series"]],
        )
    )
    return "\n".join(out)


def write(r: dict[str, Any]) -> Path:
    return write_json("pipe", r)
