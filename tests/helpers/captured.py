"""What the tests replay: requests captured from Envoy 1.40 (copies of shared/fixtures) and the classic tutorial."""

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def tutorial_text() -> str:
    return (FIXTURES / "classic-tutorial.md").read_text()
