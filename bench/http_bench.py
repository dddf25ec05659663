"""W1 and W2 into ``http-post``: what an agent's pipe usually is (files -> an HTTP receiver).

The receiver is Debian's nginx with a config of its own in a temporary prefix (never the
system's), answering 200 to every POST after reading its body, and logging each body's length (``Content-Length``).
For each workload, alternating, ``--runs`` each, whole process (``engine_bench.run_child``): the
pipe of ``bench/pipes/wN.yml`` with its output turned into ``http-post`` (NDJSON, the default
``batch.size`` of 1000), with one worker and with ``--workers auto``; and, with
``--baseline DIR``, the same one-worker command run from another checkout's ``pipenb`` package
(``DIR/pipenb``, put first on ``PYTHONPATH``: ``git archive REV pipenb | tar -x -C DIR``). It
prints the median wall and CPU seconds, the requests, and checks that the bodies' bytes add up
to the lines that ``pipenb run`` of the file pipe writes (the same NDJSON). Not a test.

    python bench/http_bench.py [--lines 1000000] [--runs 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import engine_bench  # noqa: E402 - sibling module, importable once HERE is on sys.path
import gen_data  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONFIG = """
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format body '$content_length $status';
    access_log {prefix}/access.log body;
    client_body_temp_path {prefix}/body;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        client_body_buffer_size 8m;
        location / {{ return 200; }}
    }}
}}
"""


def http_pipe(name: str, work: str) -> str:
    """``bench/pipes/NAME.yml`` writing to ``http-post`` at the ``url`` param."""
    with open(os.path.join(engine_bench.PIPES, f"{name}.yml")) as fh:
        text = fh.read()
    file_out = 'output:\n  file: {path: "{{output}}"}'
    assert file_out in text, f"{name}.yml: its output is not the file this script replaces"
    text = text.replace(file_out, 'output:\n  http-post: {url: "{{output}}", format: ndjson}')
    path = os.path.join(work, f"{name}-http.yml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def received(prefix: str) -> tuple[int, int]:
    """Requests answered 200 so far, and their bodies' bytes (as their Content-Length said: nginx
    reads each body to its end before the next request on the connection)."""
    n = total = 0
    with open(os.path.join(prefix, "access.log")) as fh:
        for line in fh:
            length, status = line.split()
            if status == "200":
                n += 1
                total += int(length)
    return n, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=gen_data.DEFAULT_LINES)
    ap.add_argument("--runs", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--baseline", help="a directory holding another checkout's pipenb package")
    args = ap.parse_args(argv)
    if not os.path.exists(NGINX):
        sys.exit("http_bench: nginx is not installed (scripts/nginx-test.sh installs it)")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for d in [engine_bench.ROOT, args.baseline]:
        if d:
            subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(d, "pipenb")])
    files = gen_data.ensure(args.lines)
    work = tempfile.mkdtemp(prefix="pipenb-http-bench-")
    prefix = os.path.join(work, "nginx")
    os.makedirs(os.path.join(prefix, "body"))
    port = 18000 + os.getpid() % 1000
    with open(os.path.join(prefix, "nginx.conf"), "w") as fh:
        fh.write(CONFIG.format(prefix=prefix, port=port))
    nginx = subprocess.Popen(
        [NGINX, "-c", f"{prefix}/nginx.conf", "-p", prefix, "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    # the venv's script, not ``python -m``, which would put the working directory (this
    # checkout) on the path before a baseline's PYTHONPATH
    cli = engine_bench.pipenb_cli()
    load = os.getloadavg()
    try:
        deadline = time.monotonic() + 10
        while True:  # nginx up: it takes connections
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or nginx.poll() is not None:
                    sys.exit("http_bench: nginx did not start")
                time.sleep(0.02)
        for name in ("w1", "w2"):
            src = files[engine_bench.WORKLOADS[name]]
            pipe = http_pipe(name, work)
            # the bytes a file output gets: what every request's body must add up to
            out = os.path.join(work, f"{name}.ndjson")
            file_pipe = os.path.join(engine_bench.PIPES, f"{name}.yml")
            subprocess.run(
                engine_bench.pipenb_cmd(cli, file_pipe, work + "/s", src, out), check=True
            )
            want = os.path.getsize(out)
            sides = {"1 worker": ([], None), "workers auto": (["--workers", "auto"], None)}
            if args.baseline:
                sides["baseline, 1 worker"] = ([], args.baseline)
            times: dict[str, list[tuple[float, float, int]]] = {k: [] for k in sides}
            for _ in range(args.runs):
                for label, (extra, path) in sides.items():
                    before = received(prefix)
                    cmd = engine_bench.pipenb_cmd(cli, pipe, os.path.join(work, "state"), src, url)
                    cmd += extra
                    os.environ["PYTHONPATH"] = path or engine_bench.ROOT  # (the child's)
                    r = engine_bench.run_child(cmd, work)
                    if r.rc != 0:
                        engine_bench.failed(label, cmd, r)
                        return 1
                    n, got = (a - b for a, b in zip(received(prefix), before))
                    if got != want:
                        print(f"WARNING: {name} {label}: {got} bytes in {n} requests, "
                              f"the lines are {want} bytes", file=sys.stderr)  # fmt: skip
                    times[label].append((r.wall, r.cpu, n))
            print(f"{name} into http-post, {args.lines:,} lines, medians of {args.runs}:")
            for label, runs in times.items():
                wall = statistics.median(w for w, _, _ in runs)
                cpu = statistics.median(c for _, c, _ in runs)
                reqs = runs[-1][2]
                print(f"  {label:20s} {wall:6.3f} s wall  {cpu:6.3f} s CPU  {reqs} requests")
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
