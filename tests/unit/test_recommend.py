"""Top-k recommendations with the dataset's own ids, for the item-ranking contracts."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data import make_synthetic
from recsys.errors import ConfigError, DataError
from recsys.models.baselines import MostPopular
from recsys.models.local import WL
from recsys.pipeline.recommend import known_interactions, recommend
from recsys.protocols import random_split, strong_generalization


@pytest.fixture(scope="module")
def split():
    df = make_synthetic(n_users=300, n_items=90, seed=4).df
    df["user"] = "visitor-" + df["user"].astype(str)  # original ids the model never sees
    df["item"] = "SKU_" + df["item"].astype(str)
    return random_split(df, k_core=3, seed=0)


def _ndcg_at(lists: np.ndarray, target, k: int) -> np.ndarray:
    """NDCG@k recomputed by hand from written top-k lists (binary gains, IDCG over min(k, n))."""
    out = []
    for u, items in enumerate(lists):
        rel = set(target[u].indices.tolist())
        if not rel:
            continue
        dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(items[:k]) if i in rel)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(rel))))
        out.append(dcg / idcg)
    return np.asarray(out)


def test_written_lists_of_a_user_scorer_reproduce_its_reported_ndcg(split):
    model = WL(exponent=1.5, hidden=16, epochs=5, patience=None, batch_size=64, device="cpu", seed=0)
    model.fit(split["train"], split["valid"])
    reported = model.evaluate_users(split["test"], ks=(20,), metrics=("ndcg",)).mean()["ndcg@20"]
    top = recommend(model, split, k=20, exclude="train")  # what the evaluation masks
    assert list(top.columns) == ["user", "rank", "item", "score"] and len(top) == 20 * split.n_users
    assert top["user"].iloc[0].startswith("visitor-") and top["item"].iloc[0].startswith("SKU_")
    item_index = {i: j for j, i in enumerate(split.id_map.items.tolist())}
    lists = top["item"].map(item_index).to_numpy().reshape(split.n_users, 20)
    assert _ndcg_at(lists, split["test"], 20).mean() == pytest.approx(reported, abs=1e-6)
    scores = top["score"].to_numpy().reshape(split.n_users, 20)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_known_items_are_never_recommended_and_ids_are_the_datasets(split):
    model = MostPopular(device="cpu").fit(split["train"])
    top = recommend(model, split, users=["visitor-3", "visitor-10"], k=5)
    assert top["user"].tolist() == ["visitor-3"] * 5 + ["visitor-10"] * 5
    known = known_interactions(split)
    index = {u: i for i, u in enumerate(split.id_map.users.tolist())}
    for user, rows in top.groupby("user"):
        seen = set(split.id_map.items[known[index[user]].indices].tolist())
        assert not seen & set(rows["item"])
    # most-popular ranks by training popularity: the first unseen most popular item leads
    assert top["rank"].tolist() == [1, 2, 3, 4, 5] * 2


def test_strong_generalisation_users_get_all_their_interactions_as_history():
    df = make_synthetic(n_users=300, n_items=90, seed=4).df
    split = strong_generalization(df, n_heldout_users=50, seed=0)
    known = known_interactions(split)
    assert known.shape == (split.n_users, split.n_items)
    assert known.nnz == sum(split[m].nnz for m in split.matrices)  # every interaction, once
    model = MostPopular(device="cpu").fit(split["train"])
    top = recommend(model, split, k=3)
    assert top["user"].nunique() == split.n_users


def test_bad_requests_name_the_value(split):
    model = MostPopular(device="cpu").fit(split["train"])
    with pytest.raises(DataError, match=r"1 of 2 users are not in the split \(nobody\).*unknown='skip'"):
        recommend(model, split, users=["visitor-3", "nobody"])
    assert recommend(model, split, users=["visitor-3", "nobody"], unknown="skip", k=2)["user"].nunique() == 1
    with pytest.raises(ConfigError, match=r"k=1000: expected an integer in 1\.\.\d+"):
        recommend(model, split, k=1000)
    with pytest.raises(ConfigError, match="exclude='seen'"):
        recommend(model, split, exclude="seen")
