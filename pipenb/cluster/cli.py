"""``pipenb run FILE --cluster ...``: the cluster run behind the CLI's ``run`` command.

It prints the dashboard link, a progress line on a terminal (partitions done, events/s), and at
the end the same per-stage table as a single-process run, then the failed partitions (if any),
each with why, and how to resume.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pipenb.errors import PipenbError, PipeSyntaxError, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The cluster options of ``pipenb run`` (added to its parser, nothing else changes)."""
    g = p.add_argument_group("cluster runs (needs the [cluster] extra: dask, distributed)")
    g.add_argument(
        "--cluster",
        metavar="ADDR",
        help="run split over a Dask cluster: local[:N] (N worker processes here) or "
        "tcp://SCHEDULER:8786; the input must end (files with follow: false, dataset, echo)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="with --cluster: skip partitions whose part files a previous run completed",
    )
    g.add_argument(
        "--partition-size",
        metavar="SIZE",
        default=None,
        help="with --cluster: bytes per partition of a large file (default 64MB)",
    )


def cmd_run_cluster(args: argparse.Namespace, pipe: Any, data_dir: str) -> int:
    from pipenb.cli.local import _err, _summary
    from pipenb.cluster.run import ClusterRun, terminal_progress
    from pipenb.lang.units import parse_size

    try:
        size = parse_size(args.partition_size) if args.partition_size else None
    except ValueError as exc:
        _err(f"pipenb: --partition-size {args.partition_size}: {exc}")
        return 2
    quiet = args.quiet or args.json
    try:  # distributed sets its logger to INFO when imported: quiet it after that
        import distributed  # noqa: F401

        logging.getLogger("distributed").setLevel(logging.WARNING)
    except ImportError:
        pass  # the run says what to install
    tty = sys.stderr.isatty()
    shown: list[str] = []

    def progress(p: Any) -> None:
        if p.dashboard and not shown:  # once, first: worth opening while it runs
            shown.append(p.dashboard)
            _err(f"pipenb: {p.total} partition(s); Dask dashboard: {p.dashboard}")
        if tty:
            terminal_progress(p)

    run = ClusterRun(
        pipe.spec,
        args.cluster,
        data_dir=data_dir,
        resume=args.resume,
        partition_bytes=size,
        progress=None if quiet else progress,
    )
    try:
        report = run.run()
    except PipeSyntaxError as exc:
        for prob in exc.problems:
            _err(str(prob))
        return 1
    except UsageError as exc:
        _err(f"pipenb: {exc}")
        return 2
    except PipenbError as exc:
        _err(f"pipenb: pipe {pipe.name} failed: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("\npipenb: stopped; finished partitions are kept: run again with --resume")
        return 130
    if tty and not quiet:
        sys.stderr.write("\r\033[K")
    _summary(report, args)
    if report.failures:
        _err(f"pipenb: pipe {pipe.name}: {report.error}")
        _err(
            "pipenb: the other partitions' part files are kept: fix the cause and run again "
            "with --resume to run only the failed ones"
        )
        return 1
    if not quiet:
        c = report.snapshot()["cluster"]
        resumed = f", {c['resumed']} resumed from an earlier run" if c["resumed"] else ""
        _err(
            f"{c['partitions']} partition(s) on {len(c['workers'])} worker(s){resumed}, "
            f"{report.seconds:.1f}s"
        )
    return 0
