"""Fuzzing the engine: valid generated pipes over generated event streams.

The pipes are an ``echo`` input whose events are generated (nested objects and arrays, unicode,
64-bit-plus integers, NaN and infinities, nulls, missing fields, wrong types), a few actions of
every kind (each possibly with ``when:``), a ``file`` output (NDJSON, CSV or raw, possibly with
``${field}`` in its path) and an ``errors:`` file. Properties:

- the engine finishes (no exception, state ``finished``) within a deadline;
- every event is accounted for, per stage: what a stage takes in it passes on, drops or fails
  (stages that make or merge events, ``unnest``, ``aggregate`` and ``script``, only pass
  their output on), the first stage sees every input event, the output gets what the last stage
  passed on, and the dead letters are exactly the failures of the stages and of the output;
- every dead letter written has ``_error: {stage, message}`` naming a real stage;
- the fused chain (with pushdown), the unfused chain (taps) and ``Pipe.preview`` agree, event
  for event and count for count.

Hypothesis is deterministic here (``derandomize=True``), so CI runs the same examples each time.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

import pipenb
from pipenb.engine.base import RunContext
from pipenb.engine.build import compile_chain
from pipenb.engine.checkpoints import MemoryCheckpointStore
from pipenb.engine.steps import deep_copy

from support.fuzzing import fuzz_settings, time_limit, valid_expressions

FUZZ = fuzz_settings(max_examples=100)

# ------------------------------------------------------------------------------ events

KEYS = ["level", "msg", "_raw", "n", "ts", "items", "http", "user", "a"]
RAW_LINES = [
    '{"level": "ERROR", "n": 3, "msg": "disk full"}',
    '{"nested": {"a": [1, 2, {"b": null}]}}',
    "[1, 2, 3]",
    'level=info msg="a \\"quoted\\" word" debug',
    "a=1 b='two words' c=",
    'x,y,"z,w"',
    "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
    "<13>Feb  5 17:32:18 10.0.0.99 myapp[123]: hello",
    "ERROR: something broke",
    "2024-02-30T25:61:00Z",
    "1700000000",
    "",
    "\x00\ufeff\u2028",
]
# no "{{" in generated text: echo events are templated like the rest of the pipe
text = st.text(alphabet=st.characters(blacklist_characters="{"), max_size=12)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),  # past 64 bits orjson cannot write them: output rejects
    st.floats(),  # nan and infinities
    text,
    st.sampled_from(["ERROR", "WARN", "10KB", "250ms", "1700000000", "2017-06-09T20:10:40Z"]),
)
value = st.recursive(
    leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
event = st.fixed_dictionaries(
    {},
    optional={
        "level": st.one_of(st.sampled_from(["ERROR", "WARN", "INFO"]), value),
        "msg": st.one_of(text, value),
        "_raw": st.one_of(st.sampled_from(RAW_LINES), text, value),
        "n": st.one_of(st.integers(-5, 5), value),
        "ts": st.one_of(st.sampled_from(["2017-06-09T20:10:40Z", "1700000000", "nope"]), value),
        "items": st.one_of(st.lists(value, max_size=3), value),
        "http": st.one_of(st.fixed_dictionaries({"status": st.integers(100, 599)}), value),
        "user": value,
        "a": value,
    },
)
event_streams = st.lists(event, max_size=12)

# ------------------------------------------------------------------------------ actions

field = st.sampled_from([*KEYS, "http.status", "x.y", "missing"])
fields = st.lists(field, min_size=1, max_size=3, unique=True)
new_field = st.sampled_from(["out", "x", "level", "n", "deep.er", "msg"])
on_error = st.sampled_from(["error", "keep", "drop"])
SCRIPTS = [
    "def process(event):\n    return event\n",
    "def process(event):\n    return [event, dict(event, copy=True)]\n",
    "def process(event):\n    return None if event.get('level') == 'INFO' else event\n",
    "def process(event):\n    return 1 / len(event)\n",  # a number: a bad result
    "def process(event):\n    raise ValueError('no')\n",
    "def process(event):\n    return []\n",
]


def with_when(action: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    """The action's long form, sometimes with a ``when:`` guard."""

    def add(d: dict, when: str | None) -> dict:
        ((name, opts),) = d.items()
        if when is not None:
            opts = {**opts, "when": when}
        return {name: opts}

    return st.builds(add, action, st.one_of(st.none(), valid_expressions))


def act(name: str, **opts: Any) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {k: v for k, v in opts.items() if not k.startswith("opt_")},
        optional={k[4:].replace("_", "-"): v for k, v in opts.items() if k.startswith("opt_")},
    ).map(lambda o: {name: o})


ACTIONS = st.one_of(
    with_when(act("filter", expr=valid_expressions)),
    with_when(act("drop", expr=valid_expressions)),
    with_when(act("set", fields=st.dictionaries(new_field, valid_expressions, min_size=1))),
    with_when(
        act(
            "add",
            fields=st.dictionaries(
                new_field,
                st.one_of(value, st.sampled_from(["${level}", "/x/${http.status}/${msg}", "${}"])),
                min_size=1,
                max_size=2,
            ),
            opt_overwrite=st.booleans(),
        )
    ),
    with_when(act("remove", fields=fields)),
    with_when(act("keep", fields=fields)),
    with_when(act("rename", fields=st.dictionaries(field, new_field, min_size=1, max_size=2))),
    with_when(
        act(
            "extract",
            pattern=st.sampled_from(
                [
                    r"^(?P<level>[A-Z]+): (?P<msg>.*)$",
                    r"(?P<word>\w+)",
                    r"^(?P<a>\d+)?(?P<b>.*)$",
                    r"level=(?P<lvl>\w+)",
                ]
            ),
            opt_field=st.sampled_from(["_raw", "msg", "level", "missing"]),
            opt_target=st.sampled_from(["parsed", "x.y"]),
            opt_remove=st.booleans(),
            opt_on_miss=st.sampled_from(["keep", "drop", "error"]),
        )
    ),
    with_when(
        act(
            "parse",
            format=st.sampled_from(["json", "csv", "kv", "logfmt", "syslog"]),
            opt_field=st.sampled_from(["_raw", "msg", "items"]),
            opt_target=st.sampled_from(["parsed", "x.y"]),
            opt_remove=st.booleans(),
            opt_on_error=on_error,
        )
    ),
    with_when(
        act(
            "convert",
            fields=st.dictionaries(
                field,
                st.sampled_from(["int", "float", "bool", "str", "size", "duration"]),
                min_size=1,
                max_size=3,
            ),
            opt_on_error=st.sampled_from(["error", "null", "keep"]),
        )
    ),
    with_when(
        act(
            "time",
            field=st.sampled_from(["ts", "n", "msg"]),
            opt_format=st.sampled_from(["auto", "iso8601", "epoch", "epoch_ms", "%Y-%m-%d"]),
            opt_output=st.sampled_from(["iso8601", "epoch", "epoch_ms"]),
            opt_precision=st.sampled_from(["auto", "s", "ms", "us"]),
            opt_timezone=st.sampled_from(["UTC", "Europe/Paris"]),
            opt_on_error=st.sampled_from(["error", "keep", "drop", "null"]),
            opt_to=new_field,
        )
    ),
    with_when(
        act(
            "mask",
            fields=fields,
            pattern=st.sampled_from(["email", "ipv4", "credit-card", r"\d+", "(?i)error"]),
            opt_with=st.sampled_from(["***", "", "\\1"]),
        )
    ),
    with_when(act("sample", rate=st.integers(1, 4), opt_key=field)),
    with_when(act("dedupe", fields=fields, opt_window=st.sampled_from(["1m", "0s"]))),
    with_when(
        act(
            "aggregate",
            every=st.integers(1, 5),
            count=st.just("count"),
            opt_by=st.lists(field, max_size=2, unique=True),
            opt_sum=st.just({"n": "n_sum"}),
            opt_avg=st.just(["n"]),
            opt_p95=st.just({"n": "n_p95"}),
            opt_max_groups=st.integers(1, 3),
        )
    ),
    with_when(act("unnest", field=st.sampled_from(["items", "http", "msg"]), opt_to=new_field)),
    with_when(act("script", code=st.sampled_from(SCRIPTS))),
)
#: stages whose event count out is not "in - dropped - errors"
MAKES_EVENTS = ("unnest", "aggregate", "script")


@st.composite
def pipes(draw: st.DrawFn) -> tuple[dict, list[dict]]:
    events = draw(event_streams)
    out = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "format": st.sampled_from(["ndjson", "csv", "raw"]),
                "batch": st.fixed_dictionaries({"size": st.integers(1, 5)}),
            },
        )
    )
    split = draw(st.booleans())
    doc = {
        "name": "fuzz",
        "input": {"echo": {"events": events}},
        "actions": draw(st.lists(ACTIONS, max_size=4)),
        "output": {"file": {"path": "OUT/${level}.out" if split else "OUT/out", **out}},
        "errors": {"file": {"path": "OUT/errors.ndjson"}},
    }
    return doc, events


# ------------------------------------------------------------------------------ helpers


def to_yaml(doc: dict, out_dir: Path) -> str:
    doc = copy.deepcopy(doc)
    for section in ("output", "errors"):
        opts = doc[section]["file"]
        opts["path"] = opts["path"].replace("OUT", str(out_dir))
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1 << 20)


def same(x: Any, y: Any) -> bool:
    """Equal, NaN equal to NaN, and the types too (1 is not 1.0 nor True)."""
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return list(x) == list(y) and all(same(x[k], y[k]) for k in x)
    return type(x) is type(y) and x == y


def volatile(spec: Any) -> bool:
    """Pipes whose results depend on the clock (``now()``, ``time`` of a date) are not compared."""
    return "now()" in spec.source


def unclocked(value: Any) -> Any:
    """``value`` without the window bounds ``aggregate`` stamps from the clock (at any depth:
    ``set: {x: event}`` copies them)."""
    if isinstance(value, dict):
        return {
            k: unclocked(v) for k, v in value.items() if k not in ("window_start", "window_end")
        }
    if isinstance(value, list):
        return [unclocked(v) for v in value]
    return value


def run_engine(yaml_text: str, data_dir: str) -> dict[str, Any]:
    pipe = pipenb.Pipe.from_yaml(yaml_text)
    engine = pipe.engine(data_dir=data_dir, checkpoints=MemoryCheckpointStore())

    async def go() -> None:
        await asyncio.wait_for(engine.run(), 20)

    asyncio.run(go())
    assert engine.state == "finished", engine.error
    return engine.snapshot()


def read_lines(directory: Path, name: str) -> list[bytes]:
    path = directory / name
    return path.read_bytes().splitlines() if path.exists() else []


# ------------------------------------------------------------------------------ properties


@FUZZ
@given(pipe=pipes())
@example(  # regression: a ${field} path from an object with a 70-bit number crashed the engine
    pipe=(
        {
            "name": "fuzz",
            "input": {"echo": {"events": [{"level": {"n": 2**70}}, {"level": "x"}]}},
            "actions": [],
            "output": {"file": {"path": "OUT/${level}.out"}},
            "errors": {"file": {"path": "OUT/errors.ndjson"}},
        },
        [{"level": {"n": 2**70}}, {"level": "x"}],
    )
)
@example(  # regression: a CSV cell holding an object with a 70-bit number crashed the engine
    pipe=(
        {
            "name": "fuzz",
            "input": {"echo": {"events": [{"a": 1}, {"a": [2**70]}]}},
            "actions": [],
            "output": {"file": {"path": "OUT/out", "format": "csv"}},
            "errors": {"file": {"path": "OUT/errors.ndjson"}},
        },
        [{"a": 1}, {"a": [2**70]}],
    )
)
@example(  # regression: a ${field} path too long for the file system blocked the pipe for ever
    pipe=(
        {
            "name": "fuzz",
            "input": {"echo": {"events": [{"level": "x" * 300}, {"level": "x"}]}},
            "actions": [],
            "output": {"file": {"path": "OUT/${level}.out"}},
            "errors": {"file": {"path": "OUT/errors.ndjson"}},
        },
        [{"level": "x" * 300}, {"level": "x"}],
    )
)
@example(  # regression: a lone surrogate (a "\\ud800" escape) in a CSV or raw line crashed it
    pipe=(
        {
            "name": "fuzz",
            "input": {"echo": {"events": [{"_raw": "ok"}, {"_raw": "\ud800"}]}},
            "actions": [{"set": {"fields": {"level": "'\\ud800' + _raw"}}}],
            "output": {"file": {"path": "OUT/out", "format": "raw"}},
            "errors": {"file": {"path": "OUT/errors.ndjson"}},
        },
        [{"_raw": "ok"}, {"_raw": "\ud800"}],
    )
)
@example(
    pipe=(
        {
            "name": "fuzz",
            "input": {"echo": {"events": [{"a": "ok"}, {"a": "\ud800"}]}},
            "actions": [],
            "output": {"file": {"path": "OUT/${a}", "format": "csv"}},
            "errors": {"file": {"path": "OUT/errors.ndjson"}},
        },
        [{"a": "ok"}, {"a": "\ud800"}],
    )
)
def test_every_event_is_written_dropped_or_dead_lettered(pipe):
    doc, events = pipe
    with tempfile.TemporaryDirectory(prefix="pipenb-fuzz-") as tmp:
        out_dir = Path(tmp) / "out"
        with time_limit(30, "running a pipe"):
            snap = run_engine(to_yaml(doc, out_dir), str(Path(tmp) / "data"))
        stages = snap["actions"]
        names = [s["stage"] for s in stages]
        assert snap["input"]["events"] == len(events)
        flow = len(events)
        for s in stages:
            assert s["in"] == flow, (s, stages)
            assert min(s["in"], s["out"], s["dropped"], s["errors"]) >= 0, s
            if not s["stage"].endswith(MAKES_EVENTS):
                assert s["in"] == s["out"] + s["dropped"] + s["errors"], s
            flow = s["out"]
        written, rejected = snap["output"]["events"], snap["output"]["errors"]
        assert written + rejected == flow, (snap["output"], stages)
        failed = sum(s["errors"] for s in stages) + rejected
        assert snap["dead_letters"] == failed
        dead = [orjson.loads(line) for line in read_lines(out_dir, "errors.ndjson")]
        assert len(dead) == failed - snap["dead_letters_dropped"]
        for d in dead:
            err = d["_error"]
            assert set(err) == {"stage", "message"}, d
            assert err["stage"] in [*names, "output"], d
            assert isinstance(err["message"], str) and err["message"], d
        fmt = doc["output"]["file"].get("format", "ndjson")
        if fmt == "ndjson" and "${" not in doc["output"]["file"]["path"]:
            assert len(read_lines(out_dir, "out")) == written


@FUZZ
@given(pipe=pipes())
@example(  # regression: `set: {snap: event}` put the event inside itself (a cycle, unwritable)
    pipe=(
        {
            "name": "fuzz",
            "input": {"echo": {"events": [{"a": {"b": 1}}]}},
            "actions": [{"set": {"fields": {"snap": "event", "both": "[event, snap]"}}}],
            "output": {"file": {"path": "OUT/out"}},
            "errors": {"file": {"path": "OUT/errors.ndjson"}},
        },
        [{"a": {"b": 1}}],
    )
)
def test_fused_unfused_and_preview_agree(pipe):
    doc, events = pipe
    with time_limit(30, "running a chain"):
        spec = pipenb.Pipe.from_yaml(to_yaml(doc, Path("/nonexistent"))).spec
        results = []
        for fuse in (True, False):
            chain = compile_chain(spec, RunContext(pipe=spec.name), fuse=fuse)
            out, failures = chain.run(copy.deepcopy(events))
            tail, tail_failures = chain.flush()
            fails = [(f.stage, str(f.error)) for f in failures + tail_failures]
            results.append((out + tail, fails, [c.as_dict() for c in chain.counts]))
        preview = pipenb.Pipe(spec).preview(copy.deepcopy(events))
    if volatile(spec):
        return
    (fused, fused_fails, fused_counts), (staged, staged_fails, staged_counts) = results
    fused, staged = unclocked(fused), unclocked(staged)
    assert same(fused, staged)
    assert sorted(fused_fails) == sorted(staged_fails)
    assert fused_counts == staged_counts
    assert same(
        unclocked(preview.events), deep_copy(staged)
    )  # preview keeps events as JSON has them
    assert len(preview.errors) == len(staged_fails)


@pytest.mark.parametrize(
    ("fmt", "path"), [("ndjson", "out"), ("csv", "out"), ("raw", "out"), ("csv", "${a}")]
)
def test_events_nested_past_every_limit_are_dead_letters_not_crashes(fmt, path, tmp_path):
    """Regression: a JSON input can nest 1,000 levels (YAML cannot, so the generator above does
    not): the CSV and raw writers and ``${field}`` paths raised RecursionError and stopped it."""
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(1020):
        cur["k"] = cur = {}
    doc = {
        "name": "fuzz",
        "input": {"echo": {"events": [{}]}},
        "output": {"file": {"path": f"OUT/{path}", "format": fmt, "raw-field": "a"}},
        "errors": {"file": {"path": "OUT/errors.ndjson"}},
    }
    spec = pipenb.Pipe.from_yaml(to_yaml(doc, tmp_path)).spec
    events = [{"a": deep}, {"a": "ok"}]
    spec.input = dataclasses.replace(
        spec.input, options=spec.input.options.model_copy(update={"events": events})
    )
    engine = pipenb.Pipe(spec).engine(data_dir=str(tmp_path), checkpoints=MemoryCheckpointStore())
    with time_limit(30, "running a pipe"):
        asyncio.run(asyncio.wait_for(engine.run(), 20))
    snap = engine.snapshot()
    assert engine.state == "finished"
    assert (snap["output"]["events"], snap["output"]["errors"]) == (1, 1)
    assert snap["dead_letters"] == 1  # counted, though not even the errors file can hold it
