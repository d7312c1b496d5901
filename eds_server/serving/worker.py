"""eds-server's gunicorn worker: gevent's, with a shutdown that suits Envoy's connections.

Envoy keeps its connection to the xDS cluster open between polls, and with
long-poll its poll is held most of the time. gunicorn's gevent worker, told
to stop, waits for every connection to end, so held polls and idle
keep-alive connections kept each stopping worker for the whole
graceful_timeout and then were cut. Here, once the worker stops, held polls
are answered at once (304: nothing changed), connections between two
requests are closed (Envoy reconnects, to another worker or server), and the
others are closed as soon as their request is answered.
"""

from __future__ import annotations

import _socket
import errno
import gc
import os
import signal
import socket
import time
import warnings

import gevent
import gevent.socket
from gevent.monkey import MonkeyPatchWarning
from gunicorn.workers.ggevent import GeventWorker

from ..api.state import EXTENSION, AppState
from ..settings import Settings

STOP_CHECK_INTERVAL = 0.05
TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# gevent's warning that it patched ssl after these modules took names from it, when the only ones
# are redis-py's asyncio client: `import redis` loads it, eds-server never uses it.
_REDIS_ASYNCIO_ONLY = (
    r"Monkey-patching ssl after ssl has already been imported.*\(NOT patched\): "
    r"\['redis\.asyncio\.[\w.]+ \([^)]*\)'(, 'redis\.asyncio\.[\w.]+ \([^)]*\)')*\]\.\s*$"
)


class EdsWorker(GeventWorker):
    def init_process(self) -> None:
        # Until gunicorn installs the worker's signal handlers (after gevent's
        # monkey-patching, which takes a while), the master's are inherited:
        # a SIGTERM then would be lost, and the master would wait out
        # graceful_timeout for a worker that never heard it.
        for stop_signal in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(stop_signal, self.handle_exit)
        self._idle: set[socket.socket] = set()
        self._busy: set[socket.socket] = set()
        # A greenlet per connection: by default gevent records, for each, the stack
        # and greenlet that spawned it (for debugging), which with thousands of
        # held polls is time at every accept and objects for every collection.
        gevent.config.track_greenlet_tree = False
        super().init_process()

    def _state(self) -> AppState | None:
        """eds-server's app state; None for another WSGI app (the bench's bare app runs under this
        worker class too, so that the two are compared on the same stack)."""
        return getattr(self.wsgi, "extensions", {}).get(EXTENSION)

    def patch(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _REDIS_ASYNCIO_ONLY, MonkeyPatchWarning)
            super().patch()
        self.sockets = [_Listener(self, listener) for listener in self.sockets]

    def run(self) -> None:
        state = self._state()
        self.body_read_timeout = (state.settings if state else Settings()).body_read_timeout
        # Everything loaded so far (modules, the app) lives as long as the worker: out of
        # the garbage collector's way, a full collection walks only what requests made,
        # which with thousands of held polls is most of the objects anyway.
        gc.freeze()
        gevent.spawn(self._close_idle_connections_when_stopping)
        super().run()

    def handle(self, listener, client, addr) -> None:
        if client.family in TCP_FAMILIES:
            # Small answers leave at once: Nagle's algorithm with the client's
            # delayed ACK adds ~40 ms to an answer. (gunicorn sets it on the
            # listening socket too; this does not depend on it being inherited.)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._idle.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self._idle.discard(client)
            self._busy.discard(client)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _Corked(self.wsgi)

    def handle_request(self, listener_name, req, sock, addr):
        self._idle.discard(sock)
        self._busy.add(sock)
        # gunicorn bounds the wait for a request's headers (keepalive) but not for its body:
        # a client that announces a body and never sends it would hold the connection and its
        # greenlet for good. While a request is handled, a read (or write) of its socket waits
        # at most body_read_timeout; the reader answers 408 (api/common.py). A held poll does
        # not touch its socket while held, so holds are not cut short.
        sock.settimeout(self.body_read_timeout)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            sock.settimeout(None)
            _uncork(sock)
            self._busy.discard(sock)
            self._idle.add(sock)

    def _close_idle_connections_when_stopping(self) -> None:
        while self.alive:
            gevent.sleep(STOP_CHECK_INTERVAL)
        state = self._state()
        if state is not None:
            state.core.holds.stop()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while (self._idle or self._busy) and time.monotonic() < deadline:
            for client in list(self._idle):
                self._idle.discard(client)
                _hang_up(client)
            gevent.sleep(STOP_CHECK_INTERVAL)


class _Listener(gevent.socket.socket):
    """A listening socket that takes no new connection once its worker stops.

    gevent's run loop notices a stop only at its next turn, up to a second
    later; until then this worker would still take connections (with the old
    settings, after a reload) that the other workers, or the new ones, take instead.
    """

    def __init__(self, worker: EdsWorker, listener: gevent.socket.socket):
        super().__init__(listener.family, listener.type, fileno=listener.detach())
        self.worker = worker

    def _accept(self):
        if not self.worker.alive:
            # What losing the accept race to another worker looks like: gevent moves on.
            raise BlockingIOError(errno.EAGAIN, "this worker is stopping")
        return super()._accept()


class _Corked:
    """The app, with its answers sent as one TCP segment instead of two; otherwise the app itself.

    gunicorn writes an answer's headers and its body with two sends; with
    TCP_NODELAY (above) each leaves as a packet of its own, and on loopback
    each costs the sender the receiver's processing too. Corked from the app's
    call (after gunicorn's `100 Continue`, which must leave at once) until the
    request is done (`handle_request`), they leave together, which makes
    releasing thousands of held polls markedly cheaper (docs/PERFORMANCE.md). Nothing here streams an
    answer, which a cork would hold back until it fills a segment. Attributes
    are the app's (`app_state(worker.wsgi)` reads the Flask app's).
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is not None and sock.family in TCP_FAMILIES and environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        return self.app(environ, start_response)

    def __getattr__(self, name):
        return getattr(self.app, name)


def _uncork(sock: socket.socket) -> None:
    if sock.family in TCP_FAMILIES:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        except OSError:  # the connection is gone
            pass


def _hang_up(client: socket.socket) -> None:
    """End the connection under the greenlet waiting on it, which then sees a plain end of stream.

    gevent's own `shutdown` would instead fail that greenlet's wait with EBADF
    (logged as a socket error), so the shutdown goes through a duplicate of
    the descriptor on the unpatched socket type.
    """
    try:
        raw = _socket.socket(fileno=os.dup(client.fileno()))
    except OSError:  # already closed
        return
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        raw.close()
