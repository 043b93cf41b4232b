"""Unit tests of the local stage's glue: evaluating LFT from some of its shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ConfigError
from recsys.pipeline import local as lc

TINY = {"shards": 3, "dataset": None, "params": {"k_core": 3, "seed": 0}, "methods": {
    "wl": {"exponent": 1.5, "epochs": 15, "patience": None, "batch_size": 64, "hidden": 16},
    "lft": {"local_epochs": 3, "max_local": 40, "group": 32, "hidden": 16, "epochs": 1, "patience": None},
    "enlft": {"local_epochs": 1, "max_local": 20, "n_anchors": 3, "hidden": 16, "epochs": 1, "patience": None},
}}


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from recsys.data import make_synthetic

    root = tmp_path_factory.mktemp("local")
    path = root / "tiny.csv"
    make_synthetic(n_users=150, n_items=60, seed=3).df.to_csv(path, index=False)
    settings = lc.load_settings("amazon-digital-music", {**TINY, "dataset": {"path": str(path)}})
    settings["methods"] = {k: v for k, v in settings["methods"].items() if k in TINY["methods"]}
    settings = lc.select_methods(settings, "wl,lft,enlft")
    prepared = lc.prepare("csv", settings, output_dir=root / "split")
    base = lc.train_base(prepared.path, settings, root / "models")
    n_users = prepared.split["train"].shape[0]
    tasks = [t for t in lc.plan(settings, n_users) if t["method"] == "lft"]
    return settings, prepared, base, tasks, root


def test_lft_partial_compares_the_same_users_with_its_start(stage):
    settings, prepared, base, tasks, root = stage
    assert len(tasks) == 3
    outs = [lc.run_task(prepared.path, base, t, settings, root / "shards") for t in tasks[:2]]
    assert [Path(o["path"]).name for o in outs] == ["lft.shard0of3.pt", "lft.shard1of3.pt"]  # another count: other files
    part = lc.evaluate_lft_partial(prepared.path, base, "lft", outs[::-1], settings)
    n_users = prepared.split["train"].shape[0]
    assert part["users"] == len(tasks[0]["items"]) + len(tasks[1]["items"]) and part["of_users"] == n_users
    assert part["shards_done"] == [0, 1] and part["n_shards"] == 3 and part["start"] == "wl"
    assert part["full_run_seconds_estimate"] == pytest.approx(
        sum(o["seconds"] for o in outs) * n_users / part["users"], abs=1)

    # the same numbers by hand: mean per-user NDCG@20 over the covered users, per group too
    from recsys.metrics.groups import GROUP_NAMES
    from recsys.models.base import Model

    users = np.concatenate([t["items"] for t in tasks[:2]])
    groups = np.load(lc._mainstream_dir(prepared.path) / "mainstream_groups.npy")
    wl = Model.load(base["models"]["wl"])
    res = wl.evaluate_users(prepared.split["test"], users, ks=(20,), metrics=("ndcg",))
    per_user = res.per_user["ndcg@20"]
    ids = users[res.users]
    assert part["wl"]["ndcg@20"] == pytest.approx(per_user.mean())
    for g, name in enumerate(GROUP_NAMES):
        if (groups[ids] == g).any():
            assert part["wl"]["groups"][name] == pytest.approx(per_user[groups[ids] == g].mean())
            assert part["group_sizes"][name] == int((groups[ids] == g).sum())
    # LFT's users are scored from their fine-tuned rows, not from WL
    assert part["lft"]["ndcg@20"] != pytest.approx(part["wl"]["ndcg@20"])


def test_lft_partial_refuses_other_methods_and_nothing(stage):
    settings, prepared, base, tasks, _ = stage
    with pytest.raises(ConfigError, match="no finished lft shards"):
        lc.evaluate_lft_partial(prepared.path, base, "lft", [], settings)
    with pytest.raises(ConfigError, match="'enlft' is a enlft method"):
        lc.evaluate_lft_partial(prepared.path, base, "enlft", [{"path": "x", "shard": 0}], settings)


@pytest.mark.parametrize("dataset", ["amazon-digital-music", "ml-1m"])
def test_gate_ablation_runs_the_dataset_tall_settings_with_only_the_two_switches_changed(dataset):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "ablate_tall_gate.py"
    spec = importlib.util.spec_from_file_location("ablate_tall_gate", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    settings = mod.variant_settings(dataset)
    tall = dict(lc.load_settings(dataset)["methods"]["tall"])
    assert list(settings["methods"]) == list(mod.VARIANTS)
    seen = set()
    for name, switches in mod.VARIANTS.items():
        method = settings["methods"][name]
        assert method["model"] == "tall"
        assert method["config"] == {**tall, **switches}
        seen.add((switches["gate_source"], switches["adaptive"]))
    assert seen == {("valid", True), ("valid", False), ("train_slice", True), ("train_slice", False)}


def test_seeded_methods_run_once_per_seed_and_the_table_tests_them_against_the_reference(tmp_path):
    from recsys.data import make_synthetic

    path = tmp_path / "tiny.csv"
    make_synthetic(n_users=150, n_items=60, seed=3).df.to_csv(path, index=False)
    settings = lc.load_settings("amazon-digital-music", {**TINY, "shards": 1, "dataset": {"path": str(path)},
                                                         "seeds": "0,1,2", "reference": "wl"})
    settings["methods"] = {**{k: v for k, v in settings["methods"].items() if k in ("vae", "wl")},
                           "vae": {**TINY["methods"]["wl"], "exponent": 0.0}}
    settings = lc.select_methods(settings, "vae,wl")
    assert settings["seeds"] == [0, 1, 2] and lc.method_seeds(settings, "vae") == [0, 1, 2]
    prepared = lc.prepare("csv", settings, output_dir=tmp_path / "split")
    base = lc.train_base(prepared.path, settings, tmp_path / "models")
    assert set(base["results"]) == {(m, s) for m in ("vae", "wl") for s in (0, 1, 2)}
    assert Path(base["models"]["vae"]).name == "vae.pt" and (tmp_path / "models" / "vae.seed1.pt").is_file()
    # the seeds differ, and each kept its per-user arrays
    ndcg = [base["results"][("vae", s)]["test"]["ndcg@20"] for s in (0, 1, 2)]
    assert len(set(ndcg)) > 1
    rows = lc.group_table(base["results"])
    assert [r["method"] for r in rows] == ["vae", "wl"] and rows[0]["seeds"] == 3
    assert rows[0]["ndcg@20"] == pytest.approx(np.mean(ndcg), abs=1e-4)
    evidence = lc.STAGE.evidence(base["results"], settings)
    entry = evidence["metrics"]["ndcg@20"]["vae"]
    assert entry["ci_over"] == "seeds" and entry["vs"]["reference"] == "wl" and entry["vs"]["n_seeds"] == 3
    assert "ndcg@20 (low)" in evidence["metrics"]
    headers, cells = lc.STAGE.table_with_evidence(rows, evidence)
    assert headers[-2:] == ["ndcg@20 (high) [95% CI]", "vs wl"] and cells[1][-1] == "ref"


def test_a_sharded_method_cannot_be_seeded():
    settings = lc.load_settings("amazon-digital-music", {"seeds": [0, 1], "seeded_methods": ["vae", "loca"]})
    with pytest.raises(ConfigError, match="seeded_methods: 'loca' trains in shards"):
        lc.select_methods(settings, "vae,loca")
