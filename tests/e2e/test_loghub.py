"""The example pipes over real logs: every line of five loghub 2k samples against the ground truth.

Each loghub sample ``X_2k.log`` comes with ``X_2k.log_structured.csv``, the fields of every line as
the loghub authors parsed them (LineId, the header fields, Content). The pipes in ``examples/`` are
run over all 2,000 lines and each extracted field is compared with its column, line by line.

Known quirks of the ground truth (checked below, with exact counts):

- Content has surrounding whitespace stripped: a message that ends in a space in the log (OpenSSH
  118 lines, Linux 1,080, Zookeeper 292) or an indented kernel message (Linux, 8 lines) is trimmed
  in the csv. The pipes trim too (``(?P<message>.*?)\\s*$``), so messages agree on every line.
- Column names are not always what they hold: OpenSSH's ``Component`` and Linux's ``Level`` are
  the host name (``LabSZ``, ``combo``); syslog lines have no level.
- Linux line 899 is ``combo  -- root[2421]: ...`` (two spaces); the csv's Component is
  ``-- root``, which the pipe also finds.
- Zookeeper's ``[thread:Class@line]`` is split at the *first* colon: ``Node`` is the thread name
  up to its first colon and ``Component`` the rest of the thread plus the class
  (``0:0:0:0:0:0:0:2181:FastLeaderElection``). The pipe splits at the last colon (thread, class),
  so ``component`` differs on exactly the 1,930 lines whose thread name holds a colon, while
  ``Node:Component`` and ``thread:component`` agree on all 2,000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from support.loghub import (
    BY_PIPE,
    EXAMPLES,
    LINES,
    MONTHS,
    ROOT,
    SAMPLES,
    Sample,
    events_of,
    ground_truth,
    log_path,
    read_lines,
    run_preview,
    text,
)

# ------------------------------------------------------------------------ field by field


def test_samples_are_the_2k_logs():
    for sample in SAMPLES:
        assert len(read_lines(log_path(sample))) == LINES, sample.log
        assert len(ground_truth(sample)) == LINES, sample.log


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.pipe)
def test_fields_agree_with_ground_truth(sample: Sample):
    events = events_of(sample)
    rows = ground_truth(sample)
    assert len(events) == len(rows) == LINES  # no line dropped: every line parsed, in order
    mismatches: Counter[str] = Counter()
    examples: dict[str, tuple[int, str, str]] = {}
    for line_id, (event, row) in enumerate(zip(events, rows), 1):
        for fld, column in sample.columns.items():
            if text(event.get(fld)) != row[column]:
                mismatches[fld] += 1
                examples.setdefault(fld, (line_id, text(event.get(fld)), row[column]))
    expected = {f: sample.mismatches.get(f, 0) for f in sample.columns}
    assert {f: mismatches[f] for f in sample.columns} == expected, examples


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.pipe)
def test_messages_are_trimmed_like_the_ground_truth(sample: Sample):
    lines = read_lines(log_path(sample))
    assert sum(line != line.rstrip() for line in lines) == sample.trailing_space
    messages = [e["message"] for e in events_of(sample)]
    assert all(m == m.strip() for m in messages)


def test_linux_kernel_indent_is_trimmed():
    lines = read_lines(log_path(BY_PIPE["linux"]))
    indented = [i for i, line in enumerate(lines) if " kernel:  " in line]
    assert len(indented) == 8
    events = events_of(BY_PIPE["linux"])
    rows = ground_truth(BY_PIPE["linux"])
    for i in indented:
        assert events[i]["process"] == "kernel"
        assert events[i]["message"] == rows[i]["Content"] != lines[i].split("kernel:", 1)[1]
        assert "pid" not in events[i] and rows[i]["PID"] == ""


def test_linux_odd_process_name():
    event = events_of(BY_PIPE["linux"])[898]  # LineId 899
    assert event["process"] == "-- root"
    assert event["pid"] == 2421
    assert event["message"] == "ROOT LOGIN ON tty2"


def test_zookeeper_thread_and_class_split_at_the_last_colon():
    sample = BY_PIPE["zookeeper"]
    events, rows = events_of(sample), ground_truth(sample)
    joined_ok = sum(
        f"{e['thread']}:{e['component']}" == f"{r['Node']}:{r['Component']}"
        for e, r in zip(events, rows)
    )
    assert joined_ok == LINES
    # the ground truth's Component equals the class only where the thread name has no colon
    no_colon = sum(":" not in e["thread"] for e in events)
    assert no_colon == LINES - sample.mismatches["component"]
    assert all(":" not in e["component"] and "@" not in e["component"] for e in events)


# ------------------------------------------------------------------------ timestamps


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


TIMESTAMPS: dict[str, Callable[[dict[str, str]], str]] = {
    "apache": lambda r: _iso(datetime.strptime(r["Time"], "%a %b %d %H:%M:%S %Y")),
    "hdfs": lambda r: (
        f"20{r['Date'][:2]}-{r['Date'][2:4]}-{r['Date'][4:]}"
        f"T{r['Time'][:2]}:{r['Time'][2:4]}:{r['Time'][4:]}Z"
    ),
    # ISO 8601 with milliseconds, written only when there are some (20 lines fall on ",000")
    "zookeeper": lambda r: f"{r['Date']}T{r['Time'].replace(',', '.')}Z",
}


@pytest.mark.parametrize("pipe", sorted(TIMESTAMPS))
def test_timestamps_with_a_year(pipe: str):
    sample = BY_PIPE[pipe]
    got = [e["timestamp"] for e in events_of(sample)]
    want = [TIMESTAMPS[pipe](r) for r in ground_truth(sample)]
    assert sum(g != w for g, w in zip(got, want)) == 0, next(
        ((g, w) for g, w in zip(got, want) if g != w), None
    )


@pytest.mark.parametrize("pipe", ["openssh", "linux"])
def test_syslog_timestamps_take_a_recent_year(pipe: str):
    """Syslog lines have no year: the pipe takes this year or the last; the rest must agree."""
    sample = BY_PIPE[pipe]
    before = datetime.now(timezone.utc)
    result = run_preview(sample)
    after = datetime.now(timezone.utc)
    years = {str(before.year - 1), str(before.year), str(after.year)}
    month_col, day_col = ("Date", "Day") if pipe == "openssh" else ("Month", "Date")
    bad = []
    for event, row in zip(result.events, ground_truth(sample)):
        year, rest = event["timestamp"][:4], event["timestamp"][4:]
        month, day = MONTHS[row[month_col]], int(row[day_col])
        if year not in years or rest != f"-{month:02d}-{day:02d}T{row['Time']}Z":
            bad.append((event["timestamp"], row[month_col], row[day_col], row["Time"]))
    assert len(result.events) == LINES
    assert bad == []


# ------------------------------------------------------------------------ derived fields


def test_openssh_login_fields():
    sample = BY_PIPE["openssh"]
    events, rows = events_of(sample), ground_truth(sample)
    outcomes = Counter(e.get("outcome") for e in events)
    templates = Counter(r["EventTemplate"].split(" for ")[0] for r in rows)
    assert outcomes["failure"] == templates["Failed password"] + templates["Failed none"] == 522
    assert outcomes["success"] == templates["Accepted password"] == 1
    for event in events:
        if "outcome" in event:
            assert isinstance(event["src_port"], int)
            assert event["src_ip"] in event["message"]
            assert event["user"] in event["message"]


def test_hdfs_every_line_names_a_block():
    events = events_of(BY_PIPE["hdfs"])
    assert all(e["block"].startswith("blk_") and e["block"] in e["message"] for e in events)


def test_apache_client_addresses():
    sample = BY_PIPE["apache"]
    with_client = [e for e in events_of(sample) if "client" in e]
    in_truth = [r for r in ground_truth(sample) if r["Content"].startswith("[client ")]
    assert len(with_client) == len(in_truth) > 0
    assert all(e["message"].startswith(f"[client {e['client']}] ") for e in with_client)


# ------------------------------------------------------------------------ filters


FILTERS: list[tuple[str, dict[str, Any], Callable[[dict[str, str]], bool]]] = [
    ("apache", {"level": "error"}, lambda r: r["Level"] == "error"),
    ("apache", {"level": "notice"}, lambda r: r["Level"] == "notice"),
    ("openssh", {"logins_only": True}, lambda r: r["Content"].startswith(("Failed ", "Accepted "))),
    ("linux", {"process": "sshd"}, lambda r: r["Component"].startswith("sshd")),
    ("hdfs", {"warnings_only": True}, lambda r: r["Level"] != "INFO"),
    ("zookeeper", {"min_level": "WARN"}, lambda r: r["Level"] in ("WARN", "ERROR")),
    ("zookeeper", {"min_level": "ERROR"}, lambda r: r["Level"] == "ERROR"),
]


@pytest.mark.parametrize(("pipe", "params", "keep"), FILTERS, ids=lambda v: str(v))
def test_filters_keep_what_the_ground_truth_says(pipe, params, keep):
    sample = BY_PIPE[pipe]
    result = run_preview(sample, **params)
    want = [r["Content"] for r in ground_truth(sample) if keep(r)]
    assert 0 < len(want) < LINES
    assert [e["message"] for e in result.events] == want
    assert result.errors == []


# ------------------------------------------------------------------------ the real engine


def run_pipe(tmp_path: Path, sample: Sample, *params: str) -> tuple[Path, str]:
    out = tmp_path / f"{sample.pipe}.ndjson"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PIPENB_DATA_DIR"] = str(tmp_path / "state")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipenb",
            "run",
            str(EXAMPLES / f"{sample.pipe}.yml"),
            "--param",
            f"path={log_path(sample)}",
            "--param",
            f"out={out}",
            *[a for p in params for a in ("--param", p)],
            "--data-dir",
            str(tmp_path / "state"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.pipe)
def test_pipenb_run_writes_one_event_per_line(tmp_path: Path, sample: Sample):
    out, _ = run_pipe(tmp_path, sample)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == LINES
    rows = ground_truth(sample)
    assert [e["message"] for e in written] == [r["Content"] for r in rows]
    assert written == events_of(sample)  # the engine and the preview agree exactly


def test_pipenb_run_with_a_filter(tmp_path: Path):
    sample = BY_PIPE["apache"]
    out, _ = run_pipe(tmp_path, sample, "level=error")
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    errors = [r for r in ground_truth(sample) if r["Level"] == "error"]
    assert len(written) == len(errors) == 595
    assert {e["level"] for e in written} == {"error"}
    assert [e["time"] for e in written] == [r["Time"] for r in errors]
