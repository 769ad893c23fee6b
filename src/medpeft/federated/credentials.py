"""Credentials of one federation run: a TLS certificate authority, the SuperLink's certificate and
one SuperNode key pair per hospital, made with the ``cryptography`` package (no openssl shell-outs).

The SuperLink serves TLS with a certificate for 127.0.0.1 / localhost signed by the run's own CA;
SuperNodes and the ``flwr`` CLI trust that CA only. With SuperNode authentication on, the SuperLink
accepts a SuperNode only if its public key was registered (``flwr supernode register``): the
hospitals listed in the configuration. Keys are ECDSA on SECP384R1 in OpenSSH format, the kind
Flower's SuperNode reads; private keys are written owner-readable only.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from medpeft.io import atomic_path

VALID_DAYS = 7  # a run's certificates are throwaway


@dataclass(frozen=True)
class RunCredentials:
    ca: Path  # PEM certificate every client trusts
    server_cert: Path
    server_key: Path
    node_keys: dict[str, Path]  # hospital -> OpenSSH private key (public key beside it, .pub)

    def public_key(self, hospital: str) -> Path:
        return self.node_keys[hospital].with_suffix(".pub")


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medpeft federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, signer, *, ca: bool,
                 days: float = VALID_DAYS, days_ago: float = 0.0):
    """Valid from ``days_ago`` days (and 5 minutes) before now, for ``days`` days."""
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days_ago, minutes=5)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def node_key_pair(path: Path) -> Path:
    """A SuperNode key pair: ``path`` (OpenSSH private key) and ``path.pub``."""
    key = ec.generate_private_key(ec.SECP384R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), private=True)
    _write(path.with_suffix(".pub"), key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return path


def _node_keys(folder: Path, hospitals: list[str]) -> dict[str, Path]:
    """One SuperNode key pair per hospital, under ``folder/supernodes``."""
    return {h: node_key_pair(folder / "supernodes" / re.sub(r"[^\w.-]", "_", h)) for h in hospitals}


def make_credentials(folder: Path, hospitals: list[str]) -> RunCredentials:
    """A CA, the SuperLink's TLS certificate and a key pair per hospital, under ``folder``."""
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("medpeft run CA")
    ca_cert = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _certificate(_name("127.0.0.1"), ca_name, server_key.public_key(), ca_key, ca=False)
    pem = serialization.Encoding.PEM
    return RunCredentials(
        ca=_write(folder / "ca.pem", ca_cert.public_bytes(pem)),
        server_cert=_write(folder / "superlink.pem", server_cert.public_bytes(pem)),
        server_key=_write(folder / "superlink.key", _pem_key(server_key), private=True),
        node_keys=_node_keys(folder, hospitals))


def _read_certificate(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except FileNotFoundError:
        raise ValueError(f"tls {what} {path}: no such file") from None
    except ValueError as err:
        raise ValueError(f"tls {what} {path}: not a PEM certificate ({err})") from None


def hospital_credentials(tls: dict, folder: Path, hospitals: list[str]) -> RunCredentials:
    """The SuperLink's TLS from the hospital network's own PKI (``tls: {ca, certificate, key}``),
    checked before any process starts; SuperNode keys are still made for the run. Each problem
    names its file: a missing or unreadable file, a certificate outside its validity period, one
    its CA did not sign, one not valid for 127.0.0.1, a key that is not the certificate's."""
    unknown = sorted(set(tls) - {"ca", "certificate", "key"})
    missing = sorted({"ca", "certificate", "key"} - set(tls))
    if unknown or missing:
        raise ValueError(f"tls: needs ca, certificate and key (missing {missing}, unknown {unknown})")
    ca_path, cert_path, key_path = (Path(tls[k]).expanduser() for k in ("ca", "certificate", "key"))
    ca, cert = _read_certificate(ca_path, "ca"), _read_certificate(cert_path, "certificate")
    now = datetime.datetime.now(datetime.timezone.utc)
    for path, c in ((ca_path, ca), (cert_path, cert)):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise ValueError(f"tls certificate {path} is not valid now: valid from "
                             f"{c.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                             f"{c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError(f"tls certificate {cert_path} was not issued by the CA {ca_path}") from None
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        local = ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        local = False
    if not local:
        raise ValueError(f"tls certificate {cert_path} does not name 127.0.0.1 (subject "
                         "alternative names), where the SuperLink listens")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"tls key {key_path}: not a readable unencrypted PEM private key ({err})") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        raise ValueError(f"tls key {key_path} does not belong to the certificate {cert_path}")
    return RunCredentials(ca=ca_path, server_cert=cert_path, server_key=key_path,
                          node_keys=_node_keys(folder, hospitals))
