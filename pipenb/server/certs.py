"""``pipenb server --tls-self-signed``: a private CA and a server certificate, made once.

They live in ``DATA_DIR/tls`` (directory 0700, files 0600): ``ca.pem`` and ``ca.key`` (the CA,
ten years), ``server.pem`` (the server's certificate followed by the CA's, so the chain it
presents contains the pinned certificate) and ``server.key``. Later starts reuse them; the
server certificate alone is issued again when the names asked for change or it nears its end.
Agents trust the CA (``--ca-file ca.pem`` or ``--ca-fingerprint``), so re-issuing the server's
certificate never touches them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipenb.tls import normal_fingerprint, save_private

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept at most; the server re-issues it by itself
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class SelfSigned:
    dir: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    fingerprint: str  # the CA's SHA-256, AB:CD:...
    issued: bool  # a new server certificate was made on this start


def default_names(host: str) -> list[str]:
    """localhost and 127.0.0.1, and the listen address when it names one host."""
    names = ["localhost", "127.0.0.1"]
    if host and host not in ("0.0.0.0", "::", "") and host not in names:
        names.append(host)
    return names


def parse_names(text: str | None, host: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or default_names(host)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256, spelled as ``pipenb.tls`` spells it (``AB:CD:...``)."""
    return normal_fingerprint(cert.fingerprint(hashes.SHA256()).hex())


def make_ca(
    common_name: str = "pipenb private CA",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[str],
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    client: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate for ``names`` signed by ``ca`` (``client``: for mutual TLS)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _names_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def _wanted(names: list[str]) -> set[str]:
    out = set()
    for n in names:
        try:
            out.add(str(ipaddress.ip_address(n.strip("[]"))))
        except ValueError:
            out.add(n)
    return out


def ensure_self_signed(data_dir: str | os.PathLike[str], names: list[str]) -> SelfSigned:
    """The CA and a server certificate for ``names`` in ``data_dir/tls``, made if needed."""
    d = Path(data_dir) / "tls"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    ca_file, ca_key_file = d / "ca.pem", d / "ca.key"
    cert_file, key_file = d / "server.pem", d / "server.key"
    if ca_file.exists() and ca_key_file.exists():
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    else:
        ca, ca_key = make_ca()
        save_private(ca_key_file, _key_pem(ca_key))
        save_private(ca_file, ca.public_bytes(serialization.Encoding.PEM))
    current = None
    if cert_file.exists() and key_file.exists():
        current = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    fresh = (
        current is not None
        and current.issuer == ca.subject
        and _names_of(current) == _wanted(names)
        and current.not_valid_after_utc - _now() > RENEW_BEFORE
    )
    if not fresh:
        cert, key = issue(ca, ca_key, names)
        save_private(key_file, _key_pem(key))
        chain = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
            serialization.Encoding.PEM
        )
        save_private(cert_file, chain)
    return SelfSigned(d, ca_file, cert_file, key_file, fingerprint(ca), not fresh)
