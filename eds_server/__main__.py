"""`python -m eds_server [--host H] [--port P] [--workers N] [--store URL] [--config FILE]`, or `eds-server ...`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:  # here, not at the top: a dependency missing from the install is then one line, not a traceback
        from .model import RegistryError
        from .serving import CannotStart, serve
        from .serving.grpc_process import PartFailed
        from .settings import SettingsError, load_settings
        from .store import StoreUnavailable
    except ModuleNotFoundError as error:
        print(
            f"eds-server: cannot start: a dependency is missing ({error}); "
            "install eds-server with its dependencies (pip install -r requirements.txt)",
            file=sys.stderr,
        )
        return 1
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as error:
        print(f"eds-server: {error}", file=sys.stderr)
        return 2
    try:
        serve(settings)
    except (CannotStart, StoreUnavailable, RegistryError, PartFailed) as error:
        # gunicorn or the gRPC process could not run, or the start-up (TTL sweep, seed) could not:
        # better no server than one that hands Envoy expired hosts or misses its seed.
        print(f"eds-server: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
