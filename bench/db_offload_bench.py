"""Database work off the event loop: a bounded thread pool against SQLAlchemy's asyncio support.

A benchmark, not a test: it measures and prints. On PostgreSQL (``--db-url``, e.g. the one
``scripts/postgres-test.sh`` starts) it runs the same read, the query behind a check-in's desired
set (an agent's assignments joined with deployments, pipes and versions), ``--requests`` times
with ``--concurrency`` in flight, three ways:

- ``on the loop``: synchronous SQLAlchemy called from the event loop (what the server did);
- ``thread pool``: synchronous SQLAlchemy in a ``ThreadPoolExecutor`` sized to the connection
  pool, through ``loop.run_in_executor`` (``pipenb/server/dbpool.py``);
- ``asyncio``: ``create_async_engine`` with psycopg's async mode (``postgresql+psycopg``) and
  ``AsyncSession``.

For each: requests/s, latency p50/p99, and the event loop's own lag (a 1 ms ticker's worst
delay: what every other request, a check-in or ``/health``, would wait), plus CPU seconds.
A last round adds ``pg_sleep(0.2)`` to one request in ten (a slow query) and shows the ticker.

    python bench/db_offload_bench.py --db-url postgresql://postgres@127.0.0.1:55432/pipenb_test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

POOL, OVERFLOW = 10, 20


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def seed(url: str, agents: int) -> None:
    from pipenb.server import models as M
    from pipenb.server.control_plane import ControlPlane
    from pipenb.server.settings import ServerSettings

    cp = ControlPlane(ServerSettings(db_url=url, secret_key_file=f"/tmp/pnb-dbbench-{os.getpid()}"))
    for i in range(agents):
        cp.agents.add(M.AgentCreate(id=f"a{i:04d}", labels=["all"]))
    for n in range(3):
        cp.pipes.push(
            M.PipePush(
                yaml=f"name: p{n}\ninput: {{echo: {{lines: [x]}}}}\noutput: {{print: {{}}}}\n"
            )
        )
        cp.deployments.create(M.DeploymentCreate(pipe=f"p{n}", labels=["all"]))
    cp.engine.dispose()


def desired_query(agent_id: str, slow: bool) -> Any:
    from pipenb.server.db_tables import AssignmentRow, DeploymentRow, PipeRow, PipeVersionRow

    q = (
        select(AssignmentRow.agent_id, DeploymentRow.id, PipeRow.name, PipeVersionRow.yaml)
        .join(DeploymentRow, AssignmentRow.deployment_id == DeploymentRow.id)
        .join(PipeRow, DeploymentRow.pipe_id == PipeRow.id)
        .join(PipeVersionRow, PipeVersionRow.pipe_id == PipeRow.id)
        .where(AssignmentRow.agent_id == agent_id)
    )
    return (q, slow)


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)


async def drive(name: str, one: Any, n: int, conc: int, agents: int, slow_every: int) -> None:
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    lat: list[float] = []
    sem = asyncio.Semaphore(conc)
    cpu0, t0 = time.process_time(), time.perf_counter()

    async def req(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await one(f"a{i % agents:04d}", bool(slow_every and i % slow_every == 0))
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(req(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    await tick
    print(
        f"{name:<12} {n / wall:>8.0f} req/s  latency p50 {pct(lat, 50) * 1000:6.1f} "
        f"p99 {pct(lat, 99) * 1000:7.1f} ms  loop lag p99 {pct(lags, 99) * 1000:6.1f} "
        f"max {max(lags, default=0) * 1000:7.1f} ms  CPU {cpu:5.2f} s"
    )


async def main_async(args: argparse.Namespace, url: str) -> None:
    sync = create_engine(url, pool_size=POOL, max_overflow=OVERFLOW)
    sessions = sessionmaker(sync)
    pool = ThreadPoolExecutor(POOL + OVERFLOW)
    aeng = create_async_engine(url, pool_size=POOL, max_overflow=OVERFLOW)
    asessions = async_sessionmaker(aeng, class_=AsyncSession)

    def run_sync(agent_id: str, slow: bool) -> None:
        q, _ = desired_query(agent_id, slow)
        with sessions() as s:
            if slow:
                s.execute(text("select pg_sleep(0.2)"))
            s.execute(q).all()

    async def on_loop(agent_id: str, slow: bool) -> None:
        run_sync(agent_id, slow)

    async def threaded(agent_id: str, slow: bool) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, run_sync, agent_id, slow)

    async def native(agent_id: str, slow: bool) -> None:
        q, _ = desired_query(agent_id, slow)
        async with asessions() as s:
            if slow:
                await s.execute(text("select pg_sleep(0.2)"))
            (await s.execute(q)).all()

    ways = [("on the loop", on_loop), ("thread pool", threaded), ("asyncio", native)]
    for name, fn in ways:  # warm-up: connections, statement caches
        await drive(name, fn, 200, args.concurrency, args.agents, 0)
    print(f"-- {args.requests} requests, {args.concurrency} in flight, best of {args.runs}")
    for _ in range(args.runs):
        for name, fn in ways:
            await drive(name, fn, args.requests, args.concurrency, args.agents, 0)
    print("-- the same with pg_sleep(0.2) in one request in ten (a slow query)")
    n_slow = max(100, args.requests // 10)
    for name, fn in ways:
        await drive(name, fn, n_slow, args.concurrency, args.agents, 10)
    pool.shutdown()
    await aeng.dispose()
    sync.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db-url", required=True, help="a PostgreSQL server (a database is made)")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    import psycopg

    admin = make_url(args.db_url).set(drivername="postgresql")
    name = f"pipenb_dbbench_{secrets.token_hex(4)}"
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(database=name).render_as_string(hide_password=False)
        seed(url, args.agents)
        print(
            f"db offload benchmark: {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}; PostgreSQL, psycopg {psycopg.__version__}"
        )
        aurl = url.replace("postgresql://", "postgresql+psycopg://", 1)
        asyncio.run(main_async(args, aurl))
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
