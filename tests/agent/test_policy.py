"""Agent policy (issue 12, part 1): what pipes may touch on a worker host, set there.

Unit tests of the checks (globs, ``host:port`` patterns, commands, the protected paths), then
real ``pipenb server`` and ``pipenb agent`` processes on 127.0.0.1: for every input and output
that touches the host, a pipe outside the policy is refused at deploy time naming the rule, and
at run time where a symlink (or a name's address) leads outside; the two attacks of the issue
fail whatever the policy; workers never see ``PIPENB_*`` variables; ``--run-as`` switches users.
"""

from __future__ import annotations

import html
import json
import os
import secrets
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipenb.client import Client
from pipenb.dashboard import Dashboard
from pipenb.errors import PolicyError
from pipenb.lang.registry import registry
from pipenb.lang.validate import load_pipe
from pipenb.policy import Policy, PolicyFileError, check_pipe
from pipenb.policy.guard import Guard
from pipenb.policy.model import load_file
from pipenb.policy.pipe import COMPONENTS
from pipenb.policy.rules import endpoint_allowed, glob_matches, parse_endpoint, protected_paths

from support.agentproc import AgentProcess
from support.cli import cli_env
from support.httpsink import HttpSink
from support.processes import free_port
from support.serverproc import ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "ek-policy"
TMP = os.path.realpath(tempfile.gettempdir())
SITE = os.path.realpath(site.getsitepackages()[0])
ECHO = "{echo: {events: [{n: 1}]}}"

#: components that touch nothing on the host (a new one must be placed here or in COMPONENTS)
HOST_FREE = {
    ("input", "echo"),
    ("input", "cron"),
    ("input", "stdin"),
    ("output", "print"),
    ("output", "discard"),
}


# ------------------------------------------------------------------------------ unit: rules


@pytest.mark.parametrize(
    ("pattern", "path", "static", "match"),
    [
        ("/var/log/**", "/var/log/syslog", False, True),
        ("/var/log/**", "/var/log/nginx/access.log", False, True),
        ("/var/log/**", "/var/logs/x", False, False),
        ("/var/log/*.log", "/var/log/a.log", False, True),
        ("/var/log/*.log", "/var/log/nginx/a.log", False, False),  # * stays in its segment
        ("/var/log/?.log", "/var/log/a.log", False, True),
        ("/var/log/[!x]*", "/var/log/a", False, True),
        # deploy time: the pipe's own wildcards are characters a policy ? or class never covers
        ("/var/log/**", "/var/log/app/*.log", True, True),
        ("/var/log/*.log", "/var/log/*.log", True, True),
        ("/var/log/?.log", "/var/log/*.log", True, False),
        ("/var/log/[!b]", "/var/log/*", True, False),
        ("/var/log/**", "/var/**", True, False),
    ],
)
def test_glob_rules(pattern: str, path: str, static: bool, match: bool) -> None:
    assert glob_matches(pattern, path, static) is match


@pytest.mark.parametrize(
    ("patterns", "host", "port", "ip", "allowed"),
    [
        (("*:*",), "example.com", 443, None, True),
        (("*.example.com:443",), "api.example.com", 443, None, True),
        (("*.example.com:443",), "api.example.com", 80, None, False),
        (("*.example.com:443",), "example.org", 443, None, False),
        (("10.0.0.0/8:*",), "10.1.2.3", 9000, None, True),
        (("10.0.0.0/8:*",), "11.1.2.3", 9000, None, False),
        (("10.0.0.0/8:*",), "db.internal", 5432, None, None),  # only its address can tell
        (("10.0.0.0/8:*",), "db.internal", 5432, "10.9.9.9", True),
        (("127.0.0.1:8000-8999",), "127.0.0.1", 8500, None, True),
        (("127.0.0.1:8000-8999",), "127.0.0.1", 9000, None, False),
        (("[::1]:*",), "::1", 80, None, True),
        (("*:1024-65535",), "0.0.0.0", 514, None, False),
        (("*:1024-65535",), "0.0.0.0", None, None, True),  # port 0: checked once bound
    ],
)
def test_endpoint_patterns(
    patterns: tuple[str, ...], host: str, port: int | None, ip: str | None, allowed: bool | None
) -> None:
    assert endpoint_allowed(patterns, host, port, ip) is allowed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("example.com", "not host:port"),
        ("::1:80", "IPv6 address in brackets"),
        ("host:http", "the port must be"),
        ("host:9-1", "low to high"),
        ("a b:80", "not a host name"),
    ],
)
def test_bad_endpoint_patterns_say_how_to_write_them(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_endpoint(text)


def test_a_policy_file_in_yaml_and_its_mistakes(tmp_path: Path) -> None:
    f = tmp_path / "policy.yml"
    f.write_text(
        "# this host's rules\nread: [/var/log/**, /srv/app/*.log]\nwrite: [/srv/out]\n"
        "connect: ['*.example.com:443', 10.0.0.0/8:*]\nlisten: ['127.0.0.1:5140']\n"
        "exec: [df, /usr/bin/uptime]\nscripts: true\npreview: false\n"
    )
    p = Policy.for_agent(str(tmp_path / "data"), load_file(str(f)), policy_file=str(f))
    assert p.read == ("/var/log/**", "/srv/app/*.log") and p.write == ("/srv/out",)
    assert p.connect == ("*.example.com:443", "10.0.0.0/8:*")
    assert p.exec == ("df", "/usr/bin/uptime") and p.scripts and not p.preview
    assert str(f) in p.protected and str((tmp_path / "data").resolve()) in p.protected
    assert p.to_dict()["exec"] == ["df", "/usr/bin/uptime"]
    # the defaults: read /var/log/**, write DATA_DIR/out, connect anywhere, listen >= 1024,
    # exec and scripts off
    d = Policy.for_agent(str(tmp_path / "data")).to_dict()
    assert (d["read"], d["connect"], d["listen"]) == (["/var/log/**"], ["*:*"], ["*:1024-65535"])
    assert d["write"] == [str(tmp_path / "data" / "out")]
    assert (d["exec"], d["scripts"], d["preview"]) == ("off", False, False)

    for text, says in [
        ("reed: [/x]\n", "unknown key 'reed'; the keys are read, write"),
        ("read: [var/log]\n", "read entry 'var/log' must be an absolute path"),
        ("connect: [example.com]\n", "connect: 'example.com' is not host:port"),
        ("scripts: maybe\n", "scripts: expected true or false"),
        ("read: [unclosed\n", "is not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ]:
        f.write_text(text)
        with pytest.raises(PolicyFileError, match=says):
            Policy.for_agent(str(tmp_path / "data"), load_file(str(f)))


def test_every_component_that_touches_the_host_has_a_rule() -> None:
    """A new input, output or action is either checked (pipenb/policy/pipe.py COMPONENTS) or
    listed here as touching nothing on the host; forgetting both fails this test."""
    known = set(COMPONENTS) | HOST_FREE
    missing = []
    for c in registry.all():
        if c.kind in ("input", "output") and (c.kind, c.name) not in known:
            missing.append(f"{c.kind} {c.name}")
        if c.kind == "action" and c.capability and (c.kind, c.name) not in COMPONENTS:
            missing.append(f"action {c.name}")
    assert not missing, f"add these to pipenb/policy/pipe.py COMPONENTS or HOST_FREE: {missing}"


# ------------------------------------------------------------------------------ unit: check_pipe


def _policy(tmp: Path, **values: Any) -> Policy:
    return Policy.for_agent(str(tmp / "data"), values)


def _check(yaml_text: str, policy: Policy) -> list[str]:
    return check_pipe(load_pipe(yaml_text), policy)


STRICT = {
    "read": ["/srv/logs/**"],
    "write": ["/srv/out"],
    "connect": ["127.0.0.1:9000", "*.example.com:443"],
    "listen": ["127.0.0.1:5000-5999"],
    "exec": ["echo"],
}

#: (input, output, action, the message) for every component that touches the host
REFUSED = [
    ("{files: {path: /etc/hostname}}", None, None,
     "files path /etc/hostname is outside this agent's read policy: /srv/logs/**"),
    ("{files: {path: '/srv/logs/../../etc/*'}}", None, None,
     "files path /etc/* is outside this agent's read policy"),
    (None, "{file: {path: /var/tmp/x.ndjson}}", None,
     "file path /var/tmp/x.ndjson is outside this agent's write policy: /srv/out"),
    (None, "{file: {path: '/srv/out/../etc/${name}.json'}}", None,
     "is outside this agent's write policy"),
    ("{exec: {command: [ls, /]}}", None, None,
     "exec command 'ls' is not in this agent's exec policy: echo"),
    ("{exec: {command: 'echo hi; cat /etc/passwd'}}", None, None,
     "is a shell command line, which this agent's exec policy (echo) does not allow"),
    ("{exec: {command: [echo], env: {LD_PRELOAD: /tmp/x.so}}}", None, None,
     "sets LD_PRELOAD, which would change the program that runs"),
    ("{http-poll: {url: 'http://127.0.0.1:9001/x'}}", None, None,
     "http-poll url http://127.0.0.1:9001/x connects to 127.0.0.1:9001, outside this "
     "agent's connect policy: 127.0.0.1:9000, *.example.com:443"),
    (None, "{http-post: {url: 'https://evil.example.org/'}}", None,
     "http-post url https://evil.example.org/ connects to evil.example.org:443, outside"),
    (None, "{tcp: {address: '10.0.0.1:9000'}}", None,
     "tcp address 10.0.0.1:9000 connects to 10.0.0.1:9000, outside this agent's connect"),
    (None, "{udp: {address: '127.0.0.1:514'}}", None,
     "udp address 127.0.0.1:514 connects to 127.0.0.1:514, outside"),
    ("{tcp: {address: ':5140'}}", None, None,
     "tcp address 0.0.0.0:5140 is outside this agent's listen policy: 127.0.0.1:5000-5999"),
    ("{udp: {address: '127.0.0.1:514'}}", None, None,
     "udp address 127.0.0.1:514 is outside this agent's listen policy"),
    ("{http-server: {address: '127.0.0.1:8080'}}", None, None,
     "http-server address 127.0.0.1:8080 is outside this agent's listen policy"),
    (None, None, "{script: {code: 'def process(e): return e'}}",
     "the script action is refused: this agent's scripts policy is off"),
]  # fmt: skip


def pipe_doc(inp: str | None, out: str | None, action: str | None, name: str = "p") -> str:
    doc = f"name: {name}\ninput: {inp or ECHO}\n"
    if action:
        doc += f"actions:\n  - {action}\n"
    return doc + f"output: {out or '{discard: {}}'}\n"


@pytest.mark.parametrize(("inp", "out", "action", "message"), REFUSED)
def test_check_pipe_names_the_rule_it_breaks(
    tmp_path: Path, inp: str | None, out: str | None, action: str | None, message: str
) -> None:
    refused = _check(pipe_doc(inp, out, action), _policy(tmp_path, **STRICT))
    assert len(refused) == 1 and message in refused[0], refused


@pytest.mark.parametrize(
    ("inp", "out", "action"),
    [
        ("{files: {path: '/srv/logs/app/*.log'}}", "{file: {path: '/srv/out/${app}.ndjson'}}", None),
        ("{exec: {command: [echo, hi]}}", None, None),
        ("{exec: {command: 'echo hi'}}", None, None),
        ("{http-poll: {url: 'http://127.0.0.1:9000/'}}", "{http-post: {url: 'https://a.example.com/'}}", None),
        ("{tcp: {address: '127.0.0.1:5140'}}", "{tcp: {address: '127.0.0.1:9000'}}", None),
        ("{udp: {address: '127.0.0.1:0'}}", None, None),  # a free port: checked once bound
        ("{http-server: {address: '127.0.0.1:5999'}}", None, None),
    ],
)  # fmt: skip
def test_check_pipe_allows_what_the_policy_allows(
    tmp_path: Path, inp: str, out: str | None, action: str | None
) -> None:
    assert _check(pipe_doc(inp, out, action), _policy(tmp_path, **STRICT)) == []


def test_the_agents_own_files_python_and_host_secrets_are_out_of_reach_whatever_the_policy(
    tmp_path: Path,
) -> None:
    policy = _policy(tmp_path, read=["/**"], write=["/"], exec="any", scripts=True)
    data = str((tmp_path / "data").resolve())
    cases = {
        f"{data}/identity.json": "the agent's own data dir",
        f"{data}/checkpoints/*.json": "the agent's own data dir",
        "/etc/shadow": "the host's credentials",
        f"{SITE}/x.py": "the Python installation",
        "/proc/*/environ": "matches /proc/*/environ (processes' secrets and keys)",
        "/proc/1/cmdline": "matches /proc/*/cmdline",
    }
    for path, what in cases.items():
        (msg,) = _check(pipe_doc(f"{{files: {{path: '{path}'}}}}", None, None), policy)
        assert what in msg and "no pipe may read whatever the policy says" in msg, msg
    for path in (f"{SITE}/evil.pth", f"{data}/identity.json", f"{sys.prefix}/bin/python"):
        (msg,) = _check(pipe_doc(None, f"{{file: {{path: '{path}'}}}}", None), policy)
        assert "no pipe may write whatever the policy says" in msg, msg
    # ... except the default output dir inside the data dir
    assert _check(pipe_doc(None, f"{{file: {{path: '{data}/out/x.ndjson'}}}}", None), policy) == []
    # directories Python imports from (PYTHONPATH, an editable install) are readable, not writable
    code_dir = next(iter(policy.unwritable))
    assert _check(pipe_doc(f"{{files: {{path: '{code_dir}/*.md'}}}}", None, None), policy) == []
    (msg,) = _check(
        pipe_doc(None, f"{{file: {{path: '{code_dir}/sitecustomize.py'}}}}", None), policy
    )
    assert "a directory Python imports code from" in msg


def test_protected_paths_on_python_3_10_whose_flags_have_no_safe_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.10 (which pipenb supports) has no ``sys.flags.safe_path``: its workers start
    without -P, so the working directory at the head of sys.path is left out, not a crash."""
    import types

    cwd, code = tmp_path / "cwd", tmp_path / "code"
    cwd.mkdir()
    code.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setattr(sys, "flags", types.SimpleNamespace())  # no safe_path attribute
    monkeypatch.setattr(sys, "path", ["", str(code)])
    _, readable_only = protected_paths(str(tmp_path / "data"))
    assert str(code.resolve()) in readable_only
    assert str(cwd.resolve()) not in readable_only


def test_the_guard_resolves_symlinks_and_programs(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "secret.txt").write_text("s3cret\n")
    (allowed / "link.log").symlink_to(tmp_path / "secret.txt")
    (allowed / "ok.log").write_text("ok\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "echo").symlink_to("/bin/sh")  # an "echo" that is a shell
    g = Guard(_policy(tmp_path, read=[f"{allowed}/**", "/proc/**"], exec=["echo"]))
    assert g.read(str(allowed / "ok.log"), "files path") == str(allowed / "ok.log")
    for proc, what in (("self", "this worker's process"), (os.getppid(), "the agent's process")):
        with pytest.raises(PolicyError, match=f"is inside {what}"):
            g.read(f"/proc/{proc}/environ", "files path")
    with pytest.raises(PolicyError, match=r"resolves to .*secret\.txt\) is outside") as exc:
        g.read(str(allowed / "link.log"), "files path")
    assert exc.value.rule == "read"
    g.exec("exec command", ["echo", "hi"], None)
    with pytest.raises(PolicyError, match="sets PATH"):
        g.exec("exec command", ["echo", "hi"], {"PATH": str(bin_dir)})
    with pytest.raises(PolicyError, match="not in this agent's exec policy"):
        g.exec("exec command", [str(bin_dir / "echo"), "hi"], None)


# ------------------------------------------------------------------------------ processes

SERVER = {"enroll_key": ENROLL_KEY, "poll_interval": 1}  # the shared srv fixture


@pytest.fixture
def agents(srv: ServerProcess, tmp_path: Path) -> Iterator[Any]:
    made: list[AgentProcess] = []

    def start(name: str, *flags: str, data_dir: Path | None = None, **kw: Any) -> AgentProcess:
        a = AgentProcess(
            srv.url,
            data_dir or tmp_path / f"agent-{name}",
            enroll_key=ENROLL_KEY,
            name=name,
            labels=kw.pop("labels", [f"policy-{secrets.token_hex(3)}"]),
            long_poll=2,
            extra=flags,
            **kw,
        )
        made.append(a)
        a.start()
        a.wait_enrolled()
        return a

    try:
        yield start
    finally:
        for a in made:
            a.cleanup()
        for a in made:
            print(f"==== {a.log}\n{a.log_text()}")
            for f in sorted((a.data_dir / "logs").glob("*.log")):
                print(f"==== {f}\n{f.read_text(errors='replace')[-3000:]}")


def instance(client: Client, dep_id: str) -> dict[str, Any]:
    (s,) = client.deployment(dep_id)["status"]
    return s


def deploy(client: Client, yaml_text: str, agent_id: str) -> dict[str, Any]:
    name = yaml_text.split("\n", 1)[0].split(":", 1)[1].strip()
    client.push(yaml_text)
    return client.deploy(name, agents=[agent_id], labels=[])


def reported(client: Client, dep_id: str, state: str) -> dict[str, Any] | None:
    s = instance(client, dep_id)
    return s if s["state"] == state else None


@pytest.fixture
def receiver() -> Iterator[HttpSink]:
    """An HTTP server on 127.0.0.1 that records every request (what a pipe sent out)."""
    with HttpSink() as r:
        yield r


# ------------------------------------------------------------------------------ deploy time


def test_every_host_component_outside_the_policy_is_refused_at_deploy_time(
    client: Client, agents: Any, srv: ServerProcess, tmp_path: Path
) -> None:
    """One strict agent, one pipe per rule: the deploy answer already says ``refused`` with the
    rule; the agent refuses each too (it reports them: its state turns ``degraded``), starts no
    worker for any, and the CLI and the dashboard show the rule."""
    ok, bad = free_port(), free_port()
    a = agents(
        "strict",
        "--allow-read", f"{tmp_path}/logs/**",
        "--allow-write", f"{tmp_path}/out",
        "--allow-connect", f"127.0.0.1:{ok}",
        "--allow-listen", "127.0.0.1:20000-29999",
        "--allow-exec", "echo",
    )  # fmt: skip
    aid = a.agent_id
    assert aid is not None
    cases = {
        "files": (f"{{files: {{path: '{tmp_path}/etc/*.conf'}}}}", None, None,
                  f"files path {tmp_path}/etc/*.conf is outside this agent's read policy: "
                  f"{tmp_path}/logs/**"),
        # the server renders each agent's own values into the pipe before checking it
        "file": (None, f"{{file: {{path: '{tmp_path}/elsewhere/{{{{agent.id}}}}.ndjson'}}}}", None,
                 f"file path {tmp_path}/elsewhere/{aid}.ndjson is outside this agent's write "
                 f"policy: {tmp_path}/out"),
        "exec": ("{exec: {command: [id]}}", None, None,
                 "exec command 'id' is not in this agent's exec policy: echo"),
        "http-poll": (f"{{http-poll: {{url: 'http://127.0.0.1:{bad}/'}}}}", None, None,
                      f"connects to 127.0.0.1:{bad}, outside this agent's connect policy: "
                      f"127.0.0.1:{ok}"),
        "http-post": (None, f"{{http-post: {{url: 'http://127.0.0.1:{bad}/'}}}}", None,
                      f"http-post url http://127.0.0.1:{bad}/ connects to 127.0.0.1:{bad}"),
        "tcp-out": (None, f"{{tcp: {{address: '127.0.0.1:{bad}'}}}}", None,
                    f"tcp address 127.0.0.1:{bad} connects to"),
        "udp-out": (None, f"{{udp: {{address: '127.0.0.1:{bad}'}}}}", None,
                    f"udp address 127.0.0.1:{bad} connects to"),
        "tcp-in": ("{tcp: {address: '127.0.0.1:1514'}}", None, None,
                   "tcp address 127.0.0.1:1514 is outside this agent's listen policy: "
                   "127.0.0.1:20000-29999"),
        "udp-in": ("{udp: {address: ':25000'}}", None, None,
                   "udp address 0.0.0.0:25000 is outside this agent's listen policy"),
        "http-server": ("{http-server: {address: '127.0.0.1:8080'}}", None, None,
                        "http-server address 127.0.0.1:8080 is outside"),
        "script": (None, None, "{script: {code: 'def process(e): return e'}}",
                   "the script action is refused: this agent's scripts policy is off"),
    }  # fmt: skip
    deps = {}
    for what, (inp, out, action, message) in cases.items():
        name = f"pol-{what}-{secrets.token_hex(2)}"
        dep = deploy(client, pipe_doc(inp, out, action, name), aid)
        (st,) = dep["status"]
        # the deploy answer itself: refused, with the rule (the server checked the policy the
        # agent reported)
        assert st["state"] == "refused" and message in st["error"], (what, st)
        assert dep["state"] == "degraded"
        deps[what] = (dep["id"], message)
    # the agent refuses them too: it reports them refused, which degrades it (only its own
    # reports do), and no worker of theirs is left or restarted
    wait_until(lambda: client.agent(aid)["state"] == "degraded", 30, "the agent's own refusals")
    wait_until(lambda: not a.worker_pids(), 20, "no worker left")
    for what, (dep_id, message) in deps.items():
        st = instance(client, dep_id)
        assert st["state"] == "refused" and message in st["error"], (what, st)
    assert "restarting pipe" not in a.log_text()
    # the agent's own entry counts them (the Fleet panel shows it)
    assert client.agent(aid)["refused"] == len(cases)
    assert [x["refused"] for x in client.agents()["agents"] if x["id"] == aid] == [len(cases)]

    # the CLI and the dashboard show it
    dep_id, message = deps["files"]
    env = cli_env(PIPENB_URL=srv.url, PIPENB_TOKEN=srv.token)
    cli = subprocess.run(
        [sys.executable, "-m", "pipenb", "deployments", "status", dep_id],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "refused" in cli.stdout and "outside this agent's read policy" in cli.stdout
    dash = Dashboard(client, autostart=False)
    try:
        dash.refresh()
        assert html.escape(message) in dash._rows[dep_id][1].value
        assert f"{aid}: refused: {message}" in repr(dash)
    finally:
        dash.close()


def test_a_worker_refuses_on_its_own_what_its_policy_refuses(tmp_path: Path) -> None:
    """The server is not trusted: a worker handed a pipe its policy refuses reports it
    ``refused`` with the same message the server's check gives, and exits without running it."""
    canary = tmp_path / "canary"
    policy = _policy(tmp_path, exec=["echo"])
    yaml_text = (
        f"name: w\ninput: {{exec: {{command: [touch, '{canary}']}}}}\noutput: {{discard: {{}}}}\n"
    )
    job = {
        "deployment_id": "dep-local",
        "yaml": yaml_text,
        "params": {},
        "builtins": None,
        "hash": "h",
        "data_dir": str(tmp_path / "data"),
        "allow": ["exec"],
        "policy": policy.to_dict(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pipenb.agent.worker_main"],
        input=orjson.dumps(job) + b"\n",
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr  # EXIT_REFUSED: the agent does not restart it
    (msg,) = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert msg == {"type": "status", "state": "refused", "error": _check(yaml_text, policy)[0]}
    assert "exec command 'touch' is not in this agent's exec policy: echo" in msg["error"]
    assert not canary.exists()


# ------------------------------------------------------------------------------ run time


def test_paths_that_resolve_outside_through_a_symlink_are_refused_at_run_time(
    client: Client, agents: Any, tmp_path: Path
) -> None:
    """Each pipe passes the deploy-time check (its paths, as written, are inside the policy);
    its worker refuses it where the file is opened, because a symlink leads outside."""
    logs, out, outside = tmp_path / "logs", tmp_path / "out", tmp_path / "outside"
    for d in (logs, out, outside):
        d.mkdir()
    (outside / "secret.log").write_text("s3cret\n")
    (logs / "app.log").write_text("fine\n")
    (logs / "z-link.log").symlink_to(outside / "secret.log")
    (out / "escape").symlink_to(outside)
    (outside / "code.py").write_text("def process(e):\n    return e\n")
    (logs / "script.py").symlink_to(outside / "code.py")
    a = agents(
        "symlinks",
        "--allow-read", f"{logs}/**",
        "--allow-write", str(out),
        "--allow-scripts",
    )  # fmt: skip
    aid = a.agent_id
    assert aid is not None
    cases = {
        "files": (f"{{files: {{path: '{logs}/*.log', poll-interval: 50ms}}}}", None, None,
                  f"files path {logs}/z-link.log (resolves to {outside}/secret.log) is "
                  f"outside this agent's read policy: {logs}/**"),
        "file": (None, f"{{file: {{path: '{out}/escape/x.ndjson'}}}}", None,
                 f"file path {out}/escape/x.ndjson (resolves to {outside}/x.ndjson) is "
                 f"outside this agent's write policy: {out}"),
        "script": (None, None, f"{{script: {{file: '{logs}/script.py'}}}}",
                   f"script file {logs}/script.py (resolves to {outside}/code.py) is outside"),
    }  # fmt: skip
    for what, (inp, outp, action, message) in cases.items():
        dep = deploy(client, pipe_doc(inp, outp, action, f"sym-{what}-{secrets.token_hex(2)}"), aid)
        assert dep["status"][0]["state"] != "refused", dep["status"]  # passes at deploy time
        st = wait_until(
            lambda d=dep["id"]: reported(client, d, "refused"),
            30,
            f"{what} refused at run time",
            lambda d=dep["id"]: instance(client, d),
        )
        assert message in st["error"], (what, st["error"])
    assert not (outside / "x.ndjson").exists()  # nothing was written through the link
    assert "restarting pipe" not in a.log_text()


def test_names_that_resolve_outside_the_network_policy_are_refused_at_run_time(
    client: Client, agents: Any, receiver: HttpSink
) -> None:
    """A host name passes at deploy time when only its address can tell (the policy names
    networks); where the socket is opened, ``localhost`` resolves to 127.0.0.1, outside."""
    a = agents(
        "names",
        "--allow-connect", "127.0.0.2/32:*",
        "--allow-listen", "127.0.0.2/32:*",
    )  # fmt: skip
    aid = a.agent_id
    assert aid is not None
    port = receiver.port
    cases = {
        "http-post": (None, f"{{http-post: {{url: 'http://localhost:{port}/in'}}}}",
                      f"http-post url http://localhost:{port}/in connects to localhost:{port} "
                      "(address 127.0.0.1), outside this agent's connect policy: 127.0.0.2/32:*"),
        "http-poll": (f"{{http-poll: {{url: 'http://localhost:{port}/'}}}}", None,
                      f"http-poll url http://localhost:{port}/ connects to localhost:{port}"),
        "tcp-out": (None, f"{{tcp: {{address: 'localhost:{port}'}}}}",
                    f"tcp address localhost:{port} connects to localhost:{port} (address 127.0.0.1)"),
        "udp-out": (None, f"{{udp: {{address: 'localhost:{port}'}}}}",
                    f"udp address localhost:{port} connects to localhost:{port} (address 127.0.0.1)"),
        "tcp-in": ("{tcp: {address: 'localhost:0'}}", None,
                   "tcp address localhost:* is outside this agent's listen policy: 127.0.0.2/32:*"),
        "udp-in": ("{udp: {address: 'localhost:0'}}", None, "udp address localhost:* is outside"),
        "http-server": ("{http-server: {address: 'localhost:0'}}", None,
                        "http-server address localhost:* is outside"),
    }  # fmt: skip
    for what, (inp, outp, message) in cases.items():
        dep = deploy(client, pipe_doc(inp, outp, None, f"net-{what}-{secrets.token_hex(2)}"), aid)
        assert dep["status"][0]["state"] != "refused", dep["status"]
        st = wait_until(
            lambda d=dep["id"]: reported(client, d, "refused"),
            30,
            f"{what} refused at run time",
            lambda d=dep["id"]: instance(client, d),
        )
        assert message in st["error"], (what, st["error"])
    assert receiver.requests == []  # nothing reached the receiver


# ------------------------------------------------------------------------------ the attacks


def test_attack_a_pth_file_into_site_packages_fails_whatever_the_policy(
    client: Client, agents: Any, tmp_path: Path
) -> None:
    """Issue 12: an echo -> file pipe wrote a .pth into the agent's site-packages, and the next
    worker start ran it. With ``write: /`` (everything), directly and through a symlink."""
    a = agents("pth", "--allow-read", "/**", "--allow-write", "/")
    aid = a.agent_id
    assert aid is not None
    evil = f"pipenb_attack_{secrets.token_hex(3)}.pth"
    payload = "{echo: {events: [{_raw: 'import os; os.system(\"touch /tmp/pwned\")'}]}}"
    direct = f"name: pth-direct\ninput: {payload}\noutput: {{file: {{path: '{SITE}/{evil}', format: raw}}}}\n"
    dep = deploy(client, direct, aid)
    (st,) = dep["status"]
    assert st["state"] == "refused", st
    assert f"file path {SITE}/{evil} is inside the Python installation" in st["error"]
    assert "which no pipe may write whatever the policy says" in st["error"]

    (tmp_path / "lib").symlink_to(SITE)
    linked = f"name: pth-link\ninput: {payload}\noutput: {{file: {{path: '{tmp_path}/lib/{evil}', format: raw}}}}\n"
    dep = deploy(client, linked, aid)
    assert dep["status"][0]["state"] != "refused"  # as written, the path is inside write: /
    st = wait_until(lambda: reported(client, dep["id"], "refused"), 30, "refused at run time")
    assert f"(resolves to {SITE}/{evil})" in st["error"] and "Python installation" in st["error"]
    assert not Path(SITE, evil).exists()


def test_attack_reading_shadow_and_the_agents_identity_fails_whatever_the_policy(
    client: Client, agents: Any, tmp_path: Path, receiver: HttpSink
) -> None:
    """Issue 12: a files -> http-post pipe sent out /etc/shadow and the agent's identity.json
    (its key). With ``read: /**``, directly and through symlinks: nothing is sent."""
    a = agents("reader", "--allow-read", "/**", "--allow-write", "/")
    aid = a.agent_id
    assert aid is not None
    ident = a.data_dir.resolve() / "identity.json"
    post = f"{{http-post: {{url: 'http://127.0.0.1:{receiver.port}/loot'}}}}"
    for path, what in (
        ("/etc/shadow", "the host's credentials"),
        (ident, "the agent's own data dir"),
    ):
        dep = deploy(
            client,
            pipe_doc(f"{{files: {{path: '{path}'}}}}", post, None, f"steal-{secrets.token_hex(2)}"),
            aid,
        )
        (st,) = dep["status"]
        assert st["state"] == "refused", st
        assert f"files path {path} is inside {what}" in st["error"], st["error"]
    loot = tmp_path / "loot"
    loot.mkdir()
    (loot / "a.txt").write_text("harmless\n")
    (loot / "b-shadow.txt").symlink_to("/etc/shadow")
    (loot / "c-identity.txt").symlink_to(ident)
    dep = deploy(
        client,
        pipe_doc(
            f"{{files: {{path: '{loot}/*.txt', poll-interval: 50ms}}}}", post, None, "steal-link"
        ),
        aid,
    )
    assert dep["status"][0]["state"] != "refused"
    st = wait_until(lambda: reported(client, dep["id"], "refused"), 30, "refused at run time")
    assert "(resolves to /etc/shadow) is inside the host's credentials" in st["error"]
    assert receiver.requests == []  # not even the harmless file: the pipe never started reading
    key = orjson.loads(ident.read_bytes())["api_key"]
    assert key not in json.dumps(client.deployment(dep["id"]))


# ------------------------------------------------------------------------------ environment


def test_workers_and_their_commands_never_see_pipenb_variables(
    client: Client, agents: Any, srv: ServerProcess, tmp_path: Path
) -> None:
    canary = f"canary-{secrets.token_hex(4)}"
    out = tmp_path / "out"
    a = agents(
        "env",
        "--allow-exec", "env",
        "--allow-write", str(out),
        env={"PIPENB_SECRET_CANARY": canary},
    )  # fmt: skip
    aid = a.agent_id
    assert aid is not None
    yaml_text = (
        "name: env-dump\ninput: {exec: {command: [env], events: per-run, interval: 1h}}\n"
        f"output: {{file: {{path: '{out}/env.ndjson'}}}}\n"
    )
    dep = deploy(client, yaml_text, aid)
    wait_until(lambda: reported(client, dep["id"], "running"), 30, "running")
    dump = wait_until(
        lambda: (out / "env.ndjson").exists() and (out / "env.ndjson").read_text(), 30
    )
    (event,) = [orjson.loads(x) for x in dump.splitlines()]
    assert "PATH=" in event["_raw"] and "PIPENB_" not in event["_raw"]
    (worker,) = a.worker_pids()
    environ = Path(f"/proc/{worker}/environ").read_bytes()
    assert b"PIPENB_" not in environ and canary.encode() not in environ
    # while the agent itself had it
    assert canary.encode() in Path(f"/proc/{a.pid}/environ").read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs the agent to run as root")
def test_run_as_runs_workers_and_their_commands_as_that_user(client: Client, agents: Any) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    data = Path(tempfile.mkdtemp(prefix="pipenb-runas-"))  # nobody must reach its out dir
    data.chmod(0o755)
    try:
        a = agents("runas", "--allow-exec", "id,cat", "--run-as", "nobody", data_dir=data)
        aid = a.agent_id
        assert aid is not None
        out = data / "out"
        ident = data / "identity.json"
        yaml_text = (
            "name: whoami\ninput: {exec: {command: [id, -u], interval: 1h}}\n"
            f"output: {{file: {{path: '{out}/id.ndjson'}}}}\n"
        )
        dep = deploy(client, yaml_text, aid)
        wait_until(lambda: reported(client, dep["id"], "running"), 30, "running",
                   lambda: instance(client, dep["id"]))  # fmt: skip
        got = wait_until(
            lambda: (out / "id.ndjson").exists() and (out / "id.ndjson").read_text(), 30
        )
        assert orjson.loads(got.splitlines()[0])["_raw"] == str(nobody.pw_uid)
        (worker,) = a.worker_pids()
        status = Path(f"/proc/{worker}/status").read_text()
        uid_line = next(x for x in status.splitlines() if x.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
        # an allowed command cannot read the agent's key: the OS says no to that user
        steal = (
            "name: cat-key\ninput: {exec: {command: [cat, "
            f"'{ident}'], events: per-run, interval: 1h}}}}\n"
            f"output: {{file: {{path: '{out}/key.ndjson'}}}}\n"
        )
        dep2 = deploy(client, steal, aid)
        got = wait_until(
            lambda: (out / "key.ndjson").exists() and (out / "key.ndjson").read_text(), 30
        )
        ev = orjson.loads(got.splitlines()[0])
        key = orjson.loads(ident.read_bytes())["api_key"]
        assert key not in got and "Permission denied" in ev["_stderr"], ev
        assert instance(client, dep2["id"])["state"] == "running"
    finally:
        subprocess.run(["rm", "-rf", str(data)], check=False)


def test_the_cli_says_what_is_wrong_with_a_policy(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yml"
    bad.write_text("read: [/var/log/**]\nexecute: any\n")
    env = cli_env()
    env = {k: v for k, v in env.items() if not k.startswith("PIPENB_")}
    for flags, says in [
        (["--policy", str(bad)], "unknown key 'execute'; the keys are read, write, connect"),
        (["--policy", str(tmp_path / "none.yml")], "cannot read the policy file"),
        (["--allow-listen", "everywhere"], "listen: 'everywhere' is not host:port"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "pipenb", "agent", "--server", "http://127.0.0.1:9",
             "--data-dir", str(tmp_path / "d"), *flags],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and says in proc.stderr, (flags, proc.stderr)


def test_a_new_policy_lifts_a_refusal_and_a_new_version_is_checked_again(
    client: Client, agents: Any, tmp_path: Path
) -> None:
    """The server checks again when the agent's reported policy changes (it restarted with
    another) and when the deployment's pipe changes (a new version of a ``latest`` one)."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    (logs / "app.log").write_text("one\ntwo\n")
    data = tmp_path / "agent-moving"
    a = agents("moving", "--allow-write", str(out), data_dir=data)
    aid = a.agent_id
    assert aid is not None
    name = f"moving-{secrets.token_hex(2)}"
    text = pipe_doc(
        f"{{files: {{path: '{logs}/*.log', poll-interval: 50ms}}}}",
        f"{{file: {{path: '{out}/got.ndjson'}}}}",
        None,
        name,
    )
    dep = deploy(client, text, aid)
    assert dep["status"][0]["state"] == "refused"
    assert "outside this agent's read policy: /var/log/**" in dep["status"][0]["error"]
    assert a.terminate() == 0

    # the host's operator allows the directory: the refusal goes, the pipe runs
    b = agents("moving", "--allow-write", str(out), "--allow-read", f"{logs}/**", data_dir=data)
    assert b.agent_id == aid
    wait_until(
        lambda: reported(client, dep["id"], "running"), 30, "running under the new policy",
        lambda: instance(client, dep["id"]),
    )  # fmt: skip
    wait_until(
        lambda: (
            (out / "got.ndjson").exists()
            and len((out / "got.ndjson").read_text().splitlines()) == 2
        ),
        30,
    )

    # a new version reads elsewhere: refused again, by the server and by the agent
    client.push(text.replace(f"{logs}/*.log", f"{tmp_path}/*.log"))
    st = wait_until(lambda: reported(client, dep["id"], "refused"), 30, "the new version refused")
    assert f"files path {tmp_path}/*.log is outside this agent's read policy" in st["error"]
    wait_until(lambda: client.agent(aid)["state"] == "degraded", 30, "the agent's own refusal")


def test_an_agent_that_joins_later_is_checked_when_the_pipe_is_placed_on_it(
    client: Client, agents: Any, tmp_path: Path
) -> None:
    label = f"late-{secrets.token_hex(3)}"
    name = f"late-{secrets.token_hex(2)}"
    client.push(pipe_doc("{files: {path: /etc/hostname}}", None, None, name))
    dep = client.deploy(name, labels=[label])
    assert dep["status"] == []  # no agent has the label yet
    a = agents("late", labels=[label])
    st = wait_until(
        lambda: (
            (s := client.deployment(dep["id"])["status"]) and s[0]["state"] == "refused" and s[0]
        ),
        30,
        "the instance placed on the new agent refused",
    )
    assert st["agent_id"] == a.agent_id
    assert (
        st["error"] == "files path /etc/hostname is outside this agent's read policy: /var/log/**"
    )
