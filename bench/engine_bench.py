"""Engine benchmark (SPEC section 7): pipenb against a hand-written orjson loop doing the same work.

For each workload, runs ``bench/handloops.py`` and ``pipenb run bench/pipes/wN.yml`` as child
processes, alternating, best of ``--runs`` each, over the same generated file, and prints wall time,
events/s (input lines / wall seconds, process start included), the ratio pipenb/baseline (target
>= 0.9) and each child's peak RSS. It checks that both wrote the same output (a loud WARNING if
not) and measures pipenb's startup overhead on a one-line file. Not a test: nothing is asserted.

    python bench/engine_bench.py [--lines 1000000] [--runs 3] [--workloads w1,w2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen_data  # noqa: E402 - sibling module, importable once HERE is on sys.path

HANDLOOPS = os.path.join(HERE, "handloops.py")
PIPES = os.path.join(HERE, "pipes")
# Which generated file each workload reads: 0 = NDJSON, 1 = text.
WORKLOADS = {"w1": 0, "w2": 1}
DESCRIPTIONS = {
    "w1": "NDJSON -> keep WARN/ERROR, add, rename -> NDJSON",
    "w2": "text -> regex extract, keep ERROR -> NDJSON",
}


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child
    rss_kb: int  # peak resident set size of the child (ru_maxrss, KiB on Linux)
    rc: int
    stderr: str


def pipenb_cli() -> str:
    """The ``pipenb`` script next to this interpreter (the venv's), else the repo's venv."""
    for cand in (
        os.path.join(os.path.dirname(sys.executable), "pipenb"),
        os.path.join(ROOT, ".venv", "bin", "pipenb"),
    ):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("pipenb")
    if found:
        return found
    sys.exit("engine_bench: cannot find the pipenb command; run `make venv` first")


# Children are started by this small launcher, not by the benchmark itself: on Linux a child's
# ru_maxrss starts at the high-water mark of the process it was forked (or vforked) from, so
# children of the benchmark (20+ MB) would all report at least its size. The launcher (~9 MB)
# spawns the command, reaps it with os.wait4 and prints wall seconds, CPU seconds, ru_maxrss
# (KiB) and the exit code. Timing inside the launcher leaves its own start out of the figures.
LAUNCHER = """
import os, sys, time
argv = sys.argv[1:]
null = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=null)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
cpu = usage.ru_utime + usage.ru_stime
print(wall, cpu, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_child(cmd: list[str], workdir: str) -> Run:
    """Run ``cmd`` (stdout discarded); its wall time, its own peak RSS and its stderr."""
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, *cmd]
    with tempfile.TemporaryFile(dir=workdir) as err:
        out = subprocess.run(
            launcher, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
        )
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    try:
        wall, cpu, rss, rc = out.stdout.split()
        return Run(float(wall), float(cpu), int(rss), int(rc), text)
    except ValueError:
        return Run(0.0, 0.0, 0, out.returncode or 1, text + out.stdout.decode("utf-8", "replace"))


def count_lines(path: str) -> int:
    return max(0, gen_data.count_lines(path))


def digest(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


def warm(path: str) -> None:
    """Read a file once so that every timed run finds it in the page cache."""
    with open(path, "rb") as fh:
        while fh.read(1 << 22):
            pass


def remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "before first commit"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def fmt_mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def failed(label: str, cmd: list[str], run: Run) -> None:
    print(f"\n!!! {label} FAILED (exit {run.rc}): {' '.join(cmd)}", file=sys.stderr)
    print(run.stderr.rstrip() or "(no stderr)", file=sys.stderr)


def pipenb_cmd(cli: str, pipe: str, data_dir: str, src: str, dst: str) -> list[str]:
    return [
        cli,
        "run",
        pipe,
        "--data-dir",
        data_dir,
        "--reset",
        "-q",
        "--param",
        f"input={src}",
        "--param",
        f"output={dst}",
    ]


@dataclass
class Result:
    name: str
    lines: int  # input lines
    base_wall: float  # best wall time of the baseline, seconds
    pipe_wall: float  # best wall time of pipenb, seconds
    base_cpu: float  # least CPU time (user + system) of the baseline's runs, seconds
    pipe_cpu: float
    base_rss: int  # highest peak RSS over the baseline's runs, KiB
    pipe_rss: int
    base_out: int  # output lines
    pipe_out: int
    identical: bool  # byte-identical outputs


def bench_workload(
    name: str, src: str, lines: int, runs: int, cli: str, work: str
) -> Result | None:
    pipe = os.path.join(PIPES, f"{name}.yml")
    outs = {
        "baseline": os.path.join(work, f"{name}.baseline.ndjson"),
        "pipenb": os.path.join(work, f"{name}.pipenb.ndjson"),
    }
    cmds = {
        "baseline": [sys.executable, HANDLOOPS, name, src, outs["baseline"]],
        "pipenb": pipenb_cmd(cli, pipe, os.path.join(work, "state"), src, outs["pipenb"]),
    }
    walls: dict[str, list[float]] = {"baseline": [], "pipenb": []}
    cpus: dict[str, list[float]] = {"baseline": [], "pipenb": []}
    rss = {"baseline": 0, "pipenb": 0}
    warm(src)
    for i in range(runs):
        for who in ("baseline", "pipenb"):  # alternate, so drift hits both alike
            remove(outs[who])  # the file output appends: start each run from nothing
            r = run_child(cmds[who], work)
            if r.rc != 0:
                failed(f"{name} {who}", cmds[who], r)
                return None
            walls[who].append(r.wall)
            cpus[who].append(r.cpu)
            rss[who] = max(rss[who], r.rss_kb)
            print(
                f"  {name} run {i + 1}/{runs} {who:8s} {r.wall:7.3f} s wall "
                f"{r.cpu:7.3f} s CPU  {fmt_mb(r.rss_kb)}",
                file=sys.stderr,
            )
    n_base, n_pipe = count_lines(outs["baseline"]), count_lines(outs["pipenb"])
    same = n_base == n_pipe and digest(outs["baseline"]) == digest(outs["pipenb"])
    if n_base != n_pipe:
        bar = "!" * 78
        print(
            f"\n{bar}\nWARNING: {name}: the baseline wrote {n_base:,} lines but pipenb wrote "
            f"{n_pipe:,}.\nThey do not do the same work: the figures below are meaningless.\n"
            f"{bar}\n",
            file=sys.stderr,
        )
    elif not same:
        print(
            f"note: {name}: same line count ({n_base:,}) but the bytes differ "
            "(field order or number formatting)",
            file=sys.stderr,
        )
    return Result(
        name,
        lines,
        min(walls["baseline"]),
        min(walls["pipenb"]),
        min(cpus["baseline"]),
        min(cpus["pipenb"]),
        rss["baseline"],
        rss["pipenb"],
        n_base,
        n_pipe,
        same,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--lines", type=int, default=gen_data.DEFAULT_LINES, help="input lines (default 1,000,000)"
    )
    ap.add_argument("--runs", type=int, default=3, help="runs of each, best kept (default 3)")
    ap.add_argument("--workloads", default="w1,w2", help="comma-separated (default w1,w2)")
    args = ap.parse_args(argv)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        ap.error(f"unknown workload(s) {', '.join(unknown) or '(none)'}; choose from w1, w2")
    if args.lines < 1 or args.runs < 1:
        ap.error("--lines and --runs must be at least 1")

    cli = pipenb_cli()
    files = gen_data.ensure(args.lines)
    work = tempfile.mkdtemp(prefix="pipenb-bench-")
    try:
        results = []
        for name in names:
            print(f"{name}: {DESCRIPTIONS[name]}", file=sys.stderr)
            res = bench_workload(name, files[WORKLOADS[name]], args.lines, args.runs, cli, work)
            if res is not None:
                results.append(res)

        # Startup: the whole of `pipenb run` on a one-line file, against a bare interpreter.
        one = os.path.join(work, "one.log")
        with open(one, "w") as fh:
            fh.write(
                '2026-11-23T10:00:00.123Z ERROR web-3 checkout "payment failed for order 123" '
                "latency_ms=123 status=500\n"
            )
        one_out = os.path.join(work, "one.ndjson")
        cmd = pipenb_cmd(
            cli, os.path.join(PIPES, "w2.yml"), os.path.join(work, "state"), one, one_out
        )
        startup: Run | None = None
        py_start = min(
            run_child([sys.executable, "-c", "pass"], work).wall for _ in range(args.runs)
        )
        for _ in range(args.runs):
            remove(one_out)
            r = run_child(cmd, work)
            if r.rc != 0:
                failed("startup", cmd, r)
                break
            if startup is None or r.wall < startup.wall:
                startup = r
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"pipenb engine benchmark, {args.lines:,} input lines, best of {args.runs}")
    print(
        f"{time.strftime('%Y-%m-%d')}, commit {git_commit()}, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPU(s)"
    )
    print()
    header = ["workload", "out lines", "baseline s", "pipenb s", "baseline ev/s"]
    header += ["pipenb ev/s", "ratio", "CPU ratio", "baseline RSS", "pipenb RSS"]
    rows = [
        [
            r.name,
            f"{r.pipe_out:,}" + ("" if r.identical else " (!)"),
            f"{r.base_wall:.3f}",
            f"{r.pipe_wall:.3f}",
            fmt_rate(r.lines / r.base_wall),
            fmt_rate(r.lines / r.pipe_wall),
            f"{r.base_wall / r.pipe_wall:.2f}x",
            f"{r.base_cpu / r.pipe_cpu:.2f}x",
            fmt_mb(r.base_rss),
            fmt_mb(r.pipe_rss),
        ]
        for r in results
    ]
    if rows:
        print(table(rows, header))
    print()
    print(
        "ratio = pipenb events/s / baseline events/s, wall time (SPEC section 7 target: >= 0.90x)"
    )
    print("CPU ratio = the same from user+system CPU seconds (steadier on a busy machine)")
    for r in results:
        if r.base_out != r.pipe_out:
            print(
                f"WARNING!!! {r.name}: baseline wrote {r.base_out:,} lines, pipenb "
                f"{r.pipe_out:,}: they did not do the same work, ignore this row"
            )
    if any(not r.identical for r in results):
        print("(!) the outputs differ: see the messages above")
    elif results:
        print("outputs: pipenb and the baseline wrote byte-identical files")
    if startup is not None:
        print(
            f"pipenb startup (`pipenb run` on a 1-line file): {startup.wall:.3f} s, "
            f"{fmt_mb(startup.rss_kb)} RSS; bare `python -c pass`: {py_start:.3f} s"
        )
        for r in results:
            work_s = r.pipe_wall - startup.wall
            if work_s < r.pipe_wall / 2:
                print(
                    f"  {r.name}: ratio without process startup: n/a (mostly startup; more --lines)"
                )
                continue
            steady = (r.base_wall - py_start) / work_s
            print(f"  {r.name}: ratio without process startup {steady:.2f}x")
    return 0 if len(results) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
