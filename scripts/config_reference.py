"""Write docs/configs.md: every registered model's settings with types and defaults, from the
configs' JSON schemas (recsys.models.schema). Run after changing a config:

    .venv/bin/python scripts/config_reference.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGE = REPO / "docs" / "configs.md"
MARKER = "<!-- generated below by scripts/config_reference.py: do not edit by hand -->"


def render(page: str) -> str:
    """`page` with everything below the marker replaced by the current tables."""
    from recsys.models.schema import reference_markdown

    head = page[: page.index(MARKER) + len(MARKER)]
    return head + "\n\n" + reference_markdown().rstrip("\n") + "\n\n[Back to the README](../README.md)\n"


if __name__ == "__main__":
    from recsys.io import atomic_path

    text = render(PAGE.read_text())
    with atomic_path(PAGE) as tmp:
        tmp.write_text(text)
    print(f"wrote {PAGE}")
