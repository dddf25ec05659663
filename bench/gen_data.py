"""Deterministic log data for the engine benchmarks (SPEC section 7).

Writes the same events twice into ``bench/data/`` (git-ignored):

- ``events-N.ndjson``: one JSON object per line with ``ts`` (ISO 8601, UTC, milliseconds),
  ``level`` (INFO 70%, WARN 20%, ERROR 10%), ``host``, ``service``, ``msg``, ``latency_ms`` and
  ``status``;
- ``events-N.log``: the same events as text lines, e.g.
  ``2026-11-23T10:00:00.123Z ERROR web-3 checkout "payment failed for order 123" latency_ms=123
  status=500``.

The generator is seeded, so every run (and every machine) produces byte-identical files. Files that
already exist with the right number of lines are reused: generating 1M lines takes a few seconds.

    python bench/gen_data.py [--lines N] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import calendar
import os
import random
import sys
import time

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")
DEFAULT_LINES = 1_000_000
SEED = 20261123
START = calendar.timegm((2026, 11, 23, 10, 0, 0, 0, 0, 0))  # 2026-11-23T10:00:00Z

HOSTS = [f"{kind}-{i}" for kind in ("web", "api", "worker") for i in range(1, 7)]
SERVICES = ["checkout", "cart", "search", "auth", "catalog", "payments", "shipping", "profile"]
UPSTREAMS = ["inventory", "pricing", "fraud-check", "ledger", "mailer"]
STATUS = {
    "INFO": ([200, 201, 204, 301, 304], [70, 10, 10, 5, 5]),
    "WARN": ([200, 404, 409, 429], [40, 30, 10, 20]),
    "ERROR": ([500, 502, 503, 504], [55, 15, 20, 10]),
}
# Message templates: {n} an id, {u} an upstream, {l} the latency. No '"' or '\\' (text format).
MESSAGES = {
    "INFO": [
        "request served for user {n}",
        "cache hit for key session:{n}",
        "user {n} logged in",
        "GET /api/items/{n} ok",
        "order {n} created",
        "health check ok",
    ],
    "WARN": [
        "slow response from {u} after {l} ms",
        "retrying payment for order {n} (attempt 2)",
        "rate limit close for client {n}",
        "deprecated API version used by client {n}",
    ],
    "ERROR": [
        "payment failed for order {n}",
        "database timeout after {l} ms",
        "upstream {u} returned 503",
        "unhandled exception in handler /api/orders/{n}",
    ],
}


def paths(lines: int, out_dir: str = DATA_DIR) -> tuple[str, str]:
    """The NDJSON and text files holding ``lines`` events."""
    return (
        os.path.join(out_dir, f"events-{lines}.ndjson"),
        os.path.join(out_dir, f"events-{lines}.log"),
    )


def count_lines(path: str) -> int:
    """Newline count of a file (-1 when it does not exist), read in large chunks."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return -1
    n = 0
    with fh:
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
    return n


def generate(lines: int, json_path: str, text_path: str, seed: int = SEED) -> None:
    """Write ``lines`` events to both files (atomically: temporary files, then rename)."""
    rng = random.Random(seed)
    levels = rng.choices(["INFO", "WARN", "ERROR"], weights=[70, 20, 10], k=lines)
    dumps = orjson.dumps
    nl = orjson.OPT_APPEND_NEWLINE
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    tmp_json, tmp_text = json_path + ".tmp", text_path + ".tmp"
    ms = 0
    sec_cache = (-1, "")
    with (
        open(tmp_json, "wb", buffering=1 << 20) as jf,
        open(tmp_text, "wb", buffering=1 << 20) as tf,
    ):
        jbuf: list[bytes] = []
        tbuf: list[str] = []
        for i, level in enumerate(levels):
            ms += rng.randint(0, 20)
            sec, milli = divmod(ms, 1000)
            if sec != sec_cache[0]:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START + sec))
                sec_cache = (sec, stamp)
            ts = f"{sec_cache[1]}.{milli:03d}Z"
            host = rng.choice(HOSTS)
            service = rng.choice(SERVICES)
            latency = int(rng.lognormvariate(3.5, 1.0)) + 1
            if level == "ERROR":
                latency += 1000
            values, weights = STATUS[level]
            status = rng.choices(values, weights=weights)[0]
            msg = rng.choice(MESSAGES[level]).format(
                n=rng.randint(1000, 999_999), u=rng.choice(UPSTREAMS), l=latency
            )
            event = {
                "ts": ts,
                "level": level,
                "host": host,
                "service": service,
                "msg": msg,
                "latency_ms": latency,
                "status": status,
            }
            jbuf.append(dumps(event, option=nl))
            tbuf.append(
                f'{ts} {level} {host} {service} "{msg}" latency_ms={latency} status={status}\n'
            )
            if len(jbuf) >= 10_000 or i == lines - 1:
                jf.write(b"".join(jbuf))
                tf.write("".join(tbuf).encode())
                jbuf.clear()
                tbuf.clear()
    os.replace(tmp_json, json_path)
    os.replace(tmp_text, text_path)


def ensure(
    lines: int = DEFAULT_LINES, out_dir: str = DATA_DIR, *, force: bool = False, quiet: bool = False
) -> tuple[str, str]:
    """The two data files for ``lines`` events, generated only when missing or wrong."""
    json_path, text_path = paths(lines, out_dir)
    if not force and count_lines(json_path) == lines and count_lines(text_path) == lines:
        if not quiet:
            print(f"reusing {json_path} and {text_path}", file=sys.stderr)
        return json_path, text_path
    if not quiet:
        print(f"generating {lines:,} events into {out_dir} ...", file=sys.stderr)
    t0 = time.perf_counter()
    generate(lines, json_path, text_path)
    if not quiet:
        print(f"generated in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return json_path, text_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=DEFAULT_LINES, help="events (default 1,000,000)")
    ap.add_argument("--out", default=DATA_DIR, help="directory (default bench/data)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the files look right")
    args = ap.parse_args(argv)
    if args.lines < 1:
        ap.error("--lines must be at least 1")
    for p in ensure(args.lines, args.out, force=args.force):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
