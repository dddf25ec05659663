"""The executor interface: the little a cluster run needs from a distributed engine.

A run submits tasks (plain picklable functions of ``pipenb.cluster.task``), passes the handle of
one task as an argument of another (the tree reduction of aggregates: the data stays on the
workers), takes results as they complete, and cancels what is left when it stops. Dask
implements it in ``pipenb.cluster.dask``; Spark or Ray would implement the same five methods, and
nothing in the engine or the run changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from pipenb.errors import UsageError

INSTALL_HINT = (
    "cluster runs need dask and distributed: install the [cluster] extra of pipenb's wheel, "
    "e.g. pip install 'pipenb-0.1.0-py3-none-any.whl[cluster]' (or pip install "
    "'dask>=2024.1' 'distributed>=2024.1' next to pipenb)"
)


class Executor(ABC):
    """Runs tasks somewhere else. ``address`` and ``dashboard_link`` are for people."""

    address: str = ""
    dashboard_link: str | None = None

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any, key: str | None = None) -> Any:
        """Start ``fn(*args)``; return a handle. Handles may be arguments of later submits."""

    @abstractmethod
    def as_completed(self, handles: list[Any]) -> Iterator[Any]:
        """The handles, each as its task finishes (well or not)."""

    @abstractmethod
    def result(self, handle: Any) -> Any:
        """The task's return value; raises what the task raised."""

    @abstractmethod
    def cancel(self, handles: list[Any]) -> None:
        """Forget tasks not yet finished."""

    @abstractmethod
    def workers(self) -> int:
        """How many workers there are now."""

    def close(self) -> None:  # noqa: B027 - optional: only executors that start things
        """Release what this executor started (a local cluster); not a cluster it joined."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def executor_for(cluster: Any) -> Executor:
    """``local``, ``local:N``, ``tcp://HOST:PORT``, a ``distributed.Client`` or a cluster object
    (``LocalCluster``, ...), or an ``Executor`` already made."""
    if isinstance(cluster, Executor):
        return cluster
    if isinstance(cluster, str):
        spec = cluster.strip()
        if not (spec == "local" or spec.startswith(("local:", "tcp://", "tls://"))):
            raise UsageError(
                f"--cluster {cluster}: give local, local:N (N worker processes here) or "
                "tcp://SCHEDULER:8786 (a running Dask scheduler)"
            )
        if spec.startswith("local:"):
            n = spec[len("local:") :]
            if not n.isdigit() or int(n) < 1:
                raise UsageError(
                    f"--cluster {cluster}: N in local:N is a number of workers, 1 or more"
                )
    try:
        from pipenb.cluster.dask import DaskExecutor
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return DaskExecutor(cluster)
