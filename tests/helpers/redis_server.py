"""A real redis-server (Debian's) for tests: a free loopback port, its own directory, stopped by PID."""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from scripts.processes import Managed, free_port


@dataclass
class RedisServer(Managed):
    """AOF with `appendfsync always` by default: what the README tells operators to run."""

    tmp: Path
    port: int = field(default_factory=free_port)
    password: str | None = None
    tls_files: dict[str, Path] | None = None  # cert, key, ca: serve TLS only
    appendfsync: str = "always"
    # More redis-server options, such as `--replicaof HOST PORT` for a replica.
    extra_args: list[str] = field(default_factory=list)
    process: Any = None

    @property
    def directory(self) -> Path:
        return self.tmp / f"redis-{self.port}"

    @property
    def url(self) -> str:
        credentials = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls_files:
            return f"rediss://{credentials}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls_files['ca']}"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is missing: run `make system-deps` (scripts/system-deps.sh)")
        self.directory.mkdir(exist_ok=True)
        args = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.directory), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        if self.tls_files:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(self.tls_files["cert"]), "--tls-key-file", str(self.tls_files["key"])]
            args += ["--tls-ca-cert-file", str(self.tls_files["ca"])]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.launch(args, self.tmp / f"redis-{self.port}.log", lambda: self.client().ping(), "redis-server PING", 10)
        return self

    def log(self) -> str:
        return (self.tmp / f"redis-{self.port}.log").read_text()

    def crash(self) -> None:
        """SIGKILL: no chance to flush anything; only what was fsynced survives."""
        self.stop(first_signal=signal.SIGKILL)
