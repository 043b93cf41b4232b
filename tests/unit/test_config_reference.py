"""docs/configs.md lists every registered model's settings exactly as the code defines them."""

from __future__ import annotations

import importlib.util

from recsys.models.registry import registered_models
from recsys.models.schema import config_schema
from tests.conftest import REPO


def _script():
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "scripts" / "config_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_settings_page_is_current():
    mod = _script()
    page = mod.PAGE.read_text()
    assert page == mod.render(page), "docs/configs.md is stale: run .venv/bin/python scripts/config_reference.py"


def test_every_setting_of_every_model_is_in_its_schema_with_its_default():
    from dataclasses import MISSING, fields

    for name, klass in registered_models().items():
        props = config_schema(name)["properties"]
        for f in fields(klass.Config):
            assert f.name in props, (name, f.name)
            if f.default is not MISSING and isinstance(f.default, (int, float, str, bool)):
                assert props[f.name]["default"] == f.default, (name, f.name)
