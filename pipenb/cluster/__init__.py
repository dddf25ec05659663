"""Cluster pipes: one pipe over a whole data set, split into partitions on a Dask cluster.

``pipenb run FILE --cluster local:2`` or ``Pipe.run(cluster="tcp://scheduler:8786")``. The
engine is not changed: each partition runs the single-process engine on its slice of the input
(``task``); ``plan`` splits the input and refuses what cannot be split; ``combine`` merges the
partial windows of ``aggregate``; ``run`` drives it all and reports one run; ``executor`` is
the small interface a distributed engine implements (``dask`` is the one there is).

dask and distributed are optional (the ``[cluster]`` extra); nothing here imports them until a
run starts.
"""

from pipenb.cluster.executor import INSTALL_HINT, Executor, executor_for
from pipenb.cluster.run import ClusterReport, ClusterRun, Progress, run_pipe

__all__ = [
    "INSTALL_HINT",
    "ClusterReport",
    "ClusterRun",
    "Executor",
    "Progress",
    "executor_for",
    "run_pipe",
]
