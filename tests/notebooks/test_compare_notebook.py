"""Notebook tier: notebooks/compare.ipynb (compare_flow.py's twin) run by papermill over two run folders."""

from __future__ import annotations

import numpy as np
import papermill as pm

from recsys.pipeline.notebook import read_records
from tests.conftest import REPO
from tests.unit.test_leaderboard import _run


def test_compare_notebook_ranks_the_methods_of_two_runs(tmp_path):
    from recsys.pipeline.local import STAGE as LOCAL
    from recsys.pipeline.pretrain import STAGE as PRETRAIN

    rng = np.random.default_rng(1)
    base = rng.random(150)
    _run(tmp_path / "tall_run", LOCAL, {"vae": base, "tall": base + 0.05})
    _run(tmp_path / "pretrain_run", PRETRAIN, {"mostpop": base * 0.3})
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "compare.ipynb"), str(out),
                        parameters={"runs": f"{tmp_path / 'tall_run'},{tmp_path / 'pretrain_run'}",
                                    "metrics": "ndcg@20", "output_dir": str(tmp_path / "cmp")},
                        kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    board = read_records(out)["board"]
    assert board["tables"]["ndcg@20"]["order"] == ["tall:tall", "tall:vae", "pretrain:mostpop"]
    assert (tmp_path / "cmp" / "leaderboard.json").is_file()
