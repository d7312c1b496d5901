"""One settings object, built from defaults <- YAML file <- environment <- command line.

Nothing below this module reads the environment: `create_app(settings)` and
the server get everything they need from here.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ._version import __version__
from .model import InvalidInput
from .registry.seed import check_services
from .store import check_store_url

ENV_PREFIX = "EDS_"
FALSE_WORDS = ("false", "0", "no", "off", "")
TRUE_WORDS = ("true", "1", "yes", "on")


@dataclass
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 2
    store: str = "sqlite:///data/registry.db"
    # Redis stores: the replicas that must hold a write before it is acknowledged (WAIT); "auto":
    # 1 when the primary has replicas, else 0 (the README's "Redis with Sentinel" says when it has).
    redis_min_replicas: str = "auto"
    config: str | None = None
    log_level: str = "info"
    log_format: str = "text"  # text or json
    access_log: bool = True
    max_body_bytes: int = 1024 * 1024
    max_hosts_per_service: int = 10_000
    max_services: int = 10_000
    sweep_interval: float = 0.5
    response_cache_size: int = 20_000
    # Seconds between two batches of a worker's clients-view rows to the store.
    clients_flush_interval: float = 1.0
    # Long-poll: a poll with nothing new is held up to this many seconds (0: never held), and never
    # longer than the client's x-envoy-expected-rq-timeout-ms minus long_poll_margin seconds.
    long_poll_max_hold: float = 25.0
    long_poll_margin: float = 1.0
    # Write-and-wait (README "Waiting until every Envoy has a change"): an Envoy counts as subscribed
    # to a service while its last sign of life (a poll arriving; a held poll, while it is held) is at
    # most subscribed_within seconds old; a wait (?wait=SECONDS) may last propagation_max_wait at most.
    subscribed_within: float = 10.0
    propagation_max_wait: float = 120.0
    # Bearer tokens (SECURITY in the README). repr=False: settings may be logged, tokens never.
    api_tokens: list[str] = field(default_factory=list, repr=False)
    api_token_file: str | None = None
    read_tokens: list[str] = field(default_factory=list, repr=False)
    # TLS for the whole server, through gunicorn; mutual TLS when client certificates are required.
    certfile: str | None = None
    keyfile: str | None = None
    ca_certs: str | None = None
    require_client_cert: bool = False
    # A YAML file of seed services only (the format GET /edsservice?format=yaml writes).
    seed_file: str | None = None
    # Seed data: the config file's services: key plus the seed file's,
    # {service name: {"hosts": [...], "policy": {...}}}; created at start-up when missing.
    services: dict[str, Any] = field(default_factory=dict)
    # Hardening (README, Limits and bad input).
    # Addresses or networks of the proxies in front of this server: only from them is
    # X-Forwarded-For believed (who made a change, in the log), and gunicorn's scheme headers.
    trusted_proxies: list[str] = field(default_factory=list)
    # Rows the clients view keeps in all, and per Envoy node; past them the least recently polled go.
    clients_max_rows: int = 10_000
    clients_max_rows_per_node: int = 1_000
    # Seconds a request may go without a byte of its body arriving before its connection is closed (408).
    body_read_timeout: float = 30.0
    # gRPC xDS (EDS and ADS streams) on this port, same host address, in a process of its own
    # beside gunicorn's workers; None: no gRPC.
    grpc_port: int | None = None

    @property
    def grpc_address(self) -> str:
        """Where gRPC listens: the REST server's host, the gRPC port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.grpc_port}"

    # Access lines for successful polls (200, 304, held) too. Off: every Envoy polls every second or
    # two, these lines are all alike, the metrics count them, and writing them costs a large share of
    # the poll throughput (docs/PERFORMANCE.md). On to follow one Envoy. Writes, refusals, errors and
    # failed polls have their access lines either way (with access_log on).
    access_log_polls: bool = False


# The flags of `python -m eds_server`; every one also reads EDS_<NAME> from the environment.
CLI_FLAGS = (
    "host",
    "port",
    "workers",
    "store",
    "config",
    "log_level",
    "log_format",
    "certfile",
    "keyfile",
    "ca_certs",
    "require_client_cert",
    "grpc_port",
)


class SettingsError(ValueError):
    pass


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(settings: Settings) -> tuple[Network, ...]:
    """The trusted proxies as networks (`10.0.0.7` is `10.0.0.7/32`); SettingsError names a bad one."""
    parsed = []
    for address in settings.trusted_proxies:
        try:
            parsed.append(ipaddress.ip_network(address, strict=False))
        except ValueError:
            raise SettingsError(
                f"trusted_proxies: {address!r} is not an IP address or network (such as 10.0.0.7 or 10.1.0.0/16)"
            ) from None
    return tuple(parsed)


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in FALSE_WORDS or word in TRUE_WORDS:
            return word in TRUE_WORDS
        raise SettingsError(f"setting {name}: {raw!r} is not a boolean (use true/false, 1/0, yes/no)")
    if kind is list:
        # A comma-separated string (environment) or a YAML list; the values are
        # never repeated in a message, since token lists are secrets.
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise SettingsError(f"setting {name}: must be a list or a comma-separated string")
        return [text for text in (str(item).strip() for item in items) if text]
    if kind in (int, float):
        try:
            number = kind(raw)
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
        except (TypeError, ValueError, OverflowError):
            raise SettingsError(
                f"setting {name}: {raw!r} is not {'an integer' if kind is int else 'a finite number'}"
            ) from None
    return raw if raw is None or kind is dict else str(raw)


def _kinds() -> dict[str, type]:
    kinds: dict[str, type] = {}
    for f in dataclasses.fields(Settings):
        text = str(f.type)
        kinds[f.name] = next((k for k in (bool, int, float, dict, list) if text.startswith(k.__name__)), str)
    return kinds


def _apply(settings: Settings, values: Mapping[str, Any], origin: str) -> None:
    kinds = _kinds()
    for name, raw in values.items():
        if name not in kinds:
            raise SettingsError(f"{origin}: unknown setting {name!r} (known: {', '.join(sorted(kinds))})")
        setattr(settings, name, _coerce(name, raw, kinds[name]))


def _load_yaml(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}
    except OSError as error:
        raise SettingsError(f"{what} {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"{what} {path}: not valid YAML: {error}") from None


def _read_yaml(path: str) -> dict[str, Any]:
    data = _load_yaml(path, "config file")
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: must be a mapping of settings (and 'services')")
    settings = dict(data.get("settings") or {})
    settings.update({k: v for k, v in data.items() if k != "settings"})
    return settings


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="eds-server",
        description="REST-JSON Endpoint Discovery Service for Envoy (eds-server and python -m eds_server "
        "are the same command). Every flag can also be set with an EDS_<FLAG> environment variable, "
        "for example EDS_PORT=9000.",
    )
    parser.add_argument("--version", action="version", version=f"eds-server {__version__}")
    parser.add_argument("--host", help="address to listen on; '::' listens on IPv6 and IPv4 (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument("--workers", type=int, help="gunicorn worker processes (default 2)")
    parser.add_argument(
        "--store",
        help="sqlite:///PATH (default sqlite:///data/registry.db), redis://HOST:PORT/DB, "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/PRIMARY_NAME/DB or memory://",
    )
    parser.add_argument("--config", help="YAML file with settings and seed services")
    parser.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    parser.add_argument("--log-format", dest="log_format", choices=("text", "json"))
    parser.add_argument("--certfile", help="PEM certificate (chain) of this server: serve HTTPS")
    parser.add_argument("--keyfile", help="PEM private key of --certfile")
    parser.add_argument("--ca-certs", dest="ca_certs", help="PEM CA bundle that client certificates must chain to")
    parser.add_argument(
        "--require-client-cert",
        dest="require_client_cert",
        action="store_true",
        default=None,
        help="mutual TLS: refuse every client without a certificate signed by --ca-certs",
    )
    parser.add_argument(
        "--grpc-port",
        dest="grpc_port",
        type=int,
        help="also serve gRPC xDS (EDS and ADS, state of the world and delta) on this port, same host (default: none)",
    )
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    cli = parse_args(argv) if argv is not None else {}
    env = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in _kinds()
        if name != "services" and ENV_PREFIX + name.upper() in environ
    }
    settings = Settings()
    config_path = cli.get("config") or env.get("config")
    if config_path:
        _apply(settings, _read_yaml(config_path), f"config file {config_path}")
        settings.config = config_path
    _apply(settings, env, "environment")
    _apply(settings, cli, "command line")
    settings.services = _checked_services(settings.services, f"config file {config_path}")
    if settings.seed_file:
        _add_seed_file(settings, settings.seed_file)
    validate(settings)
    return settings


def _checked_services(services: Any, origin: str) -> dict[str, Any]:
    try:
        check_services(services)
    except InvalidInput as error:
        raise SettingsError(f"{origin}: {error.message}") from None
    return dict(services)


def _add_seed_file(settings: Settings, path: str) -> None:
    data = _load_yaml(path, "seed file")
    if not isinstance(data, Mapping) or set(data) - {"services"}:
        raise SettingsError(
            f"seed file {path}: must be a mapping with the one key 'services' "
            "(settings go into the --config file); GET /edsservice?format=yaml writes one"
        )
    seeded = _checked_services(data.get("services") or {}, f"seed file {path}")
    twice = sorted(set(seeded) & set(settings.services))
    if twice:
        raise SettingsError(f"seed file {path}: {', '.join(twice)} also in the config file's services; keep one")
    settings.services = {**settings.services, **seeded}


def validate(settings: Settings) -> None:
    try:
        check_store_url(settings.store)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    if settings.redis_min_replicas != "auto" and not settings.redis_min_replicas.isdigit():
        raise SettingsError(
            f"redis_min_replicas {settings.redis_min_replicas!r}: must be auto or a number of replicas (0 or more)"
        )
    if not 1 <= settings.port <= 65535:
        raise SettingsError(f"port {settings.port}: must be 1-65535")
    if settings.workers < 1:
        raise SettingsError(f"workers {settings.workers}: must be at least 1")
    if settings.store.startswith("memory:") and settings.workers > 1:
        raise SettingsError(
            f"store memory:// keeps the registry inside one process, so {settings.workers} workers would each "
            "have their own registry and answer Envoy differently: use --workers 1, or a shared store "
            "(sqlite:///PATH, redis://HOST:PORT/DB)"
        )
    _check_grpc(settings)
    if settings.log_format not in ("text", "json"):
        raise SettingsError(f"log_format {settings.log_format!r}: must be text or json")
    if settings.long_poll_max_hold < 0 or settings.long_poll_margin < 0:
        raise SettingsError(
            f"long_poll_max_hold {settings.long_poll_max_hold}, long_poll_margin {settings.long_poll_margin}: "
            "must be 0 or more seconds"
        )
    if settings.subscribed_within <= settings.clients_flush_interval:
        raise SettingsError(
            f"subscribed_within {settings.subscribed_within}: must be more than clients_flush_interval "
            f"({settings.clients_flush_interval} s): a node's polls reach the store only that often"
        )
    if settings.propagation_max_wait < 0:
        raise SettingsError(f"propagation_max_wait {settings.propagation_max_wait}: must be 0 or more seconds")
    if settings.max_services < 1 or settings.max_hosts_per_service < 1:
        raise SettingsError("max_services and max_hosts_per_service must be at least 1")
    if settings.api_token_file:
        read_token_file(settings.api_token_file)
    trusted_networks(settings)
    if settings.clients_max_rows < 1 or settings.clients_max_rows_per_node < 1:
        raise SettingsError("clients_max_rows and clients_max_rows_per_node must be at least 1")
    if settings.body_read_timeout <= 0:
        raise SettingsError(f"body_read_timeout {settings.body_read_timeout}: must be more than 0 seconds")
    _check_tls(settings)
    if settings.max_body_bytes < 128 * 1024:
        raise SettingsError(
            f"max_body_bytes {settings.max_body_bytes}: must be at least 131072; Envoy's polls alone are ~77 KB"
        )


def store_options(settings: Settings) -> dict[str, Any]:
    """What `open_store` takes from the settings besides the URL."""
    automatic = settings.redis_min_replicas == "auto"
    return {"min_replicas": None if automatic else int(settings.redis_min_replicas)}


def _check_grpc(settings: Settings) -> None:
    if settings.grpc_port is None:
        return
    if not 1 <= settings.grpc_port <= 65535 or settings.grpc_port == settings.port:
        raise SettingsError(f"grpc_port {settings.grpc_port}: must be 1-65535 and not the REST port {settings.port}")
    if settings.store.startswith("memory:"):
        raise SettingsError(
            "store memory:// keeps the registry inside one process, and gRPC is served by a process of its own: "
            "use a shared store (sqlite:///PATH, redis://HOST:PORT/DB) with grpc_port"
        )


def read_token_file(path: str) -> list[str]:
    """The tokens of a token file: one a line, blank lines and `#` comments ignored.

    Read when each worker starts, so a rotated file takes effect on a reload
    (SIGHUP to the gunicorn master) without a restart.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(
            f"api_token_file {path}: cannot be read: {getattr(error, 'strerror', None) or error}"
        ) from None
    tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise SettingsError(f"api_token_file {path}: holds no token (one a line; # starts a comment)")
    return tokens


def _check_tls(settings: Settings) -> None:
    """Refuse certificate settings that gunicorn would only fail on at every handshake."""
    if not settings.certfile:
        if settings.keyfile or settings.ca_certs or settings.require_client_cert:
            raise SettingsError("keyfile, ca_certs and require_client_cert need certfile (the server's certificate)")
        return
    if settings.require_client_cert and not settings.ca_certs:
        raise SettingsError("require_client_cert needs ca_certs: the CA that client certificates must chain to")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
        if settings.ca_certs:
            context.load_verify_locations(settings.ca_certs)
    except (OSError, ssl.SSLError) as error:
        files = ", ".join(f for f in (settings.certfile, settings.keyfile, settings.ca_certs) if f)
        raise SettingsError(f"TLS files {files}: {getattr(error, 'strerror', None) or error}") from None
