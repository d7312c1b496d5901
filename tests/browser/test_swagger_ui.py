"""The Swagger UI at `/`, under its Content-Security-Policy, in a real chromium against a real server."""

from __future__ import annotations

import re

import requests
from playwright.sync_api import expect


def test_swagger_ui_draws_and_calls_the_api_under_its_policy(console_for):
    """The policy refuses everything but the page's own script, files and calls; the page must still
    draw every operation and run one with Try it out, with no violation reported."""
    console = console_for()
    page = console.page
    violations: list[str] = []
    page.expose_function("reportViolation", lambda text: violations.append(text))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "window.reportViolation(`${e.violatedDirective} ${e.blockedURI}`))"
    )
    answer = page.goto(console.url + "/")
    policy = answer.headers["content-security-policy"]
    assert "'unsafe-eval'" not in policy and re.search(r"script-src 'self' 'sha256-[^']+'; ", policy)
    assert (answer.headers["x-frame-options"], answer.headers["x-content-type-options"]) == ("DENY", "nosniff")

    document = requests.get(console.url + "/swagger.json", timeout=5).json()
    for tag in document["tags"]:  # drawn folded: unfold each
        page.locator(f"#operations-tag-{tag['name']}").click()
    healthz = page.locator(".opblock").filter(has_text="/healthz")
    expect(healthz).to_be_visible()
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    assert page.locator(".opblock").count() == sum(len(methods & set(path)) for path in document["paths"].values())
    healthz.locator(".opblock-summary").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    expect(healthz.locator(".live-responses-table tbody .response-col_status")).to_have_text("200")

    assert violations == []
    assert [m for m in console.console_messages if "Content Security Policy" in m] == []
