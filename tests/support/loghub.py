"""The five loghub 2k samples in ``examples/data`` with their ground truth, and the example pipes'
events over them (computed once per session): shared by the loghub and grok tests."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pipenb

from support import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data"
LINES = 2000
MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


@dataclass(frozen=True)
class Sample:
    pipe: str  # examples/<pipe>.yml
    log: str  # examples/data/<log>_2k.log and its _structured.csv
    columns: dict[str, str]  # event field -> ground-truth column
    mismatches: dict[str, int] = field(default_factory=dict)  # known ground-truth quirks
    trailing_space: int = 0  # log lines whose message ends in whitespace (trimmed in the csv)


SAMPLES = [
    Sample("apache", "Apache", {"time": "Time", "level": "Level", "message": "Content"}),
    Sample(
        "openssh",
        "OpenSSH",
        {
            "month": "Date",
            "day": "Day",
            "time": "Time",
            "host": "Component",
            "pid": "Pid",
            "message": "Content",
        },
        trailing_space=118,
    ),
    Sample(
        "linux",
        "Linux",
        {
            "month": "Month",
            "day": "Date",
            "time": "Time",
            "host": "Level",
            "process": "Component",
            "pid": "PID",
            "message": "Content",
        },
        trailing_space=1080,
    ),
    Sample(
        "hdfs",
        "HDFS",
        {
            "date": "Date",
            "time": "Time",
            "pid": "Pid",
            "level": "Level",
            "component": "Component",
            "message": "Content",
        },
    ),
    Sample(
        "zookeeper",
        "Zookeeper",
        {
            "date": "Date",
            "time": "Time",
            "level": "Level",
            "component": "Component",
            "line": "Id",
            "message": "Content",
        },
        mismatches={"component": 1930},
        trailing_space=292,
    ),
]
BY_PIPE = {s.pipe: s for s in SAMPLES}


def log_path(sample: Sample) -> Path:
    return DATA / f"{sample.log}_2k.log"


def read_lines(path: Path) -> list[str]:
    """The log's lines as the files input reads them: CRLF or LF ends, last line unterminated."""
    text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


_truth_cache: dict[str, list[dict[str, str]]] = {}


def ground_truth(sample: Sample) -> list[dict[str, str]]:
    if sample.log not in _truth_cache:
        path = DATA / f"{sample.log}_2k.log_structured.csv"
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["LineId"]) for r in rows] == list(range(1, len(rows) + 1))
        _truth_cache[sample.log] = rows
    return _truth_cache[sample.log]


def text(value: Any) -> str:
    """An event value as the csv writes it: missing is empty, numbers in decimal."""
    return "" if value is None else str(value)


def run_preview(sample: Sample, **params: Any) -> pipenb.PreviewResult:
    pipe = pipenb.Pipe.from_file(
        EXAMPLES / f"{sample.pipe}.yml", params={"path": str(log_path(sample)), **params}
    )
    return pipe.preview(read_lines(log_path(sample)), limit=None)


_events_cache: dict[str, list[dict[str, Any]]] = {}


def events_of(sample: Sample) -> list[dict[str, Any]]:
    if sample.pipe not in _events_cache:
        result = run_preview(sample)
        assert result.errors == []
        _events_cache[sample.pipe] = result.events
    return _events_cache[sample.pipe]
