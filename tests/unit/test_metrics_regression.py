"""RMSE / MAE and the per-true-rating report."""

import json

import numpy as np
import pytest
import torch

from recsys.errors import DataError
from recsys.metrics import mae, per_rating_report, rmse


def test_rmse_mae_hand_case():
    pred, true = [1.0, 2.0, 3.0], [1.0, 3.0, 5.0]  # errors 0, 1, 2
    assert mae(pred, true) == pytest.approx((0 + 1 + 2) / 3)
    assert rmse(pred, true) == pytest.approx(np.sqrt((0 + 1 + 4) / 3))
    # numpy and torch (with grad) inputs give the same numbers
    assert rmse(np.array(pred), torch.tensor(true)) == rmse(torch.tensor(pred, requires_grad=True), true)


def test_per_rating_report_hand_case():
    pred = [1.5, 2.0, 3.0, 4.0, 4.5]
    true = [1, 2, 2, 5, 5]
    rep = per_rating_report(pred, true)
    assert rep["1"] == {"n": 1, "rmse": pytest.approx(0.5), "mae": pytest.approx(0.5)}
    assert rep["2"] == {"n": 2, "rmse": pytest.approx(np.sqrt((0 + 1) / 2)), "mae": pytest.approx(0.5)}  # errors 0, 1
    assert rep["5"] == {"n": 2, "rmse": pytest.approx(np.sqrt((1 + 0.25) / 2)), "mae": pytest.approx(0.75)}  # 1, 0.5
    assert rep["overall"] == {"n": 5, "rmse": pytest.approx(rmse(pred, true)), "mae": pytest.approx(mae(pred, true))}
    json.dumps(rep, allow_nan=False)
    assert set(per_rating_report([3.0], [3.5])) == {"3.5", "overall"}


def test_bad_inputs():
    with pytest.raises(DataError, match="true ratings contain 1 NaN"):
        rmse([1.0, 2.0], [1.0, float("nan")])
    with pytest.raises(DataError, match="predictions"):
        mae(torch.tensor([float("nan")]), [1.0])
    with pytest.raises(DataError):
        per_rating_report([1.0, 2.0], [1.0])
    with pytest.raises(DataError):
        rmse([], [])
