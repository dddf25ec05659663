"""Cluster benchmark: one pipe over 4M lines, in one process and on ``LocalCluster(2)``.

Runs ``pipenb run bench/pipes/w2.yml`` (text lines, regex extract, keep ERROR, NDJSON out) over
the same generated file twice, as child processes: once as is, once with ``--cluster local:2
--partition-size SIZE``. For each it prints wall time (process start to exit, cluster start and
stop included), events/s (input lines / wall seconds), the ratio cluster/single, and the peak
RSS of every process of the run: the process tree is sampled every 0.2 s and each process's
``VmHWM`` (its own high-water mark, from /proc) is kept, so the driver (which also hosts the
scheduler), the two nannies and the two workers are each shown. It checks that both wrote the
same multiset of lines (a loud WARNING otherwise). Not a test: nothing is asserted.

    python bench/cluster_bench.py [--lines 4000000] [--partition-size 32MB] [--runs 1]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen_data  # noqa: E402 - sibling module
from engine_bench import pipenb_cli  # noqa: E402

PIPE = os.path.join(HERE, "pipes", "w2.yml")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def hwm_kb(pid: int) -> tuple[int, str]:
    """Peak RSS (VmHWM, KiB) of ``pid`` and what it is (driver, worker, nanny...)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            hwm = next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), 0)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""
    if "pipenb" in cmd and " run " in cmd:
        role = "driver+scheduler" if "--cluster" in cmd else "single process"
    elif "spawn_main" in cmd or "multiprocessing" in cmd:
        role = "worker"
    else:
        role = cmd.split(" ", 1)[0].rsplit("/", 1)[-1]
    return hwm, role


def run(cmd: list[str]) -> tuple[float, dict[int, tuple[int, str]], int, str]:
    """Wall seconds, {pid: (peak RSS KiB, role)}, exit code, stderr tail."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        peaks: dict[int, tuple[int, str]] = {}
        while p.poll() is None:
            for pid in tree(p.pid):
                kb, role = hwm_kb(pid)
                if kb and kb >= peaks.get(pid, (0, ""))[0]:
                    peaks[pid] = (kb, role or peaks.get(pid, (0, ""))[1])
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        err.seek(0)
        tail = err.read().decode(errors="replace")[-50000:]
    return wall, peaks, p.returncode, tail


def digest(paths: list[str]) -> tuple[int, str]:
    """Lines and an order-independent digest of them (the sum of their hashes)."""
    n, total = 0, 0
    for path in paths:
        with open(path, "rb") as fh:
            for line in fh:
                n += 1
                total += int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "big")
    return n, f"{total % (1 << 64):016x}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=4_000_000)
    ap.add_argument("--partition-size", default="32MB")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1, help="runs of each side; the best is kept")
    args = ap.parse_args(argv)
    _, text = gen_data.ensure(args.lines)
    with open(text, "rb") as fh:  # into the page cache, for both sides alike
        while fh.read(1 << 24):
            pass
    cli = pipenb_cli()
    tmp = tempfile.mkdtemp(prefix="pipenb-cluster-bench-")
    out1, out2 = os.path.join(tmp, "single.ndjson"), os.path.join(tmp, "cluster")
    base = [cli, "run", PIPE, "--param", f"input={text}"]
    single_cmd = [
        *base,
        "--param",
        f"output={out1}",
        "--data-dir",
        os.path.join(tmp, "d1"),
        "--reset",
    ]
    cluster_cmd = [
        *base,
        "--param",
        f"output={out2}",
        "--data-dir",
        os.path.join(tmp, "d2"),
        "--cluster",
        f"local:{args.workers}",
        "--partition-size",
        args.partition_size,
        "--json",  # the run's metrics, last line of stderr: uptime_s leaves cluster start out
    ]
    single_cmd.append("-q")
    load = os.getloadavg()
    print(
        f"{args.lines:,} lines ({os.path.getsize(text) / 1e6:.0f} MB), {os.cpu_count()} CPUs, "
        f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    best: dict[str, tuple[float, dict[int, tuple[int, str]]]] = {}
    work: dict[str, float] = {}
    for _ in range(args.runs):
        for name, cmd in (("single", single_cmd), ("cluster", cluster_cmd)):
            if name == "single" and os.path.exists(out1):  # the file output appends
                os.unlink(out1)
            wall, peaks, rc, err = run(cmd)
            if rc != 0:
                print(f"{name} failed (exit {rc}):\n{err}")
                return 1
            if name not in best or wall < best[name][0]:
                best[name] = (wall, peaks)
                if name == "cluster":
                    work[name] = json.loads(err.strip().splitlines()[-1])["uptime_s"]
    load = os.getloadavg()
    rate = {k: args.lines / v[0] for k, v in best.items()}
    print(f"{'run':<28}{'wall s':>8}{'events/s':>12}")
    print(f"{'single process':<28}{best['single'][0]:>8.2f}{rate['single']:>12,.0f}")
    label = f"LocalCluster({args.workers}) {args.partition_size}"
    print(f"{label:<28}{best['cluster'][0]:>8.2f}{rate['cluster']:>12,.0f}")
    print(f"ratio cluster/single: {rate['cluster'] / rate['single']:.2f}x")
    w = work["cluster"]
    print(
        f"cluster: {w:.2f} s from the first task submitted to the last part file "
        f"({args.lines / w:,.0f} events/s, {args.lines / w / rate['single']:.2f}x single), "
        f"{best['cluster'][0] - w:.2f} s starting and stopping the cluster and the CLI"
    )
    for name in ("single", "cluster"):
        rows = sorted(best[name][1].values(), reverse=True)
        shown = ", ".join(f"{role} {kb / 1024:.0f} MB" for kb, role in rows if kb > 20_000)
        print(f"peak RSS per process, {name}: {shown}")
    a = digest([out1])
    b = digest(sorted(glob.glob(os.path.join(out2, "part-*"))))
    same = "the same lines" if a == b else f"WARNING: different output {a} vs {b}"
    print(f"output: {a[0]:,} lines, {same}")
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
