"""Idle memory of the agent process (SPEC section 7: under 60 MB), with no pipe and with one
tailing pipe. Prints VmRSS of the agent process and, separately, of the pipe's worker process.

    python bench/agent_memory.py
    python bench/agent_memory.py --agent-python /opt/pipenb-agent/bin/python

``--agent-python`` runs the agent with another Python, e.g. the venv of an agent-only install
(the wheel alone, as the install line makes it), without this checkout on its path.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wait_for(cond, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-python", default=sys.executable, help="the agent's Python")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pipenb-mem-"))
    py = sys.executable
    agent_env = None
    if args.agent_python != sys.executable:  # the other install's own pipenb, not this one
        agent_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    server = subprocess.Popen(
        [py, "-m", "pipenb", "server", "--port", "0", "--token", "t",
         "--db-url", f"sqlite:///{tmp / 'db.sqlite'}", "--poll-interval", "1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = re.search(r"(http://[\d.]+:\d+)", server.stdout.readline()).group(1)
    api = url + "/pipenb/api/v1"
    auth = {"Authorization": "Bearer t"}
    # agents get their labels from the enrollment token they enroll with
    made = requests.post(f"{api}/enroll-tokens", json={"labels": ["mem"]}, headers=auth)
    made.raise_for_status()
    agent = subprocess.Popen(
        [args.agent_python, "-m", "pipenb", "agent", "--server", url, "--enroll-key",
         made.json()["token"], "--name", "mem", "--data-dir", str(tmp / "agent"),
         # its pipe reads and writes in this temp dir: the host policy must allow it
         "--allow-read", f"{tmp}/**", "--allow-write", str(tmp)],
        stderr=subprocess.DEVNULL,
        env=agent_env,
    )  # fmt: skip

    def enrolled() -> bool:
        agents = requests.get(f"{api}/agents", headers=auth).json()["agents"]
        return any(a["name"] == "mem" for a in agents)

    try:
        wait_for(enrolled, 20, "the agent")
        time.sleep(5)  # let it settle: this is a measurement, not a test
        idle = rss_mb(agent.pid)
        log = tmp / "in.log"
        log.write_text("".join(f"line {i}\n" for i in range(1000)))
        pipe = (
            f"name: tail\ninput: {{files: {{path: {log}}}}}\n"
            f"output: {{file: {{path: {tmp / 'out.ndjson'}}}}}\n"
        )
        requests.post(f"{api}/pipes", json={"yaml": pipe}, headers=auth).raise_for_status()
        requests.post(
            f"{api}/deployments", json={"pipe": "tail", "labels": ["mem"]}, headers=auth
        ).raise_for_status()
        wait_for(lambda: (tmp / "out.ndjson").exists(), 20, "the pipe's output")
        time.sleep(5)
        busy = rss_mb(agent.pid)
        workers = children(agent.pid)
        worker = rss_mb(workers[0]) if workers else float("nan")
        print(f"agent idle, no pipe:           {idle:6.1f} MB")
        print(f"agent with one tailing pipe:   {busy:6.1f} MB (the agent process)")
        print(f"that pipe's worker process:    {worker:6.1f} MB")
        print("target (SPEC section 7): agent idle under 60 MB")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    return 0


if __name__ == "__main__":
    sys.exit(main())
