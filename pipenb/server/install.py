"""What the server hands a worker host that installs an agent: its wheel and a bootstrap script.

The script (``install.sh`` beside this module) is rendered with the served wheel's file name and
version only; it holds no secret, so it can be fetched without credentials and its requests
leave nothing worth stealing in a log. The wheel is the file given with ``--wheel``; its SHA-256
travels in the line that ``pipenb agents install-command`` prints (that line comes from an
authenticated, verified API call), and the script refuses a wheel with another hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pipenb import __version__
from pipenb.errors import UsageError

#: How a wheel's file name looks (PEP 427): name-version(-build)?-python-abi-platform.whl
WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.!+]+(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")

NO_WHEEL = (
    "this server serves no agent wheel: start it with --wheel FILE "
    "(or PIPENB_WHEEL; `make dist` builds dist/pipenb_fleet-VERSION-py3-none-any.whl)"
)


@dataclass(frozen=True)
class Wheel:
    """The wheel the server serves, with what a downloader checks it against."""

    path: Path
    filename: str
    sha256: str
    size: int
    version: str


def check_wheel(path: str | os.PathLike[str]) -> Path:
    """The ``--wheel`` path, checked at start-up so a typo is an error now, not a 404 later."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise UsageError(f"--wheel {path}: no such file (`make dist` builds one into dist/)")
    if not WHEEL_NAME.match(p.name):
        raise UsageError(f"--wheel {path}: not a wheel file name (NAME-VERSION-py3-none-any.whl)")
    return p


def load_wheel(path: str | os.PathLike[str]) -> Wheel:
    """The wheel's facts; read again only when the file changes (a new ``make dist``)."""
    p = Path(path)
    st = p.stat()
    return _load(str(p), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, size: int) -> Wheel:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    name = os.path.basename(path)
    return Wheel(Path(path), name, digest.hexdigest(), size, name.split("-")[1])


def render_script(wheel: Wheel | None) -> str:
    """``install.sh`` for this server: the served wheel's name and version filled in."""
    text = resources.files("pipenb.server").joinpath("install.sh").read_text(encoding="utf-8")
    filename = wheel.filename if wheel else "pipenb_fleet.whl"
    version = wheel.version if wheel else __version__
    return text.replace("@@VERSION@@", version).replace("@@WHEEL_FILE@@", filename)


def public_key_pin(cert_pem: bytes) -> str:
    """``sha256//BASE64`` of a certificate's public key, as ``curl --pinnedpubkey`` takes it:
    the install line pins the server's key, since a worker host does not trust a private CA
    before the agent is installed. Needs ``cryptography`` (the server's TLS support has it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
