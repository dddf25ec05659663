"""The engine's fast path: a chunk of input bytes becomes output bytes in one generated loop.

Why: a pipe from ``files`` to a ``file`` of NDJSON spends most of its time outside the actions:
decoding a batch of lines into a list of dicts, holding thousands of them, encoding the list, and
freeing it. The hand-written loop it is measured against keeps one event alive at a time, which
stays in the CPU cache. Here the same thing is generated: for each line, decode, run the fused
actions, encode, append the bytes to the output. Only bytes go in and out, so
the same function runs in worker processes (``workers:``), and the engine writes the results in
input order and saves the checkpoint after each write.

What takes this path is decided by ``chunk_plan``; everything else runs as before, event batch by
event batch. The results are the same either way, event for event and count for count
(``tests/engine/test_parallel_engine.py`` compares them).
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import Any

import orjson

from pipenb.engine.base import Event, FileSpan
from pipenb.engine.codecs.lines import _cut, _has_long_digits, _loads_exact, json_reject, reject
from pipenb.engine.codecs.ndjson import encode_one
from pipenb.engine.pushdown import BARE_SKIP, none_of
from pipenb.engine.steps import (
    BatchStep,
    EventStep,
    Step,
    compile_run,
    fused_body,
    fused_namespace,
    stage_finder,
)


@dataclass
class ChunkResult:
    """What one chunk became. Plain data: it crosses from a worker process by pickle."""

    data: bytes  # the output lines, NDJSON
    events_in: int  # events decoded (undecodable lines are ``rejects``, blank JSON lines nothing)
    events_out: int  # events in ``data``
    drops: list[int]  # per action stage (local to the chain)
    failures: list[tuple[Event, int, str]]  # (event, stage, message) an action failed on
    rejects: list[Event]  # undecodable lines, as dead-letter records
    unwritable: list[tuple[Event, str]]  # events that cannot be NDJSON, with why
    cut: list[int]  # indices of lines longer than max-line-bytes, cut into pieces


#: bytes of lines run through the generated loop at a time (see ChunkProcessor.__call__)
PIECE = 64 * 1024


class ChunkProcessor:
    """``processor(chunk) -> ChunkResult`` for a chunk of complete lines."""

    def __init__(self, steps: list[EventStep], fmt: str, max_line: int):
        self.fmt = fmt
        self.max_line = max_line
        self.stages = len(steps)
        self._run = _generate(steps, fmt, orjson.loads)
        # the stdlib's parser keeps integers past 64 bits exact; used for the rare chunk with one
        self._run_exact = _generate(steps, fmt, _loads_exact) if fmt == "json" else self._run
        #: a first extract whose pushed filter needs one of these strings (``_raw_first``): only
        #: the lines holding one go through the loop, the rest are counted as the filter's drops
        self._needs: tuple[str, ...] = ()
        if fmt == "lines" and steps and _raw_first(steps[0]) is not None:
            needs = steps[0].needs_one_of
            if needs and not any("\n" in s for s in needs):
                self._needs = needs

    @property
    def source(self) -> str:
        return self._run.source

    def __call__(self, chunk: bytes | bytearray) -> ChunkResult:
        """``chunk``: complete lines, as bytes or in the input's buffer (a bytearray, read
        into once: ``FilesInput._take``); each piece of it is copied out as bytes."""
        drops = [0] * self.stages
        if not chunk:
            return ChunkResult(b"", 0, 0, drops, [], [], [], [])
        # the same line splitting as decode_chunk, so both paths see the same events
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        size = len(chunk) - 1 if chunk.endswith(b"\n") else len(chunk)  # (no 1 MiB copy)
        view = None if type(chunk) is bytes else memoryview(chunk)
        # In pieces of about PIECE bytes: the lines of a piece and the events made from them
        # stay in the CPU cache (W1: 1.6 s per million lines over 1 MiB at once, 1.15 s in
        # 64 KiB pieces). A piece ends at a line end, so the lines are the same.
        errs: list[tuple[Event, BaseException, int]] = []
        bad: list[tuple[Any, Any]] = []
        unwritable: list[tuple[Event, str]] = []
        cut: list[int] = []
        out: list[bytes] = []  # one blob per piece
        n_out = n_lines = raw_before = 0  # events written, events (lines once cut), lines read
        pos = 0
        while True:
            end = chunk.find(b"\n", pos + PIECE, size) if pos + PIECE < size else -1
            if end < 0:
                end = size
            if view is not None:  # the input's buffer: the lines are made of bytes
                piece = view[pos:end].tobytes()
            elif pos or end < len(chunk):
                piece = bytes(chunk[pos:end])  # (bytes already: the same object)
            else:
                piece = bytes(chunk)  # the whole chunk, not copied (bytes of bytes is itself)
            lines: list[Any] | io.BytesIO
            skipped = 0
            if self.fmt == "lines":
                text = piece.decode("utf-8", "replace")
                if self._needs and not (self.max_line and len(piece) > self.max_line):
                    lines = holding(text, self._needs)
                    skipped = text.count("\n") + 1 - len(lines)
                    drops[1] += skipped  # (the stage after the extract: its pushed filter)
                else:
                    lines = text.split("\n")
                del text
            elif not (self.max_line and len(piece) > self.max_line):
                # read a line at a time, each with its "\n" (JSON whitespace: the same event),
                # as the hand-written loop reads its file: a list of the piece's lines, made at
                # once and freed at the end, took W1 2-4% more time (bench/README.md)
                lines = io.BytesIO(piece)
            else:
                lines = piece.split(b"\n")
            if type(lines) is list:  # (else counted as the loop reads them, below)
                n_raw = len(lines) + skipped
                if (
                    self.max_line
                    and len(piece) > self.max_line
                    and max(map(len, lines)) > self.max_line
                ):
                    piece_cut: list[int] = []
                    lines = _cut(lines, self.max_line, piece_cut.extend)
                    cut += [raw_before + i for i in piece_cut]  # indices in the chunk's lines
                raw_before += n_raw
                n_lines += len(lines) + skipped
            exact = self.fmt == "json" and _has_long_digits(piece)
            run = self._run_exact if exact else self._run
            encoded, written, read = run(lines, drops, errs, bad, unwritable)
            if type(lines) is not list:  # a blank last line is not read: nothing, as all are
                raw_before += read + (not piece or piece.endswith(b"\n"))
                n_lines += read
            n_out += written
            out.append(encoded)
            del encoded, lines
            if end >= size:
                break
            pos = end + 1
        rejects = []
        for line, exc in bad:
            if line[-1:] == b"\n":  # read with its end: the message is of the line itself
                line = line[:-1]
                exc = _parse_error(line, exc)
            if exc is None:
                rejects.append(reject(line, 'a JSON line must be an object, e.g. {"msg": "..."}'))
            elif line.strip():
                rejects.append(json_reject(line, exc))
        failures = [(e, local, str(x) or type(x).__name__) for e, x, local in errs]
        n_bad = len(bad)
        # the exceptions' tracebacks hold this frame, which holds them: freed now, not by a
        # collection some time later (with the chunk, or a worker's buffer exported to a view)
        bad.clear()
        errs.clear()
        return ChunkResult(
            b"".join(out),
            n_lines - n_bad,
            n_out,
            drops,
            failures,
            rejects,
            unwritable,
            cut,
        )


def _parse_error(line: bytes, exc: Exception | None) -> Exception | None:
    """The error of ``line`` parsed alone, without the newline it was read with: orjson's and
    the stdlib's messages give positions, and a dead letter's must not depend on how the line
    was read (``exc`` None: it parsed, to something not an object, which it stays)."""
    if exc is None:
        return None
    try:
        _loads_exact(line)  # (the parser the loop took: orjson unless the line has long digits)
    except orjson.JSONDecodeError as again:
        return again
    return exc  # pragma: no cover - a line that parses without its newline parses with it


def holding(text: str, needles: tuple[str, ...]) -> list[str]:
    """The lines of ``text`` (split at ``\\n``) that contain one of ``needles`` (none of which
    holds a newline), in order. Each needle is searched for in the whole text and the line
    around a hit is cut out, so a line without one costs no Python step at all; a hit's line
    is taken once however many needles it holds (how ripgrep finds lines by a literal)."""
    out: list[str] = []
    nl = "\n"
    find, rfind = text.find, text.rfind
    if len(needles) == 1:
        needle = needles[0]
        i = find(needle)
        while i >= 0:
            end = find(nl, i)
            if end < 0:
                out.append(text[rfind(nl, 0, i) + 1 :])
                break
            out.append(text[rfind(nl, 0, i) + 1 : end])
            i = find(needle, end + 1)
        return out
    nxt = {n: find(n) for n in needles}
    while True:
        hits = [i for i in nxt.values() if i >= 0]
        if not hits:
            return out
        i = min(hits)
        end = find(nl, i)
        if end < 0:
            out.append(text[rfind(nl, 0, i) + 1 :])
            return out
        out.append(text[rfind(nl, 0, i) + 1 : end])
        for n, at in nxt.items():
            if 0 <= at <= end:
                nxt[n] = find(n, end + 1)


def _generate(steps: list[EventStep], fmt: str, loads: Any) -> Any:
    """``_run(lines, drops, errs, bad, unwritable) -> (output, written, read)``: decode, act,
    encode per line; the output lines, how many, and how many lines were read (JSON: ``lines``
    may be a file-like object read line by line, whose count is not known before)."""
    ns = fused_namespace(steps)
    ns.update(
        _loads=loads,
        _JSONError=orjson.JSONDecodeError,
        _dumps=orjson.dumps,
        _NL=orjson.OPT_APPEND_NEWLINE,
        _encode_one=encode_one,
        type=type,
        dict=dict,
        bytes=bytes,
        bytearray=bytearray,
        TypeError=TypeError,
    )
    lazy = fmt == "lines" and bool(steps) and _raw_first(steps[0]) is not None
    if lazy:
        steps = [_raw_first(steps[0]), *steps[1:]]  # type: ignore[list-item]
    # the names every line uses are bound as defaults: locals, as in the hand-written loop
    hot = "_loads=_loads, _dumps=_dumps, _NL=_NL, type=type, dict=dict, _JSONError=_JSONError"
    lines = [
        f"def _run(_lines, _drops, _errs, _bad, _unw, {hot}):",
        # appended to, not a list joined: each line's bytes are freed at once (each held a
        # ~4 KiB buffer of orjson's while a list kept it: W1's chunks took ~8 MiB of peak RSS)
        "    _out = bytearray()",
        "    _n = 0",
        "    _k = 0",
        *[f"    _d{i} = 0" for i in range(len(steps))],
        "    for _line in _lines:",
    ]
    if fmt == "json":
        lines += [
            "        _k += 1",
            "        try:",
            "            e = _loads(_line)",
            "        except _JSONError as _x:",
            "            _bad.append((_line, _x))",
            "            continue",
            "        if type(e) is not dict:",
            "            _bad.append((_line, None))",
            "            continue",
        ]
    elif lazy:
        lines.append("        e = None  # built by the first extract, once it knows it is kept")
    else:
        lines.append("        e = {'_raw': _line}")
    lines.append("        try:")
    first = len(lines) + 1
    body, line_stage = fused_body(steps, "            ")
    # drops counted in local variables (a list item costs twice as much), stored at the end
    body = [_DROP.sub(r"_d\1 += 1", ln) for ln in body]
    lines += body or ["            pass"]
    lines += ["        except Exception as _x:"]
    if lazy:
        lines += ["            if e is None:", "                e = {'_raw': _line}"]
    lines += [
        "            _errs.append((e, _x, _stage_of(_x)))",
        "            continue",
        "        try:",
        "            _out += _dumps(e, option=_NL)",
        "        except TypeError:",
        "            _b = _encode_one(e)",
        "            if type(_b) is not bytes:",
        "                _unw.append((e, _b))",
        "                continue",
        "            _out += _b",
        "        _n += 1",
        *[f"    _drops[{i}] += _d{i}" for i in range(len(steps))],
        "    return _out, _n, _k",
    ]
    ns["_stage_of"] = stage_finder(first, line_stage)
    return compile_run("\n".join(lines), ns)


_DROP = re.compile(r"_drops\[(\d+)\] \+= 1")
#: the opening of ``extract_code`` on the field ``_raw``
_RAW_GET = "_v = e.get('_raw')"
_RAW_STR = "if _v is not None and not isinstance(_v, _str):\n    _v = _str(_v)"
_USES_E = re.compile(r"(?<![\w.'\"])e(?![\w'\"])")


def _raw_first(step: EventStep) -> EventStep | None:
    """An ``extract`` (or grok) of ``_raw`` that comes first on a ``lines`` input, rewritten to
    read the line itself and build the event only once it is kept: ``{"_raw": line}`` merged
    with the captures is then just the captures (``remove: true``). Most lines of a typical
    extract-then-filter pipe are dropped, and each saved a dict. None when the step's code is not
    exactly the shape this expects (then the event is built first, as everywhere else)."""
    code = [c for c in step.code if not c.startswith(BARE_SKIP)]  # (its own skip is below)
    if step.when or len(code) != 4 or code[0] != _RAW_GET or code[1] != _RAW_STR:
        return None
    body = code[3].split("\n")
    if body[0] != "if _m is not None:":
        return None
    at_else = body.index("else:") if "else:" in body else len(body)
    hit, miss = body[1:at_else], body[at_else + 1 :]
    at_d = next((i for i, ln in enumerate(hit) if ln.lstrip().startswith("_d = ")), None)
    # what runs before the captures (a pushed-down filter) must not read the event: not built yet
    if at_d is None or any(_USES_E.search(ln) for ln in hit[:at_d]):
        return None
    rest = hit[at_d:]
    if "    e.update(_d)" not in rest:
        return None
    u = rest.index("    e.update(_d)")
    if u > 0 and rest[u - 1] == "    e.pop('_raw', None)":
        built = [*rest[: u - 1], "    e = _d"]  # a fresh dict from groupdict()
    else:
        built = [*rest[:u], "    e = {'_raw': _line}", "    e.update(_d)"]
    new_body = ["if _m is not None:", *hit[:at_d], *built, *rest[u + 1 :]]
    new_body += ["else:", "    e = {'_raw': _line}", *miss]
    # A line holding none of the strings the pushed filter needs is dropped unsearched: had the
    # pattern matched, the filter would drop it; had it missed, the filter would drop the bare
    # line (it has none of the captured fields). Counted where the filter counts its drops.
    skip = []
    if step.needs_one_of:
        skip = [f"@+1 if {none_of(step.needs_one_of, '_line')}:\n@+1     DROP+1"]
    return EventStep(
        code=[*skip, "_v = _line", code[2], "\n".join(new_body)],
        ns=step.ns,
        stateful=step.stateful,
    )


# ---------------------------------------------------------------------------- plans
def chunk_plan(spec: Any, parts: Any) -> tuple[ChunkProcessor | None, str]:
    """The fast path's processor for this pipe, or None and why it runs event batch by batch."""
    from pipenb.engine.build import optimize

    inp, out = parts.input, parts.output
    refusal = inp.chunk_refusal()
    if refusal:
        return None, f"the input {spec.input.name}: {refusal}"
    if parts.routes:
        return None, "outputs: (several outputs)"
    refusal = out.lines_refusal()
    if refusal:
        return None, f"the output {spec.output.name}: {refusal}"
    steps: list[Step] = optimize(spec, parts.steps or [])
    for i, s in enumerate(steps):
        if isinstance(s, BatchStep):
            label = spec.actions[i].label if i < len(spec.actions) else str(i)
            return None, f"action {label} works on whole batches"
    event_steps: list[EventStep] = steps  # type: ignore[assignment]
    fmt, max_line = inp.chunk_format()
    return ChunkProcessor(event_steps, fmt, max_line), ""


#: actions that must see every event in one process, and why
STATEFUL = {
    "aggregate": "keeps state across events (windows, counts): it must see every event",
    "dedupe": "keeps state across events (the keys seen): it must see every event",
    "script": "may keep state across events (a user script)",
}


def stateful_reason(spec: Any, parts: Any) -> str:
    """Why this pipe's actions cannot be split across processes (empty when they can)."""
    for a, s in zip(spec.actions, parts.steps or []):
        if isinstance(s, BatchStep) and a.name in STATEFUL:
            return f"action {a.label} {STATEFUL[a.name]}"
        if getattr(s, "stateful", ""):
            return f"action {a.label}: {s.stateful}"
    return ""


def resolve_workers(requested: int | str | None) -> int:
    """``auto`` is one worker per core this process may run on."""
    if requested in (None, "", 1, "1"):
        return 1
    if requested == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(requested))


def bounded_workers(requested: int | str | None, limit: Any) -> int:
    """What a pipe asks for, at most ``limit`` (an agent's ``--max-pipe-workers``)."""
    try:
        cap = max(1, int(limit))
    except (TypeError, ValueError):
        cap = 1
    return min(resolve_workers(requested), cap)


def parallel_plan(spec: Any, parts: Any, requested: int | str | None) -> tuple[int, str]:
    """How many worker processes run this pipe's actions, and why one when more were asked."""
    n = resolve_workers(requested)
    if n <= 1:
        return 1, ""
    why = stateful_reason(spec, parts)
    if why:
        return 1, why
    proc, why = chunk_plan(spec, parts)
    if proc is None:
        return 1, why
    return n, ""


def explain_workers(spec: Any) -> str:
    """What ``workers:`` will do for this pipe, for ``pipenb check``: the number of processes,
    or why it runs in one."""
    from pipenb.engine.base import RunContext
    from pipenb.engine.build import build

    if spec.workers == 1:
        return "1"
    try:
        parts = build(spec, RunContext(pipe=spec.name, values=spec.values))
    except Exception as exc:  # a lookup table missing here, a capability refused...
        return f"{spec.workers} (not checked: {exc})"
    n, why = parallel_plan(spec, parts, spec.workers)
    if why:
        return f"1, not {spec.workers}: {why}"
    return f"{n}" if spec.workers != "auto" else f"auto ({n} here)"


# ---------------------------------------------------------------------------- worker side
_PROCESSOR: ChunkProcessor | None = None


def init_worker(proc: ChunkProcessor) -> None:
    """Runs first in each forked worker: the processor came along with the fork. Ctrl-C and
    SIGTERM are for the pipe's own process, which stops reading and drains what the workers
    have; a worker killed by them would fail the drain (they end when the pool closes)."""
    import signal

    global _PROCESSOR
    _PROCESSOR = proc
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def work(chunk: bytes | bytearray) -> ChunkResult:
    """A worker's job: one chunk in, its output bytes and counters out."""
    assert _PROCESSOR is not None
    return _PROCESSOR(chunk)


def work_span(span: FileSpan) -> ChunkResult | bool | None:
    """A worker's job when the chunk is named by where it lies in its file: read there, then
    as ``work``. None when the bytes there are not the chunk any more (the file was truncated
    or replaced meanwhile), False when this process cannot open the pipe's descriptors at all
    (no ``/proc``): the pipe's own process then runs the bytes it read (and after False sends
    the bytes of the chunks that follow)."""
    global _BUFFER
    assert _PROCESSOR is not None
    try:
        data = read_span(span, _BUFFER)
    except OSError:
        return False
    if data is None:
        return None
    _BUFFER = data
    return _PROCESSOR(data)


#: a worker's read buffer, kept from chunk to chunk (chunks are about ``read-bytes`` each): a
#: fresh 1 MiB each time is 256 pages the kernel maps anew
_BUFFER = bytearray()


def read_span(span: FileSpan, buf: bytearray) -> bytearray | None:
    """The bytes ``span`` names, read into ``buf`` (resized to them; a new buffer when ``buf``
    cannot be), or None when the file behind the descriptor is another one, is shorter, or
    holds other bytes at either end (or the descriptor is closed by now). OSError when
    ``/proc/<pid>/fd`` cannot be read at all.

    Why read again rather than be sent the bytes: sending a chunk to a worker costs a pickle,
    a pipe write and read, and an unpickle, most of it in the pipe's own process, which then
    becomes what limits the workers; reading from the page cache is one copy. The file is
    opened through ``/proc`` anew for each chunk and closed at once: a rotated-away file is
    never held open by a worker."""
    fds = f"/proc/{span.pid}/fd"
    try:
        fd = os.open(f"{fds}/{span.fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.listdir(fds)  # (raises when there is no such place: no /proc, or not allowed)
        return None  # that descriptor is closed: the file was done with meanwhile
    try:
        st = os.fstat(fd)
        if f"{st.st_dev}:{st.st_ino}" != span.key:
            return None
        n = span.length
        try:
            if len(buf) > n:
                del buf[n:]
            elif len(buf) < n:
                buf.extend(bytes(n - len(buf)))
        except BufferError:  # a view of it is still alive somewhere
            buf = bytearray(n)
        if os.preadv(fd, [buf], span.offset) != n:
            return None
    except OSError:
        return None
    finally:
        os.close(fd)
    probe = len(span.head)
    if buf[:probe] != span.head or buf[n - len(span.tail) :] != span.tail:
        return None
    return buf
