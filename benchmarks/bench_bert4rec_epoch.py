"""BERT4Rec training-epoch cost on ML-1M, side by side in one process (machines are noisy: read the ratio).

* ours: ``BERT4Rec.fit`` for one epoch -- one row per user (its training sequence, a random
  window of max_len), random cloze masking, CE at masked positions only -- plus the one
  full-ranking validation pass that follows it.
* reference style (RecBole): one row per *prefix* of every training sequence (~0.98M rows on
  ML-1M), each a left-truncated window of max_len with the same masking and the same network.
  A full reference epoch takes hours, so ``--ref-batches`` random batches are timed (half before
  our epoch, half after) and the epoch time is extrapolated from the per-batch time.

Data: $RECSYS_DATA_HOME/ml-1m/ratings_partial.csv.gz (user_id, movie_id, rating, timestamp,
chrono_rank; each user ordered by chrono_rank), leave_one_out with 5-core.

Run: python benchmarks/bench_bert4rec_epoch.py [--max-len 200] [--hidden 64] [--ref-batches 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from recsys.models.sequential import BERT4Rec, BERT4RecConfig, BERT4RecNetwork
from recsys.models.sequential.sequences import mask_positions, window_tokens
from recsys.protocols import leave_one_out
from recsys.training.device import pick_device


def load_ml1m(home: Path) -> pd.DataFrame:
    df = pd.read_csv(home / "ml-1m" / "ratings_partial.csv.gz")
    return df.rename(columns={"user_id": "user", "movie_id": "item", "chrono_rank": "order"})


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-home", default=os.environ.get("RECSYS_DATA_HOME", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--ref-batches", type=int, default=10)
    ap.add_argument("--length-pool", type=int, default=8, help="1 = plain random batches (no length sorting)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    t = time.perf_counter()
    split = leave_one_out(load_ml1m(Path(a.data_home)))
    print(f"{split}  (built in {time.perf_counter() - t:.1f}s; device {device}, {torch.get_num_threads()} threads)")
    cfg = BERT4RecConfig(max_len=a.max_len, hidden=a.hidden, batch_size=a.batch, length_pool=a.length_pool, epochs=1, mask_prob=0.2, device=str(device))

    # ---- reference style: one row per prefix, timed on a sample of batches --------------------
    indptr, items = split.arrays["seq_indptr"], split.arrays["seq_items"]
    train_stop = np.maximum(np.diff(indptr) - 2, 0)
    # prefixes ending at positions 2..stop predict items 2..stop (the first item has no history)
    counts = np.maximum(train_stop - 1, 0)
    n_prefix = int(counts.sum())
    users = np.repeat(np.arange(len(counts)), counts)
    ends = np.arange(n_prefix) - np.repeat(np.cumsum(counts) - counts, counts) + 2
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = BERT4RecNetwork(split.n_items, cfg).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)

    def ref_step() -> None:
        pick = rng.integers(0, n_prefix, cfg.batch_size)
        stop = ends[pick]
        tokens = window_tokens(indptr, items, users[pick], np.maximum(stop - cfg.max_len, 0), stop, width=cfg.max_len)
        masked = mask_positions(tokens, cfg.mask_prob, rng)
        labels = torch.from_numpy(tokens[masked] - 1).to(device)
        tokens[masked] = net.mask_token
        h = net.encode(torch.from_numpy(tokens).to(device))
        loss = F.cross_entropy(net.logits(h[torch.from_numpy(masked).to(device)]), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def ref_seconds_per_batch(n: int) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(n):
            ref_step()
        sync()
        return (time.perf_counter() - t) / n

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    ref_step()  # warm-up
    # half the reference sample before our epoch and half after, so load drift hits both sides
    before = ref_seconds_per_batch(max(a.ref_batches // 2, 1))

    # ---- ours: one epoch (one row per user) + its validation ----------------------------------
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = BERT4Rec(cfg).fit(split)
    rec = model.history_[0]
    ours = rec["train_seconds"]
    mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB on the GPU" if device.type == "cuda" else f"{peak_rss_gb():.2f} GB peak RSS"
    n_rows = int((train_stop > 0).sum())
    print(f"ours:      {ours:8.1f} s per epoch ({n_rows} rows, length_pool {a.length_pool}), validation {rec['eval_seconds']:.1f} s, "
          f"valid NDCG@10 {rec['valid_ndcg@10']:.4f}; {mem} (process peak so far)")

    after = ref_seconds_per_batch(max(a.ref_batches - a.ref_batches // 2, 1))
    per_batch = (before + after) / 2
    ref = per_batch * np.ceil(n_prefix / cfg.batch_size)
    print(f"reference: {ref:8.1f} s per epoch extrapolated ({n_prefix} prefix rows; {before:.2f} s / {after:.2f} s per batch "
          f"of {cfg.batch_size} before / after ours)")
    print(f"ratio reference / ours: {ref / ours:.0f}x  (performance.md: RecBole BERT4Rec at max_len 200 ~ 4.5 h per epoch)")

if __name__ == "__main__":
    main()
