"""Redis with Sentinel on loopback, as real processes stopped by PID: one primary, its replicas and
three Sentinels, the deployment a `redis+sentinel://` store is tested and benchmarked against; and
`Writers`, the clients that write to eds-server meanwhile.

The servers are the suite's `RedisServer`s (AOF, `appendfsync always`) with replication options
added; the Sentinels watch the primary with `down-after-milliseconds` 1000 and a short
`failover-timeout`, so that a killed primary is replaced within a few seconds.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import requests

from scripts.processes import Managed, free_port, wait_until
from tests.helpers.redis_server import RedisServer

PRIMARY_NAME = "eds-primary"
LEDGERS = 40  # the services `Writers` spread their writes over


@dataclass
class SentinelServer(Managed):
    """One `redis-sentinel` watching `primary_port` under PRIMARY_NAME, with a quorum of 2."""

    tmp: Path
    primary_port: int
    data_password: str | None = None
    password: str | None = None  # the Sentinel's own (requirepass), asked of clients and of the other Sentinels
    tls_files: dict[str, Path] | None = None
    down_after_ms: int = 1000
    failover_timeout_ms: int = 2000
    port: int = field(default_factory=free_port)
    process: Any = None

    @property
    def config_path(self) -> Path:
        return self.tmp / f"sentinel-{self.port}.conf"

    def client(self) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls_files["ca"])} if self.tls_files else {}
        return redis.Redis(
            "127.0.0.1", self.port, password=self.password, socket_timeout=2, decode_responses=True, **tls
        )

    def primary_state(self) -> dict:
        """What this Sentinel says of the primary (SENTINEL MASTER)."""
        return self.client().sentinel_master(PRIMARY_NAME)

    def start(self) -> SentinelServer:
        lines = ["bind 127.0.0.1", f"dir {self.tmp}"]
        if self.tls_files:
            lines += ["port 0", f"tls-port {self.port}", "tls-auth-clients no", "tls-replication yes"]
            lines += [f"tls-{kind}-file {self.tls_files[kind]}" for kind in ("cert", "key")]
            lines.append(f"tls-ca-cert-file {self.tls_files['ca']}")
        else:
            lines.append(f"port {self.port}")
        lines += [
            f"sentinel monitor {PRIMARY_NAME} 127.0.0.1 {self.primary_port} 2",
            f"sentinel down-after-milliseconds {PRIMARY_NAME} {self.down_after_ms}",
            f"sentinel failover-timeout {PRIMARY_NAME} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {PRIMARY_NAME} 2",
        ]
        if self.data_password:
            lines.append(f"sentinel auth-pass {PRIMARY_NAME} {self.data_password}")
        if self.password:
            lines += [f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}"]
        # Sentinel rewrites its file as it learns (replicas, the other Sentinels, each failover).
        self.config_path.write_text("\n".join(lines) + "\n")
        self.launch(
            ["redis-sentinel", str(self.config_path)],
            self.tmp / f"sentinel-{self.port}.log",
            self.primary_state,
            "redis-sentinel SENTINEL MASTER",
            10,
        )
        return self


@dataclass
class SentinelCluster:
    """A primary, `replicas` replicas and `sentinels` Sentinels; `url` is the store URL that reaches them."""

    tmp: Path
    replicas: int = 2
    sentinels: int = 3
    password: str | None = None
    sentinel_password: str | None = None
    tls_files: dict[str, Path] | None = None
    # The store's read timeout, and so its WAIT for replicas (half of it); None: the store's default (1 s).
    # A test whose subject is not a failover's timing sets it long, so that a slow disk on a loaded
    # machine (every server fsyncs each write) does not turn its write into CommitOutcomeUnknown.
    socket_timeout: float | None = None
    servers: list[RedisServer] = field(default_factory=list)
    sentinel_servers: list[SentinelServer] = field(default_factory=list)

    def start(self) -> SentinelCluster:
        primary = self._server()
        self.servers.append(primary.start())
        for _ in range(self.replicas):
            self.servers.append(self._server(replica_of=primary).start())
        for _ in range(self.sentinels):
            sentinel = SentinelServer(
                self.tmp, primary.port, self.password, self.sentinel_password, self.tls_files
            ).start()
            self.sentinel_servers.append(sentinel)
        self.wait_until_healthy()
        return self

    def _server(self, replica_of: RedisServer | None = None) -> RedisServer:
        server = RedisServer(self.tmp, password=self.password, tls_files=self.tls_files)
        self._replicate(server, replica_of)
        return server

    def _replicate(self, server: RedisServer, primary: RedisServer | None) -> None:
        """Every server may become the primary or a replica, so each knows the password and TLS of both roles.

        A primary starts a full resynchronisation at once, not after Redis's default 5 s wait for
        more replicas to share it (`repl-diskless-sync-delay`)."""
        args = ["--repl-diskless-sync-delay", "0"]
        if self.password:
            args += ["--masterauth", self.password]
        if self.tls_files:
            args += ["--tls-replication", "yes"]
        if primary is not None:
            args += ["--replicaof", "127.0.0.1", str(primary.port)]
        server.extra_args = args

    @property
    def url(self) -> str:
        scheme = "rediss+sentinel" if self.tls_files else "redis+sentinel"
        credentials = f":{quote(self.password, safe='')}@" if self.password else ""
        sentinels = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinel_servers)
        query = []
        if self.sentinel_password:
            query.append(f"sentinel_password={quote(self.sentinel_password, safe='')}")
        if self.socket_timeout is not None:
            query.append(f"socket_timeout={self.socket_timeout}")
        if self.tls_files:
            query.append(f"ssl_ca_certs={self.tls_files['ca']}")
        return f"{scheme}://{credentials}{sentinels}/{PRIMARY_NAME}/0" + (f"?{'&'.join(query)}" if query else "")

    def _settled_port(self) -> int | None:
        """The primary's port once every running Sentinel names the same one, none of them is failing
        over, and it answers as a primary; else None."""
        states = [s.primary_state() for s in self.sentinel_servers if s.process is not None]
        ports = {int(state["port"]) for state in states}
        if len(ports) != 1 or any(state["flags"] != "master" for state in states):
            return None
        port = ports.pop()
        server = next(s for s in self.servers if s.port == port)
        return port if server.client().info("replication")["role"] == "master" else None

    @property
    def primary(self) -> RedisServer:
        """The primary, once the Sentinels agree on it (after a failover the last to learn of it lags a little)."""
        return self.settled_primary()

    def settled_primary(self, stable_for: float = 0.0) -> RedisServer:
        """The primary once the Sentinels have agreed on it for `stable_for` seconds: on a loaded machine a
        Sentinel may find a just promoted primary down and fail over once more, a second or two later."""
        agreed: dict[str, Any] = {}

        def stable() -> int | None:
            port = self._settled_port()
            if port is None or agreed.get("port") != port:
                agreed.update(port=port, since=time.monotonic())
                return None
            return port if time.monotonic() - agreed["since"] >= stable_for else None

        port = wait_until(stable, timeout=30, what="the Sentinels settled on one primary")
        return next(s for s in self.servers if s.port == port)

    def wait_until_healthy(self, timeout: float = 30) -> None:
        """Every Sentinel sees the primary up, every replica up and in sync, and every other Sentinel:
        what a failover needs (a Sentinel promotes only a replica it has heard from recently)."""

        def healthy() -> bool:
            if self._settled_port() is None:
                return False
            for sentinel in self.sentinel_servers:
                if int(sentinel.primary_state()["num-other-sentinels"]) != self.sentinels - 1:
                    return False
                replicas = sentinel.client().sentinel_slaves(PRIMARY_NAME)
                up = [r for r in replicas if "down" not in r["flags"] and r["master-link-status"] == "ok"]
                if len(up) != len(self.servers) - 1:
                    return False
            offsets = {self._offset(s) for s in self.servers}
            if len(offsets) != 1:
                return False
            # What a store's write asks (WAIT): every replica acknowledges the primary's latest write.
            replicas = len(self.servers) - 1
            primary = self.primary.client()
            primary.set("test:cluster-healthy", time.monotonic())  # outside the store's eds: keys
            return primary.execute_command("WAIT", replicas, 1000) == replicas

        wait_until(healthy, timeout=timeout, interval=0.1, what="Sentinel seeing the primary, every replica in sync")

    @staticmethod
    def _offset(server: RedisServer) -> int:
        info = server.client().info("replication")
        return info["master_repl_offset"] if info["role"] == "master" else info["slave_repl_offset"]

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary: no chance to hand over anything. Returns the server killed."""
        primary = self.primary
        primary.crash()
        return primary

    def fail_over(self, writers: Writers) -> Failover:
        """Kill the primary while `writers` write, and return once a write is acknowledged again."""
        wait_until(lambda: writers.accepted_after(time.monotonic() - 0.3), 10, what="writes flowing")
        killed_at = time.monotonic()
        killed = self.kill_primary()
        refused = wait_until(lambda: writers.refused_after(killed_at), 10, what="a write refused (503)")
        resumed = wait_until(lambda: writers.accepted_after(refused.started), 30, 0.02, what="writes resuming")
        return Failover(killed, killed_at, refused, resumed)

    def bring_back(self, server: RedisServer) -> None:
        """Restart a killed server as a replica of the current primary, and wait until the cluster is whole."""
        self._replicate(server, self.settled_primary(stable_for=2))
        server.start()
        self.wait_until_healthy()

    def stop(self) -> None:
        for process in [*self.sentinel_servers, *self.servers]:
            process.stop()


@dataclass(frozen=True)
class Answer:
    started: float  # monotonic
    status: int  # 0: no answer at all
    service: str
    port: int
    message: str = ""  # a refusal's


@dataclass
class Writers:
    """Clients that each register a new host on every write, alternating between the servers in `urls`;
    every answer is kept, so that what was acknowledged can be looked for afterwards."""

    urls: list[str]
    clients: int = 4
    answers: list[Answer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    ports: itertools.count = field(default_factory=lambda: itertools.count(20000))

    def start(self) -> Writers:
        self.threads = [
            threading.Thread(target=self._write, args=(offset,), daemon=True) for offset in range(self.clients)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def _write(self, offset: int) -> None:
        with requests.Session() as session:
            for index in itertools.count(offset):
                if self.stopping.is_set():
                    return
                port = next(self.ports)
                service = f"ledger-{port % LEDGERS}"  # spread, so that no service grows large
                started = time.monotonic()
                try:
                    answer = session.post(
                        f"{self.urls[index % len(self.urls)]}/edsservice/{service}/hosts",
                        json={"ip_address": "127.0.0.2", "port": port},
                        timeout=10,
                    )
                    status, message = answer.status_code, "" if answer.ok else answer.json()["message"]
                except (requests.RequestException, ValueError) as error:
                    status, message = 0, str(error)
                self.answers.append(Answer(started, status, service, port, message))
                self.stopping.wait(0.05)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def refused_after(self, moment: float) -> Answer | None:
        return next((a for a in list(self.answers) if a.started >= moment and a.status == 503), None)

    def accepted_after(self, moment: float) -> Answer | None:
        return next((a for a in list(self.answers) if a.started >= moment and 200 <= a.status < 300), None)


@dataclass(frozen=True)
class Failover:
    """One primary killed under writes, as the writers saw it."""

    killed: RedisServer
    killed_at: float  # monotonic
    first_refused: Answer
    resumed: Answer  # the first write acknowledged among those sent after the first refusal

    @property
    def refusing_seconds(self) -> float:
        """From the first write refused to the first one acknowledged after it."""
        return self.resumed.started - self.first_refused.started

    @property
    def seconds_to_resume(self) -> float:
        """From the kill to the first write acknowledged again."""
        return self.resumed.started - self.killed_at
