"""Commands that work on pipe files here, without a server: run, check, test, preview."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from pipenb.cli.options import Subparsers, option
from pipenb.cli.startup import collector_paused
from pipenb.engine.checkpoints import checkpoint_path, default_data_dir
from pipenb.errors import PipenbError, PipeSyntaxError, UsageError
from pipenb.params import parse_params
from pipenb.terminal_tables import format_table

if TYPE_CHECKING:
    from pipenb.engine.runtime import Engine


def register(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="run a pipe here, in the foreground")
    p.add_argument("file", help="pipe file (YAML)")
    _param_arg(p)
    p.add_argument(
        "--data-dir",
        help="where checkpoints live (default: $PIPENB_DATA_DIR or ~/.local/state/pipenb)",
    )
    p.add_argument(
        "--reset", action="store_true", help="forget the saved checkpoint and start over"
    )
    p.add_argument("--json", action="store_true", help="final metrics as JSON (on stderr)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.add_argument(
        "--workers",
        type=_workers_arg,
        help="processes running the actions: auto (one per core) or N; overrides the pipe's "
        "workers: (a pipe with stateful actions runs in one, and says why)",
    )
    from pipenb.cluster.cli import add_arguments as cluster_arguments

    cluster_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check", help="validate pipe files; every error as file:line:column: message"
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    _param_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("test", help="run the tests: sections of pipe files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("preview", help="run a pipe on a sample and show what each stage produced")
    p.add_argument("file", help="pipe file (YAML)")
    p.add_argument(
        "--sample", help="file of lines or NDJSON events (default: the pipe's own input)"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="events to read (default 1000; 100 on an agent)"
    )
    p.add_argument(
        "--on",
        metavar="AGENT",
        help="preview on this agent's real data, under its policy, through the server",
    )
    p.add_argument(
        "--on-labels", metavar="A,B", help="preview on the first online agent with these labels"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to read the input")
    option(p, "--url", help="the pipenb server (for --on), as printed by `pipenb server`")
    option(p, "--token", help="the user token for the server (for --on)")
    _param_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("reference", help="print the reference of every input, action and output")
    p.set_defaults(func=cmd_reference)


def _workers_arg(text: str) -> int | str:
    if text == "auto":
        return "auto"
    if text.isdigit() and 1 <= int(text) <= 256:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: use auto or a number from 1 to 256")


def cmd_reference(args: argparse.Namespace) -> int:
    from pipenb.lang.reference import render_reference

    sys.stdout.write(render_reference())
    return 0


def _param_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="set a parameter (repeatable)"
    )


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _load(path: str, params: dict[str, Any], *, require: bool = False) -> Any:
    """The validated pipe in ``path``. (The engine is imported here, not at start: ``pipenb
    agent`` shares this command module and must not load pydantic and the engine.)"""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    from pipenb.lang.source import decode_text
    from pipenb.lang.validate import load_pipe
    from pipenb.pipe import Pipe

    text = decode_text(data, path)
    return Pipe(load_pipe(text, path, params, require_params=require))


def _problems(exc: PipeSyntaxError) -> None:
    for p in exc.problems:
        _err(str(p))


def _usage(exc: UsageError) -> int:
    _err(f"pipenb: {exc}")
    return 2


# ---------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    try:
        params = parse_params(args.param)
    except UsageError as exc:
        return _usage(exc)
    results = []
    failed = False
    for path in args.files:
        try:
            pipe = _load(path, params)
            result = {"file": path, "ok": True, "pipe": pipe.name, "problems": []}
            workers = ""
            if pipe.spec.workers != 1:  # how many it will really get, or why one
                from pipenb.engine.chunks import explain_workers

                result["workers"] = explain_workers(pipe.spec)
                workers = f", workers: {result['workers']}"
            results.append(result)
            if not args.json:
                print(
                    f"{path}: ok ({pipe.name}: {pipe.spec.input.name} -> {len(pipe.spec.actions)} action(s) -> {_outputs_text(pipe.spec)}{workers})"
                )
        except PipeSyntaxError as exc:
            failed = True
            results.append(
                {"file": path, "ok": False, "problems": [p.to_dict() for p in exc.problems]}
            )
            if not args.json:
                _problems(exc)
        except UsageError as exc:  # an unreadable file is a usage error, as for run and test
            return _usage(exc)
    if args.json:
        sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif failed:
        _err(f"{sum(not r['ok'] for r in results)} of {len(results)} file(s) invalid")
    return 1 if failed else 0


# ---------------------------------------------------------------------------- test
def cmd_test(args: argparse.Namespace) -> int:
    out: list[dict[str, Any]] = []
    passed = failed = 0
    for path in args.files:
        try:
            pipe = _load(path, {})
        except PipeSyntaxError as exc:
            failed += 1
            out.append({"file": path, "error": str(exc), "tests": []})
            if not args.json:
                _problems(exc)
            continue
        except UsageError as exc:
            return _usage(exc)
        report = pipe.test()
        out.append(
            {"file": path, "pipe": pipe.name, "tests": [r.as_dict() for r in report.results]}
        )
        if not args.json:
            if not report.results:
                print(f"{path}: no tests")
            for r in report.results:
                print(f"{'PASS' if r.passed else 'FAIL'} {path}:{r.line} {pipe.name}: {r.name}")
                if not r.passed:
                    for line in r.message.splitlines():
                        print(f"     {line}")
        passed += sum(r.passed for r in report.results)
        failed += sum(not r.passed for r in report.results)
    if args.json:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
    else:
        print(f"pipe tests: {passed} passed, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------------------- preview
def cmd_preview(args: argparse.Namespace) -> int:
    try:
        pipe = _load(args.file, parse_params(args.param))
        if args.on or args.on_labels:
            from pipenb.client import Client

            result = pipe.preview(
                args.sample,
                limit=args.limit or 100,
                timeout=args.timeout,
                on=args.on,
                labels=args.on_labels,
                client=Client(args.url, args.token),
            )
        else:
            result = pipe.preview(args.sample, limit=args.limit or 1000, timeout=args.timeout)
    except PipeSyntaxError as exc:
        _problems(exc)
        return 1
    except UsageError as exc:
        return _usage(exc)
    except PipenbError as exc:
        _err(f"pipenb: {exc}")
        return 1
    if args.json:
        doc = {
            "pipe": pipe.name,
            "stages": result.counts,
            "events": result.events,
            "errors": result.errors,
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
        return 0
    print(format_table(result.counts))
    print()
    print(f"{len(result.events)} event(s) out:")
    print(format_table(result.events[:50]))
    if len(result.events) > 50:
        print(f"... {len(result.events) - 50} more (use --json for all)")
    if result.errors:
        print()
        print(f"{len(result.errors)} error(s):")
        print(
            format_table(
                [
                    {
                        "stage": e["_error"]["stage"],
                        "error": e["_error"]["message"],
                        "event": {k: v for k, v in e.items() if k != "_error"},
                    }
                    for e in result.errors[:20]
                ]
            )
        )
    return 0


# ---------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    # the start-up (pydantic, the engine, the option models, the compiled pipe) with the cyclic
    # collector paused, then frozen as the engine's run would: see pipenb.cli.startup
    with collector_paused(freeze=True):
        try:
            pipe = _load(args.file, parse_params(args.param), require=True)
        except PipeSyntaxError as exc:
            _problems(exc)
            return 1
        except UsageError as exc:
            return _usage(exc)
        data_dir = args.data_dir or default_data_dir()
        cluster = getattr(args, "cluster", None)
        if not cluster:
            if getattr(args, "resume", False) or getattr(args, "partition_size", None):
                return _usage(UsageError("--resume and --partition-size go with --cluster"))
            ckpt = checkpoint_path(data_dir, pipe.name)
            if args.reset and os.path.exists(ckpt):
                os.unlink(ckpt)
            elif os.path.exists(ckpt) and not args.quiet:
                _err(f"pipenb: resuming {pipe.name} from checkpoint {ckpt} (--reset to start over)")
            try:
                engine = pipe.engine(data_dir=data_dir, workers=args.workers)
            except PipenbError as exc:
                _err(f"pipenb: {exc}")
                return 1
    if cluster:
        from pipenb.cluster.cli import cmd_run_cluster

        return cmd_run_cluster(args, pipe, data_dir)
    progress = sys.stderr.isatty() and not args.quiet and not args.json
    try:
        asyncio.run(_run(engine, progress))
    except PipenbError as exc:
        _err(f"pipenb: pipe {pipe.name} failed: {exc}")
        _summary(engine, args)
        return 1
    _summary(engine, args)
    return 0


async def _run(engine: Engine, progress: bool) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, engine.stop)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on POSIX
            pass
    ticker = asyncio.create_task(_progress(engine)) if progress else None
    try:
        await engine.run()
    finally:
        if ticker is not None:
            ticker.cancel()
            sys.stderr.write("\r\033[K")


async def _progress(engine: Engine) -> None:
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        m = engine.metrics
        rate = m.input_events / max(1e-9, time.monotonic() - t0)
        sys.stderr.write(
            f"\r{engine.spec.name}: {m.input_events} in, {m.output.events} out, "
            f"{m.dead_letters} errors, {rate:,.0f} events/s\033[K"
        )
        sys.stderr.flush()


class _Snapshots(Protocol):
    """What the summary table is made from: an Engine, or a cluster run's report."""

    def snapshot(self) -> dict[str, Any]: ...


def _summary(engine: _Snapshots, args: argparse.Namespace) -> None:
    if args.quiet:
        return
    snap = engine.snapshot()
    if args.json:
        sys.stderr.write(orjson.dumps(snap, default=str).decode() + "\n")
        return
    rows = [
        {
            "stage": f"input:{snap['input']['name']}",
            "in": snap["input"]["events"],
            "out": snap["input"]["events"],
            "dropped": 0,
            "errors": snap["input"]["errors"],
        }
    ]
    rows += snap["actions"]
    o = snap["output"]
    rows.append(
        {
            "stage": f"output:{o['name']}",
            "in": o["events"] + o["errors"],
            "out": o["events"],
            "dropped": 0,
            "errors": o["errors"],
        }
    )
    _err(format_table(rows))
    if snap["dead_letters_dropped"]:
        _err(
            f"{snap['dead_letters_dropped']} failed event(s) were dropped: add an errors: output to keep them"
        )


def _outputs_text(spec: Any) -> str:
    """``file``, or with ``outputs:`` each output's name and kind: ``errors:file, all:http-post``."""
    if not getattr(spec, "routes", None):
        return spec.output.name
    return ", ".join(f"{r.name}:{r.output.name}" for r in spec.routes)
