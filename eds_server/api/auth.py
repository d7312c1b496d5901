"""Bearer tokens: who may change the registry, and who may read it (README, SECURITY).

The rule is by method and path, so a route added later is covered without
touching this module: every method that is not a read needs a write token,
except the discovery polls (read-only, though POST); reads of the registry and
of the clients view need a read token when read tokens are configured.
Discovery, health, metrics and the Swagger console stay open; protect
discovery with TLS / mutual TLS.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from flask import Flask, request

from ..settings import Settings, read_token_file
from ..xds.resources import POLL_PATHS
from .common import caller

log = logging.getLogger("eds_server.auth")

SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
# POSTs that only read: Envoy's polls.
OPEN_POSTS = frozenset(POLL_PATHS)
# What EDS_READ_TOKENS protects: the registry and what Envoys hold.
READ_PROTECTED = ("/edsservice", "/clients")

# The Swagger 2.0 security scheme: 2.0 has no bearer type, so the token goes
# in the Authorization header as an apiKey; Swagger UI's Authorize fills it in.
SCHEME = "bearer"
AUTHORIZATIONS = {
    SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Type `Bearer <token>` (or the token alone): a token of EDS_API_TOKENS for writes, "
        "of EDS_READ_TOKENS or EDS_API_TOKENS for reads when read tokens are configured.",
    }
}
# Security requirements of the documented operations: writes always name the
# scheme; registry reads need it only when read tokens are configured.
WRITE_SECURITY = SCHEME
READ_SECURITY = [SCHEME, {}]
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="eds-server"'}


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps even the tokens' lengths out of reach of timing.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Tokens:
    write: tuple[bytes, ...] = ()
    read: tuple[bytes, ...] = ()  # read-only tokens; a write token reads too

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        write = list(settings.api_tokens)
        if settings.api_token_file:
            write += read_token_file(settings.api_token_file)
        return cls(tuple(map(_digest, write)), tuple(map(_digest, settings.read_tokens)))

    def required(self, method: str, path: str) -> tuple[str, tuple[bytes, ...]] | None:
        """What a request needs: ("read" or "write", the tokens that admit it), None when it is open."""
        if method in SAFE_METHODS:
            if self.read and any(path == p or path.startswith(p + "/") for p in READ_PROTECTED):
                return "read", self.read + self.write
            return None
        if path in OPEN_POSTS or not self.write:
            return None
        return "write", self.write


def admits(allowed: tuple[bytes, ...], presented: str) -> bool:
    digest = _digest(presented)
    # Every token is compared (a list, not a short-circuiting generator): the time
    # taken says nothing about which token, or how much of one, matched.
    return any([hmac.compare_digest(digest, token) for token in allowed])


def bearer_token(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or of a bare `Authorization: <token>`."""
    if not header or not header.strip():
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if not credentials:
        return scheme
    return credentials.strip() if scheme.lower() == "bearer" else None


def install(app: Flask, tokens: Tokens) -> None:
    @app.before_request
    def require_token():
        need = tokens.required(request.method, request.path)
        if need is None:
            return None
        kind, allowed = need
        presented = bearer_token(request.headers.get("Authorization"))
        if presented is None:
            log.info("refused %s %s from %s: no bearer token", request.method, request.path, caller())
            settings = "EDS_API_TOKENS" if kind == "write" else "EDS_READ_TOKENS or EDS_API_TOKENS"
            return (
                {
                    "message": f"{request.method} {request.path} needs a {kind} token: send "
                    f"'Authorization: Bearer <token>' with a token of {settings}"
                },
                401,
                CHALLENGE,
            )
        if not admits(allowed, presented):
            log.warning("refused %s %s from %s: bearer token not accepted", request.method, request.path, caller())
            return {"message": f"the bearer token is not accepted for {kind}s ({request.method} {request.path})"}, 403
        return None


def writes_open_warning(settings: Settings) -> str | None:
    """The start-up warning of a server whose registry anyone who reaches it can change."""
    if settings.api_tokens or settings.api_token_file:
        return None
    return (
        "NO API TOKEN IS CONFIGURED: every write to the registry is open to anyone who can reach "
        f"port {settings.port}, and the registry decides where Envoy sends traffic. "
        "Set EDS_API_TOKENS (comma-separated) or api_token_file; see SECURITY in the README."
    )
