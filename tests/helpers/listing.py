"""The registry as a real server lists it, for tests that compare two listings."""

from __future__ import annotations

import requests


def registry_listing(url: str) -> list[dict]:
    """`GET /edsservice`, less each host's `expires_in`: a countdown that moves by itself between two reads."""
    response = requests.get(f"{url}/edsservice", timeout=10)
    response.raise_for_status()
    services = response.json()
    for service in services:
        for host in service["hosts"]:
            host.pop("expires_in", None)
    return services
