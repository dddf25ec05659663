"""The Dask implementation of the executor: ``distributed.Client`` futures.

``local:N`` starts a ``LocalCluster`` of N worker processes (one thread each: the engine is
CPU-bound Python, so processes, not threads, are what scale) with its dashboard on a free port,
and closes it afterwards. A ``tcp://`` address joins a running scheduler and leaves it running.
A worker that dies has its tasks run again elsewhere; that is Dask's own doing
(``distributed.scheduler.allowed-failures`` times, 3 by default).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import distributed

from pipenb.cluster.executor import Executor
from pipenb.errors import UsageError


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (Python keeps an inherited SIG_IGN), so a
    Ctrl-C in the terminal reaches the driver only, instead of a traceback from every worker."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class DaskExecutor(Executor):
    def __init__(self, cluster: Any):
        self._own: list[Any] = []  # what we started and must close
        if isinstance(cluster, distributed.Client):
            self.client = cluster
        elif isinstance(cluster, str) and cluster.startswith("local"):
            n = int(cluster.split(":", 1)[1]) if ":" in cluster else (os.cpu_count() or 1)
            with _sigint_ignored():  # Ctrl-C is the driver's to handle: it stops the workers
                local = distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",
                    host="127.0.0.1",
                    silence_logs=logging.ERROR,  # its INFO lines would drown the progress line
                )
            self._own.append(local)
            self.client = distributed.Client(local)
            self._own.insert(0, self.client)
        elif isinstance(cluster, str):
            try:
                self.client = distributed.Client(cluster, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise UsageError(
                    f"--cluster {cluster}: no Dask scheduler answered there ({exc}); start one "
                    "with `dask scheduler` and workers with `dask worker ADDRESS`"
                ) from None
            self._own.append(self.client)
        else:  # a cluster object: LocalCluster, a KubeCluster, ...
            self.client = distributed.Client(cluster)
            self._own.append(self.client)
        self.address: str = (
            self.client.scheduler.address if self.client.scheduler else None
        ) or str(cluster)
        try:
            self.dashboard_link = self.client.dashboard_link
        except Exception:  # no dashboard (bokeh missing on the scheduler)
            self.dashboard_link = None

    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None) -> Any:
        return self.client.submit(fn, *args, key=key, pure=False)

    def as_completed(self, handles: list[Any]) -> Iterator[Any]:
        return iter(distributed.as_completed(handles))

    def result(self, handle: Any) -> Any:
        return handle.result()

    def cancel(self, handles: list[Any]) -> None:
        if handles:
            self.client.cancel(handles)

    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> process id (tests kill one to see its partitions run again)."""
        return self.client.run(os.getpid)

    def close(self) -> None:
        for thing in self._own:
            try:
                thing.close()
            except Exception:  # closing a cluster that lost a worker may complain; it is gone
                pass
        self._own.clear()
