"""A throw-away certificate authority for the TLS tests, made at run time with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "eds-server.test"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    @property
    def requests_cert(self) -> tuple[str, str]:
        return (str(self.cert), str(self.key))


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_name: str
    server: KeyPair
    client: KeyPair
    # Signed by another CA: a certificate the server must not trust.
    stranger: KeyPair


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key) -> KeyPair:
    pair = KeyPair(directory / f"{stem}.pem", directory / f"{stem}-key.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pair.key.chmod(0o600)
    return pair


class _Authority:
    def __init__(self, common_name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name)
        self.cert = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, common_name: str, usage, names: list[x509.GeneralName]) -> tuple[x509.Certificate, object]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self._builder(_name(common_name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1, ::1 and SERVER_NAME, a client certificate, and a stranger's."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = _Authority("eds-server test CA")
    ca = directory / "ca.pem"
    ca.write_bytes(authority.cert.public_bytes(serialization.Encoding.PEM))
    server_names = [
        x509.DNSName(SERVER_NAME),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    server = _write(directory, "server", *authority.issue(SERVER_NAME, ExtendedKeyUsageOID.SERVER_AUTH, server_names))
    client_names = [x509.DNSName("envoy.test")]
    client = _write(directory, "client", *authority.issue("envoy", ExtendedKeyUsageOID.CLIENT_AUTH, client_names))
    stranger = _write(
        directory,
        "stranger",
        *_Authority("another CA").issue("stranger", ExtendedKeyUsageOID.CLIENT_AUTH, client_names),
    )
    return Pki(ca, SERVER_NAME, server, client, stranger)
