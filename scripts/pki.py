"""A throw-away certificate authority for the TLS tests, made at run time (trustme, on `cryptography`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

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


def _write(directory: Path, stem: str, leaf: trustme.LeafCert) -> KeyPair:
    pair = KeyPair(directory / f"{stem}.pem", directory / f"{stem}-key.pem")
    pair.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(pair.key))
    pair.key.chmod(0o600)
    return pair


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for SERVER_NAME, localhost, 127.0.0.1 and ::1, a client's, and a stranger's."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    ca = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    server = _write(directory, "server", authority.issue_cert(SERVER_NAME, "localhost", "127.0.0.1", "::1"))
    client = _write(directory, "client", authority.issue_cert("envoy.test"))
    stranger = _write(directory, "stranger", trustme.CA().issue_cert("envoy.test"))
    return Pki(ca, SERVER_NAME, server, client, stranger)
