"""Installing an agent in one line: the wheel and ``install.sh`` a real server serves, the line
``pipenb agents install-command`` prints, run end to end in a scratch prefix with ``--no-service``
(a fresh venv with only the wheel and its base dependencies), and the systemd unit the script
writes, checked by ``systemd-analyze``.

The venv's dependencies come from this host's configured package index (pip's defaults), as on a
real worker host.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pipenb.client import Client
from pipenb.errors import UsageError
from pipenb.install_line import cert_fingerprint, install_line
from pipenb.server.install import public_key_pin

from support import REPO_ROOT
from support.cli import cli_env
from support.files import read_ndjson
from support.serverproc import ServerProcess
from support.waiting import wait_until

ENROLL_KEY = "install-test-enroll-key-4f1c"

PIPE = """\
name: hello
params:
  out: {type: str}
input: {echo: {lines: ['hello from the installed agent', 'second line']}}
actions:
  - add: {via: installed}
output: {file: {path: '{{out}}'}}
"""

#: What an agent-only install must not pull in: the server's and Jupyter's dependencies.
SERVER_AND_JUPYTER_MODULES = ("sqlalchemy", "alembic", "requests", "pandas", "IPython")


def clean_env() -> dict[str, str]:
    """The environment of a worker host: no PYTHONPATH into this checkout, no PIPENB_* settings,
    so the installed agent runs the code from the wheel in its own venv."""
    return {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIPENB_")
    }


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``make dist`` builds (``pip wheel --no-deps``), built once from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet", "-w", str(out),
         str(REPO_ROOT)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (built,) = out.glob("pipenb_fleet-*-py3-none-any.whl")
    return built


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("install-server"),
        enroll_key=ENROLL_KEY,
        extra=("--wheel", str(wheel)),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[ServerProcess]:
    """The same over HTTPS, with the server's own private CA (``--tls-self-signed``): the end to
    end install runs against it, as it would on a real network."""
    d = tmp_path_factory.mktemp("install-tls-server")
    with ServerProcess(
        d,
        extra=("--wheel", str(wheel), "--data-dir", str(d), "--tls-self-signed"),
        verify=d / "tls" / "ca.pem",
    ) as s:
        yield s


@pytest.fixture(scope="module")
def installed(tls_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The printed line, run as an operator would paste it, in a scratch prefix with
    ``--no-service``: it downloads the script and the served wheel over TLS (curl pinned to the
    server's key), installs the wheel into a fresh venv and runs the agent, which pins the
    server's CA by its fingerprint and enrolls over TLS."""
    server = tls_server
    assert server.url.startswith("https://")
    prefix = tmp_path_factory.mktemp("host") / "pipenb-agent"
    client = Client(server.url, server.token, ca_file=str(server.verify))
    # no token given: the server makes a one-use enrollment token carrying the labels
    line = client.install_command(labels=["edge"], name="edge-1", prefix=str(prefix), service=False)
    (made,) = [t for t in client.enroll_tokens()["tokens"] if t["labels"] == ["edge"]]
    assert made["max_uses"] == 1 and made["expires_at"] is not None
    log = prefix.parent / "install.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["sh", "-c", line],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
        )
    try:
        agent = wait_until(
            lambda: (
                next(
                    (
                        a
                        for a in client.agents()["agents"]
                        if a["name"] == "edge-1" and a["state"] == "online"
                    ),
                    None,
                )
                or (proc.poll() is not None and pytest.fail(f"the line exited:\n{log.read_text()}"))
            ),
            timeout=240,
            what="the installed agent to enroll and check in",
            info=log.read_text,
        )
        yield {"prefix": prefix, "line": line, "agent": agent, "client": client, "log": log}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# ------------------------------------------------------------------------------ end to end
def test_the_line_installs_an_agent_that_enrolls_and_runs_a_deployed_pipe(
    installed: Any, tls_server: ServerProcess, tmp_path: Path
) -> None:
    client, prefix, agent = installed["client"], installed["prefix"], installed["agent"]
    line = installed["line"]
    assert "--proto =https" in line and "--pinnedpubkey sha256//" in line, line
    assert "--ca-fingerprint" in line, line
    # the agent pinned the server's CA on first contact and keeps it
    assert (prefix / "data" / "server-ca.pem").exists()
    assert agent["labels"] == ["edge"]
    # the agent runs from the fresh venv's own pipenb, not from this checkout
    cmdline = Path(f"/proc/{agent['attributes']['pid']}/cmdline").read_bytes().split(b"\0")
    assert str(prefix / "bin" / "pipenb").encode() in cmdline, cmdline
    out = prefix / "data" / "out" / "hello.ndjson"  # where the default policy lets it write
    client.push(PIPE)
    dep = client.deploy("hello", labels=["edge"], params={"out": str(out)})
    events = wait_until(
        lambda: len(read_ndjson(out)) == 2 and read_ndjson(out) if out.exists() else None,
        timeout=60,
        what="the deployed pipe's output",
        info=lambda: client.deployment(dep["id"]),
    )
    assert [e["_raw"] for e in events] == ["hello from the installed agent", "second line"]
    assert {e["via"] for e in events} == {"installed"}


def test_the_installed_files_are_private_and_the_token_stays_out_of_the_server_log(
    installed: Any, tls_server: ServerProcess
) -> None:
    server = tls_server
    prefix = installed["prefix"]
    env_file = prefix / "agent.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((prefix / "data").stat().st_mode) == 0o700
    assert (prefix / "data" / "identity.json").exists()
    settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert settings["PIPENB_SERVER"] == server.url
    assert "PIPENB_LABELS" not in settings  # labels come from the enrollment token
    token = installed["line"].split("--token ", 1)[1].split()[0]
    assert token.startswith("pnbe_")
    assert token not in server.log.read_text()
    script = requests.get(server.api + "/agent/install.sh", timeout=10, verify=server.verify)
    assert token not in script.text


def test_the_agent_only_venv_has_no_server_or_jupyter_dependencies(installed: Any) -> None:
    python = installed["prefix"] / "bin" / "python"
    probe = (
        "import importlib.util, sys; "
        "print(','.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    found = subprocess.run(
        [str(python), "-c", probe, *SERVER_AND_JUPYTER_MODULES, "orjson", "yaml"],
        capture_output=True, text=True, env=clean_env(), check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert found == "orjson,yaml", f"the agent-only venv has {found}"
    size = sum(f.stat().st_size for f in installed["prefix"].rglob("*") if f.is_file())
    assert size < 80 * 2**20, f"the agent-only venv is {size / 2**20:.0f} MiB"


def test_server_commands_in_an_agent_only_venv_name_the_extra_to_install(installed: Any) -> None:
    pipenb = installed["prefix"] / "bin" / "pipenb"
    for argv in (["server", "--port", "0"], ["agents", "list", "--url", "http://127.0.0.1:9"]):
        r = subprocess.run(
            [str(pipenb), *argv], capture_output=True, text=True, env=clean_env(), timeout=60
        )
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert "[server] extra" in r.stderr and "pipenb_fleet-" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert "pip install pipenb" not in r.stderr


# ------------------------------------------------------------------------------ the script's checks
def run_script(
    server: ServerProcess, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    script = requests.get(server.api + "/agent/install.sh", timeout=10).text
    return subprocess.run(
        ["sh", "-s", "--", *args], input=script, capture_output=True, text=True,
        env=clean_env(), timeout=timeout,
    )  # fmt: skip


def test_the_script_refuses_a_wheel_whose_hash_differs(
    server: ServerProcess, tmp_path: Path
) -> None:
    prefix = tmp_path / "agent"
    r = run_script(
        server, "--server", server.url, "--wheel-sha256", "0" * 64, "--token", ENROLL_KEY,
        "--prefix", str(prefix), "--no-service",
    )  # fmt: skip
    assert r.returncode == 1
    assert "SHA-256" in r.stderr and "not installing it" in r.stderr, r.stderr
    assert not prefix.exists(), "nothing is installed from a wheel that failed its check"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://10.1.2.3:8765"], "plain http to another host"),
        (["--server", "ftp://x"], "give an http:// or https:// URL"),
        (["--name", "a\nExecStartPre=/bin/sh"], "--name"),
        (["--token", "x y"], "--token"),
        (["--prefix", "relative/dir"], "absolute path"),
        (["--pin", "md5//x"], "--pin"),
        ([], "--wheel-sha256 is required"),
        (["--bogus"], "unknown option --bogus"),
    ],
)
def test_the_script_refuses_bad_arguments_before_changing_anything(
    server: ServerProcess, tmp_path: Path, args: list[str], message: str
) -> None:
    base = {"--server": server.url, "--prefix": str(tmp_path / "agent")}
    for i in range(0, len(args) - 1, 2):
        base.pop(args[i], None)
    argv = [x for kv in base.items() for x in kv] + ["--no-service", *args]
    r = run_script(server, *argv)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "agent").exists()


# ------------------------------------------------------------------------------ the unit
@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip(
            "systemd-analyze is not installed (Debian: apt-get install systemd; "
            "`make test` installs it when it can)"
        )
    return found


def test_the_unit_is_hardened_and_passes_systemd_analyze_verify(
    server: ServerProcess, tmp_path: Path, systemd_analyze: str
) -> None:
    prefix, data = tmp_path / "opt", tmp_path / "var-lib"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "pipenb").write_text("#!/bin/sh\n")
    (prefix / "bin" / "pipenb").chmod(0o755)
    r = run_script(
        server, "--server", server.url, "--prefix", str(prefix), "--data-dir", str(data),
        "--rw-path", "/var/lib/pipes", "--print-unit",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "pipenb-agent.service"
    unit.write_text(r.stdout)
    settings = [line for line in r.stdout.splitlines() if "=" in line and line[0] != "#"]
    for expected in (
        "User=pipenb-agent",
        f"ExecStart={prefix}/bin/pipenb agent",
        f"EnvironmentFile={prefix}/agent.env",
        "ProtectSystem=strict",
        f"ReadWritePaths={data} /var/lib/pipes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "KillMode=mixed",
    ):
        assert expected in settings, expected
    verify = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on a setting it ignores, so its warnings count as failures too
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    # ... and it does report a broken setting (the check above could fail)
    broken = tmp_path / "broken.service"
    broken.write_text(r.stdout.replace("ProtectSystem=strict", "ProtectSystem=strictly"))
    bad = subprocess.run(
        [systemd_analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "strictly" in bad.stderr, bad.stderr
    security = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline is not supported: {security.stderr}")
    assert float(m.group(1)) <= 2.5, security.stdout


# ------------------------------------------------------------------------------ routes and the line
def test_routes_answer_without_a_wheel_with_how_to_give_one(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, enroll_key=ENROLL_KEY) as s:
        for path in ("/agent/wheel", "/agent/install.sh"):
            r = s.request("GET", path, token=None)
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "no_wheel"
            assert "--wheel FILE" in r.json()["error"]["message"]
        assert s.request("GET", "/agent/install", token=None).status_code == 401
        info = s.request("GET", "/agent/install").json()
        assert info["wheel"] is None
        r = subprocess.run(
            [sys.executable, "-m", "pipenb", "agents", "install-command", "--url", s.url,
             "--token", s.token, "--enroll-token", ENROLL_KEY],
            capture_output=True, text=True, env=cli_env(), timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and "--wheel FILE" in r.stderr, r.stderr


def test_the_served_wheel_is_the_one_given_and_its_hash_is_in_the_line(
    server: ServerProcess, wheel: Path
) -> None:
    import hashlib

    r = requests.get(server.api + "/agent/wheel", timeout=30)
    assert r.status_code == 200 and r.content == wheel.read_bytes()
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    r = subprocess.run(
        [sys.executable, "-m", "pipenb", "agents", "install-command", "--url", server.url,
         "--token", server.token, "--labels", "a,b"],
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith(f"curl -fsS {server.api}/agent/install.sh | sudo sh -s -- ")
    assert f"--wheel-sha256 {sha}" in line and "--token pnbe_" in line and "--labels" not in line
    assert "--no-service" not in line and "--prefix" not in line  # the defaults


def test_the_line_needs_a_token_and_refuses_plain_http_to_another_host() -> None:
    info = {"wheel": {"sha256": "ab" * 32}, "tls_pin": None}
    with pytest.raises(UsageError, match="enrollment token"):
        install_line("http://127.0.0.1:1", info, enroll_token=None)
    with pytest.raises(UsageError, match="plain http to another host"):
        install_line("http://10.0.0.5:8765", info, enroll_token="t")
    line = install_line("http://10.0.0.5:8765", info, enroll_token="t", insecure_http=True)
    assert line.endswith("--insecure-http")
    with pytest.raises(UsageError, match="public-key pin"):
        install_line("https://pipenb.lan:8765", info, enroll_token="t", ca_fingerprint="ab")


# ------------------------------------------------------------------------------ https: the pin
class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"echo pinned-ok\n")

    def log_message(self, *args: Any) -> None:
        pass


def test_curl_accepts_the_pin_the_server_computes_and_refuses_another(tmp_path: Path) -> None:
    """The https form of the line, against a real TLS server on loopback whose certificate
    comes from a private CA the host does not trust: curl gets through with the server's
    key pinned, and refuses a server with another key."""
    trustme = pytest.importorskip("trustme")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    other = trustme.CA().issue_cert("127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Hello)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}"
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        info = {
            "wheel": {"sha256": "ab" * 32},
            "tls_pin": public_key_pin(cert.cert_chain_pems[0].bytes()),
        }
        line = install_line(
            url, info, enroll_token="t", ca_fingerprint=cert_fingerprint(str(ca_file))
        )
        assert "--proto =https --insecure --pinnedpubkey sha256//" in line
        assert f"--ca-fingerprint {cert_fingerprint(str(ca_file))}" in line
        curl = line.split(" | ")[0]
        ok = subprocess.run(["sh", "-c", curl], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0 and ok.stdout == "echo pinned-ok\n", ok.stderr
        wrong = curl.replace(info["tls_pin"], public_key_pin(other.cert_chain_pems[0].bytes()))
        bad = subprocess.run(["sh", "-c", wrong], capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0 and bad.stdout == "", bad.stdout
        unpinned = subprocess.run(
            ["curl", "-fsS", "--proto", "=https", url], capture_output=True, timeout=30
        )
        assert unpinned.returncode != 0  # the private CA is not trusted without the pin
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_pipe_add_agent_in_a_notebook_prints_the_same_line(server: ServerProcess) -> None:
    """``%pipe add-agent`` answers the line itself (a str with an HTML display to copy)."""
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "pipenb")
    sh.run_line_magic("pipe", f"connect {server.url} --token {server.token}")
    line = sh.run_line_magic(
        "pipe", f"add-agent --token {ENROLL_KEY} --no-service --prefix /srv/agent"
    )
    expected = Client(server.url, server.token).install_command(
        ENROLL_KEY, service=False, prefix="/srv/agent"
    )
    assert line == expected and repr(line) == expected
    assert "<pre" in line._repr_html_() and "--prefix /srv/agent --no-service" in line


def test_no_file_tells_anyone_to_pip_install_pipenb() -> None:
    """``pipenb`` on the public index is another project: a guard against the old advice coming
    back in a document, a message or a notebook (a line that warns against it is fine)."""
    advice = re.compile(r"""pip install\s+['"]?pipenb(?![-_\w])""")
    warning = re.compile(
        r"never|another project|different project|someone else|no document|not in", re.I
    )
    found = []
    for path in REPO_ROOT.rglob("*"):
        if (
            not path.is_file()
            or path.suffix not in {".md", ".py", ".ipynb", ".sh", ".toml", ""}
            or any(
                part.startswith(".") or part in ("node_modules", "dist", "build")
                for part in path.relative_to(REPO_ROOT).parts
            )
        ):
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if advice.search(line) and not warning.search(line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_server_refuses_a_wheel_it_cannot_serve_at_start(tmp_path: Path) -> None:
    not_a_wheel = tmp_path / "pipenb.zip"
    not_a_wheel.write_bytes(b"PK")
    for given, message in (
        (tmp_path / "missing.whl", "no such file"),
        (not_a_wheel, "not a wheel file name"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "pipenb", "server", "--port", "0", "--wheel", str(given),
             "--db-url", f"sqlite:///{tmp_path / 'db.sqlite'}"],
            capture_output=True, text=True, env=cli_env(), timeout=60,
        )  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert f"--wheel {given}: {message}" in r.stderr, r.stderr


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_a_script_cut_short_in_transit_changes_nothing(
    server: ServerProcess, wheel: Path, tmp_path: Path, fraction: float
) -> None:
    """``curl | sh`` runs what has arrived so far: the script does its work from ``main``,
    called on its last line, so a download cut short installs nothing and starts nothing."""
    import hashlib

    script = requests.get(server.api + "/agent/install.sh", timeout=10).text
    prefix = tmp_path / "agent"
    args = ["--server", server.url, "--prefix", str(prefix), "--no-service", "--token", "t",
            "--wheel-sha256", hashlib.sha256(wheel.read_bytes()).hexdigest()]  # fmt: skip
    subprocess.run(
        ["sh", "-s", "--", *args],
        input=script[: int(len(script) * fraction)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert not prefix.exists()
