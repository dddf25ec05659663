"""Decoding edges (issue 16 item 10): integers past 64 bits keep their digits, and
``http-server`` answers ``GET /health``."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from pipenb.engine.codecs.lines import _decode_each, _has_long_digits, decode_chunk

from support.engines import pipe_doc, running
from support.fuzzing import fuzz_settings
from support.waiting import async_wait_until

BIG = 123456789012345678901234567890
FUZZ = fuzz_settings(max_examples=2000)


def test_integers_past_64_bits_keep_their_digits():
    chunk = b'{"a": %d}\n{"b": 1}\n{"c": -%d}\n' % (BIG, 2**64)
    events, rejects = decode_chunk(chunk, "json")
    assert events == [{"a": BIG}, {"b": 1}, {"c": -(2**64)}] and rejects == []
    # a long run of digits inside a string is a string still; a bad line is still a dead letter
    events, rejects = decode_chunk(b'{"s": "%d"}\n{"x": %d\n' % (BIG, BIG), "json")
    assert events == [{"s": str(BIG)}] and len(rejects) == 1


#: orjson keeps -2**63 .. 2**64-1 exact; one past either end has 19 digits and a minus sign, or 20
EDGES = [-(2**63) - 1, -(2**63), 2**64 - 1, 2**64, -(2**64), BIG]


def test_integers_just_past_what_orjson_keeps_exact_keep_their_digits():
    chunk = b"".join(b'{"v": %d}\n' % v for v in EDGES)
    events, rejects = decode_chunk(chunk, "json")
    assert [e["v"] for e in events] == EDGES and rejects == []
    assert all(type(e["v"]) is int for e in events)


def test_a_big_integer_survives_files_to_file(tmp_path, data_dir):
    src = tmp_path / "in.ndjson"
    src.write_bytes(b'{"id": %d, "n": 1}\n' % BIG + b"".join(b'{"v": %d}\n' % v for v in EDGES))
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"files": {"path": str(src), "format": "json", "follow": False}}, out)
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"id": BIG, "n": 1}  # the stdlib keeps every digit
    assert [e["v"] for e in lines[1:]] == EDGES  # also on the engine's chunk path


def test_http_server_health(tmp_path, data_dir):
    pipe = pipe_doc({"http-server": {"address": "127.0.0.1:0", "path": "/events"}},
                    tmp_path / "out.ndjson")  # fmt: skip

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            base = f"http://127.0.0.1:{inp.port}"
            health = await asyncio.to_thread(requests.get, base + "/health", timeout=10)
            other = await asyncio.to_thread(requests.get, base + "/nope", timeout=10)
            return health, other

    health, other = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert other.status_code == 404


@pytest.mark.parametrize("path", ["/proc/loadavg", "/proc/self/environ", "/proc/self/status"])
def test_files_on_proc_are_read_once_to_their_end(tmp_path, data_dir, path):
    """/proc files report size 0 but have content: read once, not re-read as "truncated"."""
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"files": {"path": path, "follow": False}}, out)
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 30))
    lines = out.read_bytes().count(b"\n") if out.exists() else 0
    # the same content once: as many events as the file has lines (environ: NULs, one line)
    expected = max(1, Path(path).read_bytes().count(b"\n"))
    assert 1 <= lines <= expected + 1


@pytest.mark.parametrize("kind", ["tcp", "http-server"])
def test_no_traceback_when_a_pipe_stops_with_a_sender_connected(tmp_path, data_dir, caplog, kind):
    import socket

    pipe = pipe_doc({kind: {"address": "127.0.0.1:0"}}, tmp_path / "out.ndjson")
    partial = (
        b"half a line" if kind == "tcp"
        else b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    )  # fmt: skip

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            sock = socket.create_connection(("127.0.0.1", inp.port), timeout=10)
            sock.sendall(partial)
            await async_wait_until(
                lambda: kind != "tcp" or inp.connections == 1, what="the connection"
            )
        sock.close()

    with caplog.at_level("DEBUG"):
        asyncio.run(asyncio.wait_for(scenario(), 60))
    assert not [r for r in caplog.records if r.exc_info or "CancelledError" in r.getMessage()]


# ------------------------------------------------------------------------------ invalid UTF-8

BAD_UTF8 = b'{"n": 1}\n{"n": 2, "s": "caf\xe9 \xff"}\n{"n": 3}\n'


@pytest.mark.parametrize("mode", ["error", "replace"])
def test_invalid_utf8_in_a_json_line_costs_that_line_only(tmp_path, data_dir, mode):
    src, out, errors = tmp_path / "in.ndjson", tmp_path / "out.ndjson", tmp_path / "err.ndjson"
    src.write_bytes(BAD_UTF8 * 50)  # one chunk: the fast path must not lose its neighbours
    pipe = pipe_doc({"files": {"path": str(src), "format": "json", "follow": False,
                               "invalid-utf8": mode}}, out, errors=errors)  # fmt: skip
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
    events = [json.loads(x) for x in out.read_text().splitlines()]
    dead = [json.loads(x) for x in errors.read_text().splitlines()] if errors.exists() else []
    if mode == "error":
        assert [e["n"] for e in events] == [1, 3] * 50
        assert len(dead) == 50 and "invalid UTF-8 at byte" in dead[0]["_error"]["message"]
        assert "invalid-utf8: replace" in dead[0]["_error"]["message"]
    else:
        assert [e["n"] for e in events] == [1, 2, 3] * 50 and dead == []
        assert events[1]["s"] == "caf\ufffd \ufffd"


def test_http_server_ndjson_with_invalid_utf8_replace(tmp_path, data_dir):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"http-server": {"address": "127.0.0.1:0", "format": "ndjson",
                                     "invalid-utf8": "replace"}}, out)  # fmt: skip

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            url = f"http://127.0.0.1:{inp.port}/"
            r = await asyncio.to_thread(requests.post, url, data=BAD_UTF8, timeout=10)
            assert r.status_code == 200 and r.json() == {"accepted": 3}
            await async_wait_until(lambda: out.exists() and out.read_text().count("\n") == 3)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [json.loads(x)["n"] for x in out.read_text().splitlines()] == [1, 2, 3]


# ------------------------------------------------------------------------------ CSV

CSV = (
    b'\xef\xbb\xbfid,name,note\r\n1,ann,"two\nlines"\r\n2,"bob, jr","say ""hi"""\r\n3,cy,,extra\r\n'
)


def run_files(opts: dict, out: Path, data_dir) -> list[dict]:
    pipe = pipe_doc({"files": {"follow": False, **opts}}, out)
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
    return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []


def test_csv_header_bom_and_quoted_newlines(tmp_path, data_dir):
    src = tmp_path / "data.csv"
    src.write_bytes(CSV)
    got = run_files({"path": str(src), "format": "csv", "header": True}, tmp_path / "o", data_dir)
    assert got == [
        {"id": "1", "name": "ann", "note": "two\nlines"},
        {"id": "2", "name": "bob, jr", "note": 'say "hi"'},
        {"id": "3", "name": "cy", "note": "", "column_4": "extra"},
    ]


def test_csv_records_split_across_reads_stay_whole(tmp_path, data_dir):
    src = tmp_path / "data.csv"
    rows = b"".join(b'%d,"a\nb,%s"\n' % (i, b"x" * (i % 7)) for i in range(300))
    src.write_bytes(b"k,v\n" + rows)
    got = run_files({"path": str(src), "format": "csv", "header": True, "read-bytes": 64},
                    tmp_path / "o", data_dir)  # fmt: skip
    assert [e["k"] for e in got] == [str(i) for i in range(300)]
    assert all(e["v"].startswith("a\nb,") for e in got)


def test_csv_columns_without_header_and_a_tab_delimiter(tmp_path, data_dir):
    src = tmp_path / "data.tsv"
    src.write_bytes(b"1\tann\t9\n2\tbob\n")
    got = run_files({"path": str(src), "format": "csv", "columns": ["id", "name"],
                     "delimiter": "\t"}, tmp_path / "o", data_dir)  # fmt: skip
    assert got == [{"id": "1", "name": "ann", "column_3": "9"}, {"id": "2", "name": "bob"}]


def test_csv_header_of_each_file_and_after_a_restart(tmp_path, data_dir):
    """Each file (a rotated one too) has its own header; a run that resumes past the header
    reads it again from the file's start."""
    src, old = tmp_path / "app.csv", tmp_path / "app.csv.1"
    old.write_bytes(b"a,b\n1,2\n")
    src.write_bytes(b"x,y,z\n7,8,9\n")
    out = tmp_path / "o"
    got = run_files({"path": str(tmp_path / "app.csv*"), "format": "csv", "header": True}, out,
                    data_dir)  # fmt: skip
    assert sorted(got, key=str) == sorted([{"a": "1", "b": "2"}, {"x": "7", "y": "8", "z": "9"}],
                                          key=str)  # fmt: skip
    with src.open("ab") as f:
        f.write(b"10,11,12\n")
    out.unlink()
    got = run_files({"path": str(tmp_path / "app.csv*"), "format": "csv", "header": True}, out,
                    data_dir)  # fmt: skip
    assert got == [{"x": "10", "y": "11", "z": "12"}]


def test_csv_options_belong_to_format_csv():
    from pipenb.errors import PipeSyntaxError

    with pytest.raises(PipeSyntaxError, match="header applies to format: csv"):
        pipe_doc({"files": {"path": "/x", "header": True}}, Path("/tmp/o"))


# ------------------------------------------------------------------------------ encodings


def test_http_server_deflate_zstd_and_a_clear_415(tmp_path, data_dir):
    import zlib

    import zstandard

    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({"http-server": {"address": "127.0.0.1:0", "format": "ndjson",
                                     "max-body": "64KiB"}}, out)  # fmt: skip
    body = b'{"n": 1}\n{"n": 2}\n'
    raw = zlib.compressobj(wbits=-15)
    bodies = {
        "deflate": zlib.compress(body),
        "zstd": zstandard.ZstdCompressor().compress(body),
        "gzip": __import__("gzip").compress(body),
    }
    raw_deflate = raw.compress(body) + raw.flush()

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            url = f"http://127.0.0.1:{inp.port}/"

            def post(data, enc):
                return requests.post(url, data=data, headers={"Content-Encoding": enc}, timeout=10)

            answers = {
                enc: await asyncio.to_thread(post, data, enc) for enc, data in bodies.items()
            }
            answers["raw-deflate"] = await asyncio.to_thread(post, raw_deflate, "deflate")
            answers["br"] = await asyncio.to_thread(post, b"\x0b\x02\x80", "br")
            bomb = zstandard.ZstdCompressor().compress(b"{}\n" * 100_000)  # 300 KB unpacked
            answers["bomb"] = await asyncio.to_thread(post, bomb, "zstd")
            answers["garbage"] = await asyncio.to_thread(post, b"not zstd", "zstd")
            return answers

    a = asyncio.run(asyncio.wait_for(scenario(), 60))
    for enc in ("deflate", "zstd", "gzip", "raw-deflate"):
        assert a[enc].status_code == 200 and a[enc].json() == {"accepted": 2}, enc
    assert a["br"].status_code == 415
    assert "gzip, deflate, zstd" in a["br"].text and "'br'" in a["br"].text
    assert a["br"].headers["Accept-Encoding"] == "gzip, deflate, zstd"
    assert a["bomb"].status_code == 413
    assert a["garbage"].status_code == 400 and "not valid zstd" in a["garbage"].text


# ------------------------------------------------------------------------------ rotation


def test_a_rotated_file_gone_unread_is_counted_and_logged(tmp_path, caplog):
    """Tailing only app.log while it rotates twice between two scans: the middle file was
    never seen. The input counts it (``rotated_unread``) and says to glob the rotated names;
    an archive older than the pipe, and the file it was reading, are not counted."""
    from pipenb.engine.base import RunContext
    from pipenb.engine.inputs.files import FilesInput, FilesOptions

    log = tmp_path / "app.log"
    (tmp_path / "app.log.3").write_bytes(b"old archive\n")
    os.utime(tmp_path / "app.log.3", (1_000_000, 1_000_000))
    log.write_bytes(b"a1\na2\n")
    inp = FilesInput(FilesOptions(path=str(log)), RunContext())
    try:
        inp._scan(initial=True)
        assert inp._read(next(iter(inp.files.values()))).events == [{"_raw": "a1"}, {"_raw": "a2"}]
        # two rotations before the next scan: A -> app.log.2, B (never seen) -> app.log.1
        log.rename(tmp_path / "app.log.1")
        log.write_bytes(b"b1\n")
        (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
        log.rename(tmp_path / "app.log.1")
        log.write_bytes(b"c1\n")
        with caplog.at_level("WARNING", logger="pipenb.engine.files"):
            inp._scan(initial=False)
        assert inp.stats()["rotated_unread"] == 1
        warned = [r.getMessage() for r in caplog.records if "rotated away" in r.getMessage()]
        assert len(warned) == 1 and "app.log.1" in warned[0] and f"path: {log}*" in warned[0]
        # an ordinary rotation afterwards (C -> app.log.1 after being read) warns no more
        for f in list(inp.files.values()):
            inp._read(f)
        (tmp_path / "app.log.1").unlink()
        log.rename(tmp_path / "app.log.1")
        log.write_bytes(b"d1\n")
        inp._scan(initial=False)
        assert inp.stats()["rotated_unread"] == 1
    finally:
        asyncio.run(inp.close())


def test_csv_header_after_a_live_rename_rotation(tmp_path, data_dir):
    """Tailing app.csv: after a rename rotation the new app.csv's first record is its header."""
    src, out = tmp_path / "app.csv", tmp_path / "out.ndjson"
    src.write_bytes(b"a,b\n1,2\n")
    pipe = pipe_doc({"files": {"path": str(src), "format": "csv", "header": True,
                               "glob-interval": "50ms", "poll-interval": "20ms"}}, out)  # fmt: skip

    def got() -> list[dict]:
        return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []

    async def scenario():
        async with running(pipe, data_dir, listening=False):
            await async_wait_until(lambda: len(got()) == 1, what="the first file's row")
            src.rename(tmp_path / "app.csv.1")
            src.write_bytes(b"x,y,z\n7,8,9\n")
            with (tmp_path / "app.csv.1").open("ab") as f:
                f.write(b"3,4\n")  # the writer's last line into the renamed file
            await async_wait_until(lambda: len(got()) == 3, what="both files' rows")

    asyncio.run(asyncio.wait_for(scenario(), 60))
    rows = got()
    assert rows[0] == {"a": "1", "b": "2"}
    assert sorted(map(str, rows[1:])) == sorted(map(str, [{"a": "3", "b": "4"},
                                                          {"x": "7", "y": "8", "z": "9"}]))  # fmt: skip


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_invalid_utf8_replace_on_tcp_and_udp(tmp_path, data_dir, kind):
    import socket

    out = tmp_path / "out.ndjson"
    pipe = pipe_doc({kind: {"address": "127.0.0.1:0", "format": "json",
                            "invalid-utf8": "replace"}}, out)  # fmt: skip

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            if kind == "tcp":
                with socket.create_connection(("127.0.0.1", inp.port), timeout=10) as s:
                    s.sendall(BAD_UTF8)
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    for line in BAD_UTF8.splitlines(keepends=True):
                        s.sendto(line, ("127.0.0.1", inp.port))
            await async_wait_until(lambda: out.exists() and out.read_text().count("\n") == 3)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    got = sorted((json.loads(x) for x in out.read_text().splitlines()), key=lambda e: e["n"])
    assert [e["n"] for e in got] == [1, 2, 3] and got[1]["s"] == "caf\ufffd \ufffd"


def test_the_long_digits_check_answers_as_a_search_for_the_two_shapes_does():
    """``_has_long_digits`` looks at every 4th byte before the whole: it must still find 20
    digits, or a minus and 19, wherever they start, and nothing shorter."""
    shapes = re.compile(rb"[0-9]{20}|-[0-9]{19}")
    for n in (18, 19, 20, 21):
        for sign in (b"", b"-"):
            for at in range(9):
                for after in (b"", b",", b"1"):
                    data = b'{"a": "x", "v": '[: at + 1] + sign + b"9" * n + after
                    assert _has_long_digits(data) == bool(shapes.search(data)), data
    rnd = random.Random(18)
    alphabet = b'0123456789-, :."e'
    for _ in range(20_000):
        data = bytes(rnd.choice(alphabet) if rnd.random() < 0.2 else rnd.randint(48, 57)
                     for _ in range(rnd.randint(0, 80)))  # fmt: skip
        assert _has_long_digits(data) == bool(shapes.search(data)), data


#: runs of lines that start and end as an object, most of them no object alone: an array or
#: an object opened by one line and closed by the next, two objects on one line, those bytes
#: in a string, a good line
UNITS = [
    ['{"a": [{"d": 1}', '{"e": 2}]}'],
    ['{"a": [[{"b": 1}', '{"c": 2}]]}'],
    ['{"a": [{"b": 1}', '{"c": 2}', '{"d": 3}]}'],
    ['{"a": {"b": 1}', '{"c": 2}}'],
    ['{"x": 1}, {"y": 2}'],
    ['{"x": 1},{"y": 2}'],
    ['{"x": 1}\t,\r{"y": 2}'],
    ['{"k": "}, {"}'],
    ['{"s": "]"}'],
    ['{"ok": 1}'],
]
#: pieces of JSON that nest, close and separate, for lines of any other shape
PIECES = ["{", "}", "[", "]", ",", ", ", '"k": ', "1", '"s"', '"}, {"', '{"a": 1}', " ", "\t", "\r"]
UNIT = st.one_of(
    st.sampled_from(UNITS),
    st.lists(st.sampled_from(PIECES), max_size=8).map(lambda p: ["{" + "".join(p) + "}"]),
)


@FUZZ
@given(st.lists(UNIT, min_size=1, max_size=5))
def test_a_chunk_decodes_as_its_lines_do_one_by_one(units):
    """The chunk's one-array parse must give exactly what parsing each line alone gives."""
    raw = [line.encode() for unit in units for line in unit]
    assert decode_chunk(b"\n".join(raw) + b"\n", "json") == _decode_each(raw)


@pytest.mark.parametrize(
    "chunk",
    [
        b'{"a": [{"d": 1}\n{"e": 2}]}\n{"x": 1}, {"y": 2}\n{"ok": true}\n',
        b'{"a": [{"d": 1}\n{"e": 2}]}\n{"x": 1},\t{"y": 2}\n{"ok": true}\n',
        b'{"a": [{"d": 1}\n{"e": 2}]}\n{"x": 1}\r,{"y": 2}\n{"ok": true}\n',
    ],
)
def test_lines_that_make_objects_only_together_are_each_a_dead_letter(chunk):
    """Parsed as one array ("\\n" -> ","), the first gave three objects, as many as lines,
    though no line but the last is an object alone: the first two nest into one, the third
    splits. Each bad line is a dead letter of its own."""
    lines = chunk.split(b"\n")[:-1]
    events, rejects = decode_chunk(chunk, "json")
    assert events == [{"ok": True}]
    assert [r["_raw"].encode() for r in rejects] == lines[:-1]
