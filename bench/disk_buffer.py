"""Throughput of ``http-server`` with ``buffer: memory`` and ``buffer: disk`` (docs/reliability.md).

Runs the receiver in this process (output ``discard``), posts N events as NDJSON bodies of
``--batch`` events from ``--clients`` threads, and reports events/s from the first request to
the last event the output took. Usage: ``python bench/disk_buffer.py [--events 200000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import requests

import pipenb


async def run(mode: str, events: int, batch: int, clients: int, data_dir: str) -> float:
    doc = {
        "name": f"bench-{mode}",
        "input": {"http-server": {"address": "127.0.0.1:0", "format": "ndjson", "buffer": mode,
                                  "max-pending": 256}},
        "output": {"discard": {}},
    }  # fmt: skip
    engine = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode()).engine(data_dir=data_dir)
    task = asyncio.create_task(engine.run())
    inp = engine.parts.input
    while not inp.port:
        await asyncio.sleep(0.01)
    body = b"".join(orjson.dumps({"seq": i, "msg": "x" * 100}) + b"\n" for i in range(batch))
    url = f"http://127.0.0.1:{inp.port}/"

    def client(k: int) -> None:
        s = requests.Session()
        for _ in range(events // batch // clients):
            while s.post(url, data=body, timeout=60).status_code != 200:
                time.sleep(0.01)

    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(clients) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, client, k) for k in range(clients)))
    total = events // batch // clients * clients * batch
    while engine.snapshot()["output"].get("events", 0) < total:
        await asyncio.sleep(0.01)
    took = time.perf_counter() - start
    engine.stop()
    await task
    return total / took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    for mode in ("memory", "disk"):
        with tempfile.TemporaryDirectory() as d:
            rate = asyncio.run(run(mode, a.events, a.batch, a.clients, d))
        print(f"{mode:7s} {rate:10,.0f} events/s")


if __name__ == "__main__":
    main()
