"""``tls:`` on the ``tcp`` and ``http-server`` listeners: HTTPS/TLS served, mutual TLS enforced."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import requests
import trustme

from support.engines import pipe_doc, running
from support.files import read_ndjson
from support.pipes import problems_of
from support.waiting import async_wait_until


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("client.example")
    files = {}
    for name, blob in (
        ("server", server.private_key_and_cert_chain_pem),
        ("client", client.private_key_and_cert_chain_pem),
        ("ca", ca.cert_pem),
    ):
        files[name] = str(tmp_path / f"{name}.pem")
        blob.write_to_path(files[name])
    return files


def tls_send(port: int, data: bytes, ca: str, cert: str | None) -> bytes | None:
    """Send ``data`` over TLS; then what a read returns (b"" at EOF), or None if it failed."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.sendall(data)
        if cert:
            return b""
        try:
            return s.recv(10)  # TLS 1.3: the server's refusal arrives after the handshake
        except (ssl.SSLError, OSError):
            return None


def test_tcp_mutual_tls_refuses_a_client_without_certificate(tmp_path, data_dir, pki):
    out = tmp_path / "out.ndjson"
    tls = {"cert": pki["server"], "client-ca": pki["ca"]}
    pipe = pipe_doc({"tcp": {"address": "127.0.0.1:0", "format": "lines", "tls": tls}}, out)

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            await asyncio.to_thread(tls_send, inp.port, b"first\n", pki["ca"], pki["client"])
            await async_wait_until(lambda: len(read_ndjson(out)) == 1, what="the line")
            try:
                refused = await asyncio.to_thread(tls_send, inp.port, b"no cert\n", pki["ca"], None)
            except (ssl.SSLError, OSError):
                refused = None
            assert refused in (None, b"")
            await asyncio.to_thread(tls_send, inp.port, b"last\n", pki["ca"], pki["client"])
            await async_wait_until(lambda: len(read_ndjson(out)) == 2, what="the last line")

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [e["_raw"] for e in read_ndjson(out)] == ["first", "last"]


def test_http_server_serves_https(tmp_path, data_dir, pki):
    out = tmp_path / "out.ndjson"
    pipe = pipe_doc(
        {"http-server": {"address": "127.0.0.1:0", "format": "ndjson",
                         "tls": {"cert": pki["server"]}}},
        out,
    )  # fmt: skip

    async def scenario():
        async with running(pipe, data_dir) as (_, inp):
            url = f"https://127.0.0.1:{inp.port}/"
            r = await asyncio.to_thread(
                requests.post, url, data=b'{"a": 1}\n', verify=pki["ca"], timeout=10
            )
            assert r.status_code == 200, r.text
            with pytest.raises(requests.exceptions.SSLError):
                await asyncio.to_thread(requests.post, url, data=b"{}", timeout=10)
            with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP is not served
                await asyncio.to_thread(
                    requests.post, url.replace("https", "http"), data=b"{}", timeout=10
                )
            await async_wait_until(lambda: len(read_ndjson(out)) == 1, what="the event")

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert read_ndjson(out) == [{"a": 1}]


def test_a_missing_certificate_file_is_a_clear_error(tmp_path, data_dir):
    pipe = pipe_doc({"tcp": {"address": "127.0.0.1:0", "tls": {"cert": str(tmp_path / "no.pem")}}},
                    tmp_path / "out.ndjson")  # fmt: skip

    async def scenario():
        engine = pipe.engine(data_dir=data_dir)
        await engine.run()
        return engine.snapshot()

    try:
        snap = asyncio.run(asyncio.wait_for(scenario(), 30))
        message = str(snap.get("error"))
    except Exception as exc:  # the engine may raise what failed
        message = str(exc)
    assert "tcp input tls: cannot load certificate or key" in message


def test_key_without_cert_is_refused_at_load(tmp_path):
    text = (
        "name: x\ninput: {echo: {lines: [a]}}\n"
        "output: {syslog: {address: '127.0.0.1:1', tls: {key: k.pem}}}\n"
    )
    (problem,) = problems_of(text)
    assert "key is given without cert" in str(problem)
