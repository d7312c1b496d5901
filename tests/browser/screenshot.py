"""Take docs/console.png: the console of a real server holding a small fleet (`make console-screenshot`).

python -m tests.browser.screenshot [OUTPUT.png] [--phone OUTPUT.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

from scripts.processes import REPO, EdsServer, stop_all

from .chromium import launch
from .scenario import follow, put_service, stick


def seed(url: str) -> None:
    """Services across localities and priorities, Envoys in sync, updating and stuck."""
    zone_a = {"region": "europe-west1", "az": "europe-west1-b"}
    zone_c = {"region": "europe-west1", "az": "europe-west1-c"}
    before = put_service(
        url,
        "checkout",
        [
            {
                "ip_address": "10.1.0.11",
                "port": 8080,
                "hostname": "checkout-1",
                "tags": {**zone_a, "load_balancing_weight": 60},
            },
            {
                "ip_address": "10.1.0.12",
                "port": 8080,
                "hostname": "checkout-2",
                "tags": {**zone_a, "load_balancing_weight": 30},
            },
            {
                "ip_address": "10.1.0.13",
                "port": 8080,
                "hostname": "checkout-canary",
                "tags": {**zone_a, "canary": True, "load_balancing_weight": 10},
            },
            {
                "ip_address": "10.1.1.21",
                "port": 8080,
                "hostname": "checkout-3",
                "tags": {**zone_c, "load_balancing_weight": 50},
            },
            {
                "ip_address": "10.9.0.5",
                "port": 8080,
                "priority": 1,
                "hostname": "checkout-dr",
                "tags": {"region": "us-east1"},
            },
        ],
    )["version"]
    follow(url, "checkout", "edge-eu-1")
    requests.patch(f"{url}/edsservice/checkout/hosts/10.1.0.12:8080", json={"health_status": "DRAINING"}, timeout=5)
    follow(url, "checkout", "edge-eu-1")
    follow(url, "checkout", "edge-eu-2")
    stick(url, "checkout", "edge-eu-3", before)

    for port in (9001, 9002):
        requests.post(
            f"{url}/edsservice/payments/hosts",
            json={"ip_address": "fd00::a", "port": port, "ttl": 30, "tags": {"region": "europe-west1"}},
            timeout=5,
        ).raise_for_status()
    follow(url, "payments", "edge-eu-1")
    follow(url, "payments", "edge-eu-2")
    put_service(url, "search", [])
    follow(url, "inventory", "edge-eu-2")


def take(browser, url: str, path: str, viewport: dict, full_page: bool, scale: int) -> None:
    page = browser.new_page(viewport=viewport, device_scale_factor=scale)
    page.goto(f"{url}/ui/")
    page.get_by_role("heading", name="checkout", exact=True).wait_for()
    page.wait_for_timeout(300)  # the TTL bars' first transition
    page.screenshot(path=path, full_page=full_page)
    page.close()
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(REPO / "docs" / "console.png"))
    parser.add_argument("--phone", help="also the top of the page at phone width, to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EdsServer(tmp=Path(tmp), store="memory://", workers=1).start()
        try:
            seed(server.url)
            with sync_playwright() as playwright:
                browser = launch(playwright)
                take(browser, server.url, args.output, {"width": 1440, "height": 900}, full_page=True, scale=1)
                if args.phone:
                    take(browser, server.url, args.phone, {"width": 390, "height": 844}, full_page=False, scale=2)
                browser.close()
        finally:
            stop_all()


if __name__ == "__main__":
    main()
