"""`/ui/`: the operator console, a static page that drives the same API as curl.

The page is plain HTML, CSS and JavaScript modules shipped in the package
(`eds_server/static/console/`): nothing to build, and nothing on the server
side but these files. Everything it shows or changes goes through the
registry API and `/clients`, with the same rules and errors as any client.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

CONSOLE_FILES = Path(__file__).resolve().parent.parent / "static" / "console"

# The page loads only its own files and talks only to this server: anything
# else (an injected script, a style from elsewhere, being framed) is refused.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

bp = Blueprint("console", __name__, url_prefix="/ui")


@bp.get("/")
def page() -> Response:
    return send_from_directory(CONSOLE_FILES, "index.html")


@bp.get("/<path:filename>")
def asset(filename: str) -> Response:
    return send_from_directory(CONSOLE_FILES, filename)


@bp.after_request
def protect(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # A new release's files are picked up at once; unchanged ones cost a 304.
    response.headers["Cache-Control"] = "no-cache"
    return response
