"""``files`` with ``multiline`` (stack traces as one event, checkpoints) and ``exec`` on ``cron``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

import pipenb
from pipenb.engine.checkpoints import checkpoint_path
from pipenb.engine.schedule import Cron, parse_cron

from support.files import raw_values, read_ndjson
from support.pipes import problems_of
from support.waiting import async_wait_until, stop_engine

JAVA_TRACE = """\
Exception in thread "main" java.lang.IllegalStateException: cannot start
\tat com.example.App.start(App.java:42)
\tat com.example.App.main(App.java:7)
Caused by: java.io.FileNotFoundException: /etc/app.conf
\tat java.base/java.io.FileInputStream.open0(Native Method)
\t... 2 more
INFO shutting down
"""
NOT_INDENTED_OR_CAUSE = r"^(?![ \t]|Caused by)"


def ml_pipe(
    path: Path,
    out: Path,
    *,
    start: str,
    name: str = "ml-test",
    errors: Path | None = None,
    follow: bool = False,
    **options: object,
) -> pipenb.Pipe:
    """``files(path, multiline) -> file(out)``; ``options`` go to the input or, with an ``ml_``
    prefix, to ``multiline``."""
    ml = {"start": start}
    inp: dict = {"path": str(path), "follow": follow, "poll-interval": "5ms", "multiline": ml}
    for k, v in options.items():
        target, key = (ml, k[3:]) if k.startswith("ml_") else (inp, k)
        target[key.replace("_", "-")] = v
    doc = {
        "name": name,
        "input": {"files": inp},
        "output": {"file": {"path": str(out), "batch": {"timeout": "20ms"}}},
    }
    if errors is not None:
        doc["errors"] = {"file": {"path": str(errors), "batch": {"timeout": "20ms"}}}
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


def saved_offset(data_dir: str, name: str) -> int:
    data = orjson.loads(Path(checkpoint_path(data_dir, name)).read_bytes())
    (entry,) = data["position"]["files"].values()
    return entry["offset"]


# ------------------------------------------------------------------------------ multiline


def test_a_java_stack_trace_becomes_one_event(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_text(JAVA_TRACE)
    out = tmp_path / "out.ndjson"
    snap = ml_pipe(log, out, start=NOT_INDENTED_OR_CAUSE, metadata=True).run(data_dir=data_dir)
    lines = JAVA_TRACE.splitlines()
    assert read_ndjson(out) == [
        {"_raw": "\n".join(lines[:6]), "_path": str(log), "_offset": 0},
        {"_raw": "INFO shutting down", "_path": str(log), "_offset": JAVA_TRACE.index("INFO")},
    ]
    assert snap["input"]["events"] == 2
    assert snap["input"]["bytes"] == log.stat().st_size
    assert saved_offset(data_dir, "ml-test") == log.stat().st_size


def test_records_that_start_with_a_timestamp_keep_their_continuation_lines(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_bytes(
        b"2024-05-01 12:00:00 ERROR request failed\r\n"
        b"java.lang.RuntimeException: boom\r\n"
        b"    at A.run(A.java:1)\r\n"
        b"2024-05-01 12:00:01 INFO ok\r\n"
        b"2024-05-01 12:00:02 WARN last, no newline\n  tail"
    )
    out = tmp_path / "out.ndjson"
    ml_pipe(log, out, start=r"^\d{4}-\d\d-\d\d ").run(data_dir=data_dir)
    assert raw_values(out) == [
        "2024-05-01 12:00:00 ERROR request failed\n"
        "java.lang.RuntimeException: boom\n    at A.run(A.java:1)",
        "2024-05-01 12:00:01 INFO ok",
        "2024-05-01 12:00:02 WARN last, no newline\n  tail",
    ]


def test_max_lines_ends_an_event_and_orphan_continuation_lines_make_their_own(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_text("  orphan 1\n  orphan 2\nS first\n  c1\n  c2\n  c3\n  c4\nS second\n")
    out = tmp_path / "out.ndjson"
    ml_pipe(log, out, start="^S", ml_max_lines=3).run(data_dir=data_dir)
    assert raw_values(out) == [
        "  orphan 1\n  orphan 2",
        "S first\n  c1\n  c2",
        "  c3\n  c4",
        "S second",
    ]


def test_multiline_json_reads_pretty_printed_objects(tmp_path, data_dir):
    log = tmp_path / "app.json"
    log.write_text('{\n  "a": 1,\n  "b": [1,\n    2]\n}\n{"c": 3}\n{\n  broken\n}\n[1]\n')
    out, errors = tmp_path / "out.ndjson", tmp_path / "errors.ndjson"
    snap = ml_pipe(log, out, start=r"^[\[{]", format="json", errors=errors).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"a": 1, "b": [1, 2]}, {"c": 3}]
    bad = read_ndjson(errors)
    assert [e["_raw"] for e in bad] == ["{\n  broken\n}", "[1]"]
    assert bad[0]["_error"]["message"].startswith("not valid JSON")
    assert bad[1]["_error"]["message"].startswith("a JSON event must be an object")
    assert snap["input"]["errors"] == 2


def test_a_pending_event_is_flushed_after_the_timeout(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_text("")
    out = tmp_path / "out.ndjson"
    pipe = ml_pipe(log, out, start="^S", follow=True, ml_timeout="100ms")

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.parts.input.files, what="the file to be opened")
        with open(log, "a") as fh:
            fh.write("S one\n  more\n")
        # no next start line will come: the timeout hands the event on while the pipe runs
        await async_wait_until(lambda: raw_values(out), what="the timed-out event")
        assert engine.state == "running"
        await stop_engine(engine, task)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert raw_values(out) == ["S one\n  more"]


def test_the_checkpoint_never_points_inside_a_pending_event(tmp_path, data_dir):
    log = tmp_path / "app.log"
    first = "S one\n  1a\n"
    second_start = "S two\n  2a\n"
    log.write_text(first + second_start)
    out = tmp_path / "out.ndjson"
    tail = ml_pipe(log, out, start="^S", follow=True, ml_timeout="1h", name="resume")

    async def scenario():
        engine = tail.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: raw_values(out) == ["S one\n  1a"], what="event one")
        # "S two" is pending (no next start, long timeout): the checkpoint holds at its start
        await async_wait_until(
            lambda: saved_offset(data_dir, "resume") == len(first), what="the checkpoint"
        )
        await stop_engine(engine, task)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert saved_offset(data_dir, "resume") == len(first)
    assert raw_values(out) == ["S one\n  1a"]  # the half-read event was not emitted at stop
    with open(log, "a") as fh:  # the rest of event two arrives while the pipe is stopped
        fh.write("  2b\n  2c\nS three\n")
    ml_pipe(log, out, start="^S", name="resume").run(data_dir=data_dir)
    assert raw_values(out) == ["S one\n  1a", "S two\n  2a\n  2b\n  2c", "S three"]
    assert saved_offset(data_dir, "resume") == log.stat().st_size


def test_a_truncated_file_hands_on_the_event_it_was_gathering(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_text("S old event\n  old continuation\n")
    out = tmp_path / "out.ndjson"
    pipe = ml_pipe(log, out, start="^S", follow=True, ml_timeout="1h")

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        files = engine.parts.input.files
        await async_wait_until(
            lambda: any(f.pending for f in files.values()), what="the event to be pending"
        )
        log.write_text("S new\n")  # copytruncate, and a shorter first line
        await async_wait_until(lambda: raw_values(out), what="the old event")
        await stop_engine(engine, task)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert raw_values(out) == ["S old event\n  old continuation"]


def test_multiline_validation():
    doc = {
        "name": "t",
        "input": {"files": {"path": "x", "multiline": {"start": "(", "max-lines": 0, "x": 1}}},
        "output": {"discard": {}},
    }
    messages = sorted(p.message for p in problems_of(orjson.dumps(doc).decode()))
    assert len(messages) == 3
    assert messages[0].startswith("files.multiline.max-lines: Input should be greater than")
    assert messages[1].startswith("files.multiline.start: invalid regular expression")
    assert "unknown" in messages[2] and "x" in messages[2]


# ------------------------------------------------------------------------------ cron


def fire_times(expr: str, start: datetime, n: int = 4) -> list[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M") for t in parse_cron(expr).times(start, n)]


def test_cron_steps_lists_and_ranges():
    start = datetime(2024, 1, 1, 10, 7, 30)  # a Monday
    assert fire_times("*/15 * * * *", start) == [
        "Mon 2024-01-01 10:15",
        "Mon 2024-01-01 10:30",
        "Mon 2024-01-01 10:45",
        "Mon 2024-01-01 11:00",
    ]
    assert fire_times("5/20 9-10 * * *", start) == [
        "Mon 2024-01-01 10:25",
        "Mon 2024-01-01 10:45",
        "Tue 2024-01-02 09:05",
        "Tue 2024-01-02 09:25",
    ]
    assert fire_times("0,30 8-18/5 * * *", start, 3) == [
        "Mon 2024-01-01 13:00",
        "Mon 2024-01-01 13:30",
        "Mon 2024-01-01 18:00",
    ]


def test_cron_fires_strictly_after_the_given_time():
    assert fire_times("* * * * *", datetime(2024, 1, 1, 10, 7), 2) == [
        "Mon 2024-01-01 10:08",
        "Mon 2024-01-01 10:09",
    ]


def test_cron_weekdays_months_and_names():
    friday_9 = datetime(2024, 5, 3, 9, 0)
    assert fire_times("0 9 * * mon-fri", friday_9, 2) == [
        "Mon 2024-05-06 09:00",
        "Tue 2024-05-07 09:00",
    ]
    assert fire_times("0 0 * * 7", friday_9, 1) == fire_times("0 0 * * sun", friday_9, 1)
    assert fire_times("0 0 * * 0", friday_9, 1) == ["Sun 2024-05-05 00:00"]
    assert fire_times("30 2 1 jan,jul *", friday_9, 3) == [
        "Mon 2024-07-01 02:30",
        "Wed 2025-01-01 02:30",
        "Tue 2025-07-01 02:30",
    ]


def test_cron_day_of_month_or_day_of_week_when_both_are_restricted():
    start = datetime(2024, 9, 1)
    # the 13th of any month, and every Friday (Vixie cron's rule)
    assert fire_times("0 0 13 * fri", start, 4) == [
        "Fri 2024-09-06 00:00",
        "Fri 2024-09-13 00:00",
        "Fri 2024-09-20 00:00",
        "Fri 2024-09-27 00:00",
    ]
    assert fire_times("0 0 13 * 1", start, 3) == [
        "Mon 2024-09-02 00:00",
        "Mon 2024-09-09 00:00",
        "Fri 2024-09-13 00:00",  # the 13th, though not a Monday
    ]
    # with day-of-month starting with "*", both must match: the 1st, 11th, 21st, 31st on Mondays
    assert fire_times("0 0 */10 * mon", start, 2) == [
        "Mon 2024-10-21 00:00",
        "Mon 2024-11-11 00:00",
    ]


def test_cron_leap_days_macros_and_month_ends():
    assert fire_times("0 0 29 2 *", datetime(2025, 3, 1), 2) == [
        "Tue 2028-02-29 00:00",
        "Sun 2032-02-29 00:00",
    ]
    assert fire_times("@daily", datetime(2024, 12, 31, 23, 59), 1) == ["Wed 2025-01-01 00:00"]
    assert fire_times("@hourly", datetime(2024, 1, 1, 0, 0), 1) == ["Mon 2024-01-01 01:00"]
    assert fire_times("@weekly", datetime(2024, 1, 1), 1) == ["Sun 2024-01-07 00:00"]
    assert fire_times("@monthly", datetime(2024, 1, 31), 1) == ["Thu 2024-02-01 00:00"]
    assert fire_times("@yearly", datetime(2024, 1, 1), 1) == ["Wed 2025-01-01 00:00"]
    assert fire_times("0 12 31 * *", datetime(2024, 4, 1), 2) == [
        "Fri 2024-05-31 12:00",
        "Wed 2024-07-31 12:00",
    ]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "a cron expression has 5 fields (minute hour day-of-month month"),
        ("60 * * * *", "cron minute: 60 is out of range 0-59"),
        ("* 24 * * *", "cron hour: 24 is out of range 0-23"),
        ("* * 0 * *", "cron day-of-month: 0 is out of range 1-31"),
        ("* * * 13 *", "cron month: 13 is out of range 1-12"),
        ("* * * * 8", "cron day-of-week: 8 is out of range 0-7"),
        ("*/0 * * * *", "cron minute: the step in '*/0' must be a positive number"),
        ("10-5 * * * *", "cron minute: range '10-5' runs backwards"),
        ("1,,2 * * * *", "cron minute: empty item in '1,,2'"),
        ("* * * foo *", "cron month: 'foo' is not a number or a name such as 'feb'"),
        ("0 0 30 2 *", "cron expression '0 0 30 2 *' never fires"),
    ],
)
def test_cron_errors_say_which_field_is_wrong(expr, message):
    with pytest.raises(ValueError) as info:
        parse_cron(expr)
    assert str(info.value).startswith(message)


def test_exec_cron_validation():
    doc = {
        "name": "t",
        "input": {"exec": {"command": "date", "cron": "* * * * *", "interval": "1s"}},
        "output": {"discard": {}},
    }
    (problem,) = problems_of(orjson.dumps(doc).decode())
    assert problem.message == "exec: give either interval or cron, not both"
    doc["input"]["exec"] = {"command": "date", "cron": "61 * * * *"}
    (problem,) = problems_of(orjson.dumps(doc).decode())
    assert problem.message == "exec.cron: cron minute: 61 is out of range 0-59"


def exec_pipe(out: Path, cron: str, command: str = "echo tick") -> pipenb.Pipe:
    doc = {
        "name": "cron-test",
        "input": {"exec": {"command": command, "cron": cron}},
        "output": {"file": {"path": str(out), "batch": {"timeout": "20ms"}}},
    }
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


def test_exec_on_a_cron_schedule_waits_for_each_firing_time(tmp_path, data_dir, monkeypatch):
    # a schedule that fires every 50 ms, so the test does not wait for whole minutes
    asked: list[datetime] = []

    def every_50ms(self: Cron, after: datetime) -> datetime:
        asked.append(after)
        return after + timedelta(milliseconds=50)

    monkeypatch.setattr(Cron, "next_after", every_50ms)
    out = tmp_path / "out.ndjson"
    pipe = exec_pipe(out, "*/5 * * * *", "date +%s.%N")

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        assert not engine.parts.input.finite
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: len(raw_values(out)) >= 3, what="three runs")
        await stop_engine(engine, task)
        return engine

    engine = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert engine.state == "stopped"
    runs = [float(v) for v in raw_values(out)]
    # each run started no earlier than the time the schedule gave for it
    for when, ran in zip(asked, runs):
        assert ran >= (when + timedelta(milliseconds=50)).timestamp() - 0.01


def test_a_preview_of_an_exec_cron_input_runs_the_command_at_once(tmp_path):
    result = exec_pipe(tmp_path / "unused.ndjson", "0 0 1 1 *").preview(timeout=20)
    assert result.events == [{"_raw": "tick"}]
