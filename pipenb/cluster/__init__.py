"""Cluster pipes: one pipe over a whole data set, split into partitions on a Dask cluster.

``pipenb run FILE --cluster local:2`` or ``Pipe.run(cluster="tcp://scheduler:8786")``. The
engine is not changed: each partition runs the single-process engine on its slice of the input
(``task``); ``plan`` splits the input and refuses what cannot be split; ``combine`` merges the
partial windows of ``aggregate``; ``run`` drives it all and reports one run; ``executor`` is
the small interface a distributed engine implements (``dask`` is the one there is).

dask and distributed are optional (the ``[cluster]`` extra); nothing here imports them until a
run starts. The names below are imported on first use, so ``pipenb`` commands that never run on
a cluster (the CLI registers ``--cluster`` from ``pipenb.cluster.cli``) do not pay for them.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "INSTALL_HINT": "pipenb.cluster.executor",
    "Executor": "pipenb.cluster.executor",
    "executor_for": "pipenb.cluster.executor",
    "ClusterReport": "pipenb.cluster.run",
    "ClusterRun": "pipenb.cluster.run",
    "Progress": "pipenb.cluster.run",
    "run_pipe": "pipenb.cluster.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipenb.cluster' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
