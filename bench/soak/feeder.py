"""The writer of the pipe soak: appends log lines to a file as fast as the pipe reads them.

    python bench/soak/feeder.py --path IN --source LINES --reader-pid PID [--lead 64MB]
                                [--rotate 256MB]

Cycles through the lines of ``--source`` (a text file, e.g. ``bench/data/events-100000.log``),
written in slices of about 1 MiB cut at line ends, so it costs little CPU. It keeps at most
``--lead`` bytes ahead of the reader, whose progress it takes from ``rchar`` (bytes read) in
``/proc/PID/io`` of ``--reader-pid``: the pipe always has data waiting (it runs at full speed)
and the backlog stays bounded. Past ``--rotate`` bytes the file is renamed to ``PATH.1``
(replacing the previous one: by then the reader finished it, the lead being far smaller) and
a new file is started, as logrotate's ``create`` mode does.

Prints one JSON line a second on stdout (``lines``, ``bytes``, ``rotations``, ``waiting_s``:
time spent waiting for the reader) and a last one with ``"final": true`` on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import orjson


def rchar(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slices(source: str, size: int = 1 << 20) -> list[tuple[bytes, int]]:
    """The source's bytes in pieces of about ``size`` ending at a line end, with line counts."""
    with open(source, "rb") as f:
        data = f.read()
    if not data.endswith(b"\n"):
        data += b"\n"
    out = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size) + 1
        if end <= start:
            end = data.index(b"\n", start) + 1
        piece = data[start:end]
        out.append((piece, piece.count(b"\n")))
        start = end
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--reader-pid", type=int, required=True)
    ap.add_argument("--lead", type=int, default=64 << 20, help="bytes ahead of the reader")
    ap.add_argument("--rotate", type=int, default=256 << 20, help="rotate past this many bytes")
    args = ap.parse_args(argv)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pieces = slices(args.source)
    base = rchar(args.reader_pid) or 0
    lines = written = rotations = 0
    waiting = 0.0
    size = os.path.getsize(args.path) if os.path.exists(args.path) else 0
    fd = os.open(args.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    t0 = last = time.monotonic()
    i = 0

    def status(final: bool = False) -> None:
        st = {
            "t": round(time.monotonic() - t0, 3),
            "lines": lines,
            "bytes": written,
            "rotations": rotations,
            "waiting_s": round(waiting, 3),
        }
        if final:
            st["final"] = True
        sys.stdout.write(orjson.dumps(st).decode() + "\n")
        sys.stdout.flush()

    while not stopping:
        now = time.monotonic()
        if now - last >= 1.0:
            status()
            last = now
        read = rchar(args.reader_pid)
        if read is None:  # the reader is gone
            break
        if written - (read - base) >= args.lead:
            time.sleep(0.01)
            waiting += time.monotonic() - now
            continue
        if size >= args.rotate:
            os.close(fd)
            os.replace(args.path, args.path + ".1")
            fd = os.open(args.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
            size = 0
            rotations += 1
        piece, n = pieces[i]
        i = (i + 1) % len(pieces)
        os.write(fd, piece)
        size += len(piece)
        written += len(piece)
        lines += n
    os.close(fd)
    status(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
