"""The console's files as the server serves them (the page itself is tested in a browser: tests/browser)."""

import re
from pathlib import Path

import pytest

from eds_server.api.console import CONSOLE_FILES


def test_console_page_is_served_at_ui_with_a_strict_content_security_policy(client):
    page = client.get("/ui/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b'<script type="module" src="console.js">' in page.data
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/ui").status_code == 308  # to /ui/, where the page's relative links resolve


@pytest.mark.parametrize(
    "name, mimetype",
    [
        ("console.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("view.js", "text/javascript"),
        ("console.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_every_file_the_page_loads_is_served_with_its_type(client, name, mimetype):
    response = client.get(f"/ui/{name}")
    assert response.status_code == 200 and response.mimetype == mimetype


def test_the_page_refers_only_to_files_that_ship(client):
    html = (CONSOLE_FILES / "index.html").read_text()
    scripts = "".join(p.read_text() for p in Path(CONSOLE_FILES).glob("*.js"))
    referenced = set(re.findall(r'(?:src|href)="([\w.-]+\.\w+)"', html)) | set(
        re.findall(r'from "\./([\w.-]+)"', scripts)
    )
    assert referenced == {"favicon.svg", "console.css", "console.js", "api.js", "view.js"}
    for name in referenced:
        assert client.get(f"/ui/{name}").status_code == 200, name
    assert client.get("/ui/missing.js").status_code == 404
    assert client.get("/ui/../app.py").status_code == 404


def test_swagger_links_to_the_console(client):
    description = client.get("/swagger.json").get_json()["info"]["description"]
    assert "[operator console](ui/)" in description
