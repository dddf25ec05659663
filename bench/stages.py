"""Where the fast path's time goes, stage by stage, in one process (CPU seconds, best of N).

    python bench/stages.py [--lines 1000000] [--runs 3]

For W1 and W2 (``bench/pipes``), over the generated data cut into 1 MiB chunks at line ends as the
``files`` input cuts them: splitting into lines (and decoding text), the 20-digit check that keeps
big integers exact (JSON only), the generated loop (decode, actions, encode per line), joining
the output, and for comparison the hand loop's whole work on the same data. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import gen_data  # noqa: E402
import handloops  # noqa: E402


def chunks(path: str, size: int = 1 << 20) -> list[bytes]:
    data = open(path, "rb").read()  # noqa: SIM115 - read once
    out, i = [], 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + size) + 1 or len(data)
        out.append(data[i:j])
        i = j
    return out


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def stage_times(name: str, src: str, lines: int, runs: int) -> None:
    from pipenb.engine.chunks import chunk_plan
    from pipenb.engine.codecs.lines import _has_long_digits
    from pipenb.lang.validate import load_pipe
    from pipenb.pipe import Pipe

    text = open(os.path.join(HERE, "pipes", f"{name}.yml")).read()  # noqa: SIM115
    pipe = Pipe(load_pipe(text, name, {"input": src, "output": os.devnull}))
    engine = pipe.engine(data_dir=os.devnull)
    proc, why = chunk_plan(engine.spec, engine.parts)
    assert proc is not None, why
    parts = chunks(src)
    fmt = proc.fmt

    def split() -> None:
        for c in parts:
            c.decode("utf-8", "replace").split("\n") if fmt == "lines" else c.split(b"\n")

    def digits() -> None:
        for c in parts:
            _has_long_digits(c)

    def whole() -> None:
        for c in parts:
            proc(c)

    hand = best(lambda: handloops.WORKLOADS[name](src, os.devnull), runs)
    t_split = best(split, runs)
    t_digits = best(digits, runs) if fmt == "json" else 0.0
    t_whole = best(whole, runs)
    print(f"{name}: {lines:,} lines, {len(parts)} chunks, CPU s (best of {runs})")
    print(f"  split into lines{' + decode' if fmt == 'lines' else ''}: {t_split:.3f}")
    print(f"  20-digit check: {t_digits:.3f}")
    rest = t_whole - t_split - t_digits
    print(f"  generated loop (per line: decode, actions, encode) + join: {rest:.3f}")
    print(f"  whole processor: {t_whole:.3f}")
    print(f"  hand loop (read, work, write): {hand:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=gen_data.DEFAULT_LINES)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    files = gen_data.ensure(args.lines)
    for name, src in (("w1", files[0]), ("w2", files[1])):
        stage_times(name, src, args.lines, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
