"""Outputs ``print``, ``file`` (ndjson, csv, raw, ${field} paths, rotation) and ``discard``."""

from __future__ import annotations

import asyncio
import csv
import io
import os

import orjson
import pytest

import pipenb
from pipenb.engine.base import RunContext

from support.cli import run_cli
from support.files import read_ndjson
from support.pipes import problems_of, write_pipe


def output_of(body: str):
    """The output component of a pipe whose output section is ``body``, ready to write."""
    pipe = pipenb.Pipe.from_yaml(f"name: t\ninput: {{echo: {{lines: [a]}}}}\noutput: {body}\n")
    spec = pipe.spec.output
    return spec.component.factory(spec.options, RunContext(pipe="t"))


def write_batches(out, *batches: list[dict]) -> list:
    async def go():
        rejects = []
        await out.open()
        for b in batches:
            rejects.append(await out.write(b))
        await out.close()
        return rejects

    return asyncio.run(go())


def echo_pipe(events: list[dict], output: dict, *, errors: dict | None = None) -> pipenb.Pipe:
    doc = {"name": "out-test", "input": {"echo": {"events": events}}, "output": output}
    if errors is not None:
        doc["errors"] = errors
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


# ------------------------------------------------------------------------------ print


def test_print_writes_ndjson_to_stdout(capsysbinary, data_dir):
    events = [{"a": 1, "s": "é"}, {"nested": {"k": [1, None]}}]
    snap = echo_pipe(events, {"print": {}}).run(data_dir=data_dir)
    out = capsysbinary.readouterr().out
    assert out.splitlines() == [orjson.dumps(e) for e in events]
    assert snap["output"] == {
        "name": "print",
        "events": 2,
        "batches": 1,
        "errors": 0,
        "retries": 0,
        "latency_ms": snap["output"]["latency_ms"],
    }


def test_print_pretty(capsysbinary, data_dir):
    echo_pipe([{"a": 1}, {"b": [2]}], {"print": {"format": "pretty"}}).run(data_dir=data_dir)
    out = capsysbinary.readouterr().out.decode()
    assert out == '{\n  "a": 1\n}\n{\n  "b": [\n    2\n  ]\n}\n'


def test_print_from_the_cli(tmp_path):
    pipe = write_pipe(
        tmp_path,
        """
        name: p
        input: {echo: {lines: [x, y]}}
        actions: [{add: {n: 1}}]
        output: {print: {}}
        """,
    )
    res = run_cli("run", pipe, "--data-dir", tmp_path / "d", "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout == '{"_raw":"x","n":1}\n{"_raw":"y","n":1}\n'
    assert res.stderr == ""


# ------------------------------------------------------------------------------ file: ndjson


def test_file_ndjson_is_the_default_and_appends_across_runs(tmp_path, data_dir):
    path = tmp_path / "sub" / "dir" / "out.ndjson"  # missing directories are made
    pipe = echo_pipe([{"a": 1}, {"s": 'has },{ inside "quotes"\n'}], {"file": {"path": str(path)}})
    pipe.run(data_dir=data_dir)
    pipe.run(data_dir=data_dir)
    assert read_ndjson(path) == [{"a": 1}, {"s": 'has },{ inside "quotes"\n'}] * 2
    assert path.read_bytes().count(b"\n") == 4


def test_file_ndjson_batches_with_objects_inside_strings_and_arrays(tmp_path):
    path = tmp_path / "out.ndjson"
    out = output_of(f"{{file: {{path: '{path}', fsync: true}}}}")
    events = [{"a": [{"b": 1}, {"c": 2}]}, {"d": "},{"}, {}, {"e": {"f": {}}}]
    assert write_batches(out, events, events[:1]) == [[], []]
    assert read_ndjson(path) == [*events, events[0]]


def test_file_without_mkdir_fails_to_write_into_a_missing_directory(tmp_path):
    path = tmp_path / "missing" / "out.ndjson"
    out = output_of(f"{{file: {{path: '{path}', mkdir: false}}}}")
    with pytest.raises(FileNotFoundError):
        write_batches(out, [{"a": 1}])


def test_file_output_after_a_torn_write_starts_on_a_new_line(tmp_path, data_dir):
    path = tmp_path / "out.ndjson"
    path.write_bytes(b'{"_raw":"whole"}\n{"_raw":"to')  # what a killed writer left
    echo_pipe([{"_raw": "replayed"}], {"file": {"path": str(path)}}).run(data_dir=data_dir)
    last = path.read_bytes().splitlines()[-1]
    assert orjson.loads(last) == {"_raw": "replayed"}


# ------------------------------------------------------------------------------ file: csv


def test_file_csv_with_a_header_from_the_first_event(tmp_path):
    path = tmp_path / "out.csv"
    out = output_of(f"{{file: {{path: '{path}', format: csv}}}}")
    write_batches(
        out,
        [{"a": 1, "b": "x,y"}, {"a": None, "b": {"k": [1]}, "extra": "ignored"}],
        [{"b": "second", "a": 2}],
    )
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows == [["a", "b"], ["1", "x,y"], ["", '{"k":[1]}'], ["2", "second"]]


def test_file_csv_with_fields_and_without_header(tmp_path):
    path = tmp_path / "out.csv"
    out = output_of(f"{{file: {{path: '{path}', format: csv, fields: [b, a], header: false}}}}")
    write_batches(out, [{"a": 1, "b": 2, "c": 3}, {"c": 4}])
    assert path.read_text() == "2,1\n,\n"


def test_file_csv_does_not_repeat_the_header_when_appending(tmp_path, data_dir):
    path = tmp_path / "out.csv"
    pipe = echo_pipe([{"a": 1, "b": 2}], {"file": {"path": str(path), "format": "csv"}})
    pipe.run(data_dir=data_dir)
    pipe.run(data_dir=data_dir)
    assert path.read_text() == "a,b\n1,2\n1,2\n"


def test_file_csv_rotation_starts_each_file_with_a_header(tmp_path):
    path = tmp_path / "out.csv"
    out = output_of(f"{{file: {{path: '{path}', format: csv, rotate: {{size: 30, keep: 3}}}}}}")
    write_batches(out, *([{"a": i, "b": "xxxxxxxx"}] for i in range(6)))
    files = sorted(p for p in os.listdir(tmp_path) if p.startswith("out.csv"))
    assert len(files) > 1
    for name in files:
        assert (tmp_path / name).read_text().startswith("a,b\n"), name


# ------------------------------------------------------------------------------ file: raw


def test_file_raw_writes_one_field_per_line_and_rejects_events_without_it(tmp_path, data_dir):
    path = tmp_path / "out.log"
    errors = tmp_path / "errors.ndjson"
    pipe = echo_pipe(
        [{"_raw": "line one"}, {"other": 1}, {"_raw": 42}, {"_raw": "last"}],
        {"file": {"path": str(path), "format": "raw"}},
        errors={"file": {"path": str(errors)}},
    )
    snap = pipe.run(data_dir=data_dir)
    assert path.read_text() == "line one\n42\nlast\n"
    assert read_ndjson(errors) == [
        {
            "other": 1,
            "_error": {"stage": "output", "message": "raw format: the event has no '_raw' field"},
        }
    ]
    assert snap["output"]["events"] == 3
    assert snap["output"]["errors"] == 1
    assert snap["dead_letters"] == 1


def test_file_raw_with_another_field(tmp_path):
    path = tmp_path / "out.log"
    out = output_of(f"{{file: {{path: '{path}', format: raw, raw-field: msg}}}}")
    rejects = write_batches(out, [{"msg": "a"}, {"_raw": "b"}])
    assert path.read_text() == "a\n"
    assert [why for _, why in rejects[0]] == ["raw format: the event has no 'msg' field"]


# ------------------------------------------------------------------------------ file: paths


def test_file_path_with_field_references_splits_events(tmp_path, data_dir):
    events = [
        {"svc": "web", "n": 1},
        {"svc": "db", "n": 2},
        {"svc": "web", "n": 3},
        {"n": 4},
        {"svc": {"x": 1}, "n": 5},
    ]
    pipe = echo_pipe(events, {"file": {"path": str(tmp_path / "out" / "${svc}.ndjson")}})
    pipe.run(data_dir=data_dir)
    assert read_ndjson(tmp_path / "out" / "web.ndjson") == [events[0], events[2]]
    assert read_ndjson(tmp_path / "out" / "db.ndjson") == [events[1]]
    assert read_ndjson(tmp_path / "out" / "_.ndjson") == [events[3]]  # missing field: "_"
    assert read_ndjson(tmp_path / "out" / '{"x":1}.ndjson') == [events[4]]


def test_field_values_in_a_path_cannot_leave_its_directory(tmp_path, data_dir):
    events = [{"svc": "../../escape", "n": 1}, {"svc": "..", "n": 2}]
    pipe = echo_pipe(events, {"file": {"path": str(tmp_path / "out" / "${svc}.ndjson")}})
    pipe.run(data_dir=data_dir)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".._.._escape.ndjson",
        "_.ndjson",
    ]
    assert not (tmp_path.parent / "escape.ndjson").exists()


def test_file_path_with_a_param_template(tmp_path, data_dir):
    doc = f"""
name: t
params:
  dir: {{default: "{tmp_path}"}}
input: {{echo: {{lines: [a]}}}}
output: {{file: {{path: "{{{{dir}}}}/{{{{pipe.name}}}}.ndjson"}}}}
"""
    pipenb.Pipe.from_yaml(doc).run(data_dir=data_dir)
    assert read_ndjson(tmp_path / "t.ndjson") == [{"_raw": "a"}]


# ------------------------------------------------------------------------------ file: rotation


def test_file_rotation_by_size_keeps_n_files(tmp_path):
    path = tmp_path / "out.ndjson"
    out = output_of(f"{{file: {{path: '{path}', rotate: {{size: 50, keep: 2}}}}}}")
    batches = [[{"i": i, "pad": "x" * 8}] for i in range(10)]  # 25 bytes each: two a file
    write_batches(out, *batches)
    names = sorted(p for p in os.listdir(tmp_path))
    assert names == ["out.ndjson", "out.ndjson.1", "out.ndjson.2"]
    for name in names:
        assert os.path.getsize(tmp_path / name) <= 50
    newest = [e["i"] for e in read_ndjson(path)]
    older = [e["i"] for e in read_ndjson(tmp_path / "out.ndjson.1")]
    oldest = [e["i"] for e in read_ndjson(tmp_path / "out.ndjson.2")]
    assert oldest + older + newest == list(range(4, 10))


def test_file_rotation_with_keep_zero_deletes_the_old_file(tmp_path):
    path = tmp_path / "out.ndjson"
    out = output_of(f"{{file: {{path: '{path}', rotate: {{size: 30, keep: 0}}}}}}")
    write_batches(out, [{"i": 1, "pad": "xxxxxxxxxx"}], [{"i": 2, "pad": "xxxxxxxxxx"}])
    assert os.listdir(tmp_path) == ["out.ndjson"]
    assert read_ndjson(path) == [{"i": 2, "pad": "xxxxxxxxxx"}]


def test_a_batch_bigger_than_the_rotation_size_is_written_whole(tmp_path):
    path = tmp_path / "out.ndjson"
    out = output_of(f"{{file: {{path: '{path}', rotate: {{size: 10}}}}}}")
    write_batches(out, [{"i": i} for i in range(5)])
    assert [e["i"] for e in read_ndjson(path)] == list(range(5))


def test_file_options_are_validated():
    doc = (
        "name: t\ninput: {echo: {lines: [a]}}\n"
        "output: {file: {path: x, rotate: {size: big}, format: parquet}}\n"
    )
    messages = sorted(p.message for p in problems_of(doc))
    assert messages == [
        "file.format: Input should be 'ndjson', 'csv' or 'raw'",
        "file.rotate.size: expected a size such as 512, 10KB or 1MiB, got 'big'",
    ]


# ------------------------------------------------------------------------------ discard


def test_discard_counts_and_drops(data_dir):
    pipe = echo_pipe([{"a": i} for i in range(7)], {"discard": {}})
    engine = pipe.engine(data_dir=data_dir)
    asyncio.run(engine.run())
    assert engine.parts.output.count == 7
    snap = engine.snapshot()
    assert snap["output"]["name"] == "discard"
    assert snap["output"]["events"] == 7
    assert snap["state"] == "finished"
