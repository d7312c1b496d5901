"""The application factory: `create_app(settings)` wires the layers together."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from flask_restx import Api

from .api import auth, console, discovery, ops, registry
from .api.common import register_error_handlers
from .metrics import Metrics
from .registry import Limits, Registry
from .settings import Settings, store_options
from .store import Store, open_store
from .xds import Discovery, version_of
from .xds.clients import Clients


@dataclass
class Services:
    """What the HTTP layer reaches through `current_app.extensions["eds"]`."""

    settings: Settings
    registry: Registry
    discovery: Discovery
    clients: Clients
    metrics: Metrics
    polls: discovery.PollRoutes | None = None


def registry_for(settings: Settings, store: Store) -> Registry:
    return Registry(
        store, Limits(max_hosts_per_service=settings.max_hosts_per_service, max_services=settings.max_services)
    )


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """Build the WSGI app. Opens the store named by `settings.store` unless one is given."""
    settings = settings or Settings()
    store = store or open_store(settings.store, version_of, **store_options(settings))
    app = Flask("eds_server")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        RESTX_MASK_SWAGGER=False,
        RESTX_ERROR_404_HELP=False,
        JSON_SORT_KEYS=False,
    )
    metrics = Metrics()
    answers = Discovery(store, cache_size=settings.response_cache_size, on_held_count=metrics.held_count)
    services = app.extensions["eds"] = Services(
        settings=settings,
        registry=registry_for(settings, store),
        discovery=answers,
        clients=Clients(store, answers.current_version, clock=store.clock),
        metrics=metrics,
    )
    # Envoy's polls are answered in front of Flask (see api/discovery.py).
    services.polls = app.wsgi_app = discovery.PollRoutes(app.wsgi_app, services)
    api = Api(
        app,
        version="1.0",
        title="eds-server",
        description="REST-JSON Endpoint Discovery Service for Envoy: register upstream hosts per service; "
        "Envoy polls POST /v3/discovery:endpoints. "
        "The [operator console](ui/) shows the services, their hosts and the Envoys polling them.",
        doc="/",
        authorizations=auth.AUTHORIZATIONS,
    )
    # Before auth: a write refused for its token is timed and counted too.
    registry.measure_writes(app)
    auth.install(app, auth.Tokens.from_settings(settings))
    register_error_handlers(app, api)
    api.add_namespace(registry.ns)
    api.add_namespace(discovery.ns)
    api.add_namespace(ops.ns)
    app.register_blueprint(console.bp)
    return app
