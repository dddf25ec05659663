"""TLS helpers: certificates to be wrong with, and proxies on loopback (``test_tls.py``), and a
trustme certificate for listeners and peers (``trustme_certs``).

- ``expired_chain`` / ``chain_files``: certificate files made with the server's own
  ``pipenb.server.certs`` (trustme cannot make expired ones);
- ``Proxy``: a TCP proxy on 127.0.0.1 between an agent and the server, in threads. As a pure
  pass-through it relays bytes as they are; as a man in the middle it terminates the client's TLS
  with its own certificate and opens its own TLS connection to the server. Either way it keeps
  every byte the client sent it (``seen``), so a test can assert what never crossed.
"""

from __future__ import annotations

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
    TLS with (its own certificate), and TLS again towards the server."""

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
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start(self) -> Proxy:
        self._spawn(self._accept)
        return self

    def _spawn(self, fn: object, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        client: socket.socket = conn
        upstream: socket.socket | None = None
        try:
            conn.settimeout(60)
            if self.server_ctx is not None:
                try:
                    client = self.server_ctx.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    with self._lock:
                        self.handshakes_failed += 1
                    return
            upstream = socket.create_connection(self.target, timeout=60)
            if self.upstream_ctx is not None:
                upstream = self.upstream_ctx.wrap_socket(upstream)
            done = threading.Event()
            self._spawn(self._pump, upstream, client, False, done)
            self._pump(client, upstream, True, done)
            done.wait(10)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()

    def _pump(
        self, src: socket.socket, dst: socket.socket, record: bool, done: threading.Event
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    with self._lock:
                        self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            if not record:
                done.set()

    def saw(self, secret: str) -> bool:
        with self._lock:
            return secret.encode() in self.seen

    def close(self) -> None:
        self._closing.set()
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
