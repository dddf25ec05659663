"""Previews on an agent's real data (issue 21): a real ``pipenb server``, real ``pipenb agent``
processes and their preview processes, real files, all on 127.0.0.1.

The pipe's text goes to the server, the agent runs it under its own policy and sends back each
stage's events; the client turns the answer into the same ``PreviewResult`` a local preview gives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipenb.client import Client
from pipenb.engine.preview import PreviewResult
from pipenb.errors import ApiError

from support.agentproc import AgentProcess, tmp_policy
from support.cli import run_cli
from support.serverproc import ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "ek-preview"

SERVER = {"enroll_key": ENROLL_KEY, "poll_interval": 1.0}  # the shared srv fixture


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., tuple[AgentProcess, str]]]:
    made: list[AgentProcess] = []

    def start(
        srv: ServerProcess,
        name: str,
        *,
        preview: bool = True,
        extra: tuple = (),
        data_dir: Path | None = None,
    ) -> Any:
        flags = (*tmp_policy(), *(("--allow-preview",) if preview else ()), *extra)
        agent = AgentProcess(
            srv.url,
            data_dir or tmp_path / f"agent-{name}",
            enroll_key=ENROLL_KEY,
            name=name,
            labels=[f"pv-{name}"],
            extra=flags,
        )
        made.append(agent)
        agent.start()
        return agent, agent.wait_enrolled()

    try:
        yield start
    finally:
        for agent in made:
            agent.cleanup()


def user(srv: ServerProcess, name: str, role: str) -> Client:
    r = srv.request("POST", "/users", json={"name": name, "role": role})
    assert r.status_code in (201, 409), r.text
    r = srv.request("POST", f"/users/{name}/tokens", json={})
    assert r.status_code == 201, r.text
    return Client(srv.url, r.json()["token"], timeout=10)


def pipe_text(src: Path, *, start_at: str | None = None) -> str:
    start = f", start-at: {start_at}" if start_at else ""
    return (
        "name: pv\n"
        "input:\n"
        f'  files: {{path: "{src}"{start}}}\n'
        "actions:\n"
        "  - parse: {format: logfmt}\n"
        '  - filter: level == "ERROR"\n'
        "output:\n"
        "  discard: {}\n"
    )


def write_log(path: Path, count: int, first: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for i in range(first, first + count):
            fh.write(f"level={'ERROR' if i % 3 == 0 else 'INFO'} n={i}\n")


def test_preview_on_an_agent_reads_its_own_files_stage_by_stage(
    srv: ServerProcess, client: Client, agents: Any, tmp_path: Path
) -> None:
    agent, aid = agents(srv, "web3")
    # the file lives in the agent's area; the notebook side only sends the pipe's text
    src = agent.data_dir.parent / "web3-area" / "app.log"
    write_log(src, 30)
    result = client.preview_on(aid, pipe_text(src), limit=9, timeout=5)
    assert isinstance(result, PreviewResult)
    # by default a files input shows the newest lines: the last 9 of 30
    raw = [e["_raw"] for e in result.stages[0].events]
    assert raw == [f"level={'ERROR' if i % 3 == 0 else 'INFO'} n={i}" for i in range(21, 30)]
    assert len(result.stages) == 3  # the input, parse, filter
    assert [e["n"] for e in result.stages[1].events] == [str(i) for i in range(21, 30)]
    assert [e["n"] for e in result.events] == ["21", "24", "27"]
    assert result.counts[-1]["in"] == 9 and result.counts[-1]["out"] == 3
    assert result.more and result.total == 30
    assert list(result.df["level"]) == ["ERROR"] * 3
    assert result.errors == []

    # start-at: beginning reads from the start of the file
    head = client.preview_on(aid, pipe_text(src, start_at="beginning"), limit=4, timeout=5)
    assert [e["n"] for e in head.stages[1].events] == ["0", "1", "2", "3"]
    assert [e["n"] for e in head.events] == ["0", "3"]


def test_preview_on_from_python_the_cli_and_the_magic(
    srv: ServerProcess, client: Client, agents: Any, tmp_path: Path
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from pipenb import Pipe

    agent, aid = agents(srv, "web7")
    src = agent.data_dir.parent / "web7-area" / "app.log"
    write_log(src, 12)
    text = pipe_text(src)
    # Pipe.preview(on=NAME): the agent's display name works as well as its id
    result = Pipe.from_yaml(text).preview(limit=6, on="web7", client=client)
    assert [e["n"] for e in result.events] == ["6", "9"]
    by_label = Pipe.from_yaml(text).preview(limit=3, labels="pv-web7", client=client)
    assert [e["n"] for e in by_label.stages[1].events] == ["9", "10", "11"]

    pipe_file = tmp_path / "pv.yaml"
    pipe_file.write_text(text)
    out = run_cli(
        "preview", pipe_file, "--on", aid, "--limit", "6", "--json",
        "--url", srv.url, "--token", srv.token,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [e["n"] for e in orjson.loads(out.stdout)["events"]] == ["6", "9"]
    out = run_cli("preview", pipe_file, "--on", "no-such-agent", "--url", srv.url, "--token",
                  srv.token)  # fmt: skip
    assert out.returncode == 2 and "no agent 'no-such-agent'" in out.stderr

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "pipenb")
    sh.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    got = sh.run_cell_magic("pipe", "pv_cell --on web7 --limit 6", text)
    assert [e["n"] for e in got.events] == ["6", "9"]
    assert sh.user_ns["pv_cell"] is got


def test_a_preview_outside_the_policy_is_refused_naming_the_rule(
    srv: ServerProcess, client: Client, agents: Any, tmp_path: Path
) -> None:
    _, aid = agents(srv, "strict")
    with pytest.raises(ApiError) as err:
        client.preview_on(aid, pipe_text(Path("/etc/passwd")), limit=5, timeout=3)
    message = str(err.value)
    assert "policy" in message and "read" in message and "/etc/passwd" in message

    # an agent whose policy does not allow previews refuses every one, saying so
    agent, closed = agents(srv, "closed", preview=False)
    src = agent.data_dir.parent / "closed-area" / "app.log"
    write_log(src, 3)
    with pytest.raises(ApiError) as err:
        client.preview_on(closed, pipe_text(src), limit=5, timeout=3)
    assert "rule 'preview'" in str(err.value) and "--allow-preview" in str(err.value)


def test_a_preview_never_moves_a_running_deployments_checkpoint(
    srv: ServerProcess, client: Client, agents: Any, tmp_path: Path
) -> None:
    agent, aid = agents(srv, "ckpt")
    src = tmp_path / "ckpt-area" / "app.log"
    write_log(src, 20)
    out = tmp_path / "ckpt-out.ndjson"
    text = (
        "name: pvdeploy\n"
        f"labels: [pv-ckpt]\n"
        f'input:\n  files: {{path: "{src}", poll-interval: 50ms}}\n'
        f'output:\n  file: {{path: "{out}", batch: {{size: 10, timeout: 50ms}}}}\n'
    )
    client.push(text)
    dep = client.deploy("pvdeploy")
    lines = lambda: out.read_text().splitlines() if out.exists() else []  # noqa: E731
    wait_until(lambda: len(lines()) == 20, timeout=30, what="the deployment's 20 lines")
    ckpt = agent.data_dir / "checkpoints" / f"{dep['id']}.json"
    size = str(src.stat().st_size)

    def position() -> Any:
        return orjson.loads(ckpt.read_bytes()) if ckpt.exists() else None

    # the checkpoint is at the end of what the deployment read (its offset: the file's size)
    wait_until(lambda: size in str(position()), timeout=30, what="the deployment's checkpoint")
    before = position()
    listing = sorted(os.listdir(agent.data_dir / "checkpoints"))
    for start in (None, "beginning"):
        result = client.preview_on(aid, pipe_text(src, start_at=start), limit=5, timeout=3)
        assert len(result.stages[0].events) == 5
    assert position() == before
    assert sorted(os.listdir(agent.data_dir / "checkpoints")) == listing  # no preview checkpoint
    # the deployment goes on exactly where it was: the next lines once, none again
    write_log(src, 5, first=20)
    wait_until(lambda: len(lines()) == 25, timeout=30, what="the 5 new lines")
    assert len(set(lines())) == 25


def test_a_preview_to_an_offline_agent_fails_clearly(
    srv: ServerProcess, client: Client, agents: Any
) -> None:
    agent, aid = agents(srv, "gone")
    # killed now: the server still thinks it online for a few seconds, queues the preview,
    # and reports it failed once the agent is seen offline (well within the preview's timeout)
    agent.kill()
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        client.preview_on(aid, pipe_text(Path("/var/log/x.log")), limit=5, timeout=20)
    assert time.monotonic() - started < 20 + 30
    assert "offline" in str(err.value) and aid in str(err.value)
    wait_until(
        lambda: client.agent(aid)["state"] == "offline", timeout=30, what="the agent offline"
    )
    with pytest.raises(ApiError) as err:
        client.preview_on(aid, pipe_text(Path("/var/log/x.log")), limit=5, timeout=2)
    assert err.value.status == 409
    assert "offline" in str(err.value) and aid in str(err.value)


def test_previews_are_readable_only_by_their_owner_and_editors_only(
    srv: ServerProcess, agents: Any, tmp_path: Path
) -> None:
    _, aid = agents(srv, "owners")
    src = tmp_path / "owners-area" / "app.log"
    write_log(src, 6)
    ann, bob = user(srv, "ann-pv", "editor"), user(srv, "bob-pv", "editor")
    viewer = user(srv, "vic-pv", "viewer")
    body = {"yaml": pipe_text(src), "limit": 3, "timeout": 3}
    mine = {c: c.request("POST", f"/agents/{aid}/previews", json=body)["id"] for c in (ann, bob)}
    for owner, pid in mine.items():
        wait_until(
            lambda o=owner, p=pid: o.request("GET", f"/previews/{p}")["state"] == "done",
            timeout=30,
            what="the preview's answer",
        )
        assert len(owner.request("GET", f"/previews/{pid}")["result"]["stages"][0]["events"]) == 3
    for reader, pid in ((bob, mine[ann]), (ann, mine[bob]), (viewer, mine[ann])):
        for path in (f"/previews/{pid}", f"/commands/{pid}"):
            with pytest.raises(ApiError) as err:
                reader.request("GET", path)
            assert err.value.status == 404
    with pytest.raises(ApiError) as err:  # viewers may not ask for one
        viewer.request("POST", f"/agents/{aid}/previews", json=body)
    assert err.value.status == 403


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs the agent to run as root")
def test_with_run_as_a_preview_runs_as_that_user(
    srv: ServerProcess, client: Client, agents: Any
) -> None:
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    data = Path(tempfile.mkdtemp(prefix="pipenb-pv-runas-"))
    data.chmod(0o755)
    try:
        _, aid = agents(
            srv, "runas", extra=("--allow-exec", "id", "--run-as", "nobody"), data_dir=data
        )
        text = (
            "name: who\ninput: {exec: {command: [id, -u], interval: 1h}}\noutput: {discard: {}}\n"
        )
        result = client.preview_on(aid, text, limit=1, timeout=5)
        assert [e["_raw"] for e in result.stages[0].events] == [str(nobody.pw_uid)]
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_command_expiry_is_shown_per_type(srv: ServerProcess, client: Client) -> None:
    expiry = {e["type"]: e for e in client.command_expiry()["expiry"]}
    assert set(expiry) == {"restart", "reset-checkpoint", "capture", "preview"}
    assert expiry["preview"]["kept_seconds"] <= 3600
    out = run_cli("agents", "command-expiry", "--url", srv.url, "--token", srv.token)
    assert out.returncode == 0 and "preview" in out.stdout and "600 s" in out.stdout, out.stderr


def test_a_done_preview_shows_when_it_expires(
    srv: ServerProcess, client: Client, agents: Any, tmp_path: Path
) -> None:
    from datetime import datetime, timedelta

    _, aid = agents(srv, "exp")
    src = tmp_path / "exp-area" / "app.log"
    write_log(src, 3)
    pid = client.request(
        "POST", f"/agents/{aid}/previews", json={"yaml": pipe_text(src), "timeout": 3}
    )["id"]
    wait_until(
        lambda: client.request("GET", f"/previews/{pid}")["state"] == "done",
        timeout=30,
        what="the preview's answer",
    )
    got = client.request("GET", f"/previews/{pid}")
    cmd = client.get_command(pid)  # its owner may read it as a command too
    kept = datetime.fromisoformat(cmd["expires_at"]) - datetime.fromisoformat(cmd["acked_at"])
    assert kept == timedelta(seconds=600)
    assert got["expires_at"] == cmd["expires_at"]
