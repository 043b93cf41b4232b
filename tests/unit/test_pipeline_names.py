"""Stages ask models through their classes, never by name: no string in ``recsys/pipeline/``
(docstrings aside) is a registered model's name, except in the registry of stages
(``recsys/pipeline/catalog.py``), which says which model each method of each stage is."""

from __future__ import annotations

import ast
from pathlib import Path

from recsys.models.registry import registered_models

PIPELINE = Path(__file__).resolve().parents[2] / "recsys" / "pipeline"


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_no_model_name_literal_in_the_pipeline_outside_the_catalog():
    names = set(registered_models())
    found = []
    for path in sorted(PIPELINE.glob("*.py")):
        if path.name == "catalog.py":
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip \
                    and node.value in names:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_every_method_of_the_catalog_is_a_registered_model():
    from recsys.pipeline import catalog

    names = set(registered_models())
    models = (list(catalog.LOCAL_METHODS.values()) + [m.model for m in catalog.TAIL_METHODS.values()]
              + list(catalog.META_METHODS.values()) + list(catalog.META_BACKBONES) + list(catalog.BAM_MODELS)
              + list(catalog.BAM_BASELINES))
    assert set(models) <= names
    assert set(catalog.LOCAL_BASE_METHODS) <= set(catalog.LOCAL_METHODS)
    assert catalog.TAIL_PARAM_STRING_METHOD in catalog.TAIL_METHODS


def test_a_model_of_the_wrong_contract_is_refused_in_the_first_step_naming_the_contract():
    import pytest

    from recsys.errors import ConfigError
    from recsys.pipeline import bam, local

    settings = {"methods": {"vae": {"exponent": 0}, "tall_x": {"model": "multvae"}}, "shards": 1}
    with pytest.raises(ConfigError, match=r"method 'tall_x': model 'multvae' keeps the ItemScorer contract; the local stage "
                                          r"runs UserScorer models"):
        local.select_methods(settings, "tall_x")
    bam_settings = {"models": ["remi"], "selections": ["hard"], "baselines": {"melo": {}}, "train": {}}
    with pytest.raises(ConfigError, match=r"baseline 'melo': model 'melo' trains on user_split splits; the BaM "
                                          r"stage evaluates on leave_one_out"):
        bam.STAGE.plan(bam_settings)
    assert [t.key for t in bam.STAGE.plan({**bam_settings, "baselines": {"mostpop": {}, "sasrec": {}}})] == ["remi/hard"]
