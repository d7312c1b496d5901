"""The console at /ui/, in a real chromium, against a real server: what an operator sees and does."""

from __future__ import annotations

import re

import requests
from playwright.sync_api import expect

from tests.helpers.listing import registry_listing

from .scenario import ask, follow, health_by_endpoint, poll, polling, put_service, stick

WEB_HOSTS = [
    {
        "ip_address": "10.0.0.5",
        "port": 8001,
        "hostname": "web-1",
        "ttl": 300,
        "tags": {"region": "us-central1", "az": "us-central1-a", "sub_zone": "rack7", "load_balancing_weight": 50},
    },
    {"ip_address": "10.0.0.6", "port": 8002, "priority": 1, "tags": {"canary": True}},
]


def submit_host(form, fields: dict[str, str]) -> None:
    """Fill the add-host form's fields (by their labels) and submit it."""
    for label, value in fields.items():
        field = form.get_by_label(label, exact=True)
        if field.evaluate("element => element.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    form.get_by_role("button", name="Add host", exact=True).click()


def host_of(url: str, service: str, port: int) -> dict:
    return next(h for h in requests.get(f"{url}/edsservice/{service}", timeout=5).json()["hosts"] if h["port"] == port)


def host_row(page, endpoint: str):
    return page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=re.compile(re.escape(endpoint))))


def envoy_row(page, node_id: str):
    return page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=re.compile(re.escape(node_id))))


def test_page_loads_without_console_errors_and_shows_services_hosts_and_envoys(console):
    put_service(console.url, "web", WEB_HOSTS)
    follow(console.url, "web", "edge-1")
    page = console.open().page

    expect(page).to_have_title("eds-server console")
    web = page.get_by_role("region", name="web", exact=True)
    expect(web.get_by_role("heading", name="web", exact=True)).to_be_visible()
    # Grouped as Envoy groups them: priority, then locality.
    expect(web.get_by_role("heading", level=4).nth(0)).to_have_text(
        re.compile(r"Priority 0.*region\s*us-central1.*zone\s*us-central1-a.*sub-zone\s*rack7")
    )
    expect(web.get_by_role("heading", level=4).nth(1)).to_have_text(re.compile(r"Priority 1.*no locality"))
    first = host_row(page, "10.0.0.5:8001")
    expect(first).to_contain_text("web-1")
    expect(first.get_by_role("cell").nth(0)).to_have_text(re.compile(r"^50"))  # weight
    expect(first).to_contain_text("HEALTHY")
    expect(first).to_contain_text(re.compile(r"\d+ min left of 5 min"))
    expect(host_row(page, "10.0.0.6:8002")).to_contain_text("canary")

    edge = envoy_row(page, "edge-1")
    version = requests.get(f"{console.url}/edsservice/web", timeout=5).json()["version"]
    expect(edge).to_contain_text(version)
    expect(edge).to_contain_text("in sync")
    expect(edge).to_contain_text("1.40.0")  # from the node's user_agent_build_version

    page.wait_for_timeout(3500)  # one automatic refresh as well
    assert console.console_messages == []


def test_drain_and_undrain_from_the_page_reach_discovery(console):
    put_service(console.url, "web", WEB_HOSTS)
    page = console.open().page

    page.get_by_role("button", name="Drain 10.0.0.5:8001", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("10.0.0.5:8001 in web is draining")
    answer = ask(console.url, "web", "edge-1").json()
    assert health_by_endpoint(answer) == {"10.0.0.5:8001": "DRAINING", "10.0.0.6:8002": "HEALTHY"}
    expect(host_row(page, "10.0.0.5:8001")).to_contain_text("DRAINING")

    page.get_by_role("button", name="Undrain 10.0.0.5:8001", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("10.0.0.5:8001 in web is healthy again")
    assert health_by_endpoint(ask(console.url, "web", "edge-1").json())["10.0.0.5:8001"] == "HEALTHY"
    # Focus stays on the host's button across the redraw.
    expect(page.get_by_role("button", name="Drain 10.0.0.5:8001", exact=True)).to_be_focused()


def test_a_stuck_envoy_appears_highlighted_without_reloading(console):
    put_service(console.url, "web", WEB_HOSTS)
    page = console.open().page
    expect(page.get_by_role("region", name="web", exact=True)).to_contain_text(
        "No Envoy has asked for this service yet"
    )

    old = poll(console.url, "web", "edge-rejecting")
    requests.patch(f"{console.url}/edsservice/web/hosts/10.0.0.6:8002", json={"priority": 0}, timeout=5)
    stick(console.url, "web", "edge-rejecting", old)  # sent the new version, keeps asking with the old one
    follow(console.url, "web", "edge-accepting")

    stuck = envoy_row(page, "edge-rejecting")
    expect(stuck).to_have_class(re.compile(r"\bstuck\b"))  # by the page's own refresh
    expect(stuck).to_contain_text("stuck")
    expect(stuck).to_contain_text(old)
    accepting = envoy_row(page, "edge-accepting")
    expect(accepting).to_contain_text("in sync")
    expect(accepting).not_to_have_class(re.compile(r"\bstuck\b"))
    # Highlighted: its cells are tinted where an in-sync row's are not.
    tint = stuck.get_by_role("rowheader").evaluate("cell => getComputedStyle(cell).backgroundColor")
    assert tint not in ("rgba(0, 0, 0, 0)", "transparent")
    expect(accepting.get_by_role("rowheader")).to_have_css("background-color", "rgba(0, 0, 0, 0)")
    expect(page.get_by_role("region", name="web", exact=True)).to_contain_text("1 Envoy is stuck")
    expect(page.locator(".tile", has_text="Stuck Envoys")).to_contain_text("1")
    assert console.accessibility_violations() == ""


def test_each_service_says_how_many_of_its_envoys_have_its_version(console_for):
    console = console_for(env={"EDS_SUBSCRIBED_WITHIN": "3"})  # seconds without a sign of life: stopped polling
    version = put_service(console.url, "web", WEB_HOSTS)["version"]
    follow(console.url, "web", "edge-gone")  # and never polls again
    with polling(console.url, "web", "edge-1"), polling(console.url, "web", "edge-2"):
        page = console.open().page
        web = page.get_by_role("region", name="web", exact=True)
        expect(web.locator(".service-head")).to_contain_text("2 of 2 Envoys have it · 1 stopped polling")
        expect(envoy_row(page, "edge-gone")).to_contain_text("stopped polling")

        with polling(console.url, "web", "edge-rejecting", rejecting=version):
            requests.patch(f"{console.url}/edsservice/web/hosts/10.0.0.6:8002", json={"priority": 0}, timeout=5)
            summary = web.locator(".service-head .propagation")
            expect(summary).to_contain_text("2 of 3 Envoys have it")  # by the page's own refresh
            expect(summary).to_have_class(re.compile(r"\bbehind\b"))
            expect(envoy_row(page, "edge-rejecting")).to_contain_text("stuck")
    assert console.accessibility_violations() == ""


def test_an_action_from_the_page_says_whether_it_reached_every_envoy(console):
    put_service(console.url, "web", WEB_HOSTS)
    with polling(console.url, "web", "edge-1"), polling(console.url, "web", "edge-2"):
        page = console.open().page
        status = page.get_by_role("status")
        expect(page.get_by_role("region", name="web", exact=True)).to_contain_text("2 of 2 Envoys have it")
        page.get_by_role("button", name="Drain 10.0.0.5:8001", exact=True).click()
        expect(status).to_contain_text("10.0.0.5:8001 in web is draining")
        expect(status).to_contain_text("It has reached all 2 Envoys polling web.")
        assert health_by_endpoint(ask(console.url, "web", "edge-3").json())["10.0.0.5:8001"] == "DRAINING"

        drained = requests.get(f"{console.url}/edsservice/web", timeout=5).json()["version"]
        with polling(console.url, "web", "edge-rejecting", rejecting=drained):
            page.get_by_role("button", name="Undrain 10.0.0.5:8001", exact=True).click()
            expect(status).to_contain_text("10.0.0.5:8001 in web is healthy again.")
            expect(status).to_contain_text("It has not reached every Envoy polling web: see the message.")
            alert = page.get_by_role("alert")
            expect(alert).to_contain_text("An Envoy rejected the change.")
            expect(alert).to_contain_text(f"rejected by edge-rejecting (holds {drained}")
            assert console.accessibility_violations() == ""


def test_api_refusals_are_shown_with_the_apis_message_and_change_nothing(console):
    put_service(console.url, "web", WEB_HOSTS)
    before = registry_listing(console.url)
    page = console.open().page
    form = page.get_by_role("region", name="Add a host", exact=True)

    for field, value, expected in (
        (
            "Port",
            "70000",
            requests.post(f"{console.url}/edsservice/web/hosts", json={"ip_address": "10.0.0.9", "port": 70000}),
        ),
        (
            "IP address",
            "localhost",
            requests.post(f"{console.url}/edsservice/web/hosts", json={"ip_address": "localhost", "port": 80}),
        ),
    ):
        assert expected.status_code == 400
        submit_host(form, {"Service": "web", "IP address": "10.0.0.9", "Port": "80", field: value})
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("The server answered 400")
        expect(alert).to_contain_text(expected.json()["message"])
        expect(form.get_by_label(field)).to_have_attribute("aria-invalid", "true")
        expect(form.get_by_label(field)).to_be_focused()

    assert registry_listing(console.url) == before


def test_add_remove_and_delete_with_confirmation(console):
    put_service(console.url, "web", WEB_HOSTS)
    page = console.open().page
    form = page.get_by_role("region", name="Add a host", exact=True)

    page.get_by_role("button", name="Add a host to web", exact=True).click()
    expect(form.get_by_label("Service", exact=True)).to_have_value("web")
    expect(form.get_by_label("IP address", exact=True)).to_be_focused()
    submit_host(form, {"IP address": "[::1]", "Port": "9000", "Weight": "7", "Zone (az)": "local", "Canary": "yes"})
    expect(page.get_by_role("status")).to_contain_text("Added [::1]:9000 to web")
    added = host_of(console.url, "web", 9000)
    assert added["ip_address"] == "::1"
    assert added["tags"] == {"az": "local", "canary": True, "load_balancing_weight": 7}
    expect(host_row(page, "[::1]:9000")).to_contain_text("canary")

    # The same host again with only a new weight: what the form leaves empty stays as it was.
    submit_host(form, {"IP address": "::1", "Port": "9000", "Weight": "9", "Zone (az)": "", "Canary": ""})
    expect(page.get_by_role("status")).to_contain_text("Updated [::1]:9000 in web")
    assert host_of(console.url, "web", 9000)["tags"] == {"az": "local", "canary": True, "load_balancing_weight": 9}

    remove = page.get_by_role("button", name="Remove [::1]:9000", exact=True)
    remove.click()
    dialog = page.get_by_role("dialog", name="Remove [::1]:9000 from web?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert len(requests.get(f"{console.url}/edsservice/web", timeout=5).json()["hosts"]) == 3

    remove.click()
    dialog.get_by_role("button", name="Remove host", exact=True).click()
    expect(host_row(page, "[::1]:9000")).to_have_count(0)
    assert len(requests.get(f"{console.url}/edsservice/web", timeout=5).json()["hosts"]) == 2

    page.get_by_role("button", name="Delete service web", exact=True).click()
    page.get_by_role("dialog", name="Delete the service web?").get_by_role(
        "button", name="Delete service", exact=True
    ).click()
    expect(page.get_by_role("status")).to_contain_text("Deleted the service web")
    assert requests.get(f"{console.url}/edsservice/web", timeout=5).status_code == 404
    expect(page.get_by_role("region", name="web", exact=True)).to_have_count(0)
    expect(page.get_by_role("heading", name="Services")).to_be_focused()  # focus is not lost with the section


def test_the_add_host_form_works_from_the_keyboard(console):
    page = console.open().page
    keys = page.keyboard
    for _ in range(40):  # tab from the top of the page, as far as the form's first field
        keys.press("Tab")
        if page.evaluate("document.activeElement.id") == "f-name":
            break
    expect(page.get_by_label("Service", exact=True)).to_be_focused()
    keys.type("kb")
    keys.press("Tab")
    expect(page.get_by_label("IP address", exact=True)).to_be_focused()
    keys.type("10.0.0.7")
    keys.press("Tab")
    keys.type("8080")
    keys.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Added 10.0.0.7:8080 to kb")
    assert requests.get(f"{console.url}/edsservice/kb", timeout=5).json()["hosts"][0]["port"] == 8080

    # The skip links reach the form in three keys from the top.
    page.reload()
    expect(page.get_by_role("heading", name="kb")).to_be_visible()
    keys.press("Tab")
    expect(page.get_by_role("link", name="Skip to the services")).to_be_focused()
    keys.press("Tab")
    keys.press("Enter")
    keys.press("Tab")
    expect(page.get_by_label("Service", exact=True)).to_be_focused()


def test_the_token_is_kept_for_the_tab_and_sent_as_a_bearer_header(console):
    put_service(console.url, "web", WEB_HOSTS)
    page = console.open().page
    page.get_by_label("Bearer token", exact=True).fill("s3cret-token")
    page.get_by_role("button", name="Use token", exact=True).click()
    expect(page.get_by_label("Bearer token", exact=True)).to_have_value("")
    assert page.evaluate("Object.values(sessionStorage)") == ["s3cret-token"]
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []

    with page.expect_request(lambda r: r.method == "PATCH") as patch:
        page.get_by_role("button", name="Drain 10.0.0.5:8001", exact=True).click()
    assert patch.value.headers["authorization"] == "Bearer s3cret-token"
    page.reload()
    with page.expect_request(lambda r: r.url.endswith("/edsservice")) as read:
        expect(page.get_by_text("A token is set for this tab")).to_be_visible()
    assert read.value.headers["authorization"] == "Bearer s3cret-token"

    page.get_by_role("button", name="Forget token", exact=True).click()
    assert page.evaluate("sessionStorage.length") == 0
    expect(page.get_by_text("No token set")).to_be_visible()


def test_with_tokens_configured_the_refusal_is_shown_and_the_token_entered_once_admits_writes(console_for):
    console = console_for(env={"EDS_API_TOKENS": "console-token,next-token"})
    put_service(console.url, "web", WEB_HOSTS, token="console-token")
    refusal = requests.patch(f"{console.url}/edsservice/web/hosts/10.0.0.5:8001", json={}, timeout=5)
    assert refusal.status_code == 401
    page = console.open().page

    page.get_by_role("button", name="Drain 10.0.0.5:8001", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The server answered 401")
    expect(alert).to_contain_text(refusal.json()["message"])
    expect(alert).to_contain_text("Access token")
    assert health_by_endpoint(ask(console.url, "web", "edge-1").json())["10.0.0.5:8001"] == "HEALTHY"

    page.get_by_label("Bearer token", exact=True).fill("next-token")
    page.get_by_role("button", name="Use token", exact=True).click()
    expect(alert).to_be_empty()
    page.get_by_role("button", name="Drain 10.0.0.5:8001", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("10.0.0.5:8001 in web is draining")
    assert health_by_endpoint(ask(console.url, "web", "edge-1").json())["10.0.0.5:8001"] == "DRAINING"


def test_with_read_tokens_the_page_asks_for_one_then_shows_the_registry(console_for):
    console = console_for(env={"EDS_API_TOKENS": "writer", "EDS_READ_TOKENS": "reader"})
    put_service(console.url, "web", WEB_HOSTS, token="writer")
    refusal = requests.get(f"{console.url}/edsservice", timeout=5)
    assert refusal.status_code == 401
    page = console.open().page  # the page itself needs no token: it holds no data

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"The server answered 401: {refusal.json()['message']}")
    expect(page.locator("#service-list")).to_contain_text("The registry could not be read")

    page.get_by_label("Bearer token", exact=True).fill("reader")
    page.get_by_role("button", name="Use token", exact=True).click()
    expect(page.get_by_role("heading", name="web", exact=True)).to_be_visible()
    expect(alert).to_be_empty()
    # A read token does not write: the refusal is the API's 403, shown as it is.
    page.get_by_role("button", name="Drain 10.0.0.5:8001", exact=True).click()
    expect(alert).to_contain_text("The server answered 403")
    expect(alert).to_contain_text("not accepted")


def test_phone_width_has_no_horizontal_overflow(console_for):
    console = console_for(viewport={"width": 375, "height": 740})
    put_service(
        console.url,
        "a-rather-long-service-name.with-dots_and_underscores",
        [
            {"ip_address": "2001:db8:1234:5678:9abc:def0:1234:5678", "port": 65535, "ttl": 30, "hostname": "x" * 60},
            {"ip_address": "10.0.0.1", "port": 1, "tags": {"region": "europe-west1", "az": "europe-west1-b"}},
        ],
    )
    follow(console.url, "a-rather-long-service-name.with-dots_and_underscores", "edge-" + "n" * 40)
    follow(console.url, "not-registered", "edge-2")
    page = console.open().page
    expect(host_row(page, "10.0.0.1:1")).to_be_visible()
    expect(envoy_row(page, "edge-2")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for button in page.get_by_role("button").all():
        if button.is_visible():
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375, button.text_content()
    page.get_by_role("button", name="Drain 10.0.0.1:1", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("draining")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_axe_finds_no_accessibility_violations_light_and_dark_wide_and_narrow(console_for):
    for viewport, scheme in (({"width": 1280, "height": 900}, "light"), ({"width": 375, "height": 740}, "dark")):
        console = console_for(viewport=viewport)
        console.page.emulate_media(color_scheme=scheme)
        put_service(console.url, "web", WEB_HOSTS)
        requests.patch(
            f"{console.url}/edsservice/web/hosts/10.0.0.6:8002", json={"health_status": "DRAINING"}, timeout=5
        )
        page = console.open().page
        expect(host_row(page, "10.0.0.6:8002")).to_contain_text("DRAINING")
        assert console.accessibility_violations() == ""

        submit_host(page.get_by_role("region", name="Add a host", exact=True), {"Service": "web", "Port": "70000"})
        expect(page.get_by_role("alert")).to_contain_text("refused")
        assert console.accessibility_violations() == ""

        page.get_by_role("button", name="Remove 10.0.0.5:8001", exact=True).click()
        expect(page.get_by_role("dialog")).to_be_visible()
        assert console.accessibility_violations() == ""


def test_hostile_node_ids_show_as_what_they_are_and_stay_in_their_column(console):
    """Envoys choose their node ids: a right-to-left override must not show the id (or its row) reversed,
    and the longest id the server keeps (512 characters, xds/request.py) must not widen the table."""
    put_service(console.url, "web", WEB_HOSTS)
    reversing = "edge-\u202eeulav-lacitirc"
    follow(console.url, "web", reversing, cluster="zone-\u202ea")
    follow(console.url, "web", "x" * 2000)
    page = console.open().page
    row = envoy_row(page, "edge-")
    expect(row).to_contain_text("edge-\\u202eeulav-lacitirc")  # the override shown as its escape
    assert "\u202e" not in row.get_by_role("rowheader").inner_text()
    expect(row).to_contain_text("zone-\\u202ea")
    long_id = envoy_row(page, "xxxxxxxx").get_by_role("rowheader")
    table = page.get_by_role("table", name="Envoys polling web")
    table_box, cell_box = table.bounding_box(), long_id.bounding_box()
    assert cell_box["x"] + cell_box["width"] <= table_box["x"] + table_box["width"] + 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert cell_box["height"] < 120  # cut to a few lines, not 512 characters of them
    assert long_id.locator("code").get_attribute("title").startswith("x" * 400)
