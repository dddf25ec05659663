"""The ``files`` input: read once or tail, globs, formats, metadata, checkpoints, rotation."""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
from pathlib import Path

import orjson

import pipenb
from pipenb.engine.checkpoints import checkpoint_path

from support.files import raw_values, read_ndjson
from support.waiting import async_wait_until, stop_engine


def files_pipe(
    path: str | list[str],
    out: Path,
    *,
    name: str = "files-test",
    errors: Path | None = None,
    **options: object,
) -> pipenb.Pipe:
    """A pipe ``files -> file(out)``; options are the files input's, with dashes."""
    inp = {"path": path, "follow": False, **{k.replace("_", "-"): v for k, v in options.items()}}
    doc = {
        "name": name,
        "input": {"files": inp},
        "output": {"file": {"path": str(out), "batch": {"size": 1000, "timeout": "20ms"}}},
    }
    if errors is not None:
        doc["errors"] = {"file": {"path": str(errors), "batch": {"timeout": "20ms"}}}
    return pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())


def lines(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(start, start + n)]


def write_lines(path: Path, items: list[str], mode: str = "a") -> None:
    with open(path, mode, encoding="utf-8") as fh:
        fh.write("".join(s + "\n" for s in items))


# ------------------------------------------------------------------------------ read once


def test_follow_false_reads_every_line_and_finishes(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\r\n\nlast without newline")
    out = tmp_path / "out.ndjson"
    snap = files_pipe(str(log), out).run(data_dir=data_dir)
    assert raw_values(out) == ["one", "two", "", "last without newline"]
    assert snap["state"] == "finished"
    assert snap["input"]["events"] == 4
    assert snap["input"]["bytes"] == log.stat().st_size
    assert snap["output"]["events"] == 4


def test_start_at_beginning_is_the_default(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["a", "b"])
    out = tmp_path / "out.ndjson"
    files_pipe(str(log), out).run(data_dir=data_dir)
    assert raw_values(out) == ["a", "b"]


def test_start_at_end_skips_what_exists_at_the_first_start(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["old-1", "old-2"])
    out = tmp_path / "out.ndjson"
    snap = files_pipe(str(log), out, start_at="end").run(data_dir=data_dir)
    assert raw_values(out) == []
    assert snap["input"]["events"] == 0
    assert snap["state"] == "finished"


def test_after_a_restart_the_checkpoint_wins_over_start_at_end(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["old-1"])
    out = tmp_path / "out.ndjson"
    tail = files_pipe(str(log), out, start_at="end", follow=True, poll_interval="5ms", name="r")

    async def scenario():
        engine = tail.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.parts.input.files, what="the file to be opened")
        write_lines(log, ["new-1"])
        await async_wait_until(lambda: raw_values(out) == ["new-1"], what="new-1")
        await stop_engine(engine, task)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    write_lines(log, ["new-2", "new-3"])  # written while the pipe is stopped
    files_pipe(str(log), out, start_at="end", name="r").run(data_dir=data_dir)
    assert raw_values(out) == ["new-1", "new-2", "new-3"]


def test_start_at_end_only_applies_to_the_very_first_start(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["old-1", "old-2"])
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(str(log), out, start_at="end", name="end-twice")
    pipe.run(data_dir=data_dir)
    assert raw_values(out) == []
    write_lines(log, ["new-1"])  # written while the pipe is not running
    pipe.run(data_dir=data_dir)
    assert raw_values(out) == ["new-1"]


def test_start_at_end_while_following_reads_only_new_lines(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, lines("old", 50))
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(str(log), out, follow=True, start_at="end", poll_interval="10ms")

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        # the file is open (at its end) before we append
        await async_wait_until(lambda: engine.parts.input.files, what="the file to be opened")
        write_lines(log, lines("new", 5))
        await async_wait_until(lambda: len(raw_values(out)) >= 5, what="the new lines")
        await stop_engine(engine, task)
        return engine

    engine = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert raw_values(out) == lines("new", 5)
    assert engine.state == "stopped"


def test_glob_of_several_files_with_exclude_and_a_list_of_globs(tmp_path, data_dir):
    d = tmp_path / "logs"
    d.mkdir()
    write_lines(d / "a.log", ["a1", "a2"])
    write_lines(d / "b.log", ["b1"])
    write_lines(d / "skip.log", ["s1"])
    write_lines(d / "c.txt", ["c1"])
    write_lines(d / "other.dat", ["o1"])
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(
        [str(d / "*.log"), str(d / "*.txt")],
        out,
        exclude=[str(d / "skip.*")],
        metadata=True,
    )
    pipe.run(data_dir=data_dir)
    events = read_ndjson(out)
    by_file = collections.defaultdict(list)
    for e in events:
        by_file[os.path.basename(e["_path"])].append(e["_raw"])
    assert dict(by_file) == {"a.log": ["a1", "a2"], "b.log": ["b1"], "c.txt": ["c1"]}


def test_a_file_matched_by_two_globs_is_read_once(tmp_path, data_dir):
    log = tmp_path / "x.log"
    write_lines(log, ["only-once"])
    out = tmp_path / "out.ndjson"
    files_pipe([str(log), str(tmp_path / "*.log")], out).run(data_dir=data_dir)
    assert raw_values(out) == ["only-once"]


def test_no_matching_file_finishes_with_nothing(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    snap = files_pipe(str(tmp_path / "none-*.log"), out).run(data_dir=data_dir)
    assert snap["state"] == "finished"
    assert snap["input"]["events"] == 0
    assert not out.exists()


def test_metadata_adds_path_and_byte_offset_of_each_line(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_bytes(b"ab\n\ncde\nfinal")
    out = tmp_path / "out.ndjson"
    files_pipe(str(log), out, metadata=True).run(data_dir=data_dir)
    assert read_ndjson(out) == [
        {"_raw": "ab", "_path": str(log), "_offset": 0},
        {"_raw": "", "_path": str(log), "_offset": 3},
        {"_raw": "cde", "_path": str(log), "_offset": 4},
        {"_raw": "final", "_path": str(log), "_offset": 8},
    ]


def test_metadata_offsets_in_json_format_skip_blank_lines(tmp_path, data_dir):
    log = tmp_path / "app.ndjson"
    log.write_bytes(b'{"a":1}\n\n{"a":2}\n')
    out = tmp_path / "out.ndjson"
    files_pipe(str(log), out, metadata=True, format="json").run(data_dir=data_dir)
    assert read_ndjson(out) == [
        {"a": 1, "_path": str(log), "_offset": 0},
        {"a": 2, "_path": str(log), "_offset": 9},
    ]


def test_json_format_turns_each_line_into_an_event(tmp_path, data_dir):
    log = tmp_path / "app.ndjson"
    log.write_text('{"level": "error", "n": 1}\n{"nested": {"k": [1, 2]}}\n')
    out = tmp_path / "out.ndjson"
    snap = files_pipe(str(log), out, format="json").run(data_dir=data_dir)
    assert read_ndjson(out) == [{"level": "error", "n": 1}, {"nested": {"k": [1, 2]}}]
    assert snap["input"]["errors"] == 0


def test_a_malformed_json_line_goes_to_errors_and_the_pipe_goes_on(tmp_path, data_dir):
    log = tmp_path / "app.ndjson"
    log.write_text('{"n": 1}\n{"n": 2, broken\n[1, 2]\n{"n": 3}\n{"n": 4}\n')
    out = tmp_path / "out.ndjson"
    errors = tmp_path / "errors.ndjson"
    snap = files_pipe(str(log), out, format="json", errors=errors).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"n": 1}, {"n": 3}, {"n": 4}]
    dead = read_ndjson(errors)
    assert [d["_raw"] for d in dead] == ['{"n": 2, broken', "[1, 2]"]
    assert dead[0]["_error"]["stage"] == "input"
    assert dead[0]["_error"]["message"].startswith("not valid JSON")
    assert dead[1]["_error"]["message"] == 'a JSON line must be an object, e.g. {"msg": "..."}'
    assert dead[0]["_path"] == str(log)
    assert snap["state"] == "finished"
    assert snap["input"]["errors"] == 2
    assert snap["dead_letters"] == 2
    assert snap["dead_letters_dropped"] == 0


def test_malformed_json_without_an_errors_output_is_counted_and_dropped(tmp_path, data_dir):
    log = tmp_path / "app.ndjson"
    log.write_text('{"n": 1}\nnope\n{"n": 2}\n')
    out = tmp_path / "out.ndjson"
    snap = files_pipe(str(log), out, format="json").run(data_dir=data_dir)
    assert read_ndjson(out) == [{"n": 1}, {"n": 2}]
    assert snap["dead_letters_dropped"] == 1


def test_a_line_with_two_comma_separated_objects_is_not_json_object_line(tmp_path, data_dir):
    log = tmp_path / "app.ndjson"
    log.write_text('{"a": 1}, {"b": 2}\n{"c": 3}\n')
    out = tmp_path / "out.ndjson"
    errors = tmp_path / "errors.ndjson"
    files_pipe(str(log), out, format="json", errors=errors).run(data_dir=data_dir)
    assert read_ndjson(out) == [{"c": 3}]
    assert [d["_raw"] for d in read_ndjson(errors)] == ['{"a": 1}, {"b": 2}']


def test_follow_false_reads_lines_longer_than_read_bytes(tmp_path, data_dir):
    log = tmp_path / "app.log"
    expected = [f"line {i} " + "y" * (i % 17) for i in range(300)]
    write_lines(log, expected)
    out = tmp_path / "out.ndjson"
    files_pipe(str(log), out, read_bytes=7).run(data_dir=data_dir)
    assert raw_values(out) == expected


def test_reads_smaller_than_a_line_keep_lines_whole_when_following(tmp_path, data_dir):
    log = tmp_path / "app.log"
    expected = [f"line {i} " + "y" * (i % 17) for i in range(60)]
    write_lines(log, expected)
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(str(log), out, read_bytes=7, follow=True, poll_interval="5ms")

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: len(raw_values(out)) >= 60, what="all lines")
        await stop_engine(engine, task)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert raw_values(out) == expected


def test_an_over_long_line_is_cut_into_pieces_of_max_line_bytes(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_text("x" * 25 + "\nshort\n")
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(
        str(log), out, follow=True, read_bytes=8, max_line_bytes=10, poll_interval="5ms"
    )

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: "short" in raw_values(out), what="the short line")
        await stop_engine(engine, task)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert raw_values(out) == ["x" * 10, "x" * 10, "x" * 5, "short"]


def test_max_line_bytes_applies_to_lines_read_whole(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.write_text("x" * 25 + "\nshort\n")
    out = tmp_path / "out.ndjson"
    files_pipe(str(log), out, max_line_bytes=10).run(data_dir=data_dir)
    assert raw_values(out) == ["x" * 10, "x" * 10, "x" * 5, "short"]


# ------------------------------------------------------------------------------ checkpoints


def test_a_rerun_resumes_from_the_checkpoint(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["a", "b"])
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(str(log), out, name="resume")
    pipe.run(data_dir=data_dir)
    ckpt = Path(checkpoint_path(data_dir, "resume"))
    saved = orjson.loads(ckpt.read_bytes())
    st = log.stat()
    (entry,) = saved["position"]["files"].values()
    assert list(saved["position"]["files"]) == [f"{st.st_dev}:{st.st_ino}"]
    assert entry["offset"] == st.st_size
    assert entry["path"] == str(log)
    pipe.run(data_dir=data_dir)  # nothing new: nothing written twice
    assert raw_values(out) == ["a", "b"]
    write_lines(log, ["c"])
    pipe.run(data_dir=data_dir)
    assert raw_values(out) == ["a", "b", "c"]


def _fake_checkpoint(data_dir: str, pipe: str, log: Path, offset: int, fp: str, fp_len: int):
    st = log.stat()
    path = Path(checkpoint_path(data_dir, pipe))
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {
        f"{st.st_dev}:{st.st_ino}": {"path": str(log), "offset": offset, "fp": fp, "fp_len": fp_len}
    }
    path.write_bytes(orjson.dumps({"version": 1, "position": {"files": files}}))


def test_a_checkpoint_with_a_matching_fingerprint_is_trusted(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["first", "second"])
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(str(log), out, name="fp")
    import hashlib

    fp = hashlib.sha1(log.read_bytes()[:3]).hexdigest()[:16]
    _fake_checkpoint(data_dir, "fp", log, offset=6, fp=fp, fp_len=3)
    pipe.run(data_dir=data_dir)
    assert raw_values(out) == ["second"]


def test_a_checkpoint_with_another_fingerprint_means_another_file(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["first", "second"])
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(str(log), out, name="fp2", start_at="end")
    _fake_checkpoint(data_dir, "fp2", log, offset=6, fp="0000000000000000", fp_len=3)
    pipe.run(data_dir=data_dir)
    # same device and inode but other content (a reused inode): read from the beginning
    assert raw_values(out) == ["first", "second"]


def test_a_damaged_checkpoint_starts_over(tmp_path, data_dir):
    log = tmp_path / "app.log"
    write_lines(log, ["a"])
    out = tmp_path / "out.ndjson"
    ckpt = Path(checkpoint_path(data_dir, "damaged"))
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("{not json")
    snap = files_pipe(str(log), out, name="damaged").run(data_dir=data_dir)
    assert snap["state"] == "finished"
    assert raw_values(out) == ["a"]
    assert orjson.loads(ckpt.read_bytes())["version"] == 1  # replaced by a good one


# ------------------------------------------------------------------------------ tailing


def test_tailing_survives_rotation_and_truncation_without_losing_a_line(tmp_path, data_dir):
    log = tmp_path / "app.log"
    log.touch()
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(
        str(log),
        out,
        follow=True,
        poll_interval="10ms",
        glob_interval="10ms",
        rotate_wait="1s",
    )
    expected: list[str] = []

    def have(n: int):
        return lambda: len(raw_values(out)) >= n

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        writer = open(log, "ab", buffering=0)  # noqa: SIM115 - a long-lived log writer
        try:
            # 1. plain appends
            batch = lines("first", 100)
            writer.write("".join(s + "\n" for s in batch).encode())
            expected.extend(batch)
            await async_wait_until(have(100), what="the first lines")

            # 2. rename rotation: the writer keeps its handle on the renamed file for a while,
            #    then a new file appears under the old name
            log.rename(tmp_path / "app.log.1")
            batch = lines("late", 50)
            writer.write("".join(s + "\n" for s in batch).encode())
            expected.extend(batch)
            writer.close()
            writer = open(log, "ab", buffering=0)  # noqa: SIM115
            batch = lines("fresh", 100)
            writer.write("".join(s + "\n" for s in batch).encode())
            expected.extend(batch)
            await async_wait_until(have(250), what="the lines around the rotation")

            # 3. copytruncate: copy the file away, truncate it in place, keep writing
            shutil.copyfile(log, tmp_path / "app.log.2")
            os.truncate(log, 0)
            batch = lines("trunc", 10)  # fewer bytes than before, as after any truncation
            writer.write("".join(s + "\n" for s in batch).encode())
            expected.extend(batch)
            await async_wait_until(have(260), what="the lines after the truncation")
            batch = lines("after", 40)
            writer.write("".join(s + "\n" for s in batch).encode())
            expected.extend(batch)
            await async_wait_until(have(300), what="the last lines")
        finally:
            writer.close()
            await stop_engine(engine, task)
        return engine

    engine = asyncio.run(asyncio.wait_for(scenario(), 90))
    got = raw_values(out)
    assert collections.Counter(got) == collections.Counter(expected)
    assert len(got) == len(expected) == 300
    assert engine.state == "stopped"
    # lines of one file keep their order
    assert [x for x in got if x.startswith("fresh")] == lines("fresh", 100)


def test_a_file_that_appears_later_is_read_from_its_beginning(tmp_path, data_dir):
    d = tmp_path / "logs"
    d.mkdir()
    write_lines(d / "a.log", ["a-old"])
    out = tmp_path / "out.ndjson"
    pipe = files_pipe(
        str(d / "*.log"),
        out,
        follow=True,
        start_at="end",
        poll_interval="10ms",
        glob_interval="10ms",
    )

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        task = asyncio.create_task(engine.run())
        await async_wait_until(lambda: engine.parts.input.files, what="a.log to be opened")
        write_lines(d / "b.log", ["b-1", "b-2"])
        write_lines(d / "a.log", ["a-new"])
        await async_wait_until(lambda: len(raw_values(out)) >= 3, what="three lines")
        snap = engine.snapshot()
        await stop_engine(engine, task)
        return snap

    snap = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert sorted(raw_values(out)) == ["a-new", "b-1", "b-2"]
    assert snap["state"] == "running"
    assert snap["input"]["lag"] == 0
    assert len(snap["position"]["files"]) == 2


def test_lag_counts_unread_bytes(tmp_path):
    log = tmp_path / "app.log"
    write_lines(log, ["abc", "def"])
    pipe = files_pipe(str(log), tmp_path / "out.ndjson", read_bytes=4)
    inp = pipe.engine(data_dir=str(tmp_path / "d")).parts.input

    async def first_batch():
        agen = inp.batches()
        batch = await agen.__anext__()
        while not batch.events:  # a position-only batch (where the first start begins)
            batch = await agen.__anext__()
        lag = inp.lag()
        await agen.aclose()
        await inp.close()
        return batch, lag

    batch, lag = asyncio.run(first_batch())
    assert [e["_raw"] for e in batch.events] == ["abc"]
    assert lag == 4
    assert batch.position["files"][next(iter(batch.position["files"]))]["offset"] == 4
