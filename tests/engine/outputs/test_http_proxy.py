"""``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` for ``http-post`` and ``http-poll`` (issue 16 item 8).

The proxy is a small forward proxy on loopback, written here: it serves absolute-form requests
(``POST http://host/path``) and ``CONNECT`` tunnels, relays the bytes to the receiver, and logs
each request line and its ``Proxy-Authorization``. The receivers are ``support.httpsink``
servers (one over TLS with a trustme certificate). Every test clears the proxy variables the machine
may have set.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import ssl
import threading

import orjson
import pytest
import trustme

import pipenb
from pipenb.errors import PipeRuntimeError

from support.files import read_ndjson
from support.httpsink import HttpSink, Request

PROXY_VARS = ["http_proxy", "https_proxy", "no_proxy", "all_proxy"]


class ForwardProxy:
    """A forward proxy: absolute-form HTTP and CONNECT; ``seen`` holds (request line, auth)."""

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                head, _, rest = head.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = [h for h in lines[1:] if h]
                auth = next((h.split(":", 1)[1].strip() for h in headers
                             if h.lower().startswith("proxy-authorization:")), None)  # fmt: skip
                outer.seen.append((f"{method} {target}", auth))
                if method == "CONNECT":
                    host, port = target.rsplit(":", 1)
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                    self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    url = target.split("://", 1)[1]
                    hostport, _, path = url.partition("/")
                    host, port = hostport.rsplit(":", 1)
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                    kept = [h for h in headers if not h.lower().startswith("proxy-")]
                    first = f"{method} /{path} {version}"
                    upstream.sendall(("\r\n".join([first, *kept]) + "\r\n\r\n").encode() + rest)
                relay(self.request, upstream)

            def finish(self):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join(30)
    b.close()


def receive(request: Request) -> tuple[int, bytes]:
    """Takes POSTed NDJSON, answers GET with two events."""
    return 200, (b'[{"n": 1}, {"n": 2}]' if request.method == "GET" else b"")


@pytest.fixture
def env(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def proxy():
    p = ForwardProxy()
    yield p
    p.close()


@pytest.fixture
def receiver():
    with HttpSink(receive) as r:
        yield r


def post(url: str, tmp_path, data_dir, **extra) -> None:
    doc = {
        "name": "post",
        "input": {"echo": {"events": [{"seq": i} for i in range(5)]}},
        "output": {"http-post": {"url": url, "format": "ndjson", **extra}},
    }
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
    asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))


def test_http_post_goes_through_http_proxy(env, proxy, receiver, tmp_path, data_dir):
    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    url = f"http://127.0.0.1:{receiver.port}/ingest?x=1"
    post(url, tmp_path, data_dir)
    assert [e["seq"] for e in receiver.events()] == list(range(5))
    assert proxy.seen == [(f"POST {url}", None)]


def test_no_proxy_bypasses_the_proxy(env, proxy, receiver, tmp_path, data_dir):
    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    env.setenv("NO_PROXY", "localhost,127.0.0.1")
    post(f"http://127.0.0.1:{receiver.port}/", tmp_path, data_dir)
    assert [e["seq"] for e in receiver.events()] == list(range(5))
    assert proxy.seen == []


def test_proxy_credentials_are_sent_to_the_proxy_only(env, proxy, receiver, tmp_path, data_dir):
    env.setenv("http_proxy", f"http://ann:s%3Acret@127.0.0.1:{proxy.port}")
    post(f"http://127.0.0.1:{receiver.port}/", tmp_path, data_dir)
    assert proxy.seen == [(f"POST http://127.0.0.1:{receiver.port}/", "Basic YW5uOnM6Y3JldA==")]
    assert len(receiver.events()) == 5


def test_https_is_tunnelled_with_connect_and_verified_end_to_end(env, proxy, tmp_path, data_dir):
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with HttpSink(receive, tls=ctx) as rx:
        env.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")  # no scheme: http:// meant
        env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # not used for https:// URLs
        post(rx.url, tmp_path, data_dir, tls={"ca-file": str(ca_file)})
    assert [e["seq"] for e in rx.events()] == list(range(5))
    assert proxy.seen == [(f"CONNECT 127.0.0.1:{rx.port}", None)]


def test_http_poll_goes_through_the_proxy_and_no_proxy_bypasses_it(
    env, proxy, receiver, tmp_path, data_dir
):
    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    url = f"http://127.0.0.1:{receiver.port}/items"
    for no_proxy, via_proxy in (("", 1), ("127.0.0.1", 0), ("*", 0)):
        env.setenv("NO_PROXY", no_proxy)
        before = len(proxy.seen)
        out = tmp_path / f"out-{via_proxy}-{no_proxy or 'none'}.ndjson"
        doc = {"name": "poll", "input": {"http-poll": {"url": url, "interval": None}},
               "output": {"file": {"path": str(out)}}}  # fmt: skip
        pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())
        asyncio.run(asyncio.wait_for(pipe.engine(data_dir=data_dir).run(), 60))
        assert read_ndjson(out) == [{"n": 1}, {"n": 2}]
        assert len(proxy.seen) - before == via_proxy, no_proxy
    assert proxy.seen == [(f"GET {url}", None)]


def test_a_proxy_scheme_that_is_not_supported_is_a_clear_error(env, tmp_path, data_dir):
    env.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises((ValueError, PipeRuntimeError), match="only http:// proxies"):
        post("http://127.0.0.1:9/", tmp_path, data_dir)


def test_under_an_agent_policy_the_receiver_must_be_allowed_too(
    env, proxy, receiver, tmp_path, data_dir
):
    """The socket goes to the proxy, but the receiver is still checked: a proxy the policy
    allows is not a way to reach a receiver it does not."""
    from pipenb.engine.base import RunContext
    from pipenb.engine.checkpoints import MemoryCheckpointStore
    from pipenb.engine.runtime import Engine
    from pipenb.policy import Policy
    from pipenb.policy.guard import Guard

    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    url = f"http://127.0.0.1:{receiver.port}/"
    doc = {"name": "post", "input": {"echo": {"events": [{"seq": 1}]}},
           "output": {"http-post": {"url": url, "format": "ndjson"}}}  # fmt: skip
    pipe = pipenb.Pipe.from_yaml(orjson.dumps(doc).decode())

    def run(connect: list[str]) -> None:
        guard = Guard(Policy.for_agent(str(tmp_path / "agent"), {"connect": connect}))
        ctx = RunContext(pipe="post", data_dir=data_dir, guard=guard)
        engine = Engine(pipe.spec, ctx, checkpoints=MemoryCheckpointStore(), drain_timeout=1)
        asyncio.run(asyncio.wait_for(engine.run(), 60))

    run([f"127.0.0.1:{proxy.port}", f"127.0.0.1:{receiver.port}"])
    assert proxy.seen == [(f"POST {url}", None)] and len(receiver.events()) == 1
    with pytest.raises(Exception, match=f"connects to 127.0.0.1:{receiver.port}"):
        run([f"127.0.0.1:{proxy.port}"])
    with pytest.raises(Exception, match=f"127.0.0.1:{proxy.port}"):
        run([f"127.0.0.1:{receiver.port}"])  # the proxy itself is not allowed
    assert len(proxy.seen) == 1 and len(receiver.events()) == 1
