"""What protects the pages a browser shows: every answer, and the Swagger UI at `/`.

Every answer says `nosniff` (a JSON error is never run as a script or page)
and may not be framed (no click-jacking of Swagger's Try-it-out buttons).
The console (api/console.py) sends its own, stricter policy.

Swagger UI's page starts itself with an inline script and styles itself with
inline styles. Its policy allows exactly that script, by the hash of the page
as first rendered (the page is the same for every request to one server), the
inline styles that Swagger UI sets as it draws, its own files, data: images
(its icons) and calls to this server only.
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, request

DOC_ENDPOINT = "doc"  # flask-restx's name for the Swagger UI page
INLINE_SCRIPT = re.compile(rb"<script(?:\s[^>]*)?>(.*?)</script>", re.DOTALL)
SWAGGER_POLICY = (
    "default-src 'none'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _script_hashes(page: bytes) -> str:
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(page)
        if script.strip()
    )


def install(app: Flask) -> None:
    # script root -> the policy of the Swagger page, from its first rendering there
    policies: dict[str, str] = {}

    @app.after_request
    def protect(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.endpoint == DOC_ENDPOINT and response.mimetype == "text/html":
            policy = policies.get(request.script_root)
            if policy is None:
                policy = policies[request.script_root] = SWAGGER_POLICY.format(
                    scripts=_script_hashes(response.get_data())
                )
            response.headers["Content-Security-Policy"] = policy
            response.headers["Referrer-Policy"] = "no-referrer"
        return response
