"""What operators and orchestrators ask of the server itself."""

from __future__ import annotations

from flask import current_app
from flask_restx import Namespace, Resource

from ..store import StoreUnavailable

ns = Namespace("ops", description="Liveness and readiness", path="/")


@ns.route("/healthz")
class Health(Resource):
    @ns.doc("healthz")
    def get(self):
        """Alive: the process answers."""
        return {"status": "ok"}


@ns.route("/readyz")
class Ready(Resource):
    @ns.doc("readyz")
    @ns.response(200, "the store answers")
    @ns.response(503, "the store cannot be reached")
    def get(self):
        """Ready: the registry store answers."""
        try:
            current_app.extensions["eds"].registry.store.ping()
        except StoreUnavailable as error:
            return {"status": "unavailable", "store": str(error)}, 503
        return {"status": "ok"}
