"""Pipes: validated on push, immutable numbered versions, diffs, delete refused while deployed."""

from __future__ import annotations

import difflib
import hashlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from pipenb.errors import ApiError, PipeSyntaxError
from pipenb.lang.templates import builtin_values
from pipenb.lang.validate import load_pipe
from pipenb.server import models as M
from pipenb.server import roles
from pipenb.server.db_tables import DeploymentRow, PipeRow, PipeVersionRow, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pipenb.server.db import SessionScope
    from pipenb.server.services.deployments import DeploymentService

PLACEHOLDER_BUILTINS = builtin_values("agent", "agent", "pipe", "deployment")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def not_found(what: str, name: object) -> ApiError:
    return ApiError(404, "not_found", f"{what} {name!r} does not exist")


def invalid_pipe(exc: PipeSyntaxError) -> ApiError:
    return ApiError(
        400,
        "invalid_pipe",
        f"the pipe has {len(exc.problems)} problem(s): {exc.problems[0]}",
        [p.to_dict() for p in exc.problems],
    )


class PipeService:
    def __init__(self, session: SessionScope, deployments: DeploymentService):
        self.session = session
        self.deployments = deployments

    def push(self, body: M.PipePush) -> M.PipePushResult:
        return self.store(body, self.check(body))

    @staticmethod
    def check(body: M.PipePush) -> Any:
        """Validate a pushed pipe; the spec, or ApiError 400. Touches no shared state, so the
        handler runs it in a thread: a large pipe must not stall the check-ins meanwhile."""
        from pipenb.lang.tablefiles import check_names, provided

        why = check_names(body.files) if body.files else None
        if why is not None:
            raise ApiError(400, "invalid_files", why)
        try:
            with provided(body.files):  # lookup tables are validated from the pushed files
                spec = load_pipe(body.yaml, "<pushed>", builtins=PLACEHOLDER_BUILTINS)
        except PipeSyntaxError as exc:
            raise invalid_pipe(exc) from None
        return spec

    def store(self, body: M.PipePush, spec: Any) -> M.PipePushResult:
        """Store a pipe ``check`` accepted as a new version (unless it is the newest already)."""
        digest = content_hash(body.yaml)
        if body.files:  # a changed table is a new version too
            import json as _json

            digest = content_hash(body.yaml + "\0" + _json.dumps(body.files, sort_keys=True))
        _DESCRIBED[digest] = (spec.description, list(spec.labels))
        with self.session() as s:
            pipe = s.scalar(select(PipeRow).where(PipeRow.name == spec.name))
            if pipe is None:
                pipe = PipeRow(name=spec.name, created_at=utcnow())
                s.add(pipe)
                s.flush()
            latest = self._latest(s, pipe.id)
            if latest is not None and latest.hash == digest:
                return M.PipePushResult(pipe=spec.name, version=latest.version, created=False)
            version = (latest.version if latest else 0) + 1
            s.add(
                PipeVersionRow(
                    pipe_id=pipe.id,
                    version=version,
                    yaml=body.yaml,
                    hash=digest,
                    message=body.message,
                    created_at=utcnow(),
                    author=roles.current_name(),
                    files=dict(body.files) or None,
                )
            )
            follows = s.scalars(
                select(DeploymentRow.id).where(
                    DeploymentRow.pipe_id == pipe.id, DeploymentRow.version.is_(None)
                )
            ).all()
        if follows:  # deployments of "latest" move to the new version
            self.deployments.touch(list(follows))
        return M.PipePushResult(pipe=spec.name, version=version, created=True)

    @staticmethod
    def _latest(s: Session, pipe_id: int) -> PipeVersionRow | None:
        return s.scalar(
            select(PipeVersionRow)
            .where(PipeVersionRow.pipe_id == pipe_id)
            .order_by(PipeVersionRow.version.desc())
            .limit(1)
        )

    @staticmethod
    def _pipe(s: Session, name: str) -> PipeRow:
        pipe = s.scalar(select(PipeRow).where(PipeRow.name == name))
        if pipe is None:
            raise not_found("pipe", name)
        return pipe

    @classmethod
    def version_row(cls, s: Session, name: str, version: int | None) -> PipeVersionRow:
        """A pipe's version row (``None``: the newest); for any service, in its own session."""
        pipe = cls._pipe(s, name)
        if version is None:
            row = cls._latest(s, pipe.id)
        else:
            row = s.scalar(
                select(PipeVersionRow).where(
                    PipeVersionRow.pipe_id == pipe.id, PipeVersionRow.version == version
                )
            )
        if row is None:
            raise ApiError(404, "not_found", f"pipe {name!r} has no version {version}")
        return row

    def list(self) -> M.PipeList:
        with self.session() as s:
            counts = dict(
                s.execute(
                    select(PipeVersionRow.pipe_id, func.count()).group_by(PipeVersionRow.pipe_id)
                ).all()
            )
            deps = dict(
                s.execute(
                    select(DeploymentRow.pipe_id, func.count()).group_by(DeploymentRow.pipe_id)
                ).all()
            )
            out = []
            for pipe in s.scalars(select(PipeRow).order_by(PipeRow.name)):
                latest = self._latest(s, pipe.id)
                if latest is None:
                    continue
                desc, labels = _describe(latest.hash, latest.yaml)
                out.append(
                    M.PipeSummary(
                        name=pipe.name,
                        latest_version=latest.version,
                        versions=counts.get(pipe.id, 0),
                        description=desc,
                        labels=labels,
                        deployments=deps.get(pipe.id, 0),
                        updated_at=latest.created_at,
                        author=latest.author,
                    )
                )
        return M.PipeList(pipes=out)

    def show(self, name: str, version: int | None = None) -> M.PipeVersion:
        with self.session() as s:
            row = self.version_row(s, name, version)
            return _version(name, row, with_yaml=True)

    def versions(self, name: str) -> M.PipeVersionList:
        with self.session() as s:
            pipe = self._pipe(s, name)
            rows = s.scalars(
                select(PipeVersionRow)
                .where(PipeVersionRow.pipe_id == pipe.id)
                .order_by(PipeVersionRow.version)
            ).all()
            return M.PipeVersionList(pipe=name, versions=[_version(name, r) for r in rows])

    def diff(self, name: str, v1: int, v2: int) -> M.PipeDiff:
        with self.session() as s:
            a = self.version_row(s, name, v1)
            b = self.version_row(s, name, v2)
            text = "".join(
                difflib.unified_diff(
                    a.yaml.splitlines(keepends=True),
                    b.yaml.splitlines(keepends=True),
                    f"{name} v{v1}",
                    f"{name} v{v2}",
                )
            )
        return M.PipeDiff(pipe=name, from_version=v1, to_version=v2, diff=text)

    def delete(self, name: str) -> None:
        with self.session() as s:
            pipe = self._pipe(s, name)
            deps = s.scalars(select(DeploymentRow.id).where(DeploymentRow.pipe_id == pipe.id)).all()
            if deps:
                raise ApiError(
                    409,
                    "deployed",
                    f"pipe {name!r} is deployed ({', '.join(deps)}); delete those deployments first",
                    list(deps),
                )
            s.delete(pipe)


def _version(name: str, row: PipeVersionRow, with_yaml: bool = False) -> M.PipeVersion:
    return M.PipeVersion(
        pipe=name,
        version=row.version,
        hash=row.hash,
        message=row.message,
        created_at=row.created_at,
        yaml=row.yaml if with_yaml else None,
        files=sorted(row.files or {}),
        author=row.author,
    )


#: content hash -> (description, labels): listing pipes must not parse every pipe each time
_DESCRIBED: dict[str, tuple[str, list[str]]] = {}


def _describe(digest: str, yaml_text: str) -> tuple[str, list[str]]:
    got = _DESCRIBED.get(digest)
    if got is None:
        try:
            from pipenb.lang.tablefiles import provided

            with provided(None, lenient=True):
                spec = load_pipe(yaml_text, builtins=PLACEHOLDER_BUILTINS)
            got = (spec.description, list(spec.labels))
        except PipeSyntaxError:
            got = ("", [])
        if len(_DESCRIBED) >= 4096:
            _DESCRIBED.clear()
        _DESCRIBED[digest] = got
    return got
