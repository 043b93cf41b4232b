"""Every number in a marked block of README.md / docs/ is what its results file gives."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("render_docs", REPO / "scripts" / "render_docs.py")
render_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_docs)


def test_every_rendered_block_matches_its_results_file(capsys):
    assert render_docs.main(["--check"]) == 0, capsys.readouterr().out


def test_every_renderer_is_used_and_a_changed_number_is_caught():
    used = set()
    for path in render_docs.files():
        used |= {m.group("name") for m in render_docs.BLOCK.finditer(path.read_text())}
    assert used == set(render_docs.RENDERERS)
    text = "x\n<!-- rendered: main-job-time -->\n2 min 31 s by hand\n<!-- /rendered -->\ny\n"
    new, changed = render_docs.render(text, "t.md")
    assert changed == ["main-job-time"] and "by hand" not in new and new.startswith("x\n") and new.endswith("y\n")
    with pytest.raises(SystemExit, match="unknown rendered block 'nope'"):
        render_docs.render("<!-- rendered: nope -->\n<!-- /rendered -->", "t.md")
