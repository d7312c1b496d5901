"""Whether every Envoy has a change: `GET /edsservice/NAME/propagation`, and `?wait=SECONDS` on every write.

The rule (which Envoys are subscribed, what counts as holding a version) is
the discovery core's (xds/propagation.py); this module reads the request and
writes the answer. The status code alone tells a deploy script how it went:
200 every subscribed Envoy has it, 502 an Envoy rejected it, 504 not every
Envoy had it when the wait ended. Both failures are 5xx on purpose: in this
API a 4xx means that nothing was changed, and a write answered 502 or 504 was
applied (only its propagation failed): its body says so and names the Envoys.
"""

from __future__ import annotations

import logging
import re
from time import perf_counter

from flask import g, request
from flask_restx import Namespace, Resource, fields

from ..model import InvalidInput, NotFound, Problem, validate_name
from ..store import Change, StoreUnavailable
from ..xds import version_of
from ..xds.propagation import BEHIND, IN_SYNC, REJECTED, STOPPED_POLLING, TIMED_OUT, Envoy, Propagation
from ..xds.render import VERSION_PATTERN
from .auth import READ_SECURITY
from .common import AUTH_RESPONSES, NAME_PARAM, error_model, timestamp
from .state import app_state

log = logging.getLogger("eds_server.propagation")

ns = Namespace(
    "propagation",
    description="Whether every Envoy polling a service has a version of it (also ?wait=SECONDS on every write)",
    path="/edsservice",
)
ns.add_model(error_model.name, error_model)

STATUS_OF_OUTCOME = {IN_SYNC: 200, REJECTED: 502, TIMED_OUT: 504}
SECONDS = re.compile(r"^\d+(\.\d+)?$")

envoy_model = ns.model(
    "PropagationEnvoy",
    {
        "node_id": fields.String(example="edge-1"),
        "cluster": fields.String(description="Envoy's node.cluster"),
        "state": fields.String(
            enum=[IN_SYNC, BEHIND, REJECTED, STOPPED_POLLING],
            description="in_sync: holds the version or a later one; behind: not yet; rejected: it rejected the "
            "current version; stopped_polling: no sign of life within subscribed_within seconds, not counted",
        ),
        "version_held": fields.String(description="the version it reported last; null before it holds any"),
        "last_seen": fields.String(
            description="its last sign of life, ISO-8601 UTC: a poll arriving; now for one whose poll is held"
        ),
        "rejection": fields.String(description="why it rejected, in its own words when it says (gRPC); null over REST"),
    },
)
propagation_model = ns.model(
    "Propagation",
    {
        "service": fields.String(example="myservice"),
        "version": fields.String(description="the version waited for"),
        "current_version": fields.String(description="the service's version at the last look"),
        "outcome": fields.String(enum=[IN_SYNC, REJECTED, TIMED_OUT]),
        "message": fields.String(description="the outcome in a sentence, naming the Envoys behind"),
        "waited": fields.Float(description="seconds the wait took"),
        "subscribed": fields.Integer(description="Envoys counted: a sign of life within subscribed_within seconds"),
        "have_it": fields.Integer(description="of those, the Envoys holding the version or a later one"),
        "behind": fields.List(fields.String, description="node ids of the Envoys that do not have it yet"),
        "rejected": fields.List(fields.String, description="node ids of the Envoys that rejected it"),
        "stopped_polling": fields.List(fields.String, description="node ids of the Envoys no longer counted"),
        "envoys": fields.List(fields.Nested(envoy_model)),
    },
)

WAIT_PARAM = {
    "wait": {
        "description": "hold the answer up to this many seconds (at most the server's propagation_max_wait, "
        "120 by default) until every Envoy polling the service has the version; 200 when they have, 502 when "
        "one rejected it, 504 when the time ran out (the body names them)",
        "in": "query",
        "type": "number",
        "minimum": 0,
    }
}
# The answers `?wait` adds to a write's.
WAIT_OUTCOMES = {
    502: "with ?wait: the write was applied, and an Envoy rejected it (named in propagation.rejected)",
    504: "with ?wait: the write was applied, and not every Envoy had it when the wait ended (propagation.behind)",
}


def requested_wait() -> float | None:
    """The request's `?wait` in seconds, None without one; 400 naming the field unless 0 to the server's maximum.

    Read before a write, so that a bad value changes nothing.
    """
    raw = request.args.get("wait")
    if raw is None:
        return None
    limit = app_state().settings.propagation_max_wait
    if not SECONDS.match(raw.strip()) or float(raw) > limit:
        rule = f"must be a number of seconds from 0 to {limit:g} (this server's propagation_max_wait)"
        raise InvalidInput([Problem("wait", raw, rule)])
    return float(raw)


def wait(service: str, version: str, seconds: float) -> Propagation:
    result = app_state().core.propagation.wait(service, version, seconds)
    log.info(
        "propagation service=%s version=%s outcome=%s waited=%.3fs have_it=%d/%d behind=%s rejected=%s",
        service,
        version,
        result.outcome,
        result.waited,
        result.have_it,
        result.subscribed,
        ",".join(result.named(BEHIND)) or "-",
        ",".join(result.named(REJECTED)) or "-",
    )
    return result


def answer_after_wait(change: Change, body: dict | None, status: int, headers: dict, seconds: float):
    """A write's answer once its change has reached every Envoy, or once the wait says why not.

    The write stays applied whatever the wait finds; the answer's status is the
    wait's (a 204 becomes a 200: the answer has a body now).
    """
    # A deleted service's version is that of no endpoints: what its Envoys are sent.
    version = change.version_after or version_of(change.name, None)
    body = body or {"name": change.name, "version": version}
    started = perf_counter()
    try:
        result = wait(change.name, version, seconds)
    except StoreUnavailable as error:
        log.warning("propagation service=%s version=%s: the store is away: %s", change.name, version, error)
        body["message"] = (
            f"the write was applied (version {version}), but whether it reached every Envoy is not known: {error}"
        )
        return body, 503, headers
    finally:
        # The write metrics count the write's own outcome and time, not the wait's.
        g.write_status, g.waited = status, perf_counter() - started
    body["propagation"] = propagation_json(result)
    if result.outcome == IN_SYNC:
        return body, 200 if status == 204 else status, headers
    body["message"] = f"the write was applied (version {version}), but {summary(result)}"
    return body, STATUS_OF_OUTCOME[result.outcome], headers


def envoy_json(result: Propagation, envoy: Envoy) -> dict:
    row = envoy.status.row
    return {
        "node_id": row.node_id,
        "cluster": row.cluster,
        "state": envoy.state,
        "version_held": row.version_held,
        "last_seen": timestamp(result.last_seen(envoy)),
        "rejection": envoy.status.rejection,
    }


def propagation_json(result: Propagation) -> dict:
    return {
        "service": result.service,
        "version": result.version,
        "current_version": result.current_version,
        "outcome": result.outcome,
        "message": summary(result),
        "waited": round(result.waited, 3),
        "subscribed": result.subscribed,
        "have_it": result.have_it,
        "behind": result.named(BEHIND),
        "rejected": result.named(REJECTED),
        "stopped_polling": result.named(STOPPED_POLLING),
        "envoys": [envoy_json(result, envoy) for envoy in result.envoys],
    }


def _about(result: Propagation, envoy: Envoy) -> str:
    """One Envoy in a sentence: its node id and what it holds."""
    row, status = envoy.status.row, envoy.status
    holds = f"holds {row.version_held}" if row.version_held else "holds nothing yet"
    if envoy.state == REJECTED:
        holds += f", rejected {status.current_version}" + (f": {status.rejection}" if status.rejection else "")
    if envoy.state == STOPPED_POLLING:
        holds += f", last seen {timestamp(result.last_seen(envoy))}"
    return f"{row.node_id} ({holds})"


def summary(result: Propagation) -> str:
    """The outcome in a sentence, for people: how many Envoys have it, and which do not."""

    def listed(state: str) -> str:
        return ", ".join(_about(result, envoy) for envoy in result.envoys if envoy.state == state)

    service, version, count = result.service, result.version, result.subscribed
    if result.outcome == IN_SYNC:
        sentence = (
            f"every Envoy polling {service} ({count}) has version {version} or a later one"
            if count
            else f"no Envoy polls {service}: there is nothing to wait for"
        )
    else:
        sentence = f"{result.have_it} of {count} Envoys polling {service} have version {version} or a later one"
        if result.outcome == REJECTED:
            sentence += f"; rejected by {listed(REJECTED)}"
        else:
            sentence += f" after {result.waited:.1f} s; behind: {listed(BEHIND)}"
    gone = listed(STOPPED_POLLING)
    return sentence + (f"; stopped polling, not counted: {gone}" if gone else "")


@ns.route("/<string:name>/propagation")
@ns.param("name", **NAME_PARAM)
@ns.doc(responses=AUTH_RESPONSES)
class PropagationRoute(Resource):
    @ns.doc(
        "propagation",
        security=READ_SECURITY,
        params={
            **WAIT_PARAM,
            "version": {
                "description": "the version to wait for (a write's `version`); by default the current one. "
                "An Envoy holding it or a version that was current since counts as having it",
                "in": "query",
                "pattern": VERSION_PATTERN.pattern,
            },
        },
    )
    @ns.response(200, "every Envoy polling the service has the version (or a later one)", propagation_model)
    @ns.response(502, "an Envoy rejected it: named in rejected", propagation_model)
    @ns.response(504, "not every Envoy had it when the wait ended: named in behind", propagation_model)
    @ns.response(400, "wait, version or the name is not valid: the field and the rule are named", error_model)
    @ns.response(404, "the service is not registered and no Envoy asks for it", error_model)
    def get(self, name):
        """Whether every Envoy polling the service has a version of it; `?wait=SECONDS` holds until they have."""
        validate_name(name)
        version = request.args.get("version")
        if version is not None and not VERSION_PATTERN.fullmatch(version):
            raise InvalidInput(
                [Problem("version", version, "must be a version of this server: 16 hex digits, as in a write's answer")]
            )
        seconds = requested_wait() or 0.0
        state = app_state()
        if state.registry.get(name) is None and not state.core.clients.statuses(name):
            raise NotFound(f"service {name!r} is not registered and no Envoy asks for it")
        result = wait(name, version or state.core.current_version((name,)), seconds)
        return propagation_json(result), STATUS_OF_OUTCOME[result.outcome]
