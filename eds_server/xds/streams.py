"""One xDS stream's subscription to ClusterLoadAssignments, as the core keeps it, whatever carries it.

A gRPC stream (state of the world or delta, EDS or ADS) hands each request
here and asks what to push; the transport only translates protobuf. What is
kept per stream (docs/PROTOCOL.md, section gRPC, says which part of Envoy's
"xDS REST and gRPC protocol" each rule comes from):

- the names subscribed, and per name the version last sent on this stream
  (`sent`): a name is pushed when its current version differs from it, so a
  newly subscribed name is pushed whatever its version, and a version the
  node rejected is never pushed again: the next push is the next change;
- each response's nonce and what it carried, so that the request quoting
  that nonce ACKs (no `error_detail`) or NACKs (with one) exactly those
  resources; the versions ACKed are what the node holds (`acked`);
- delta only: `initial_resource_versions` on a reconnect count as sent and
  held, so only what differs is pushed again.

The bookkeeping becomes clients-view rows (`rows`), one per subscribed name,
with the same meaning as a REST poll's: `version_held` the version the node
holds, `sent_version` the one last sent, plus the explicit NACK.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..store import ClientRow
from .render import combined_version
from .resources import V3

SOTW, DELTA = "sotw", "delta"
GRPC = "grpc"
# Responses whose ACK or NACK is still awaited; an Envoy that never answers
# some of them must not grow the stream's memory.
MAX_IN_FLIGHT = 32


@dataclass(frozen=True)
class Node:
    """Who is on the other end: taken from the stream's first request (the protocol sends it only there for sure)."""

    id: str = ""
    cluster: str = ""
    envoy_version: str = ""


@dataclass
class Verdict:
    """What one request said about one response: ACK or NACK of these resources."""

    nonce: str
    accepted: bool
    resources: dict[str, str] = field(default_factory=dict)  # name -> version
    message: str = ""


# An open stream is a sign of life however quiet it is (Envoy sends nothing between changes): its
# rows say the node is alive this long ahead, and the transport notes them again well within it.
# After a stream closes its rows say so at once; after its process died, within this.
STREAM_ALIVE_FOR = 60.0


class Subscription:
    """The ClusterLoadAssignments one stream subscribed to, and what it was sent, ACKed and NACKed."""

    def __init__(self, mode: str, service: str, node: Node, clock):
        self.mode = mode  # SOTW or DELTA
        self.service = service  # "eds" or "ads": which gRPC service the stream is on
        self.node = node
        self.clock = clock
        self.names: set[str] = set()
        self.sent: dict[str, str] = {}
        self.acked: dict[str, str] = {}
        self.rejected: dict[str, tuple[str, str]] = {}  # name -> (version, Envoy's error_detail.message)
        self.last_nonce: str | None = None
        self._nonces = 0
        self._in_flight: OrderedDict[str, dict[str, str]] = OrderedDict()
        self.last_request = clock()
        self.closed_at: float | None = None
        self.requests = 0  # since the last `rows`
        self._touched: set[str] = set()  # names whose row changed since the last `rows`

    @property
    def kind(self) -> str:
        """The clients view's `mode`: eds-sotw, eds-delta, ads-sotw or ads-delta."""
        return f"{self.service}-{self.mode}"

    # -- requests ------------------------------------------------------------
    def stale(self, nonce: str) -> bool:
        """A state-of-the-world request that answers an older response than the latest one sent.

        Its resource names may be out of date; Envoy sends another request
        once it has processed the latest response.
        """
        return self.mode == SOTW and bool(nonce) and self.last_nonce is not None and nonce != self.last_nonce

    def answered(self, nonce: str, error_message: str | None) -> Verdict | None:
        """The ACK (no error) or NACK a request carries for the response with `nonce`; None if none is awaited."""
        self._noted()
        resources = self._in_flight.pop(nonce, None) if nonce else None
        if resources is None:
            return None
        verdict = Verdict(nonce, error_message is None, resources, error_message or "")
        for name, version in resources.items():
            if name not in self.names:
                continue
            if verdict.accepted:
                self.acked[name] = version
                self.rejected.pop(name, None)
            else:
                self.rejected[name] = (version, verdict.message)
            self._touched.add(name)
        return verdict

    def subscribe_exactly(self, names: set[str]) -> None:
        """State of the world: the request's resource_names are the whole subscription."""
        self.unsubscribe(self.names - names)
        self.subscribe(names - self.names)

    def subscribe(self, names, held: dict[str, str] | None = None) -> set[str]:
        """Add `names`; `held` (delta's initial_resource_versions) are versions the node already has.

        Returns the names that were not subscribed before.
        """
        added = set(names) - self.names
        self.names |= added
        for name, version in (held or {}).items():
            if name in self.names:
                self.sent[name] = self.acked[name] = version
        self._touched |= added
        return added

    def unsubscribe(self, names) -> set[str]:
        """Drop `names`: nothing more is pushed for them; subscribing again pushes them again."""
        removed = self.names & set(names)
        self.names -= removed
        for name in removed:
            self.sent.pop(name, None)
            self.acked.pop(name, None)
            self.rejected.pop(name, None)
        self._touched -= removed
        return removed

    def _noted(self) -> None:
        self.requests += 1
        self.last_request = self.clock()

    # -- pushes --------------------------------------------------------------
    def due(self, current_version) -> list[str]:
        """The subscribed names whose current version (`current_version(name)`) this stream was not sent."""
        return sorted(name for name in self.names if self.sent.get(name) != current_version(name))

    def pushed(self, resources: dict[str, str]) -> str:
        """Note a response carrying `resources` (name -> version); returns its nonce, unique on this stream."""
        self._nonces += 1
        nonce = self.last_nonce = str(self._nonces)
        self.sent.update(resources)
        self._in_flight[nonce] = dict(resources)
        while len(self._in_flight) > MAX_IN_FLIGHT:
            self._in_flight.popitem(last=False)
        self._touched |= resources.keys()
        return nonce

    def version_info(self) -> str:
        """The version of the whole subscription as sent (a state-of-the-world response's version_info,
        a delta response's system_version_info): one service's own version when it is the only one."""
        return combined_version([self.sent.get(name, "") for name in sorted(self.names)]) if self.names else ""

    # -- the clients view ----------------------------------------------------
    def rows(self, everything: bool = False) -> list[ClientRow]:
        """Rows for the names that changed since the last call (every subscribed name with `everything`)."""
        names = self.names if everything else self._touched & self.names
        if not names and self.requests == 0:
            return []
        # A request (an ACK, say) with no row to show still counts on the rows of the stream.
        names = names or self.names
        polls, self.requests, self._touched = self.requests, 0, set()
        return [self._row(name, polls) for name in sorted(names)]

    def _row(self, name: str, polls: int) -> ClientRow:
        rejected_version, message = self.rejected.get(name, (None, None))
        return ClientRow(
            node_id=self.node.id,
            resource_name=name,
            cluster=self.node.cluster,
            envoy_version=self.node.envoy_version,
            # One name: the row's current version is that service's own, as version_held is.
            resource_names=(name,),
            api=V3,
            version_held=self.acked.get(name),
            last_poll=self.last_request,
            polls=polls,
            rejected_polls=0,
            sent_version=self.sent.get(name),
            transport=GRPC,
            mode=self.kind,
            rejected_version=rejected_version,
            rejected_message=message,
            held_until=self.closed_at if self.closed_at is not None else self.clock() + STREAM_ALIVE_FOR,
        )
