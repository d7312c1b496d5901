"""`python -m eds_server [--host H] [--port P] [--workers N] [--store URL] [--config FILE]`."""

from __future__ import annotations

import sys

from .server import serve
from .settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as error:
        print(f"eds-server: {error}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
