"""Engine benchmark (SPEC section 7): pipenb against a hand-written orjson loop and two peers.

For each workload, runs as child processes, alternating, best of ``--runs`` each, over the same
generated file: the hand loop (``bench/handloops.py``), ``pipenb run bench/pipes/wN.yml`` with one
worker and with ``--workers auto``, bytewax and polars (lazy, one thread; ``bench/peers.py``; a
peer that is not installed is skipped with a line saying so). It prints wall time, events/s (input
lines / wall seconds, process start included), the ratio to the loop (target >= 0.9 for one
worker, >= 1.6 for all cores), CPU seconds and their ratio, each side's peak RSS (largest process,
and the process tree's summed PSS), and checks that every side wrote the loop's multiset of events (a
loud WARNING if not). It also measures pipenb's startup on a one-line file. Not a test: nothing
is asserted.

    python bench/engine_bench.py [--lines 1000000] [--runs 3] [--workloads w1,w2]
"""

from __future__ import annotations

import argparse
import collections
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
PEERS = os.path.join(HERE, "peers.py")
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
    rss_kb: int  # peak resident set size of the largest process (ru_maxrss, KiB on Linux)
    rc: int
    stderr: str
    tree_kb: int = 0  # peak of the summed PSS of the child and its children (sampled)


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
# spawns the command, reaps it with os.wait4 and prints wall seconds, CPU seconds (the child's
# and those of the children it reaped: worker processes count), ru_maxrss (KiB: the largest
# single process) and the exit code, plus the largest sum of VmRSS over the child and its
# children, sampled every 20 ms from /proc (worker processes together). Timing inside the
# launcher leaves its own start out of the figures.
LAUNCHER = """
import os, sys, time, threading
argv = sys.argv[1:]
null = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
peak = [0]
def rss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
def kids(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []
def sample(pid, done):
    while not done.wait(0.02):
        todo, total = [pid], 0
        while todo:
            p = todo.pop()
            total += rss(p)
            todo += kids(p)
        peak[0] = max(peak[0], total)
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=null)
done = threading.Event()
threading.Thread(target=sample, args=(pid, done), daemon=True).start()
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
done.set()
cpu = usage.ru_utime + usage.ru_stime
print(wall, cpu, usage.ru_maxrss, os.waitstatus_to_exitcode(status), peak[0] or usage.ru_maxrss)
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
        wall, cpu, rss, rc, tree = out.stdout.split()
        return Run(float(wall), float(cpu), int(rss), int(rc), text, int(tree))
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
class Side:
    """One contender of a workload: its command, or why it is skipped."""

    label: str
    cmd: list[str] | None
    out: str
    skip: str = ""


@dataclass
class SideResult:
    label: str
    wall: float = 0.0  # best wall time, seconds
    cpu: float = 0.0  # least CPU time (user + system, workers included), seconds
    rss_kb: int = 0  # highest peak RSS of one process over the runs, KiB
    tree_kb: int = 0  # highest sum of the process tree's PSS (sampled), KiB
    out_lines: int = 0
    same: str = ""  # the output check against the loop
    skip: str = ""


@dataclass
class Result:
    name: str
    lines: int  # input lines
    sides: list[SideResult]


def has_workers_flag(cli: str) -> str:
    """Empty when ``pipenb run`` takes ``--workers``, else why the side is skipped."""
    out = subprocess.run([cli, "run", "--help"], capture_output=True, text=True)
    return "" if "--workers" in out.stdout else "this pipenb has no `run --workers`"


def peer_missing(module: str) -> str:
    """Empty when ``module`` imports in the benchmark's interpreter, else why it is skipped."""
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return "" if probe.returncode == 0 else f"{module} is not installed (make bench)"


def canonical_lines(path: str) -> collections.Counter[bytes]:
    """The output as a multiset of events: each line parsed and re-encoded with sorted keys."""
    import orjson

    counts: collections.Counter[bytes] = collections.Counter()
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                counts[orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)] += 1
    return counts


def sides_of(name: str, src: str, cli: str, work: str, workers_skip: str) -> list[Side]:
    pipe = os.path.join(PIPES, f"{name}.yml")
    state = os.path.join(work, "state")

    def out(label: str) -> str:
        return os.path.join(work, f"{name}.{label}.ndjson")

    sides = [Side("loop", [sys.executable, HANDLOOPS, name, src, out("loop")], out("loop"))]
    one = pipenb_cmd(cli, pipe, state, src, out("pipenb-1"))
    if not workers_skip:
        one += ["--workers", "1"]
    sides.append(Side("pipenb 1 worker", one, out("pipenb-1")))
    auto = [*pipenb_cmd(cli, pipe, state, src, out("pipenb-auto")), "--workers", "auto"]
    sides.append(Side("pipenb workers auto", auto, out("pipenb-auto"), workers_skip))
    for peer in ("bytewax", "polars"):
        cmd = [sys.executable, PEERS, peer, name, src, out(peer)]
        sides.append(Side(peer, cmd, out(peer), peer_missing(peer)))
    return sides


def bench_workload(
    name: str, src: str, lines: int, runs: int, cli: str, work: str, workers_skip: str
) -> Result | None:
    sides = sides_of(name, src, cli, work, workers_skip)
    results = {s.label: SideResult(s.label, skip=s.skip) for s in sides}
    walls: dict[str, list[float]] = {s.label: [] for s in sides}
    cpus: dict[str, list[float]] = {s.label: [] for s in sides}
    warm(src)
    for i in range(runs):
        for side in sides:  # alternate, so drift hits every side alike
            res = results[side.label]
            if res.skip or side.cmd is None:
                continue
            remove(side.out)  # the file output appends: start each run from nothing
            r = run_child(side.cmd, work)
            if r.rc != 0:
                failed(f"{name} {side.label}", side.cmd, r)
                if side.label == "loop":
                    return None
                res.skip = f"failed (exit {r.rc})"
                continue
            walls[side.label].append(r.wall)
            cpus[side.label].append(r.cpu)
            res.rss_kb = max(res.rss_kb, r.rss_kb)
            res.tree_kb = max(res.tree_kb, r.tree_kb)
            print(
                f"  {name} run {i + 1}/{runs} {side.label:20s} {r.wall:7.3f} s wall "
                f"{r.cpu:7.3f} s CPU  {fmt_mb(r.rss_kb)} (tree PSS {fmt_mb(r.tree_kb)})",
                file=sys.stderr,
            )
    loop_digest = digest(sides[0].out)
    loop_events = canonical_lines(sides[0].out)
    for side in sides:
        res = results[side.label]
        if res.skip:
            continue
        res.wall, res.cpu = min(walls[side.label]), min(cpus[side.label])
        res.out_lines = count_lines(side.out)
        if side.label == "loop":
            res.same = "-"
        elif digest(side.out) == loop_digest:
            res.same = "yes, bytes"
        elif canonical_lines(side.out) == loop_events:
            res.same = "yes"
        else:
            res.same = "NO"
            bar = "!" * 78
            print(
                f"\n{bar}\nWARNING: {name}: {side.label} wrote {res.out_lines:,} lines that are "
                f"not the loop's events ({sum(loop_events.values()):,} lines).\n"
                f"Its figures are meaningless.\n{bar}\n",
                file=sys.stderr,
            )
    return Result(name, lines, [results[s.label] for s in sides])


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
    # As installed, pipenb's modules have bytecode caches; a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every module at every start (~0.1 s, ~30% of the
    # start-up instructions). Compile once, and let the children use the caches.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "pipenb")])
    files = gen_data.ensure(args.lines)
    work = tempfile.mkdtemp(prefix="pipenb-bench-")
    workers_skip = has_workers_flag(cli)
    load_before = os.getloadavg()
    try:
        results = []
        for name in names:
            print(f"{name}: {DESCRIPTIONS[name]}", file=sys.stderr)
            res = bench_workload(
                name, files[WORKLOADS[name]], args.lines, args.runs, cli, work, workers_skip
            )
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

    load_after = os.getloadavg()
    print()
    print(f"pipenb engine benchmark, {args.lines:,} input lines, best of {args.runs}")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, commit {git_commit()}, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPU(s), "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    header = ["side", "wall s", "events/s", "ratio", "CPU s", "CPU ratio"]
    header += ["peak RSS", "tree PSS", "out lines", "same events"]
    for r in results:
        print()
        print(f"{r.name}: {DESCRIPTIONS[r.name]}")
        loop = r.sides[0]
        rows = []
        for sr in r.sides:
            if sr.skip:
                continue
            rows.append(
                [
                    sr.label,
                    f"{sr.wall:.3f}",
                    fmt_rate(r.lines / sr.wall),
                    f"{loop.wall / sr.wall:.2f}x",
                    f"{sr.cpu:.3f}",
                    f"{loop.cpu / sr.cpu:.2f}x",
                    fmt_mb(sr.rss_kb),
                    fmt_mb(sr.tree_kb),
                    f"{sr.out_lines:,}",
                    sr.same,
                ]
            )
        print(table(rows, header))
        for sr in r.sides:
            if sr.skip:
                print(f"{sr.label}: skipped: {sr.skip}")
    print()
    print("ratio = events/s / the loop's events/s, wall time, process start included")
    print("CPU ratio = the loop's CPU seconds / the side's (user+system, workers included);")
    print("  steadier on a shared machine; a parallel run spends more CPU to take less wall time")
    print("peak RSS = the largest single process (ru_maxrss); tree PSS = the peak of the")
    print("  process and its workers' proportional set sizes summed (shared pages counted once)")
    print("same events = the output is the loop's multiset of events ('bytes': identical file)")
    if any(sr.same == "NO" for r in results for sr in r.sides):
        print("WARNING!!! some side did not write the loop's events: ignore its row")
    if startup is not None:
        print(
            f"pipenb startup (`pipenb run` on a 1-line file): {startup.wall:.3f} s, "
            f"{fmt_mb(startup.rss_kb)} RSS; bare `python -c pass`: {py_start:.3f} s"
        )
        for r in results:
            pipe = r.sides[1]
            if pipe.skip:
                continue
            work_s = pipe.wall - startup.wall
            if work_s < pipe.wall / 2:
                print(
                    f"  {r.name}: ratio without process startup: n/a (mostly startup; more --lines)"
                )
                continue
            steady = (r.sides[0].wall - py_start) / work_s
            print(f"  {r.name}: pipenb 1 worker, ratio without process startup {steady:.2f}x")
    return 0 if len(results) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
