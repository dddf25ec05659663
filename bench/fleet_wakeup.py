"""Wake-up latency across server processes on one PostgreSQL (issue 17: "a deploy made through
process A wakes an agent held by process B within 1 s").

A benchmark, not a test: it measures and prints, it asserts nothing.

    eval "$(bash scripts/postgres-test.sh)"; export PIPENB_TEST_POSTGRES_URL
    python bench/fleet_wakeup.py                  # 100 changes, 2 processes
    python bench/fleet_wakeup.py --rounds 20      # smoke run
    python bench/fleet_wakeup.py --db-url postgresql://...   # a database of your own (emptied!)

What it does: creates a fresh database on the server ``PIPENB_TEST_POSTGRES_URL`` names (dropped
at the end), starts two ``pipenb server`` processes A and B on it, adds one agent by hand with a
key and pushes a pipe deployed to it. Then, ``--rounds`` times: a check-in of that agent is held
by B (``wait: 30`` with the desired hash it has; the script waits until B's
``pipenb_held_checkins`` gauge shows it), the deployment is stopped or started through A, and
two times are taken: from sending A's request, and from A's answer (the change committed and the
NOTIFY sent), to B's answer to the held check-in. Prints p50, p90, p99 and the maximum of both.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

PREFIX = "/pipenb/api/v1"
TOKEN = "bench-token"
PIPE = "name: wake\ninput: {echo: {events: [{n: 1}]}}\noutput: {discard: {}}\n"


def start_server(db_url: str, data: Path, key: Path) -> tuple[subprocess.Popen[str], str]:
    data.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    log = open(data / "server.log", "a")  # noqa: SIM115 - as long as the server lives
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipenb", "server", "--host", "127.0.0.1", "--port", "0",
         "--db-url", db_url, "--token", TOKEN, "--secret-key-file", str(key),
         "--poll-interval", "5"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    m = re.search(r"(http://[\d.]+:\d+)", proc.stdout.readline())
    if not m:
        raise SystemExit(f"server did not start: {(data / 'server.log').read_text()}")
    url = m.group(1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(url + PREFIX + "/health", timeout=2).ok:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("server did not answer in time")


def held(url: str) -> int:
    text = requests.get(url + "/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("pipenb_held_checkins "))
    return int(float(line.split()[1]))


def call(url: str, method: str, path: str, **kw: Any) -> Any:
    r = requests.request(
        method, url + PREFIX + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30, **kw
    )
    r.raise_for_status()
    return r.json() if r.content else None


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--db-url", help="a database to use as it is (default: a fresh one)")
    args = ap.parse_args()
    import psycopg
    from sqlalchemy.engine import make_url

    made = None
    if args.db_url:
        db_url = args.db_url
    else:
        base = os.environ.get("PIPENB_TEST_POSTGRES_URL")
        if not base:
            raise SystemExit("set PIPENB_TEST_POSTGRES_URL (scripts/postgres-test.sh) or --db-url")
        admin = make_url(base).set(drivername="postgresql")
        made = f"pipenb_bench_{secrets.token_hex(4)}"
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{made}"')
        db_url = admin.set(database=made).render_as_string(hide_password=False)
    tmp = Path(tempfile.mkdtemp(prefix="pipenb-wakeup-"))
    procs = []
    try:
        pa, a = start_server(db_url, tmp / "a", tmp / "secret.key")
        procs.append(pa)
        pb, b = start_server(db_url, tmp / "b", tmp / "secret.key")
        procs.append(pb)
        aid = f"bench-{secrets.token_hex(3)}"
        call(a, "POST", "/agents", json={"id": aid, "labels": []})
        key = call(a, "POST", f"/agents/{aid}/keys", json={})["api_key"]
        call(a, "POST", "/pipes", json={"yaml": PIPE})
        dep = call(a, "POST", "/deployments", json={"pipe": "wake", "agents": [aid]})["id"]
        auth = {"Authorization": f"Bearer {key}"}

        def checkin(seq: int, dhash: str | None, wait: float, full: bool) -> Any:
            body = {"agent_id": aid, "seq": seq, "full": full, "desired_hash": dhash, "wait": wait}
            return requests.post(
                b + PREFIX + "/agent/checkin", json=body, headers=auth, timeout=60
            ).json()

        seq = 0
        dhash = checkin(seq, None, 0, True)["desired_hash"]
        from_request, from_answer = [], []
        running = True
        for _ in range(args.rounds):
            before = held(b)
            seq += 1
            got: dict[str, Any] = {}

            def hold(out: dict[str, Any], s: int, h: str | None) -> None:
                out["answer"] = checkin(s, h, 30, False)
                out["at"] = time.monotonic()

            t = threading.Thread(target=hold, args=(got, seq, dhash))
            t.start()
            while held(b) <= before:
                time.sleep(0.002)  # poll B's gauge until the check-in is held
            sent = time.monotonic()
            running = not running
            call(a, "POST", f"/deployments/{dep}/{'start' if running else 'stop'}")
            answered = time.monotonic()
            t.join(35)
            from_request.append(got["at"] - sent)
            from_answer.append(got["at"] - answered)
            dhash = got["answer"]["desired_hash"]
        for name, xs in (("from A's request", from_request), ("from A's answer", from_answer)):
            print(
                f"B answered its held check-in {name}: n={len(xs)} "
                f"p50 {statistics.median(xs) * 1000:.1f} ms, p90 {percentile(xs, 0.9) * 1000:.1f} ms, "
                f"p99 {percentile(xs, 0.99) * 1000:.1f} ms, max {max(xs) * 1000:.1f} ms"
            )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if made:
            admin = make_url(os.environ["PIPENB_TEST_POSTGRES_URL"]).set(drivername="postgresql")
            with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)')


if __name__ == "__main__":
    main()
