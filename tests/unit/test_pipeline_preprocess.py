"""Unit tests of the preprocessing stage's glue: settings merge, fail-fast checks, stats."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from recsys.errors import ConfigError, DataError
from recsys.io import sha256_dir
from recsys.pipeline import preprocess as pp
from tests.conftest import REPO


def test_settings_merge_order():
    params = {
        "defaults": {"threshold": None, "protocol": {"seed": 1},
                     "protocols": {"strong_generalization": {"threshold": 4}}},
        "datasets": {"ml-1m": {"dataset": {"a": 1},
                               "protocols": {"strong_generalization": {"protocol": {"n_heldout_users": 600}}}}},
    }
    s = pp.resolve_settings(params, "ml-1m", "strong_generalization")
    assert s == {"threshold": 4, "dataset": {"a": 1}, "protocol": {"seed": 1, "n_heldout_users": 600}}
    s = pp.resolve_settings(params, "ml-1m", "random_split")
    assert s == {"threshold": None, "dataset": {"a": 1}, "protocol": {"seed": 1}}
    assert pp.resolve_settings(None, "x", "y") == {"threshold": None, "dataset": {}, "protocol": {}}


def test_shipped_params_file_resolves_for_every_dataset_and_protocol():
    from recsys.data import list_datasets
    from recsys.protocols import PROTOCOLS

    params = yaml.safe_load((REPO / "params" / "preprocess.yaml").read_text())
    assert set(params["datasets"]) <= set(list_datasets())
    for name in list_datasets():
        for protocol in PROTOCOLS:
            pp.resolve_settings(params, name, protocol)
    assert pp.resolve_settings(params, "ml-1m", "strong_generalization")["threshold"] == 4


@pytest.mark.parametrize("params, needle", [
    ({"default": {}}, "unknown top-level key(s) ['default']"),
    ({"defaults": {"treshold": 4}}, "section defaults: unknown key(s) ['treshold']"),
    ({"datasets": {"ml-1m": {"protocols": {"random_split": {"k_core": 5}}}}},
     "section datasets.ml-1m.protocols.random_split: unknown key(s) ['k_core']"),
])
def test_bad_params_file_names_the_key(params, needle):
    with pytest.raises(ConfigError) as err:
        pp.resolve_settings(params, "ml-1m", "random_split")
    assert needle in str(err.value)


def test_check_request_names_bad_values():
    with pytest.raises(ConfigError, match="ml-1mm"):
        pp.check_request("ml-1mm", "random_split")
    with pytest.raises(ConfigError, match="Did you mean 'random_split'"):
        pp.check_request("ml-1m", "random_splt")


def test_prepare_split_on_csv_writes_split_and_stats(tmp_path):
    from recsys.data import make_synthetic
    from recsys.protocols import Split

    path = tmp_path / "ratings.csv"
    make_synthetic(n_users=150, n_items=90, seed=0).df.to_csv(path, index=False)
    prepared = pp.prepare_split("csv", "leave_k_out_by_time", dataset_options={"path": str(path)},
                                threshold=None, protocol_params={"k": 2, "min_user": 5},
                                output_dir=tmp_path / "out")
    loaded = Split.load(prepared.path)
    assert loaded.protocol == "leave_k_out_by_time"
    assert prepared.stats["n_interactions"] == loaded["train"].nnz + loaded["test"].nnz
    assert prepared.sha256 == sha256_dir(prepared.path)
    full = pp.interaction_matrix(loaded)
    assert full.nnz == prepared.stats["n_interactions"]
    png = pp.degree_plot_png(loaded)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_prepare_split_writes_nothing_on_bad_input(tmp_path):
    import pandas as pd

    path = tmp_path / "ratings.csv"
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": ["good", "bad"], "timestamp": [1, 2]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="good"):
        pp.prepare_split("csv", "random_split", dataset_options={"path": str(path)}, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    path.write_text("user,item,rating,timestamp\n1,1,3,1\n")
    with pytest.raises(ConfigError, match="fractions"):
        pp.prepare_split("csv", "random_split", dataset_options={"path": str(path)},
                         protocol_params={"fractions": [0.7, 0.3, 0.3]}, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_interaction_matrix_strong_generalization_places_rows():
    from recsys.protocols import strong_generalization
    from recsys.data import make_synthetic

    df = make_synthetic(n_users=200, n_items=100, seed=2).df
    split = strong_generalization(df, n_heldout_users=20, seed=1)
    full = pp.interaction_matrix(split)
    for users_key, names in (("valid_users", ("valid_fold_in", "valid_holdout")),
                             ("test_users", ("test_fold_in", "test_holdout"))):
        rows = split.arrays[users_key]
        block = (split[names[0]] + split[names[1]]).toarray() > 0
        assert np.array_equal(full[rows].toarray() > 0, block)


def test_the_data_summary_says_what_each_filter_removed(capsys, tmp_path):
    from recsys.pipeline.splits import data_summary

    stats = {"rows_in": 1000, "rows_after_k_core": 900, "users_after_k_core": 90, "rows_after_dedupe": 850,
             "users_after_dedupe": 88, "n_users": 88, "n_items": 40, "n_interactions": 850}
    assert data_summary(stats) == ("data: 1,000 rows read; k_core: 900 rows kept (100 removed), 90 users; dedupe: "
                                   "850 rows kept (50 removed), 88 users (2 removed); split: 88 users x 40 items, "
                                   "850 interactions")
    prepared = pp.prepare_split("amazon-digital-music", "random_split", protocol_params={"k_core": 10},
                                output_dir=tmp_path / "split")
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("data: ")]
    assert line == [data_summary(prepared.stats)] and "k_core: " in line[0] and "removed" in line[0]


def test_numbered_columns_read_a_file_without_a_header_row(tmp_path):
    from recsys.data import load_dataset
    from recsys.errors import ConfigError
    from recsys.pipeline.settings import data_options

    path = tmp_path / "noheader.tsv"
    path.write_text("".join(f"visitor-{u:05d}\tSKU_{i:04d}\t{1 + (u + i) % 5}\n" for u in range(30) for i in range(u % 4, 20, 2)))
    opts = data_options(str(path), "user=0,item=1,rating=2", "tab")
    assert opts["columns"] == {"user": 0, "item": 1, "rating": 2}
    ds = load_dataset("csv", **opts)
    assert len(ds.df) == sum(len(range(u % 4, 20, 2)) for u in range(30)) and ds.df["user"].iloc[0] == "visitor-00000"
    with pytest.raises(DataError, match="first line looks like data.*--columns user=0,item=1"):
        load_dataset("csv", **data_options(str(path), "user=uid,item=sku", "tab"))
    with pytest.raises(ConfigError, match="not a mix"):
        data_options(str(path), "user=0,item=sku")
