"""Metrics speed, side by side in one process (machines are noisy: read the ratios).

1. Full-ranking evaluation, ML-1M shape (6,040 users x 3,706 items, ~1M training pairs,
   ~166k held out), ks 20/50/100, six metrics:
   reference = recsys-metrics 0.0.4 called once per metric and k on dense masked batches
   (each call re-runs topk over the batch), vs ``recsys.metrics.evaluate`` (one topk).
2. Mainstream scores: reference = dense |U| x |U| Jaccard (LFT/TALL notebook style) vs
   ``mainstream_scores`` (sparse, batched).

Run: python benchmarks/bench_metrics.py [--users N] [--items N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import recsys_metrics as rm
import scipy.sparse as sp
import torch

from recsys.metrics import evaluate, mainstream_scores

KS = (20, 50, 100)


def clock(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--items", type=int, default=3706)
    ap.add_argument("--batch", type=int, default=1024)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    train = sp.random(a.users, a.items, density=0.045, format="csr", random_state=1, dtype=np.float32)
    train.data[:] = 1
    heldout = sp.random(a.users, a.items, density=0.0075, format="csr", random_state=2, dtype=np.float32)
    heldout = (heldout - heldout.multiply(train)).tocsr()
    heldout.eliminate_zeros()
    heldout.data[:] = 1
    emb_u = torch.from_numpy(rng.standard_normal((a.users, 64)).astype(np.float32))
    emb_i = torch.from_numpy(rng.standard_normal((a.items, 64)).astype(np.float32))
    users = np.flatnonzero(np.diff(heldout.indptr) > 0)

    def reference():
        sums = {}
        for start in range(0, len(users), a.batch):
            rows = users[start : start + a.batch]
            scores = emb_u[rows] @ emb_i.T
            scores[torch.from_numpy(train[rows].toarray() > 0)] = float("-inf")
            target = torch.from_numpy(heldout[rows].toarray())
            for name, fn in [("precision", rm.precision), ("recall", rm.recall), ("ndcg", rm.normalized_dcg),
                             ("map", rm.mean_average_precision), ("mrr", rm.mean_reciprocal_rank), ("hit", rm.hit_rate)]:
                for k in KS:
                    sums[f"{name}@{k}"] = sums.get(f"{name}@{k}", 0.0) + fn(scores, target, k=k, reduction="sum").item()
        return {key: v / len(users) for key, v in sums.items()}

    def ours():
        return evaluate(lambda rows: emb_u[rows] @ emb_i.T, users, heldout, train, ks=KS,
                        recall_denominator="n", batch_size=a.batch, device="cpu").mean()

    t_ref, ref = clock(reference)
    t_our, res = clock(ours)
    for key in ("precision@20", "ndcg@100", "recall@50", "hit@20"):  # same numbers where the library is right
        assert abs(ref[key] - res[key]) < 1e-6, (key, ref[key], res[key])
    print(f"evaluation  reference {t_ref:6.2f} s   ours {t_our:6.2f} s   ratio {t_ref / t_our:5.2f}x")

    def dense_jaccard():
        b = train.toarray()
        inter = b @ b.T
        size = b.sum(1)
        union = size[:, None] + size[None, :] - inter
        jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        np.fill_diagonal(jac, 0.0)
        return jac.sum(1) / (len(b) - 1)

    t_ref, ref_ms = clock(dense_jaccard)
    t_our, our_ms = clock(lambda: mainstream_scores(train, device="cpu"))
    assert np.allclose(ref_ms, our_ms, rtol=1e-5)
    print(f"mainstream  reference {t_ref:6.2f} s   ours {t_our:6.2f} s   ratio {t_ref / t_our:5.2f}x")


if __name__ == "__main__":
    main()
