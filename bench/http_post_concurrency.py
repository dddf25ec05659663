"""Events/s through ``http-post`` into a receiver that takes 100 ms per request, by concurrency.

A measurement, not a test. The receiver is a threaded ``http.server`` on loopback that reads
the body, sleeps ``--latency`` and answers 200; the pipe is ``echo`` (N events) -> ``http-post``
(NDJSON, ``batch.size`` events a request) run in this process. One request at a time caps the
pipe at ``batch.size / latency`` events a second; ``concurrency: N`` keeps N requests in flight.

    python bench/http_post_concurrency.py [--events 40000] [--batch 1000] [--latency 0.1]
                                          [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import tempfile
import threading
import time

import orjson

import pipenb


def receiver(latency: float) -> tuple[http.server.ThreadingHTTPServer, list[int]]:
    got = [0, 0]  # events, most requests at once
    now = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                now[0] += 1
                got[1] = max(got[1], now[0])
            time.sleep(latency)
            with lock:
                now[0] -= 1
                got[0] += body.count(b"\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def run(events: int, batch: int, latency: float, concurrency: int) -> tuple[float, int, int]:
    server, got = receiver(latency)
    port = server.server_address[1]
    doc = {
        "name": "bench-post",
        "input": {"echo": {"events": [{"seq": i, "msg": "x" * 60} for i in range(events)]}},
        "output": {
            "http-post": {
                "url": f"http://127.0.0.1:{port}/",
                "format": "ndjson",
                "concurrency": concurrency,
                "batch": {"size": batch},
            }
        },
    }
    with tempfile.TemporaryDirectory() as data:
        engine = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode()).engine(data_dir=data)
        t0 = time.perf_counter()
        asyncio.run(engine.run())
        took = time.perf_counter() - t0
    server.shutdown()
    server.server_close()
    return took, got[0], got[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", default="1,8")
    a = ap.parse_args()
    print(f"{a.events:,} events, batch.size {a.batch}, receiver latency {a.latency * 1000:.0f} ms")
    print(f"{'concurrency':>11}  {'seconds':>7}  {'events/s':>9}  {'most at once':>12}")
    for n in (int(x) for x in a.concurrency.split(",")):
        took, received, most = run(a.events, a.batch, a.latency, n)
        assert received == a.events, f"receiver got {received} of {a.events}"
        print(f"{n:>11}  {took:>7.2f}  {a.events / took:>9,.0f}  {most:>12}")


if __name__ == "__main__":
    main()
