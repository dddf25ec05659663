"""TLS between agents, clients and the server: real server and agent processes on loopback.

Certificates come from the server itself (``--tls-self-signed``, ``pipenb.server.certs``) and
from trustme. Every wrong certificate, pin or scheme is shown to give its documented message
(``TLS: <cause>: ...``, see ``pipenb.tls.describe``) within 2 s, as one log line, with retries;
a man in the middle with its own certificate learns no key and delivers no pipe.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme

from pipenb.agent import Agent, AgentSettings
from pipenb.agent.http import post
from pipenb.agent.store import AgentStore
from pipenb.client import Client
from pipenb.errors import AgentError, ApiError, ServerError, UsageError
from pipenb.server.certs import ensure_self_signed
from pipenb.tls import TlsError, TlsOptions, client_context, fetch_pinned_ca, fingerprint

from support.agentproc import AgentProcess, tmp_policy
from support.cli import run_cli
from support.serverproc import ServerProcess
from support.tlskit import Proxy, chain_files
from support.waiting import wait_until

ENROLL = "ek-tls-" + secrets.token_hex(4)
BOUND = 2.0  # seconds: the issue's bound for a certificate or scheme problem to be reported


# ------------------------------------------------------------------------------ helpers


def ca_fingerprint(ca_file: Path) -> str:
    import ssl

    return fingerprint(ssl.PEM_cert_to_DER_cert(ca_file.read_text()))


def start_agent(
    server: str, data_dir: Path, *extra: str, enroll_key: str | None = ENROLL, labels: tuple = ()
) -> AgentProcess:
    # the pipes here write under the temp dir: a policy that allows it (the default would refuse)
    return AgentProcess(
        server,
        data_dir,
        enroll_key=enroll_key,
        labels=labels,
        long_poll=5.0,
        extra=(*extra, *tmp_policy()),
    ).start()


def log_lines(agent: AgentProcess, text: str) -> list[str]:
    return [line for line in agent.log_text().splitlines() if text in line]


def seconds_to_message(agent: AgentProcess, text: str, timeout: float = 30.0) -> float:
    """Seconds from the agent's first log line ("agent starting") to the first line with
    ``text``, both seen by polling the log (process start-up, which the machine's load
    stretches, is not counted)."""
    start = wait_until(
        lambda: log_lines(agent, "agent starting") and time.monotonic(),
        timeout,
        "the agent's first log line",
        agent.log_text,
    )
    end = wait_until(
        lambda: log_lines(agent, text) and time.monotonic(),
        timeout,
        f"the log line {text!r}",
        agent.log_text,
    )
    print(f"tls: {text!r} {end - start:.3f}s after the agent's first log line")  # for -s runs
    return end - start


def timed_post(url: str, context: object = None) -> tuple[ServerError, float]:
    t0 = time.monotonic()
    with pytest.raises(ServerError) as info:
        post(url, "/agent/enroll", {"enroll_key": "nope"}, None, 30, context)  # type: ignore[arg-type]
    return info.value, time.monotonic() - t0


def echo_pipe(name: str, out: Path, labels: list[str]) -> str:
    return (
        f"name: {name}\nlabels: [{', '.join(labels)}]\n"
        "input: {echo: {events: [{n: 1}]}}\n"
        f'output: {{file: {{path: "{out}"}}}}\n'
    )


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An HTTPS server with its own private CA (``--tls-self-signed``)."""
    d = tmp_path_factory.mktemp("tls-server")
    server = ServerProcess(
        d,
        enroll_key=ENROLL,
        extra=("--data-dir", str(d), "--tls-self-signed"),
        verify=d / "tls" / "ca.pem",
    )
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture(scope="module")
def ca(srv: ServerProcess) -> Path:
    return srv.data_dir / "tls" / "ca.pem"


@pytest.fixture(scope="module")
def pin(srv: ServerProcess) -> str:
    """The CA fingerprint, as the server printed it."""
    return srv.banner_line("CA fingerprint (SHA-256):").split(":", 1)[1].strip()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("plain-server"), enroll_key=ENROLL)
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.cleanup()


# ------------------------------------------------------------------------------ the server


def test_self_signed_server_prints_the_ca_fingerprint_and_keeps_its_files_private(
    srv: ServerProcess, ca: Path, pin: str
) -> None:
    assert "listening on https://127.0.0.1:" in srv.banner
    assert f"PIPENB_URL={srv.url}" in srv.banner and srv.url.startswith("https://")
    assert pin == ca_fingerprint(ca)
    tls_dir = srv.data_dir / "tls"
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    for name in ("ca.pem", "ca.key", "server.pem", "server.key"):
        assert stat.S_IMODE((tls_dir / name).stat().st_mode) == 0o600, name


def test_self_signed_files_are_reused_and_the_server_certificate_reissued_when_needed(
    tmp_path: Path,
) -> None:
    import datetime as dt

    from cryptography import x509

    first = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1"])
    assert first.issued
    again = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1"])
    assert not again.issued and again.fingerprint == first.fingerprint
    before = first.cert_file.read_bytes()
    assert first.cert_file.read_bytes() == before
    renamed = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1", "pipenb.lan"])
    assert renamed.issued and renamed.fingerprint == first.fingerprint  # same CA, new leaf
    leaf = x509.load_pem_x509_certificates(renamed.cert_file.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pipenb.lan" in san.get_values_for_type(x509.DNSName)
    # near its end: made again at the next start
    from pipenb.server.certs import issue

    from support.tlskit import _key, _pem  # the same PEM writers

    ca_cert = x509.load_pem_x509_certificate(first.ca_file.read_bytes())
    from cryptography.hazmat.primitives import serialization

    ca_key = serialization.load_pem_private_key((first.dir / "ca.key").read_bytes(), None)
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    old, old_key = issue(ca_cert, ca_key, ["localhost", "127.0.0.1", "pipenb.lan"], not_after=soon)  # type: ignore[arg-type]
    first.cert_file.write_bytes(_pem(old) + _pem(ca_cert))
    first.key_file.write_bytes(_key(old_key))
    renewed = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1", "pipenb.lan"])
    assert renewed.issued
    leaf = x509.load_pem_x509_certificates(renewed.cert_file.read_bytes())[0]
    assert leaf.not_valid_after_utc > soon + dt.timedelta(days=300)


def test_the_ca_endpoint_serves_certificates_never_the_key(tmp_path: Path) -> None:
    """A chain file may hold the private key too: only CERTIFICATE blocks are served."""
    tca = trustme.CA()
    both = tmp_path / "key-and-chain.pem"
    tca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(both))
    tca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    assert b"PRIVATE KEY" in both.read_bytes()
    with ServerProcess(
        tmp_path / "s", extra=("--tls-cert", str(both)), verify=str(tmp_path / "ca.pem")
    ) as server:
        resp = server.request("GET", "/ca.pem", token=None)
        assert resp.status_code == 200
        assert "BEGIN CERTIFICATE" in resp.text and "PRIVATE KEY" not in resp.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tls-key", "k.pem"), "--tls-key needs --tls-cert"),
        (("--tls-cert", "missing.pem"), "--tls-cert missing.pem: No such file"),
        (("--tls-self-signed", "--tls-cert", "x"), "not both"),
        (("--tls-client-ca", "ca.pem"), "--tls-client-ca needs HTTPS"),
    ],
)
def test_the_server_refuses_tls_options_that_do_not_fit(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    res = run_cli("server", "--port", "0", "--data-dir", tmp_path, *args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr


# ------------------------------------------------------------------------------ agents over HTTPS


def test_agent_over_https_with_ca_file_runs_a_pipe(
    srv: ServerProcess, ca: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    client = Client(srv.url, srv.token, ca_file=str(ca), timeout=10)
    label = "cafile" + secrets.token_hex(3)
    a = start_agent(srv.url, tmp_path / "agent", "--ca-file", str(ca), labels=(label,))
    agents.append(a)
    aid = a.wait_enrolled()
    out = tmp_path / "out.ndjson"
    name = "tls" + secrets.token_hex(3)
    client.push(echo_pipe(name, out, [label]))
    dep = client.deploy(name, labels=[label])["id"]
    wait_until(
        lambda: out.exists() and out.read_text().strip(), 30, "the pipe's output", a.log_text
    )
    inst = client.deployment(dep)["status"]
    assert [s["agent_id"] for s in inst] == [aid]
    assert not log_lines(a, "TLS:")


def test_agent_pins_the_ca_by_fingerprint_and_keeps_it(
    srv: ServerProcess, ca: Path, pin: str, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    client = Client(srv.url, srv.token, ca_file=str(ca), timeout=10)
    spelled = pin.replace(":", "").lower()  # any spelling of the fingerprint will do
    a = start_agent(srv.url, tmp_path / "agent", "--ca-fingerprint", spelled)
    agents.append(a)
    aid = a.wait_enrolled()
    kept = a.data_dir / "server-ca.pem"
    assert kept.read_text().strip() == ca.read_text().strip()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    wait_until(lambda: client.agent(aid)["state"] == "online", 20, "online", a.log_text)
    assert a.terminate() == 0
    # the next start trusts the kept CA: no fetch, and it still checks in
    a.start()
    wait_until(lambda: len(log_lines(a, "checked in with")) >= 2, 20, "a check-in", a.log_text)
    assert len(log_lines(a, "pinned the server's CA")) == 1


def test_a_client_pins_the_ca_by_fingerprint(
    srv: ServerProcess, pin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPENB_DATA_DIR", str(tmp_path))
    client = Client(srv.url, srv.token, ca_fingerprint=pin, timeout=10)
    assert client.agents() is not None
    kept = list((tmp_path / "ca").glob("*.pem"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    wrong = "AA" * 32
    with pytest.raises(ApiError) as info:
        Client(srv.url, srv.token, ca_fingerprint=wrong, timeout=10).agents()
    assert info.value.code == "tls" and "certificate fingerprint mismatch" in info.value.message


# ------------------------------------------------------------------------------ mutual TLS


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path, Path]]:
    """A server that requires client certificates from a trustme CA; (server, its CA, a
    client certificate file with its key)."""
    d = tmp_path_factory.mktemp("mtls")
    clients = trustme.CA()
    clients.cert_pem.write_to_path(str(d / "clients-ca.pem"))
    mine = d / "agent-cert.pem"
    clients.issue_cert("agent-1@pipenb").private_key_and_cert_chain_pem.write_to_path(str(mine))
    server = ServerProcess(
        d,
        enroll_key=ENROLL,
        extra=(
            "--data-dir",
            str(d),
            "--tls-self-signed",
            "--tls-client-ca",
            str(d / "clients-ca.pem"),
        ),
        verify=d / "tls" / "ca.pem",
        cert=str(mine),
    )
    try:
        yield server.start(), d / "tls" / "ca.pem", mine
    finally:
        server.kill()


def test_mutual_tls_agent_with_a_certificate_enrolls_and_one_without_is_refused(
    mtls: tuple[ServerProcess, Path, Path], tmp_path: Path, agents: list[AgentProcess]
) -> None:
    server, ca, mine = mtls
    a = start_agent(server.url, tmp_path / "with", "--ca-file", str(ca), "--cert", str(mine))
    agents.append(a)
    a.wait_enrolled()
    b = start_agent(server.url, tmp_path / "without", "--ca-file", str(ca))
    agents.append(b)
    assert seconds_to_message(b, "TLS: client certificate required") < BOUND
    assert b.identity() is None and b.alive()
    # a certificate from another CA is refused too
    other = trustme.CA().issue_cert("intruder")
    theirs = tmp_path / "theirs.pem"
    other.private_key_and_cert_chain_pem.write_to_path(str(theirs))
    c = start_agent(server.url, tmp_path / "other", "--ca-file", str(ca), "--cert", str(theirs))
    agents.append(c)
    assert seconds_to_message(c, "TLS: client certificate refused") < BOUND
    assert c.identity() is None


def test_mutual_tls_client(mtls: tuple[ServerProcess, Path, Path]) -> None:
    server, ca, mine = mtls
    assert Client(server.url, server.token, ca_file=str(ca), cert=str(mine)).agents() is not None
    t0 = time.monotonic()
    with pytest.raises(ApiError) as info:
        Client(server.url, server.token, ca_file=str(ca)).agents()
    assert time.monotonic() - t0 < BOUND
    assert info.value.code == "tls" and "client certificate required" in info.value.message


# ------------------------------------------------------------------------------ wrong certificates


@pytest.fixture(scope="module")
def wrong_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[ServerProcess, Path]]]:
    """HTTPS servers whose certificate is wrong for an agent at https://127.0.0.1: a trustme
    certificate for another name, and an expired one (made with cryptography)."""
    d = tmp_path_factory.mktemp("wrong")
    tca = trustme.CA()
    tca.cert_pem.write_to_path(str(d / "trustme-ca.pem"))
    leaf = tca.issue_cert("pipenb.example")
    leaf.cert_chain_pems[0].write_to_path(str(d / "name.pem"))
    leaf.private_key_pem.write_to_path(str(d / "name.key"))
    exp_ca, exp_cert, exp_key = chain_files(d / "expired", ["127.0.0.1"], expired=True)
    servers = {
        "name": (
            ServerProcess(
                d / "s-name",
                enroll_key=ENROLL,
                extra=("--tls-cert", str(d / "name.pem"), "--tls-key", str(d / "name.key")),
                verify=False,
            ),
            d / "trustme-ca.pem",
        ),
        "expired": (
            ServerProcess(
                d / "s-exp",
                enroll_key=ENROLL,
                extra=("--tls-cert", str(exp_cert), "--tls-key", str(exp_key)),
                verify=False,
            ),
            exp_ca,
        ),
    }
    try:
        import urllib3

        urllib3.disable_warnings()  # only the fixtures' health checks skip verification
        for server, _ in servers.values():
            server.start()
        yield servers
    finally:
        for server, _ in servers.values():
            server.kill()


def test_unknown_ca_is_one_log_line_within_2s_and_retried_with_backoff(
    srv: ServerProcess, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with Proxy(("127.0.0.1", srv.port)) as counter:  # counts the agent's attempts
        a = start_agent(
            f"https://127.0.0.1:{counter.port}", tmp_path / "a", "--ca-file", str(other)
        )
        agents.append(a)
        assert seconds_to_message(a, "TLS: unknown CA") < BOUND
        wait_until(lambda: counter.connections >= 3, 30, "retries", a.log_text)
        assert len(log_lines(a, "TLS:")) == 1, a.log_text()
        assert "Traceback" not in a.log_text()
        assert a.alive() and a.identity() is None


@pytest.mark.parametrize(
    ("case", "message"),
    [("name", "TLS: certificate name mismatch"), ("expired", "TLS: certificate expired")],
)
def test_wrong_certificates_are_named_within_2s(
    wrong_servers: dict[str, tuple[ServerProcess, Path]],
    case: str,
    message: str,
    tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    server, ca = wrong_servers[case]
    a = start_agent(server.url, tmp_path / "a", "--ca-file", str(ca))
    agents.append(a)
    assert seconds_to_message(a, message) < BOUND
    assert a.identity() is None
    err, took = timed_post(server.url, client_context(TlsOptions(ca_file=str(ca))))
    assert err.tls and message in str(err) and took < BOUND
    with pytest.raises(ApiError) as info:
        Client(server.url, "t", ca_file=str(ca)).health()
    assert message in info.value.message


def test_fingerprint_mismatch_is_named_within_2s_and_nothing_is_kept(
    srv: ServerProcess, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    wrong = ca_fingerprint(chain_files(tmp_path / "other", ["127.0.0.1"])[0])
    a = start_agent(srv.url, tmp_path / "a", "--ca-fingerprint", wrong)
    agents.append(a)
    assert seconds_to_message(a, "TLS: certificate fingerprint mismatch") < BOUND
    assert a.identity() is None and not (a.data_dir / "server-ca.pem").exists()
    with pytest.raises(TlsError, match="certificate fingerprint mismatch"):
        fetch_pinned_ca(srv.url, TlsOptions(ca_fingerprint=wrong))


def test_https_to_a_plain_server_and_http_to_a_tls_server_fail_within_2s(
    srv: ServerProcess, plain: ServerProcess, ca: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    to_plain = plain.url.replace("http://", "https://")
    to_tls = srv.url.replace("https://", "http://")
    a = start_agent(to_plain, tmp_path / "a", "--ca-file", str(ca))
    b = start_agent(to_tls, tmp_path / "b")
    agents += [a, b]
    assert seconds_to_message(a, "TLS: not TLS") < BOUND
    assert seconds_to_message(b, "TLS: HTTPS required") < BOUND
    err, took = timed_post(to_plain, client_context(TlsOptions(ca_file=str(ca))))
    assert "speaks plain HTTP" in str(err) and took < BOUND
    err, took = timed_post(to_tls)
    assert "speaks HTTPS" in str(err) and took < BOUND
    for url, words in ((to_plain, "not TLS"), (to_tls, "HTTPS required")):
        t0 = time.monotonic()
        with pytest.raises(ApiError) as info:
            Client(url, "t", ca_file=str(ca)).health()
        assert words in info.value.message and time.monotonic() - t0 < BOUND
    # the servers are unharmed
    assert plain.request("GET", "/health").ok and srv.request("GET", "/health").ok
    assert plain.request("GET", "/ca.pem", token=None).status_code == 404  # HTTPS only


def test_the_server_answers_the_wrong_protocol_at_once_and_closes(
    srv: ServerProcess, plain: ServerProcess
) -> None:
    """Raw bytes: a plain request on the HTTPS port, a TLS record on the plain one. Each gets
    its answer and the end of the connection at once, not after a timeout."""
    import socket

    cases = [
        (srv.port, b"GET /pipenb/api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n", b"https_required"),
        (plain.port, b"\x16\x03\x01\x00\x05hello", b"speaks plain HTTP, not HTTPS"),
    ]
    for port, hello, answer in cases:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(hello)
            got = b""
            while chunk := sock.recv(65536):  # until the server closes
                got += chunk
        assert time.monotonic() - t0 < BOUND
        assert got.startswith(b"HTTP/1.1 400") and answer in got, got


# ------------------------------------------------------------------------------ on the wire


def test_a_man_in_the_middle_gets_no_key_and_no_pipe_onto_the_agent(
    srv: ServerProcess, ca: Path, pin: str, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    client = Client(srv.url, srv.token, ca_file=str(ca), timeout=10)
    mitm_ca, mitm_cert, mitm_key = chain_files(tmp_path / "mitm", ["127.0.0.1", "localhost"])
    label = "mitm" + secrets.token_hex(3)
    # an enrolled agent with an API key, stopped; then a pipe deployed for it
    b = start_agent(srv.url, tmp_path / "b", "--ca-file", str(ca), labels=(label,))
    agents.append(b)
    b.wait_enrolled()
    api_key = b.identity()["api_key"]  # type: ignore[index]
    assert b.terminate() == 0
    out = tmp_path / "out.ndjson"
    name = "mitm" + secrets.token_hex(3)
    client.push(echo_pipe(name, out, [label]))
    client.deploy(name, labels=[label])
    with Proxy(("127.0.0.1", srv.port), mitm=(mitm_cert, mitm_key)) as proxy:
        via = f"https://127.0.0.1:{proxy.port}"
        b.server = via
        b.start()  # with its key, trusting the real CA
        # enrollment tokens carrying the label, made on the real server (not through the proxy)
        tokens = [client.create_enroll_token([label])["token"] for _ in range(2)]
        fresh = start_agent(via, tmp_path / "fresh", "--ca-file", str(ca), enroll_key=tokens[0])
        pinned = start_agent(
            via, tmp_path / "pinned", "--ca-fingerprint", pin, enroll_key=tokens[1]
        )
        agents += [fresh, pinned]
        for agent in (b, fresh, pinned):
            wait_until(
                lambda a=agent: log_lines(a, "TLS: unknown CA"), 30, "refusal", agent.log_text
            )
        wait_until(lambda: proxy.handshakes_failed >= 6, 30, "retries through the proxy")
        assert not proxy.saw(api_key)
        assert not proxy.saw(ENROLL)
        assert not any(proxy.saw(token) for token in tokens)
        assert not proxy.saw("/agent/")  # no request to the agent API got through
        assert fresh.identity() is None and pinned.identity() is None
        # the pinned agent fetched the real CA through the proxy (a public file), and then
        # refused the proxy's certificate, which that CA did not sign
        assert (pinned.data_dir / "server-ca.pem").read_text().strip() == ca.read_text().strip()
        for agent in (b, fresh, pinned):
            assert agent.worker_pids() == []
            assert AgentStore(str(agent.data_dir)).desired() == []  # no pipe got through
        assert not out.exists()
        # the control: an agent that trusts the attacker's CA hands the key over
        dupe = start_agent(via, tmp_path / "dupe", "--ca-file", str(mitm_ca))
        agents.append(dupe)
        dupe.wait_enrolled()
        assert proxy.saw(ENROLL)


def test_a_pass_through_proxy_sees_only_ciphertext(
    srv: ServerProcess, ca: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    client = Client(srv.url, srv.token, ca_file=str(ca), timeout=10)
    with Proxy(("127.0.0.1", srv.port)) as proxy:
        a = start_agent(f"https://127.0.0.1:{proxy.port}", tmp_path / "a", "--ca-file", str(ca))
        agents.append(a)
        aid = a.wait_enrolled()
        wait_until(lambda: len(log_lines(a, "checked in with")) >= 1, 20, "a check-in", a.log_text)
        wait_until(lambda: client.agent(aid)["state"] == "online", 20, "online")
        api_key = a.identity()["api_key"]  # type: ignore[index]
        assert len(proxy.seen) > 1000  # the enrollment and check-ins went through it
        assert not proxy.saw(ENROLL) and not proxy.saw(api_key)
        assert not proxy.saw("/agent/") and not proxy.saw("POST")


# ------------------------------------------------------------------------------ plain HTTP


def test_the_agent_refuses_plain_http_to_another_host(tmp_path: Path) -> None:
    """It refuses before any connection (10.255.255.1 is never contacted: a connection there
    would hang, not end at once)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pipenb", "agent", "--server", "http://10.255.255.1:1",
         "--enroll-key", "k", "--data-dir", str(tmp_path / "a")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "refusing http://10.255.255.1:1 is plain HTTP to another host" in proc.stderr
    assert "--insecure-http" in proc.stderr
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "a" / "identity.json").exists()


def test_insecure_http_is_allowed_with_a_warning_at_every_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for allowed in (False, True):
        settings = AgentSettings(
            server="http://10.255.255.1:1", data_dir=str(tmp_path), insecure_http=allowed
        )
        agent = Agent(settings)
        if not allowed:
            with pytest.raises(AgentError, match="--insecure-http"):
                agent.check_link()
            continue
        with caplog.at_level(logging.WARNING, logger="pipenb.agent"):
            agent.check_link()
            agent.check_link()
        warnings = [r for r in caplog.records if "--insecure-http" in r.getMessage()]
        assert len(warnings) == 2
    # loopback stays allowed without the flag (every other test relies on it)
    Agent(AgentSettings(server="http://127.0.0.1:1", data_dir=str(tmp_path))).check_link()
    Agent(AgentSettings(server="http://localhost:1", data_dir=str(tmp_path))).check_link()


# ------------------------------------------------------------------------------ the CLI


def test_cli_with_ca_file_and_without(srv: ServerProcess, ca: Path) -> None:
    ok = run_cli(
        "agents", "list", "--url", srv.url, "--token", srv.token, "--ca-file", ca, "--json"
    )
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("agents", "list", "--url", srv.url, "--token", srv.token)
    assert bad.returncode == 1
    assert "TLS: unknown CA" in bad.stderr


def test_requests_cannot_skip_the_check(srv: ServerProcess) -> None:
    """The server's certificate is not trusted by default (no system CA signed it)."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(srv.api + "/health", timeout=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ca-file", "{bad}"), "not a usable PEM certificate"),
        (("--ca-file", "{missing}"), "no such file"),
        (("--cert", "{bad}"), "cannot load the client certificate"),
        (("--key", "{bad}"), "--key needs --cert"),
        (("--ca-fingerprint", "12:34"), "is not a SHA-256 fingerprint"),
        (("--ca-file", "{bad}", "--ca-fingerprint", "AB" * 32), "not both"),
    ],
)
def test_wrong_tls_options_are_refused_at_start(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    argv = [a.format(bad=bad, missing=tmp_path / "missing.pem") for a in args]
    res = run_cli(
        "agent", "--server", "https://127.0.0.1:1", "--enroll-key", "k",
        "--data-dir", tmp_path / "a", *argv,
    )  # fmt: skip
    assert res.returncode == 2 and message in res.stderr, res.stderr
    with pytest.raises(UsageError, match=re.escape(message)):
        Client("https://127.0.0.1:1", "t", **_client_kwargs(argv))


def _client_kwargs(argv: list[str]) -> dict[str, str]:
    names = {"--ca-file": "ca_file", "--ca-fingerprint": "ca_fingerprint", "--cert": "cert"}
    names["--key"] = "key"
    return {names[argv[i]]: argv[i + 1] for i in range(0, len(argv), 2)}


def test_every_tls_option_is_also_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipenb.cli import build_parser

    env = {
        "PIPENB_CA_FILE": "ca.pem",
        "PIPENB_CA_FINGERPRINT": "AB" * 32,
        "PIPENB_CERT": "c.pem",
        "PIPENB_KEY": "k.pem",
        "PIPENB_INSECURE_HTTP": "1",
        "PIPENB_TLS_CERT": "s.pem",
        "PIPENB_TLS_KEY": "s.key",
        "PIPENB_TLS_SELF_SIGNED": "yes",
        "PIPENB_TLS_NAMES": "a,b",
        "PIPENB_TLS_CLIENT_CA": "clients.pem",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    agent = build_parser().parse_args(["agent"])
    assert (agent.ca_file, agent.ca_fingerprint, agent.cert, agent.key, agent.insecure_http) == (
        "ca.pem", "AB" * 32, "c.pem", "k.pem", True
    )  # fmt: skip
    server = build_parser().parse_args(["server"])
    assert (server.tls_cert, server.tls_key, server.tls_self_signed) == ("s.pem", "s.key", True)
    assert (server.tls_names, server.tls_client_ca) == ("a,b", "clients.pem")
    remote = build_parser().parse_args(["agents", "list"])
    assert (remote.ca_file, remote.ca_fingerprint, remote.cert, remote.key) == (
        "ca.pem", "AB" * 32, "c.pem", "k.pem"
    )  # fmt: skip


def test_pipe_connect_magic_takes_the_ca_options(
    srv: ServerProcess, ca: Path, pin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("PIPENB_DATA_DIR", str(tmp_path))  # where a pinned CA is kept
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "pipenb")
    with pytest.raises(UsageError, match="TLS: unknown CA"):
        sh.run_line_magic("pipe", f"connect {srv.url} --token {srv.token}")
    info = sh.run_line_magic("pipe", f"connect {srv.url} --token {srv.token} --ca-file {ca}")
    assert srv.url in repr(info)
    info = sh.run_line_magic(
        "pipe", f"connect {srv.url} --token {srv.token} --ca-fingerprint {pin}"
    )
    assert srv.url in repr(info)


# ------------------------------------------------------------------------------ Jupyter


def test_inside_jupyter_https_is_jupyters_own_and_agents_use_ca_file(
    tmp_path: Path, agents: list[AgentProcess]
) -> None:
    """What docs/jupyter.md says: Jupyter's --ServerApp.certfile/keyfile, the agent's --ca-file."""
    import socket

    made = ensure_self_signed(tmp_path / "certs", ["127.0.0.1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPENB_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
    )
    log = tmp_path / "jupyter.log"
    with open(log, "wb") as out:
        lab = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             "--IdentityProvider.token=jt", "--no-browser", "--allow-root", f"--ServerApp.root_dir={tmp_path}",
             f"--ServerApp.certfile={made.cert_file}", f"--ServerApp.keyfile={made.key_file}",
             f"--PipenbExtension.enroll_key={ENROLL}",
             f"--PipenbExtension.db_url=sqlite:///{tmp_path / 'pipenb.db'}"],
            stdout=out, stderr=out, env=env, start_new_session=True,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert lab.poll() is None, log.read_text()
            try:
                return requests.get(
                    url + "/pipenb/api/v1/health", verify=str(made.ca_file), timeout=2
                ).ok
            except requests.ConnectionError:
                return False

        wait_until(up, 90, "Jupyter over HTTPS", log.read_text, interval=0.2)
        a = start_agent(url, tmp_path / "agent", "--ca-file", str(made.ca_file))
        agents.append(a)
        a.wait_enrolled(60)
        wait_until(lambda: log_lines(a, "checked in with"), 30, "a check-in", a.log_text)
        b = start_agent(url, tmp_path / "no-ca")  # the system's CAs do not know this one
        agents.append(b)
        wait_until(lambda: log_lines(b, "TLS: unknown CA"), 30, "refusal", b.log_text)
    finally:
        lab.terminate()
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
