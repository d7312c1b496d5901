"""The application factory: `create_app(settings)` wires the layers together."""

from __future__ import annotations

from flask import Flask
from flask_restx import Api

from .api import auth, console, edsservice, ops, pages, polls, propagation
from .api.common import EdsFlask, register_error_handlers, require_json_bodies
from .api.state import AppState
from .registry import Limits, Registry
from .settings import Settings, store_options, trusted_networks
from .store import Store, open_store
from .telemetry import Metrics
from .xds import ClientsLimits, DiscoveryCore, version_of
from .xds.resources import PATH_OF, V3


def registry_for(settings: Settings, store: Store) -> Registry:
    return Registry(
        store, Limits(max_hosts_per_service=settings.max_hosts_per_service, max_services=settings.max_services)
    )


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """Build the WSGI app. Opens the store named by `settings.store` unless one is given."""
    settings = settings or Settings()
    store = store or open_store(settings.store, version_of, **store_options(settings))
    app = EdsFlask("eds_server")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        RESTX_MASK_SWAGGER=False,
        RESTX_ERROR_404_HELP=False,
        JSON_SORT_KEYS=False,
    )
    metrics = Metrics()
    state = AppState(
        settings=settings,
        registry=registry_for(settings, store),
        core=DiscoveryCore(
            store,
            cache_size=settings.response_cache_size,
            on_held_count=metrics.held_count,
            subscribed_within=settings.subscribed_within,
            clients_limits=ClientsLimits(settings.clients_max_rows, settings.clients_max_rows_per_node),
        ),
        metrics=metrics,
        trusted_proxies=trusted_networks(settings),
    )
    state.install(app)
    # Envoy's polls are answered in front of Flask (see api/polls.py).
    app.wsgi_app = routes = polls.PollRoutes(app.wsgi_app, state)
    state.answer_poll = routes.respond
    api = Api(
        app,
        version="1.0",
        title="eds-server",
        description="REST-JSON Endpoint Discovery Service for Envoy: register upstream hosts per service; "
        f"Envoy polls POST {PATH_OF[V3]}. "
        "The [operator console](ui/) shows the services, their hosts and the Envoys polling them.",
        doc="/",
        authorizations=auth.AUTHORIZATIONS,
    )
    # Before auth: a write refused for its token is timed and counted too.
    edsservice.measure_writes(app)
    auth.install(app, auth.Tokens.from_settings(settings))
    require_json_bodies(app)
    register_error_handlers(app, api)
    api.add_namespace(edsservice.ns)
    api.add_namespace(propagation.ns)
    api.add_namespace(polls.ns)
    api.add_namespace(ops.ns)
    app.register_blueprint(console.bp)
    pages.install(app)
    return app
