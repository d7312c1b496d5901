"""The seed format: services and their hosts as YAML, loaded at start-up and written by the export.

```yaml
services:
  myservice:
    hosts:
    - {ip_address: 10.0.0.5, port: 8001, tags: {az: us-central1-a, load_balancing_weight: 50}}
    policy: {overprovisioning_factor: 140}    # optional
```

Each service body is what `PUT /edsservice/NAME` accepts, so the same
validation applies and `GET /edsservice?format=yaml` can write it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from ..model import InvalidInput, Problem, Service, parse_service

HEADER = (
    "# eds-server registry export. Load it into another server with EDS_SEED_FILE=<this file>\n"
    "# (or as the services: key of --config); services that already exist there are kept as they are.\n"
)


def check_services(services: Any) -> None:
    """Raise InvalidInput naming every problem of a seed's `services:` mapping (fields prefixed `services.NAME`)."""
    if not isinstance(services, Mapping):
        raise InvalidInput(
            [Problem("services", services, "must be a mapping of service name to {hosts: [...], policy: {...}}")]
        )
    problems: list[Problem] = []
    for name, body in services.items():
        try:
            parse_service(name, body, now=0.0)
        except InvalidInput as error:
            problems.extend(Problem(f"services.{name}.{p.field}", p.value, p.rule) for p in error.problems)
    if problems:
        raise InvalidInput(problems)


def export(services: Iterable[Service]) -> str:
    """The registry in the seed format, ready to be loaded by another server."""
    document = {"services": {s.name: {k: v for k, v in s.to_dict().items() if k != "name"} for s in services}}
    return HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
