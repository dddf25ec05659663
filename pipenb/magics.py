"""IPython magics: ``%%pipe`` to validate and preview a cell, ``%pipe ...`` to manage a server.

Load with ``%load_ext pipenb``. Every magic is a thin layer over ``pipenb.Pipe`` and
``pipenb.Client`` and returns a DataFrame or an object with a rich display (and a text one).
Mistakes (a bad argument, an invalid pipe, an error from the server) fail the cell with a
``MagicError``: Run All stops there and ``nbconvert --execute`` / nbclient fail, so notebook CI
catches a broken pipe. The notebook shows the located, readable message, never a traceback.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Int

from pipenb.errors import ApiError, PipenbError, PipeSyntaxError
from pipenb.explain import api_problem_lines, no_match, recent_errors
from pipenb.params import parse_params

USAGE = """\
%%pipe [NAME] [--sample VAR|PATH] [--limit N] [--param k=v]...
    validate the cell's pipe and preview it (on a variable, a file, or the pipe's own input);
    the PreviewResult goes to NAME (default _pipe) and the pipe is kept for save/deploy/test
%%pipe [NAME] --cluster local:N|tcp://HOST:8786 [--resume] [--partition-size SIZE] [--param k=v]...
    run the cell's pipe over its whole input on a Dask cluster (dashboard link and progress
    shown); the run's metrics go to NAME
%%pipe [NAME] --on AGENT | --on-labels a,b [--limit N] [--timeout S] [--param k=v]...
    preview the cell's pipe on an agent's real data, under its policy (through the server;
    the agent's policy must allow previews); the same PreviewResult goes to NAME

%pipe connect URL [--token T]        connect to a server (default: PIPENB_URL/PIPENB_TOKEN);
    [--ca-file F | --ca-fingerprint FP] [--cert F --key F]   https:// trust and mutual TLS
%pipe save [NAME] [--message M]      push the last (or named) pipe's YAML
%pipe deploy [PIPE] [--name N] [--new] [--version V|latest] [--labels a,b] [--agents a,b]
             [--instances N|all] [--failover] [--param k=v]...
                                     push, then deploy (pinned to the pushed version); again
                                     with the same --name (default: the pipe's) updates that
                                     deployment instead of making another; --new makes another
%pipe status [DEPLOYMENT]            deployments, or one deployment's instances
%pipe agents                         the server's agents
%pipe add-agent [--token T] [--labels a,b] [--name N] [--prefix DIR] [--no-service]
                [--server-url URL]   one shell line that installs an agent on a worker host
%pipe stop DEPLOYMENT                stop a deployment
%pipe tap DEPLOYMENT [--stage S] [--limit N]   events captured at a stage
%pipe test [NAME]                    run the pipe's tests: section
%pipe metrics DEPLOYMENT             metrics the agents reported
%pipe dashboard [--interval S] [--paused]
                                     agents and deployments, live, with start/stop buttons
%pipe help                           this text"""


class MagicError(PipenbError, UsageError):
    """A ``%pipe``/``%%pipe`` cell failed: the cell fails, showing only this message.

    A subclass of IPython's UsageError (so code that caught that still does) that IPython
    shows through ``_render_traceback_``: the message, not fifty lines of magic internals.
    An error (not a printed message) is what makes Run All stop and nbclient fail.
    """

    def _render_traceback_(self) -> list[str]:
        first, *rest = str(self).splitlines() or [""]
        return [f"\x1b[0;31mpipenb\x1b[0m: {first}", *rest]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as a MagicError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise MagicError(f"{self.prog}: {message}\n\n{USAGE}")


def _parser(prog: str) -> _Parser:
    return _Parser(prog=prog, add_help=False)


def _params(items: list[str] | None) -> dict[str, str]:
    return parse_params(items, MagicError)


def _api_message(exc: ApiError) -> str:
    """The server's message and every located problem, one per line."""
    first, *problems = api_problem_lines(exc.message, exc.code, exc.details)
    return "\n".join([f"server: {first} ({exc.status} {exc.code})", *problems])


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _df(records: list[dict[str, Any]], columns: list[str] | None = None) -> Any:
    import pandas as pd

    if not records:
        return pd.DataFrame(columns=columns or [])
    df = pd.DataFrame.from_records(records)
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    return df


class Info:
    """A short answer with a rich display: a title and a few key/value rows."""

    def __init__(self, title: str, data: dict[str, Any] | None = None):
        self.title = title
        self.data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        lines = [self.title]
        lines += [f"  {k}: {v}" for k, v in self.data.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in self.data.items()
        )
        return f"<h4>{html.escape(self.title)}</h4>" + (f"<table>{rows}</table>" if rows else "")


class Deployed(Info):
    """What ``%pipe deploy`` answers: the deployment's id and state."""

    def __init__(self, deployment: dict[str, Any]):
        self.deployment = deployment
        keys = ("id", "name", "pipe", "version", "resolved_version", "state", "labels", "agents")
        data = {k: deployment.get(k) for k in keys if k in deployment}
        data["instances"] = deployment.get("instances")
        note = no_match(deployment)
        if note:
            data["warning"] = note + "; it stays pending until one does"
        updated = deployment.get("created_at") != deployment.get("updated_at")
        super().__init__(
            f"Deployment {deployment.get('name') or deployment.get('id')} of "
            f"{deployment.get('pipe')} {'updated' if updated else 'created'}: "
            f"{deployment.get('state')}",
            data,
        )

    @property
    def id(self) -> str:
        return self.deployment["id"]

    @property
    def state(self) -> str:
        return self.deployment.get("state", "")


class InstallLine(str):
    """What ``%pipe add-agent`` answers: the shell line itself (a ``str``, so it can be copied,
    printed or passed on), shown as a block of code to paste on a worker host."""

    def _repr_html_(self) -> str:
        return (
            "<p>Paste this on a worker host (it installs the agent from this server):</p>"
            f"<pre style='white-space:pre-wrap'>{html.escape(str(self))}</pre>"
        )

    def __repr__(self) -> str:
        return str(self)


class DeploymentStatus:
    """``%pipe status DEP``: its instances (a DataFrame, also reachable as ``status["col"]``)
    with why nothing runs (no agent matches) and the deployment's recent errors."""

    def __init__(self, deployment: dict[str, Any], df: Any, errors: list[str]):
        self.deployment = deployment
        self.df = df
        self.errors = errors
        self.note = no_match(deployment)

    def __getitem__(self, key: Any) -> Any:
        return self.df[key]

    def __len__(self) -> int:
        return len(self.df)

    def _title(self) -> str:
        d = self.deployment
        return f"Deployment {d.get('name') or d.get('id')} ({d.get('id')}): {d.get('state')}"

    def __repr__(self) -> str:
        lines = [self._title()]
        if self.note:
            lines.append(self.note)
        if len(self.df):
            lines.append(self.df.to_string())
        if self.errors:
            lines += ["recent errors:", *("  " + e for e in self.errors)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        out = [f"<h4>{html.escape(self._title())}</h4>"]
        if self.note:
            out.append(f"<p><b>{html.escape(self.note)}</b></p>")
        if len(self.df):
            out.append(self.df.to_html())
        if self.errors:
            items = "".join(f"<li><code>{html.escape(e)}</code></li>" for e in self.errors)
            out.append(f"<p>Recent errors:</p><ul>{items}</ul>")
        return "".join(out)


DEPLOYMENT_COLUMNS = [
    "id",
    "name",
    "pipe",
    "version",
    "resolved_version",
    "state",
    "running",
    "labels",
    "agents",
    "instances",
    "failover",
    "updated_at",
    "created_by",
    "updated_by",
]
INSTANCE_COLUMNS = [
    "agent_id",
    "agent_state",
    "state",
    "in_sync",
    "error",
    "metrics",
    "updated_at",
]
AGENT_COLUMNS = ["id", "name", "labels", "state", "enrolled", "pipes", "last_seen", "attributes"]


@magics_class
class PipeMagics(Magics):
    """``%%pipe`` and ``%pipe``; ``%config PipeMagics.limit = 50`` sets the preview limit."""

    limit = Int(1000, help="Events a %%pipe preview reads at most").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self.pipes: dict[str, Any] = {}
        self.last: Any = None
        self.client: Any = None
        self.dashboard: Any = None

    @property
    def _user_ns(self) -> dict[str, Any]:
        """The notebook's namespace: where a magic reads samples and leaves its results."""
        assert self.shell is not None  # magics are registered on a running IPython shell
        return self.shell.user_ns

    # ------------------------------------------------------------------ entry point
    @line_cell_magic
    def pipe(self, line: str = "", cell: str | None = None) -> Any:
        """Validate and preview a pipe (cell), or manage a pipenb server (line): %pipe help."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise MagicError(f"%pipe: {exc}") from None
        try:
            if cell is not None:
                return self._cell(argv, cell)
            if not argv or argv[0] in ("help", "-h", "--help"):
                print(USAGE)
                return None
            handler = getattr(self, f"_do_{argv[0].replace('-', '_')}", None)
            if handler is None:
                raise MagicError(f"%pipe: unknown command {argv[0]!r}\n\n{USAGE}")
            return handler(argv[1:])
        except MagicError:
            raise
        except ApiError as exc:
            raise MagicError(_api_message(exc)) from None
        except PipenbError as exc:
            raise MagicError(str(exc)) from None

    # ------------------------------------------------------------------ %%pipe
    def _cell(self, argv: list[str], cell: str) -> Any:
        from pipenb.pipe import Pipe

        p = _parser("%%pipe")
        p.add_argument("name", nargs="?")
        p.add_argument("--sample")
        p.add_argument("--limit", type=int)
        p.add_argument("--param", action="append")
        p.add_argument("--cluster")
        p.add_argument("--resume", action="store_true")
        p.add_argument("--partition-size")
        p.add_argument("--on")  # preview on this agent's real data (through the server)
        p.add_argument("--on-labels")
        p.add_argument("--timeout", type=float, default=10.0)
        args = p.parse_args(argv)
        text, offset = cell, 0
        if args.name and not re.search(r"(?m)^name\s*:", cell):
            # `%%pipe NAME` names a cell that has no name: of its own; lines keep their numbers
            text, offset = f"name: {args.name}\n{cell}", -1
        try:
            pipe = Pipe.from_yaml(text, _params(args.param), file="cell", line_offset=offset)
        except PipeSyntaxError as exc:
            raise MagicError(self._problems_text(exc, cell)) from None
        for key in {pipe.name, args.name} - {None}:
            self.pipes[key] = pipe
        self.last = pipe
        if args.cluster:  # run it whole on a cluster; the run's metrics go to the variable
            from pipenb.lang.units import parse_size

            try:
                size = parse_size(args.partition_size) if args.partition_size else None
            except ValueError as exc:
                raise UsageError(f"--partition-size {args.partition_size}: {exc}") from None
            report = pipe.run(cluster=args.cluster, resume=args.resume, partition_bytes=size)
            self._user_ns[args.name or "_pipe"] = report
            c = report["cluster"]
            return Info(
                f"pipe {pipe.name}: {report['state']} on {args.cluster}",
                {
                    "events in": report["input"]["events"],
                    "events out": report["output"]["events"],
                    "failed events": report["dead_letters"],
                    "partitions": c["partitions"],
                    "resumed": c["resumed"],
                    "workers": len(c["workers"]),
                    "seconds": report["uptime_s"],
                    "dashboard": c["dashboard"],
                },
            )
        if args.on or args.on_labels:
            result = pipe.preview(
                None,
                args.limit or 100,
                args.timeout,
                on=args.on,
                labels=args.on_labels,
                client=self._client(),
            )
            self._user_ns[args.name or "_pipe"] = result
            return result
        sample = self._sample(args.sample)
        limit = args.limit if args.limit is not None else self.limit
        result = pipe.preview(sample, limit)
        self._user_ns[args.name or "_pipe"] = result
        return result

    def _sample(self, ref: str | None) -> Any:
        if ref is None:
            return None
        ns = self._user_ns
        if ref in ns:
            return ns[ref]
        if os.path.exists(ref):
            return ref
        raise MagicError(f"--sample {ref}: no such variable or file")

    @staticmethod
    def _problems_text(exc: PipeSyntaxError, cell: str) -> str:
        lines = cell.splitlines()
        out = [f"The pipe is invalid ({len(exc.problems)} problem(s)):"]
        for prob in exc.problems:
            out.append(f"cell:{prob.line}:{prob.column}: {prob.message}")
            if 1 <= prob.line <= len(lines):
                out.append(f"    {lines[prob.line - 1]}")
                if prob.column >= 1:
                    out.append("    " + " " * (prob.column - 1) + "^")
        return "\n".join(out)

    # ------------------------------------------------------------------ helpers
    def _pipe(self, name: str | None) -> Any:
        if name is None:
            if self.last is None:
                raise MagicError("no pipe yet: run a %%pipe cell first")
            return self.last
        if name in self.pipes:
            return self.pipes[name]
        value = self._user_ns.get(name)
        from pipenb.pipe import Pipe

        if isinstance(value, Pipe):
            return value
        known = ", ".join(sorted(self.pipes)) or "none"
        raise MagicError(f"no pipe named {name!r} (known: {known})")

    def _client(self) -> Any:
        if self.client is None:
            if not os.environ.get("PIPENB_URL"):
                raise MagicError(
                    "not connected: %pipe connect URL --token T (or set PIPENB_URL/PIPENB_TOKEN)"
                )
            from pipenb.client import Client

            self.client = Client()
        return self.client

    # ------------------------------------------------------------------ line magics
    def _do_connect(self, argv: list[str]) -> Info:
        from pipenb.client import Client

        p = _parser("%pipe connect")
        p.add_argument("url", nargs="?")
        p.add_argument("--token")
        p.add_argument("--ca-file")
        p.add_argument("--ca-fingerprint")
        p.add_argument("--cert")
        p.add_argument("--key")
        args = p.parse_args(argv)
        try:
            client = Client.from_options(args)
            health = client.health()
            # Check the token too, so a wrong one shows now and not at the first deploy.
            client.agents()
        except PipenbError as exc:
            reason = _api_message(exc) if isinstance(exc, ApiError) else str(exc)
            if self.client is None:
                raise MagicError(f"not connected: {reason}") from None
            # say so: the cells below must not go to the old server without a word
            raise MagicError(
                f"{reason}\nstill connected to {self.client.url}, not to {args.url}"
            ) from None
        self.client = client
        return Info(
            f"Connected to {client.url}",
            {"url": client.url, "version": health.get("version"), "status": health.get("status")},
        )

    def _do_save(self, argv: list[str]) -> Info:
        p = _parser("%pipe save")
        p.add_argument("name", nargs="?")
        p.add_argument("--message", "-m", default="")
        args = p.parse_args(argv)
        pipe = self._pipe(args.name)
        res = self._client().push(pipe.yaml, args.message)
        what = "saved" if res.get("created") else "unchanged"
        return Info(f"Pipe {res['pipe']} version {res['version']} {what}", res)

    def _do_deploy(self, argv: list[str]) -> Deployed:
        p = _parser("%pipe deploy")
        p.add_argument("pipe", nargs="?")
        p.add_argument("--name")
        p.add_argument("--new", action="store_true")
        p.add_argument("--version")
        p.add_argument("--labels")
        p.add_argument("--agents")
        p.add_argument("--instances", default="all")
        p.add_argument("--failover", action="store_true")
        p.add_argument("--param", action="append")
        args = p.parse_args(argv)
        client = self._client()
        pipe = self._pipe_or_none(args.pipe)
        if pipe is not None:
            pushed = client.push(pipe.yaml)
            pipe_name, version = pushed["pipe"], pushed["version"]
        else:
            # a fresh kernel: no %%pipe cell ran, but the server may store the pipe already
            try:
                stored = client.pipe(args.pipe)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                known = ", ".join(sorted(self.pipes)) or "none"
                raise MagicError(
                    f"no pipe named {args.pipe!r} in this notebook (known: {known}) "
                    "nor on the server: run its %%pipe cell first"
                ) from None
            pipe_name, version = stored["pipe"], stored["version"]
        if args.version is not None:
            version = args.version  # "latest" follows later pushes; a number pins that one
        dep = client.deploy(
            pipe_name,
            version=version,
            params=_params(args.param),
            agents=_csv(args.agents),
            labels=_csv(args.labels),
            instances=args.instances,
            failover=args.failover,
            name=args.name or pipe_name,
            new=args.new,
        )
        return Deployed(dep)

    def _pipe_or_none(self, name: str | None) -> Any:
        """The notebook's pipe of that name, or None when only the server may know it."""
        if name is None or name in self.pipes:
            return self._pipe(name)
        from pipenb.pipe import Pipe

        value = self._user_ns.get(name)
        return value if isinstance(value, Pipe) else None

    def _do_status(self, argv: list[str]) -> Any:
        p = _parser("%pipe status")
        p.add_argument("deployment", nargs="?")
        args = p.parse_args(argv)
        client = self._client()
        if args.deployment:
            dep = client.deployment(args.deployment)
            errors = recent_errors(client.logs(dep["id"], limit=200)["logs"])
            return DeploymentStatus(dep, _df(dep.get("status") or [], INSTANCE_COLUMNS), errors)
        return _df(client.deployments()["deployments"], DEPLOYMENT_COLUMNS)

    def _do_agents(self, argv: list[str]) -> Any:
        _parser("%pipe agents").parse_args(argv)
        return _df(self._client().agents()["agents"], AGENT_COLUMNS)

    def _do_add_agent(self, argv: list[str]) -> InstallLine:
        p = _parser("%pipe add-agent")
        p.add_argument("--token", "--enroll-token", dest="token")
        p.add_argument("--labels")
        p.add_argument("--name")
        p.add_argument("--prefix", default="/opt/pipenb-agent")
        p.add_argument("--no-service", action="store_true")
        p.add_argument("--server-url")
        p.add_argument("--insecure-http", action="store_true")
        args = p.parse_args(argv)
        line = self._client().install_command(
            args.token,
            labels=_csv(args.labels),
            name=args.name,
            prefix=args.prefix,
            service=not args.no_service,
            server_url=args.server_url,
            insecure_http=args.insecure_http,
        )
        return InstallLine(line)

    def _do_stop(self, argv: list[str]) -> Deployed:
        p = _parser("%pipe stop")
        p.add_argument("deployment")
        args = p.parse_args(argv)
        return Deployed(self._client().stop(args.deployment))

    def _do_tap(self, argv: list[str]) -> Any:
        p = _parser("%pipe tap")
        p.add_argument("deployment")
        p.add_argument("--stage")
        p.add_argument("--limit", type=int, default=10)
        p.add_argument("--timeout", type=float, default=30.0)
        args = p.parse_args(argv)
        events = self._client().tap(
            args.deployment, stage=args.stage, limit=args.limit, timeout=args.timeout
        )
        return _df([e if isinstance(e, dict) else {"value": e} for e in events])

    def _do_test(self, argv: list[str]) -> Any:
        p = _parser("%pipe test")
        p.add_argument("name", nargs="?")
        args = p.parse_args(argv)
        return self._pipe(args.name).test()

    def _do_dashboard(self, argv: list[str]) -> Any:
        from pipenb.dashboard import Dashboard

        p = _parser("%pipe dashboard")
        p.add_argument("--interval", type=float, default=5.0)
        p.add_argument("--paused", action="store_true")
        args = p.parse_args(argv)
        if self.dashboard is not None:
            self.dashboard.stop()  # one refreshing view at a time; the old one keeps its data
        self.dashboard = Dashboard(self._client(), args.interval, autostart=not args.paused)
        return self.dashboard

    def _do_metrics(self, argv: list[str]) -> Any:
        import pandas as pd

        p = _parser("%pipe metrics")
        p.add_argument("deployment")
        p.add_argument("--agent")
        args = p.parse_args(argv)
        points = self._client().metrics(args.deployment, agent=args.agent)["metrics"]
        if not points:
            return pd.DataFrame(columns=["time", "agent_id"])
        df = pd.json_normalize(points)
        df.columns = [c[len("data.") :] if c.startswith("data.") else c for c in df.columns]
        return df.drop(columns=["deployment_id"], errors="ignore")
