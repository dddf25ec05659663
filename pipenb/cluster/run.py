"""The driver of a cluster run: plan, submit, gather, combine, report as one run.

It splits the input into partitions (``plan``), sends one task per partition to the executor,
and, as results come in, adds their counters into one set (the same shape as a single engine's
``snapshot()``, so the CLI's summary table and a notebook show it the same way), records each
finished partition in a small manifest under the data directory (what ``--resume`` trusts), and
reports progress. A pipe with an ``aggregate`` then reduces the partitions' partial windows
pairwise on the cluster and runs the rest of the chain once. Partitions that failed are listed,
each with why; the others' part files stay, so ``--resume`` only re-runs the failed ones.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pipenb.capabilities import ALL_CAPABILITIES
from pipenb.cluster import partfiles
from pipenb.cluster.executor import Executor, executor_for
from pipenb.cluster.plan import DEFAULT_PARTITION_BYTES, Partition, check, partitions
from pipenb.cluster.task import Job, PartitionResult, combine_partials, run_partition, run_tail
from pipenb.engine.checkpoints import default_data_dir
from pipenb.errors import UsageError
from pipenb.lang.spec import PipeSpec

log = logging.getLogger("pipenb.cluster")


@dataclass
class Progress:
    """Where a run is: what a progress line or a notebook display shows."""

    pipe: str
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    events: int = 0
    elapsed: float = 0.0
    dashboard: str | None = None

    @property
    def rate(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        fail = f", {self.failed} failed" if self.failed else ""
        skip = f" ({self.skipped} resumed)" if self.skipped else ""
        return (
            f"{self.pipe}: {self.done}/{self.total} partitions{skip}{fail}, "
            f"{self.events:,} events, {self.rate:,.0f} events/s"
        )


@dataclass
class Failed:
    partition: str
    error: str

    def __str__(self) -> str:
        return f"{self.partition}: {self.error}"


@dataclass
class ClusterReport:
    """One run's result. ``snapshot()`` has the shape of ``Engine.snapshot()`` plus ``cluster``."""

    spec: PipeSpec
    counts: dict[str, Any]
    state: str = "created"
    partitions: int = 0
    skipped: int = 0
    failures: list[Failed] = field(default_factory=list)
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0
    address: str = ""
    dashboard: str | None = None
    workers: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        if not self.failures:
            return None
        head = "; ".join(str(f) for f in self.failures[:5])
        more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        return f"{len(self.failures)} of {self.partitions} partition(s) failed: {head}{more}"

    def snapshot(self) -> dict[str, Any]:
        c = self.counts
        o = c["output"]
        avg = o["write_seconds"] / o["batches"] * 1000 if o["batches"] else 0.0
        return {
            "pipe": self.spec.name,
            "state": self.state,
            "error": self.error,
            "uptime_s": round(self.seconds, 3),
            "input": {"name": self.spec.input.name, **c["input"], "lag": None},
            "actions": c["actions"],
            "output": {
                "name": self.spec.output.name,
                "events": o["events"],
                "batches": o["batches"],
                "errors": o["errors"],
                "retries": o["retries"],
                "latency_ms": round(avg, 3),
            },
            "dead_letters": c["dead_letters"],
            "dead_letters_dropped": c["dead_letters_dropped"],
            "checkpoints": 0,
            "position": None,
            "cluster": {
                "address": self.address,
                "dashboard": self.dashboard,
                "partitions": self.partitions,
                "resumed": self.skipped,
                "failed": [{"partition": f.partition, "error": f.error} for f in self.failures],
                "files": self.files,
                "workers": sorted(set(self.workers)),
            },
        }


def empty_counts(spec: PipeSpec) -> dict[str, Any]:
    return {
        "input": {"events": 0, "bytes": 0, "errors": 0},
        "actions": [
            {"stage": a.label, "in": 0, "out": 0, "dropped": 0, "errors": 0} for a in spec.actions
        ],
        "output": {"events": 0, "batches": 0, "errors": 0, "retries": 0, "write_seconds": 0.0},
        "dead_letters": 0,
        "dead_letters_dropped": 0,
    }


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    """Add one partition's counters into the run's (stage by stage)."""
    for k, v in part["input"].items():
        total["input"][k] = total["input"].get(k, 0) + v
    for mine, theirs in zip(total["actions"], part["actions"]):
        for k in ("in", "out", "dropped", "errors"):
            mine[k] += theirs[k]
    for k, v in part["output"].items():
        total["output"][k] = total["output"].get(k, 0) + v
    total["dead_letters"] += part["dead_letters"]
    total["dead_letters_dropped"] += part["dead_letters_dropped"]


# ---------------------------------------------------------------------------- manifests
def state_dir(data_dir: str, pipe: str) -> str:
    return os.path.join(data_dir, "cluster", pipe)


def _marker(state: str, part: Partition) -> str:
    return os.path.join(state, f"{part.name}.json")


def _complete(doc: dict[str, Any]) -> bool:
    """Every part file the manifest lists is there, with the size it had when it completed."""
    for files in doc.get("files", {}).values():
        for f in files:
            try:
                if os.path.getsize(f["path"]) != f["size"]:
                    return False
            except OSError:
                return False
    return True


def _load_done(state: str, fingerprint: str, parts: list[Partition]) -> dict[int, dict[str, Any]]:
    done = {}
    for p in parts:
        try:
            with open(_marker(state, p), "rb") as fh:
                doc = orjson.loads(fh.read())
        except (OSError, orjson.JSONDecodeError):
            continue
        if (
            doc.get("fingerprint") == fingerprint
            and doc.get("partition") == p.identity()
            and _complete(doc)
        ):
            done[p.index] = doc
    return done


def _forget(state: str) -> None:
    """A fresh run: drop the last run's manifests and the part files they list."""
    if not os.path.isdir(state):
        return
    for name in os.listdir(state):
        path = os.path.join(state, name)
        if name.startswith("part-") and name.endswith(".json"):
            try:
                with open(path, "rb") as fh:
                    doc = orjson.loads(fh.read())
                for files in doc.get("files", {}).values():
                    for f in files:
                        if os.path.exists(f["path"]):
                            os.unlink(f["path"])
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
                pass
            os.unlink(path)


# ---------------------------------------------------------------------------- progress
def terminal_progress(p: Progress) -> None:
    sys.stderr.write("\r" + p.line() + "\033[K")
    sys.stderr.flush()


class NotebookProgress:
    """A display in the notebook: the dashboard link, then one line updated in place."""

    def __init__(self) -> None:
        from IPython.display import display

        self.handle = display({"text/plain": "starting the cluster..."}, raw=True, display_id=True)

    def __call__(self, p: Progress) -> None:
        import html

        link = ""
        if p.dashboard:
            url = html.escape(p.dashboard)
            link = f'Dask dashboard: <a href="{url}" target="_blank">{url}</a><br>'
        done = p.done + p.skipped
        bar = f'<progress value="{done}" max="{max(1, p.total)}"></progress> '
        self.handle.update(
            {
                "text/plain": (f"Dask dashboard: {p.dashboard}\n" if p.dashboard else "")
                + p.line(),
                "text/html": f"<div>{link}{bar}{html.escape(p.line())}</div>",
            },
            raw=True,
        )


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def auto_progress() -> Callable[[Progress], None] | None:
    if _in_notebook():
        return NotebookProgress()
    if sys.stderr.isatty():
        return terminal_progress
    return None


# ---------------------------------------------------------------------------- the run
class ClusterRun:
    """One run of a pipe on a cluster. ``run()`` blocks; ``stop()`` (another thread, a
    progress callback) cancels what has not finished: those partitions run on ``--resume``."""

    def __init__(
        self,
        spec: PipeSpec,
        cluster: Any,
        *,
        data_dir: str | None = None,
        resume: bool = False,
        partition_bytes: int | None = None,
        allow: frozenset[str] = ALL_CAPABILITIES,
        progress: Callable[[Progress], None] | None = None,
        now: float | None = None,
    ):
        self.spec = spec
        self.now = now  # the arrival time of every event (time windows); default: the start
        self.cluster = cluster
        self.data_dir = data_dir or default_data_dir()
        self.resume = resume
        self.partition_bytes = partition_bytes or DEFAULT_PARTITION_BYTES
        self.allow = allow
        self.progress = progress
        self._stopping = False
        self.executor: Executor | None = None

    def stop(self) -> None:
        self._stopping = True

    def _file_outputs(self) -> list[Any]:
        return [
            c for c in (self.spec.output, self.spec.errors) if c is not None and c.name == "file"
        ]

    def run(self) -> ClusterReport:
        spec = self.spec
        cut = check(spec)
        for c in self._file_outputs():
            why = partfiles.check_target(c)
            if why:
                raise UsageError(f"output {c.name}: {why}")
        parts = partitions(spec, self.partition_bytes)
        job = Job.of(spec, self.allow, cut, len(parts))
        if self.now is not None:
            job = replace(job, clock=self.now)
        report = ClusterReport(spec, empty_counts(spec), partitions=len(parts))
        done: dict[int, dict[str, Any]] = {}
        if self.resume and cut is None:
            fingerprint = f"{job.key}:{self.partition_bytes}"
            done = _load_done(state_dir(self.data_dir, spec.name), fingerprint, parts)
        elif self.resume:
            log.warning("--resume: a pipe with aggregate runs again whole (partials are not kept)")
        todo = [p for p in parts if p.index not in done]
        # the cluster first: a run that cannot start (dask missing, no scheduler) removes nothing
        executor = executor_for(self.cluster) if todo or cut is not None else None
        t0 = time.perf_counter()
        try:
            return self._run(executor, job, cut, parts, todo, done, report, t0)
        except KeyboardInterrupt:
            report.state = "stopped"
            raise
        finally:
            report.seconds = time.perf_counter() - t0
            if executor is not None:
                executor.close()

    def _run(
        self,
        executor: Executor | None,
        job: Job,
        cut: int | None,
        parts: list[Partition],
        todo: list[Partition],
        done: dict[int, dict[str, Any]],
        report: ClusterReport,
        t0: float,
    ) -> ClusterReport:
        spec = self.spec
        state = state_dir(self.data_dir, spec.name)
        fingerprint = f"{job.key}:{self.partition_bytes}"
        if not done:
            _forget(state)
            for c in self._file_outputs():
                partfiles.clear(c)
        results: dict[int, PartitionResult] = {}
        for i, doc in done.items():
            add_counts(report.counts, doc["counts"])
            results[i] = PartitionResult(i, doc["counts"], doc.get("files", {}))
        report.skipped = len(done)
        prog = Progress(spec.name, len(parts), skipped=len(done))
        if executor is None:  # an earlier run completed every partition
            self._finish(report, results)
            report.state = "finished"
            self._tick(prog, report, t0)
            return report
        self.executor = executor
        report.address, report.dashboard = executor.address, executor.dashboard_link
        prog.dashboard = executor.dashboard_link
        self._tick(prog, report, t0)
        run_id = uuid.uuid4().hex[:8]
        handles = {
            executor.submit(run_partition, job, p, key=f"pipenb-{spec.name}-{run_id}-{p.name}"): p
            for p in todo
        }
        by_index: dict[int, Any] = {}
        pending = set(handles)
        report.state = "running"
        for h in executor.as_completed(list(handles)):
            pending.discard(h)
            p = handles[h]
            try:
                res: PartitionResult = executor.result(h)
            except Exception as exc:  # the task raised, or its workers kept dying
                report.failures.append(Failed(p.describe(), _why(exc)))
                prog.failed += 1
                self._tick(prog, report, t0)
                continue
            results[p.index] = res
            by_index[p.index] = h
            add_counts(report.counts, res.counts)
            report.workers.append(res.worker)
            if cut is None:
                partfiles.write_json(
                    _marker(state, p),
                    {
                        "version": 1,
                        "fingerprint": fingerprint,
                        "partition": p.identity(),
                        "files": res.files,
                        "counts": res.counts,
                    },
                )
            prog.done += 1
            self._tick(prog, report, t0)
            if self._stopping and pending:
                executor.cancel(list(pending))
                break
        if self._stopping and len(results) < len(parts):
            report.state = "stopped"
            return report
        if report.failures:
            report.state = "failed"
            return report
        if cut is not None:
            try:
                tail = self._reduce(executor, job, [by_index[i] for i in sorted(by_index)])
            except Exception as exc:  # combining or the rest of the chain failed
                report.failures.append(Failed(f"{spec.actions[cut].label} (combine)", _why(exc)))
                report.state = "failed"
                return report
            add_counts(report.counts, tail.counts)
            report.workers.append(tail.worker)
            results[tail.index] = tail
        self._finish(report, results)
        report.state = "finished"
        return report

    def _reduce(self, executor: Executor, job: Job, level: list[Any]) -> PartitionResult:
        """Partials combined pairwise in partition order (a tree), then the tail, on the cluster."""
        while len(level) > 1:
            nxt = [
                executor.submit(combine_partials, level[i], level[i + 1])
                for i in range(0, len(level) - 1, 2)
            ]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return executor.result(executor.submit(run_tail, job, level[0] if level else None))

    def _finish(self, report: ClusterReport, results: dict[int, PartitionResult]) -> None:
        """Merge or list the part files, sweep dead attempts' temp files, write the manifest."""
        for role, c in (("output", self.spec.output), ("errors", self.spec.errors)):
            if c is None or c.name != "file":
                continue
            files = [f for i in sorted(results) for f in results[i].files.get(role, [])]
            swept = partfiles.sweep_temps(c)
            if swept:
                log.info("removed %d temp file(s) of attempts that did not finish", swept)
            if partfiles.file_options(c).merge:
                report.files[role] = [partfiles.merge(c, [f["path"] for f in files])]
                continue
            report.files[role] = files
            partfiles.write_manifest(
                c,
                {
                    "pipe": self.spec.name,
                    "partitions": report.partitions,
                    "parts": [
                        {"path": os.path.basename(f["path"]), "size": f["size"]} for f in files
                    ],
                    "events": report.counts["output"]["events"] if role == "output" else None,
                },
            )

    def _tick(self, prog: Progress, report: ClusterReport, t0: float) -> None:
        prog.events = report.counts["input"]["events"]
        prog.elapsed = time.perf_counter() - t0
        if self.progress is not None:
            try:
                self.progress(prog)
            except Exception as exc:  # a display that fails must not fail the run
                log.warning("progress display failed: %s", exc)


def _why(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc) or name
    if "KilledWorker" in name:
        return (
            f"its workers kept dying ({text}); look at the workers' logs (memory limit?) "
            "and re-run with --resume"
        )
    return f"{name}: {text}" if name not in text else text


def run_pipe(spec: PipeSpec, cluster: Any, **kwargs: Any) -> ClusterReport:
    """Run ``spec`` on ``cluster`` (see ``ClusterRun``); the report of the whole run."""
    return ClusterRun(spec, cluster, **kwargs).run()
