"""One POSIT training epoch on ML-1M: ours vs a reference-style data path and trainer, in one run.

    RECSYS_DATA_HOME=/path/to/data python benchmarks/bench_posit_epoch.py [--device cpu]

Both train the linear item-item learner under POSIT (adversary 2bmlp2, recall_dist advantage,
SGD lr 0.05 / momentum 0.9, batch 512) for one epoch on the training users of ML-1M's strong
generalisation split (ratings >= 4, 1,000 + 1,000 held-out users; 4,034 x 3,485).

* ours: the training pairs go straight into a CSR matrix; ``TailLearner(method="posit", epochs=1)``
  trains with sparse-row products (``embedding_bag``) and a dense batch only for the loss.
* reference-style (POSIT's ``dataset/common.py`` + ``train_body.py`` data path): one dense Python
  list of |I| floats per user, filled pair by pair, then ``np.array`` and a scipy CSC matrix;
  each batch is sliced from the shuffled matrix, converted to a torch sparse tensor and multiplied
  with ``torch.sparse.mm``; the adversary reads the item x user matrix as a torch sparse tensor.

"data" is the time to turn the training pairs into the matrix the trainer reads; "epoch" is one
training pass. Each side runs in its own child process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_multvae_epoch.py

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _children import child_result, run_children  # noqa: E402  (benchmarks/ is the script's folder)

BATCH, LR, WD, ALR, NSTD, K = 512, 0.05, 0.1, 1.0, 1.5, 100


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"device", "threads", "data_speedup", "epoch_speedup", "memory_ratio", "ours", "reference"}  # --out


def training_pairs():
    """(users, items, n_users, n_items) of the training rows of the ML-1M tail split."""
    from recsys.pipeline import tail

    if not os.environ.get("RECSYS_DATA_HOME"):
        sys.exit("set RECSYS_DATA_HOME to the folder holding ml-1m/")
    settings = tail.load_settings("ml-1m")
    prepared = tail.prepare("ml-1m", settings, output_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "bench_posit_split")
    from recsys.protocols import Split

    coo = Split.load(prepared.path)["train"].tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.shape[0], coo.shape[1]


def run_ours(pairs, device) -> dict:
    users, items, n_users, n_items = pairs
    from recsys.models.tail import TailLearner

    start = time.perf_counter()
    train = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    data = time.perf_counter() - start
    model = TailLearner(method="posit", lr=LR, weight_decay=WD, alr=ALR, nstd=NSTD, ast="2bmlp2", batch_size=BATCH,
                        epochs=1, patience=None, device=device).fit(train)
    return {"data_seconds": data, "seconds": model.history_[0]["train_seconds"]}


class _RefAdversary(nn.Module):
    """2bmlp2 as upstream: Linear(users -> 2) on a sparse input, BN, x nstd, tanh, Linear, BN."""

    def __init__(self, n_users: int) -> None:
        super().__init__()
        self.embedding = nn.Linear(n_users, 2, bias=False)
        nn.init.normal_(self.embedding.weight, std=n_users ** -0.5)
        self.norm = nn.Sequential(nn.BatchNorm1d(2, affine=False), nn.Tanh(), nn.Linear(2, 1, bias=False),
                                  nn.BatchNorm1d(1, affine=False))

    def forward(self, x):
        o = torch.sparse.mm(x, self.embedding.weight.t()) * 1.0
        o = self.norm[0](o) * NSTD
        o = self.norm[3](self.norm[2](self.norm[1](o)))
        return torch.sigmoid(o.squeeze(1) * NSTD)


def run_reference(pairs, device) -> dict:
    users, items, n_users, n_items = pairs
    start = time.perf_counter()
    allx = [[0.0] * n_items for _ in range(n_users)]  # upstream: one dense list per user
    for u, i in zip(users.tolist(), items.tolist()):
        allx[u][i] = 1.0
    train = sp.csc_matrix(np.array(allx, dtype=np.float32))
    del allx
    data = time.perf_counter() - start

    def to_torch(m):
        coo = sp.coo_matrix(m)
        return torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, coo.shape).to(device)

    torch.manual_seed(0)
    U = nn.Parameter(torch.zeros(n_items, n_items, device=device))
    adversary = _RefAdversary(n_users).to(device)
    opt = torch.optim.SGD([{"params": [U], "lr": LR, "momentum": 0.9, "weight_decay": WD},
                           {"params": adversary.parameters(), "lr": ALR}], lr=LR)
    item_x = to_torch(train.transpose().tocsr())
    item_loss = torch.zeros(n_items, device=device)
    loss_count = torch.full((n_items,), 1e-15, device=device)
    weight = torch.ones(n_items, device=device)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    order = rng.permutation(n_users)
    shuffled = train[order]
    for s in range(0, n_users, BATCH):
        x_sparse = to_torch(shuffled[s:s + BATCH])
        opt.zero_grad()
        with torch.no_grad():
            U.data.fill_diagonal_(0.0)
        pred = torch.sparse.mm(x_sparse, U)
        x = x_sparse.to_dense()
        per_item = (pred - x).square().mean(0) * 1000
        loss = (per_item * (weight / weight.mean())).mean()
        loss.backward()
        with torch.no_grad():  # recall_ind_dist on dense tensors, as upstream's vendored metric
            top = pred.topk(K, dim=1).indices
            mask = torch.zeros_like(pred).scatter_(1, top, 1.0)
            hits = (mask * x) / x.sum(1, keepdim=True).clamp(1, K)
            item_loss = item_loss * 0.9 - hits.sum(0)
            loss_count = loss_count * 0.9 + x.shape[0]
        raw = adversary(item_x)
        weight = raw.detach()
        adv = item_loss / loss_count
        aloss = -((raw / raw.mean().detach()) * (adv / adv.abs().mean())).mean()
        aloss.backward()
        opt.step()
    return {"data_seconds": data, "seconds": time.perf_counter() - start}


def child(impl: str, device: str) -> None:
    child_result(training_pairs, run_ours if impl == "ours" else run_reference, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.device)
    results = run_children(
        __file__, ("ours", "reference"), ["--device", args.device],
        lambda impl, r: print(f"{impl:>10}: data {r['data_seconds']:.2f} s, epoch {r['seconds']:.2f} s, peak RSS "
                              f"{r['peak_rss_gb']:.2f} GB", flush=True))
    o, ref = results["ours"], results["reference"]
    summary = {"data_speedup": ref["data_seconds"] / o["data_seconds"], "epoch_speedup": ref["seconds"] / o["seconds"],
               "memory_ratio": ref["peak_rss_gb"] / o["peak_rss_gb"]}
    threads = os.environ.get("BENCH_THREADS", torch.get_num_threads())
    print(f"POSIT on ML-1M, {args.device}, torch threads {threads}: data path "
          f"{summary['data_speedup']:.0f}x faster, epoch {summary['epoch_speedup']:.1f}x faster, peak RSS "
          f"{o['peak_rss_gb']:.2f} GB vs {ref['peak_rss_gb']:.2f} GB ({summary['memory_ratio']:.1f}x less)")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "threads": int(threads), **summary, **results},
                                             indent=1))


if __name__ == "__main__":
    main()
