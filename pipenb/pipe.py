"""``pipenb.Pipe``: a validated pipe you can preview, test and run from Python."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pipenb.capabilities import ALL_CAPABILITIES
from pipenb.engine.base import RunContext
from pipenb.engine.checkpoints import (
    CheckpointStore,
    FileCheckpointStore,
    checkpoint_path,
    default_data_dir,
)
from pipenb.engine.runtime import Engine
from pipenb.errors import UsageError
from pipenb.lang.spec import PipeSpec
from pipenb.lang.validate import load_pipe

if TYPE_CHECKING:  # pragma: no cover
    from pipenb.engine.pipetests import PipeTestReport
    from pipenb.engine.preview import PreviewResult


class Pipe:
    """A pipe document, validated. Build one with ``Pipe.from_yaml`` or ``Pipe.from_file``."""

    def __init__(self, spec: PipeSpec):
        self.spec = spec

    @classmethod
    def from_yaml(
        cls,
        text: str,
        params: dict[str, Any] | None = None,
        *,
        file: str = "<pipe>",
        line_offset: int = 0,
        builtins: dict[str, Any] | None = None,
    ) -> Pipe:
        """Validate ``text``; raises PipeSyntaxError with every located problem."""
        return cls(load_pipe(text, file, params, builtins, line_offset=line_offset))

    @classmethod
    def from_file(cls, path: str | os.PathLike, params: dict[str, Any] | None = None) -> Pipe:
        from pipenb.lang.source import decode_text

        with open(path, "rb") as fh:
            text = decode_text(fh.read(), os.fspath(path))
        return cls.from_yaml(text, params, file=os.fspath(path))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def yaml(self) -> str:
        return self.spec.source

    def preview(
        self,
        sample: Any = None,
        limit: int | None = 1000,
        timeout: float = 10.0,
        *,
        on: str | None = None,
        labels: str | list[str] | None = None,
        client: Any = None,
    ) -> PreviewResult:
        """Run the actions on ``sample`` (events, lines, DataFrame, file; default: own input).

        The pipe's output is never opened: a preview cannot write anywhere real. With ``on``
        (an agent's id or name) or ``labels`` (the first online agent having them) the preview
        runs on that agent, on its real data and under its policy, through the server
        (``client``, default ``Client()`` from PIPENB_URL and PIPENB_TOKEN); the answer is the
        same kind of result.
        """
        if on is not None or labels:
            if sample is not None:
                raise UsageError("a preview on an agent reads the pipe's own input: no sample")
            from pipenb.client import Client

            client = client or Client()
            agent = client.agent_for(on, labels)
            params = {k: self.spec.values[k] for k in self.spec.params if k in self.spec.values}
            return client.preview_on(agent, self.yaml, params, limit or 100, timeout)
        from pipenb.engine.preview import preview

        return preview(self.spec, sample, limit, timeout)

    def test(self) -> PipeTestReport:
        """Run the pipe's ``tests:`` section."""
        from pipenb.engine.pipetests import run_tests

        return run_tests(self.spec)

    def engine(
        self,
        *,
        data_dir: str | None = None,
        checkpoints: CheckpointStore | None = None,
        allow: frozenset[str] = ALL_CAPABILITIES,
    ) -> Engine:
        """An Engine for this pipe; checkpoints go to ``data_dir`` unless a store is given."""
        data_dir = data_dir or default_data_dir()
        ctx = RunContext(pipe=self.name, data_dir=data_dir, allow=allow, values=self.spec.values)
        store = checkpoints or FileCheckpointStore(checkpoint_path(data_dir, self.name))
        return Engine(self.spec, ctx, checkpoints=store)

    def run(self, *, cluster: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Run in the foreground until the input ends; return the final metrics.

        ``cluster`` (``"local:2"``, ``"tcp://host:8786"``, a ``distributed.Client``) runs it
        split over a Dask cluster instead (``resume=``, ``partition_bytes=``, ``progress=``,
        ``data_dir=`` apply); see docs/cluster.md. Failed partitions raise PipeRuntimeError.
        """
        if cluster is not None:
            return self._run_on_cluster(cluster, **kwargs)
        from pipenb.engine.preview import run_sync

        engine = self.engine(**kwargs)
        run_sync(engine.run())  # in a thread when a loop already runs here (a notebook)
        return engine.snapshot()

    def _run_on_cluster(self, cluster: Any, **kwargs: Any) -> dict[str, Any]:
        from pipenb.cluster.run import auto_progress, run_pipe
        from pipenb.errors import PipeRuntimeError

        kwargs.setdefault("progress", auto_progress())
        report = run_pipe(self.spec, cluster, **kwargs)
        if report.failures:
            raise PipeRuntimeError(f"pipe {self.name}: {report.error}")
        return report.snapshot()

    def __repr__(self) -> str:
        return f"Pipe({self.name!r}, input={self.spec.input.name}, actions={len(self.spec.actions)}, output={self.spec.output.name})"
