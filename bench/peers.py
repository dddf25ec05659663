"""The same workloads as ``handloops.py`` on other stream/data engines, for side-by-side figures.

    python bench/peers.py bytewax|polars w1|w2 IN OUT

- **bytewax** (Rust core, Python operators): ``FileSource`` lines -> ``filter_map`` with the
  baseline's per-line work -> a sink writing through a 1 MB buffered file (bytewax's own
  ``FileSink`` fsyncs every batch, which would measure the disk, not the engine). Run with
  ``bytewax.testing.run_main``: one worker, in this process.
- **polars** (lazy, one thread: ``POLARS_MAX_THREADS=1`` is set before polars is imported):
  ``scan_ndjson`` / ``scan_csv`` of whole lines, the filter and column work as expressions,
  ``sink_ndjson``. Field order may differ from the baseline's (the benchmark compares events,
  not bytes).

Bench-only: ``pip install 'pipenb-fleet[bench]'`` (``make bench``) installs both; the product
never imports them. Exit status 3 when the peer is not installed, so the benchmark can skip it.
"""

from __future__ import annotations

import os
import sys

os.environ["POLARS_MAX_THREADS"] = "1"  # before polars is imported: one core, like the others

import orjson
from handloops import BUFFER, W2_PATTERN


def bytewax_run(workload: str, src: str, dst: str) -> None:
    import re

    import bytewax.operators as op
    from bytewax.connectors.files import FileSource
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import run_main

    loads, dumps, nl = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE

    class _Part(StatelessSinkPartition):
        def __init__(self) -> None:
            self.fh = open(dst, "wb", buffering=BUFFER)  # noqa: SIM115 - closed by close()

        def write_batch(self, items: list[bytes]) -> None:
            self.fh.write(b"".join(items))

        def close(self) -> None:
            self.fh.close()

    class _Sink(DynamicSink):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Part:
            return _Part()

    if workload == "w1":
        keep = ("WARN", "ERROR")

        def work(line: str) -> bytes | None:
            e = loads(line)
            if e.get("level") not in keep:
                return None
            e["env"] = "prod"
            if "msg" in e:
                e["message"] = e.pop("msg")
            return dumps(e, option=nl)

    else:
        match = re.compile(W2_PATTERN).match

        def work(line: str) -> bytes | None:
            m = match(line)
            if m is None or m["level"] != "ERROR":
                return None
            return dumps(m.groupdict(), option=nl)

    flow = Dataflow(f"bench-{workload}")
    lines = op.input("in", flow, FileSource(src))
    out = op.filter_map("work", lines, work)
    op.output("out", out, _Sink())
    run_main(flow)


def polars_run(workload: str, src: str, dst: str) -> None:
    import polars as pl

    if workload == "w1":
        q = (
            pl.scan_ndjson(src)
            .filter(pl.col("level").is_in(["WARN", "ERROR"]))
            .with_columns(env=pl.lit("prod"))
            .rename({"msg": "message"})
        )
    else:
        q = (
            pl.scan_csv(
                src,
                has_header=False,
                separator="\x1f",
                quote_char=None,
                new_columns=["line"],
                schema_overrides={"line": pl.String},
            )
            .select(pl.col("line").str.extract_groups(W2_PATTERN).alias("g"))
            .unnest("g")
            .filter(pl.col("level") == "ERROR")
        )
    q.sink_ndjson(dst)


PEERS = {"bytewax": (bytewax_run, "bytewax"), "polars": (polars_run, "polars")}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in PEERS or argv[1] not in ("w1", "w2"):
        print("usage: python bench/peers.py bytewax|polars w1|w2 IN OUT", file=sys.stderr)
        return 2
    fn, module = PEERS[argv[0]]
    try:
        __import__(module)
    except ImportError:
        print(f"{module} is not installed (make bench installs it)", file=sys.stderr)
        return 3
    fn(argv[1], argv[2], argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
