"""Time to place one deployment on N agents, and to add one agent to a fleet of N.

A benchmark, not a test: it measures and prints, it asserts no timing. It runs the control
plane's services in this process (no HTTP), on a new SQLite file (or ``--db-url``), so the
figures are the placement work itself: the database statements and the Python around them.

    python bench/placement_bench.py                       # N = 1,000 and 10,000
    python bench/placement_bench.py --agents 1000 --runs 3

For each N:

1. N agents and their keys are written straight into a new store (the rows ``POST /agents``
   writes; see ``bench/soak/checkin.py``'s ``seed``), a small pipe is pushed.
2. **deploy to all**: ``DeploymentService.apply`` of a deployment by a label every agent carries
   (N instances), including the answer (the deployment with N instance states), timed;
   the same for **deploy to a tenth** (a label a tenth of the agents carry) and **deploy to
   one** (an agent id); each is deleted again after it is timed.
3. **add one agent**: ``AgentService.add`` of a new agent whose label the tenth-deployment
   targets (the deployment is kept for this), timed; the statements it runs are counted (a
   SQLAlchemy ``before_cursor_execute`` listener), which is what shows O(1) against O(N).

Best of ``--runs`` is printed, with the number of SQL statements of each operation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "soak"), str(HERE)]

PIPE = """\
name: bench-place
description: placement benchmark pipe
input:
  echo: {lines: ["hello from {{agent.id}}"], interval: 10s}
output:
  print: {}
"""


class Counter:
    """Counts the SQL statements an engine runs."""

    def __init__(self, engine: Any):
        from sqlalchemy import event

        self.n = 0
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.n += 1


def timed(fn: Any, counter: Counter) -> tuple[float, int, Any]:
    before = counter.n
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, counter.n - before, out


def bench(n: int, runs: int, db_url: str | None) -> dict[str, Any]:
    from checkin import seed

    from pipenb.server import models as M
    from pipenb.server.control_plane import ControlPlane
    from pipenb.server.settings import ServerSettings

    tmp = tempfile.mkdtemp(prefix="pipenb-place-")
    try:
        url = db_url or f"sqlite:///{os.path.join(tmp, 'server.db')}"
        specs = [(f"a{i:05d}", ["all"] + (["tenth"] if i % 10 == 0 else [])) for i in range(n)]
        t = time.perf_counter()
        seed(url, specs)
        seeded = time.perf_counter() - t
        cp = ControlPlane(ServerSettings(db_url=url, secret_key_file=os.path.join(tmp, "k")))
        counter = Counter(cp.engine)
        cp.pipes.push(M.PipePush(yaml=PIPE, message="bench"))
        out: dict[str, Any] = {"agents": n, "seeded_s": seeded}
        cases = {
            "deploy to all": {"labels": ["all"]},
            "deploy to a tenth": {"labels": ["tenth"]},
            "deploy to one": {"agents": [specs[n // 2][0]], "labels": []},
        }
        for name, target in cases.items():
            best: tuple[float, int, int] | None = None
            for _ in range(runs):
                body = M.DeploymentCreate(pipe="bench-place", **target)
                secs, stmts, dep = timed(lambda b=body: cp.deployments.create(b), counter)
                cp.deployments.delete(dep.id)
                if best is None or secs < best[0]:
                    best = (secs, stmts, len(dep.status))
            out[name] = best
        keep = cp.deployments.create(M.DeploymentCreate(pipe="bench-place", labels=["tenth"]))
        best = None
        for r in range(runs):
            body = M.AgentCreate(id=f"new-{r}", labels=["all", "tenth"])
            secs, stmts, _ = timed(lambda b=body: cp.agents.add(b), counter)
            if best is None or secs < best[0]:
                best = (secs, stmts, 0)
        out["add one agent"] = best
        placed = cp.deployments.get(keep.id)
        out["check"] = sum(1 for s in placed.status if s.agent_id.startswith("new-")) == runs
        cp.engine.dispose()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="1000,10000", help="N, comma separated (1000,10000)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each operation; best kept (3)")
    ap.add_argument("--db-url", help="an empty database to use instead of a new SQLite file")
    args = ap.parse_args(argv)
    print(
        f"placement benchmark: {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}, best of {args.runs}"
    )
    print(f"{'N':>7} {'operation':<18} {'instances':>9} {'ms':>9} {'SQL statements':>15}")
    for n in (int(x) for x in args.agents.split(",")):
        r = bench(n, args.runs, args.db_url)
        for op in ("deploy to all", "deploy to a tenth", "deploy to one", "add one agent"):
            secs, stmts, inst = r[op]
            print(f"{n:>7} {op:<18} {inst:>9} {secs * 1000:>9.1f} {stmts:>15}")
        if not r["check"]:
            print(f"  WARNING: the added agents were not all placed ({n} agents)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
