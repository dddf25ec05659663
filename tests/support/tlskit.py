"""TLS helpers: certificates to be wrong with, and proxies on loopback (``test_tls.py``), and a
trustme certificate for listeners and peers (``trustme_certs``).

- ``expired_chain`` / ``chain_files``: certificate files made with the server's own
  ``pipenb.server.certs`` (trustme cannot make expired ones);
- ``Proxy``: a TCP proxy on 127.0.0.1 between an agent and the server, on an asyncio loop. As a pure
  pass-through it relays bytes as they are; as a man in the middle it terminates the client's TLS
  with its own certificate and opens its own TLS connection to the server. Either way it keeps
  every byte the client sent it (``seen``), so a test can assert what never crossed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from pipenb.server.certs import issue, make_ca


def _pem(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]


def _key(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def chain_files(
    directory: Path, names: list[str], *, expired: bool = False
) -> tuple[Path, Path, Path]:
    """(ca.pem, server chain, server key) for ``names``; ``expired``: the certificate ended
    yesterday (and began a month ago)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca("pipenb test CA")
    now = dt.datetime.now(dt.timezone.utc)
    window = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else (None, None)
    cert, key = issue(ca, ca_key, names, not_before=window[0], not_after=window[1])
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_file.write_bytes(_pem(ca))
    cert_file.write_bytes(_pem(cert) + _pem(ca))
    key_file.write_bytes(_key(key))
    return ca_file, cert_file, key_file


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``target``; ``mitm``: (cert file, key file) to terminate
    TLS with (its own certificate), and TLS again towards the server.

    It runs an asyncio loop in one thread: OpenSSL does not allow one TLS connection to be used
    from two threads at once, which is what a reader and a writer thread per direction did (the
    likely cause of an enrollment through this proxy that hung for 20 s in one CI run); asyncio's
    TLS drives both directions of a connection from one loop.
    """

    def __init__(self, target: tuple[str, int], mitm: tuple[Path, Path] | None = None):
        self.target = target
        self.server_ctx: ssl.SSLContext | None = None
        self.upstream_ctx: ssl.SSLContext | None = None
        if mitm:
            self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.server_ctx.load_cert_chain(str(mitm[0]), str(mitm[1]))
            self.upstream_ctx = ssl.create_default_context()
            self.upstream_ctx.check_hostname = False
            self.upstream_ctx.verify_mode = ssl.CERT_NONE
        self.seen = bytearray()  # every byte a client sent (decrypted, for a man in the middle)
        self.connections = 0
        self.handshakes_failed = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._accepting: asyncio.Task[None] | None = None
        self._serving: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._sock.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            with self._lock:
                self.connections += 1
            task = loop.create_task(self._serve(conn))
            self._serving.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._serving.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self.server_ctx,
                ssl_handshake_timeout=30 if self.server_ctx is not None else None,
            )
        except (ssl.SSLError, OSError, asyncio.TimeoutError):
            conn.close()
            if self.server_ctx is not None:
                with self._lock:
                    self.handshakes_failed += 1
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(
                *self.target, ssl=self.upstream_ctx
            )
            await asyncio.gather(
                self._pump(reader, up_writer, record=True),
                self._pump(up_reader, writer, record=False),
            )
        except (OSError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, record: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if record:
                    with self._lock:
                        self.seen += data
                dst.write(data)
                await dst.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError, ssl.SSLError):
                if dst.can_write_eof():
                    dst.write_eof()
                else:  # TLS has no half-close: end the connection
                    dst.close()

    def saw(self, secret: str) -> bool:
        with self._lock:
            return secret.encode() in self.seen

    def close(self) -> None:
        async def stop() -> None:
            """Cancel every connection and wait for each to have closed its sockets."""
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def trustme_certs(directory: Path) -> tuple[str, str]:
    """A trustme CA's certificate for 127.0.0.1 and localhost: (chain file with the key, CA
    file), written into ``directory``; for a listener or a peer the test starts."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    chain, ca_file = directory / "server.pem", directory / "ca.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(chain))
    ca.cert_pem.write_to_path(str(ca_file))
    return str(chain), str(ca_file)
