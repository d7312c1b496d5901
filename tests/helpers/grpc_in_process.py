"""The gRPC xDS server inside the test process, on a store of the test's choosing, so a test can change
what it sends (a deliberately invalid assignment, say) without any such hook in the product."""

from __future__ import annotations

import asyncio
import threading

from eds_server.grpc_xds import server as grpc_server
from eds_server.grpc_xds.streams import Hub, Limits
from eds_server.settings import Settings
from eds_server.store import Store
from eds_server.telemetry import Metrics
from eds_server.xds import DiscoveryCore
from scripts.processes import free_port


class InProcessGrpc:
    def __init__(self, store: Store, core_type: type[DiscoveryCore] = DiscoveryCore):
        self.settings = Settings(host="127.0.0.1", grpc_port=free_port(), store="unused://")
        self.core = core_type(store)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    @property
    def port(self) -> int:
        return self.settings.grpc_port

    def start(self) -> InProcessGrpc:
        self._thread.start()
        assert self._ready.wait(10), "the in-process gRPC server did not start"
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        hub = Hub(self.core, Metrics(), Limits(max_names=10_000)).start()
        server = await grpc_server.start(self.settings, hub)
        flushing = asyncio.create_task(hub.flush_every(0.2))  # the clients view, soon
        self._ready.set()
        await self._stop.wait()
        flushing.cancel()
        hub.stop()
        await server.stop(1)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
