"""Regular expressions that cannot hang a pipe (issue 16 item 12).

``^(a|aa)+$`` against 60 ``a``s and a ``!`` takes Python's ``re`` longer than the age of the
universe; bounded, the event goes to ``errors:`` with a message naming the pattern, the other
events go on, and SIGTERM stops the pipe. Provably linear patterns (W2's) stay on ``re``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import orjson
import pytest
import requests

import pipenb
from pipenb.lang.regexes import BoundedPattern, compile_user, is_linear

from support import REPO_ROOT
from support.files import read_ndjson
from support.processes import free_port
from support.waiting import wait_until

EVIL = r"^(a|aa)+$"
EVIL_LINE = "a" * 60 + "!"
W2 = r'^(?P<ts>\S+) (?P<level>\S+) (?P<host>\S+) (?P<service>\S+) "(?P<msg>[^"]*)" (?P<rest>.*)$'


@pytest.mark.parametrize(
    "pattern, linear",
    [
        (W2, True),
        (r"^\S+\s+(?P<n>\d+)\.\d+$", True),
        (r"^\[(?P<ts>[^\]]+)\] (?P<level>[A-Z]+): (?P<msg>.*)", True),
        (r"(a+)+$", False),  # nested repeats
        (EVIL, False),  # alternation under a repeat
        (r"a+b", False),  # unanchored: every start position retried (quadratic)
        (r"^.* (?P<x>\S+)$", False),  # .* can swallow the space that follows it
        (r"(?i)^[a-z]+A", False),  # without case, the A is one of [a-z]
        (r"(?m)^a+b", False),  # ^ at every line
    ],
)
def test_which_patterns_are_provably_linear(pattern, linear):
    assert is_linear(pattern) is linear
    assert isinstance(compile_user(pattern), re.Pattern) is linear


def test_a_bounded_pattern_gives_up_with_a_clear_error():
    rx = compile_user(EVIL)
    assert isinstance(rx, BoundedPattern)
    assert rx.search("aaaa").group(0) == "aaaa"  # matches like re
    t0 = time.process_time()
    with pytest.raises(pipenb.errors.EventError, match=r"took more than 1s.*\(a\|aa\)\+"):
        rx.search(EVIL_LINE)
    assert time.process_time() - t0 < 10  # bounded (1s of CPU, generously)


def run_pipe(actions: list, events: list[dict], tmp_path, data_dir) -> tuple[list, list]:
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    doc = {
        "name": "rx",
        "input": {"echo": {"events": events}},
        "actions": actions,
        "output": {"file": {"path": str(out)}},
        "errors": {"file": {"path": str(errors)}},
    }
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 120))
    return (read_ndjson(out) if out.exists() else []), (
        read_ndjson(errors) if errors.exists() else []
    )


@pytest.mark.parametrize(
    "action",
    [
        {"extract": {"field": "m", "pattern": f"(?P<x>{EVIL})"}},
        {"grok": {"field": "m", "pattern": "%{EVIL:x}", "patterns": {"EVIL": EVIL}}},
        {"parse": {"field": "m", "format": "grok", "pattern": "%{EVIL:x}",
                   "patterns": {"EVIL": EVIL}, "on-error": "keep"}},
        {"filter": f'not matches(m, "{EVIL}")'},
        {"mask": {"fields": ["m"], "pattern": EVIL}},
    ],
    ids=["extract", "grok", "parse-grok", "filter-matches", "mask"],
)  # fmt: skip
def test_a_pattern_that_times_out_sends_the_event_to_errors(tmp_path, data_dir, action):
    events = [{"n": 1, "m": "aaaa"}, {"n": 2, "m": EVIL_LINE}, {"n": 3, "m": "b"}]
    out, errors = run_pipe([action], events, tmp_path, data_dir)
    assert [e["n"] for e in errors] == [2]
    assert "took more than 1s" in errors[0]["_error"]["message"]
    assert 2 not in [e["n"] for e in out] and 3 in [e["n"] for e in out]


def test_the_issues_pattern_no_longer_hangs(tmp_path, data_dir):
    """``(a+)+$`` against 40 ``a``s and a ``!``: the ``regex`` engine sees there is no match."""
    events = [{"m": "a" * 40 + "!"}, {"m": "aaa"}]
    out, errors = run_pipe([{"extract": {"field": "m", "pattern": r"(?P<x>(a+)+$)"}}], events,
                           tmp_path, data_dir)  # fmt: skip
    assert errors == []
    assert out == [{"m": "a" * 40 + "!"}, {"m": "aaa", "x": "aaa"}]


def test_sigterm_stops_a_pipe_busy_with_a_catastrophic_pattern(tmp_path):
    port = free_port()
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    pipe = tmp_path / "rx.yaml"
    pipe.write_text(
        f"name: rx\ninput:\n  http-server:\n    address: 127.0.0.1:{port}\n    format: lines\n"
        f"actions:\n  - extract:\n      pattern: '(?P<x>{EVIL})'\n"
        f"output:\n  file:\n    path: {out}\nerrors:\n  file:\n    path: {errors}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    log = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "pipenb", "run", str(pipe), "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_until(up, timeout=60, what="the pipe's http-server")
        body = "\n".join([EVIL_LINE] * 3 + ["aaaa"]) + "\n"
        assert requests.post(f"http://127.0.0.1:{port}/", data=body, timeout=30).ok
        proc.send_signal(signal.SIGTERM)
        # three timeouts of 1s CPU each, then the drain: well within a minute
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(20)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert len(read_ndjson(errors)) == 3
    assert read_ndjson(out) == [{"_raw": "aaaa", "x": "aaaa"}]
