"""A documented flow command puts ``--config`` where Metaflow takes it: before ``run`` (Metaflow
2.19 refuses ``run ... --config``: ``Error: no such option: --config``)."""

from __future__ import annotations

import re

from tests.conftest import REPO

FLOW_COMMAND = re.compile(r"flows/\w+_flow\.py[^\n`]*")


def _documented_commands():
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "flows").glob("*_flow.py"))]
    for path in files:
        for match in FLOW_COMMAND.finditer(path.read_text()):
            yield path.relative_to(REPO), match.group(0)


def test_config_comes_before_run_in_every_documented_command():
    wrong = [f"{path}: {cmd}" for path, cmd in _documented_commands()
             if "--config" in cmd and " run" in cmd and cmd.index("--config") > cmd.index(" run")]
    assert not wrong, "\n".join(wrong)


def test_the_commands_are_found():
    commands = list(_documented_commands())
    assert len(commands) > 20 and any("--config cfg" in cmd for _, cmd in commands)
