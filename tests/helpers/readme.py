"""The README's shell scripts, run by the tests as operators would copy them."""

from __future__ import annotations

import re

from scripts.processes import REPO


def readme_script(marker: str) -> str:
    """The one ```bash block of the README that contains `marker`."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    [block] = [b for b in blocks if marker in b]
    return block
