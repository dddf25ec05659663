"""Worker processes read their chunks from the file themselves (``chunks.read_span``).

Only where a chunk lies crosses to a worker; the worker opens the pipe's own descriptor
through ``/proc`` and reads there. It must never run other bytes than the ones the pipe's
process read: a file truncated, rewritten or replaced meanwhile is refused, and the pipe's
process then runs the bytes it holds, with the same output.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from engine.test_parallel_engine import three_ways

from pipenb.engine import chunks
from pipenb.engine.base import FileSpan

DATA = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 50)) for i in range(400))


def span_of(fh, offset: int, data: bytes) -> FileSpan:
    st = os.fstat(fh.fileno())
    return FileSpan.of(fh.fileno(), f"{st.st_dev}:{st.st_ino}", offset, data)


def test_a_span_reads_the_bytes_it_names(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(DATA)
    with open(path, "rb") as fh:
        buf = bytearray(b"left over from a longer chunk" * 1000)
        for offset, length in ((0, 100), (57, 3000), (len(DATA) - 10, 10)):
            want = DATA[offset : offset + length]
            got = chunks.read_span(span_of(fh, offset, want), buf)
            assert bytes(got) == want
        os.rename(path, tmp_path / "rotated")  # renamed: the same open file, still read
        assert chunks.read_span(span_of(fh, 0, DATA[:100]), buf) == DATA[:100]


def test_a_span_whose_bytes_changed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(DATA)
    with open(path, "rb") as fh:
        chunk = DATA[1000:5000]
        span = span_of(fh, 1000, chunk)
        with open(path, "r+b") as w:  # rewritten in place at the chunk's end
            w.seek(4990)
            w.write(b"Z")
        assert chunks.read_span(span, bytearray()) is None
        with open(path, "r+b") as w:  # at its start
            w.seek(4990)
            w.write(DATA[4990:4991])
            w.seek(1000)
            w.write(b"Z")
        assert chunks.read_span(span, bytearray()) is None
        os.truncate(path, 3000)  # truncated: shorter than the span
        assert chunks.read_span(span, bytearray()) is None


def test_a_span_of_another_file_or_descriptor_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(DATA)
    b.write_bytes(DATA)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        span = span_of(fa, 0, DATA[:500])
        moved = replace(span, fd=fb.fileno())
        assert chunks.read_span(moved, bytearray()) is None  # same bytes, another inode
        gone = replace(span, fd=10_000)
        assert chunks.read_span(gone, bytearray()) is None  # closed by now
        no_pid = replace(span, pid=1 << 30)
        with pytest.raises(OSError):  # nothing to read descriptors from at all
            chunks.read_span(no_pid, bytearray())


DOC = {
    "name": "reread",
    "input": {"files": {"path": "IN", "follow": False, "format": "json", "read-bytes": 1024}},
    "actions": [{"add": {"seen": True}}],
    "output": {"file": {"path": "OUT/out.ndjson"}},
    "errors": {"file": {"path": "OUT/errors.ndjson"}},
}


def _changed(span: FileSpan, buf: bytearray) -> None:
    return None


def _no_proc(span: FileSpan, buf: bytearray) -> None:
    raise PermissionError(13, "not allowed", f"/proc/{span.pid}/fd")


@pytest.mark.parametrize("fault", [_changed, _no_proc], ids=["changed", "no-proc"])
def test_chunks_the_workers_cannot_read_are_run_by_the_pipes_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault
) -> None:
    """Faults put in on purpose (a change between two reads is a race no test can time; this
    machine has /proc): the workers, forked with the fault, find every span changed, or
    cannot open the pipe's descriptors at all. The output is still one worker's; after the
    second fault the chunks are sent as bytes."""
    src = tmp_path / "in.ndjson"
    src.write_bytes(DATA)
    monkeypatch.setattr(chunks, "read_span", fault)
    outs = three_ways(DOC, src, tmp_path)
    two = outs["two"]
    assert two["workers"] == 2
    assert two["out"] == outs["fast"]["out"] == outs["batches"]["out"]
    assert two["out"].count(b"\n") == 400
    n = two["chunks"]
    assert n["read"] == 0
    if fault is _changed:
        assert n["changed"] > 10 and n["sent"] == 0
    else:  # only what was in flight or read ahead (2 + 2 per worker) when the first came back
        assert 1 <= n["changed"] <= 8 and n["sent"] > 10
