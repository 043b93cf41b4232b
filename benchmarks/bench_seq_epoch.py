"""One training epoch of SASRec and BERT4Rec at max length 200 on ML-1M: ours, its FLOP bound, and
a reference-style (RecBole-like) implementation, side by side in one run.

    RECSYS_DATA_HOME=../shared/data python benchmarks/bench_seq_epoch.py [--models sasrec,bert4rec]
        [--batches 0] [--ref-batches 6] [--threads N]

* ours: ``SASRec`` / ``BERT4Rec`` ``fit(split, validate=False)`` for one epoch (the paper-style
  settings of params/pretrain_ml-1m.yaml: d = 64, length 200; SASRec batch 128 with CE at every
  position, BERT4Rec batch 256 with CE at the masked positions): one row per user (its training
  sequence seq[:-2], a random window when longer), rows of similar length batched together.
  ``--batches N`` times the first N batches only and scales to the epoch.
* FLOP bound: matmul FLOPs of the epoch's real (unpadded) tokens -- QKV / output projections and
  the FFN per token and block, attention scores and weighted sums per (query, key) pair (causal:
  L(L+1)/2 pairs per row of L tokens, bidirectional: L^2), and the output softmax layer at every
  predicted position (2 d I each; BERT4Rec adds its d x d projection) -- times 3 for forward +
  backward, divided by the best plain fp32 matmul GFLOP/s measured here (a square 2048^3 product
  and the output layer's shape). "x bound" = our seconds / the bound's seconds.
* reference style (RecBole): every prefix of every training sequence is one row (~0.98M rows of
  width 200, padded to the full length; RecBole materialises them all, ``materialised_rows_gb``),
  the loss at the last position (SASRec: CE over all items) or at masked positions (BERT4Rec),
  the same networks and Adam; batch 256. A full epoch takes hours, so ``--ref-batches`` random
  batches (a slice of the epoch) are timed, half before and half after ours, and scaled to the
  number of prefix batches.

Each model runs in its own child process (``_children.py``): matmul, reference batches, our epoch
(our peak RSS is read right after it), reference batches, matmul -- so load drift on a shared
machine hits every side; read the ratios, not the absolute seconds.
Writes ``benchmarks/results/seq_epoch_cpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _children import child_result, run_children  # noqa: E402

MAX_LEN, HIDDEN, REF_BATCH = 200, 64, 256
CONFIGS = {
    "sasrec": dict(max_len=MAX_LEN, hidden=HIDDEN, n_blocks=2, n_heads=1, dropout=0.2, attn_dropout=0.2, loss="ce",
                   lr=1e-3, batch_size=128),
    "bert4rec": dict(max_len=MAX_LEN, hidden=HIDDEN, n_blocks=2, n_heads=2, mask_prob=0.2, batch_size=256),
}


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what", "dataset", "n_users", "n_items", "configs", "models"}


def load_split():
    from recsys.data import load_dataset
    from recsys.protocols import leave_one_out

    return leave_one_out(load_dataset("ml-1m").df, k_core=5)


def epoch_flops(name: str, lengths: np.ndarray, n_items: int, cfg: dict, *, padded_to: int | None = None,
                out_positions: float | None = None) -> float:
    """Forward + backward (3 x forward) matmul FLOPs of rows of `lengths` tokens (see the docstring).
    `padded_to`: every row computed at that width (attention over all pairs), as the reference does."""
    d, blocks = cfg["hidden"], cfg["n_blocks"]
    ffn = d if name == "sasrec" else 4 * d
    L = lengths.astype(np.float64)
    tokens = L.sum() if padded_to is None else len(L) * float(padded_to)
    if padded_to is not None:
        pairs = len(L) * float(padded_to) ** 2
    elif name == "sasrec":
        pairs = (L * (L + 1) / 2).sum()
    else:
        pairs = (L ** 2).sum()
    dense = tokens * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * ffn) * blocks
    attn = pairs * 4 * d * blocks
    out_per = 2 * d * n_items + (2 * d * d if name == "bert4rec" else 0)
    return 3.0 * (dense + attn + out_positions * out_per)


def our_rows(name: str, split, cfg: dict) -> tuple[np.ndarray, float]:
    """(tokens per training row, predicted positions) of one of our epochs."""
    stop = np.maximum(np.diff(split.arrays["seq_indptr"]) - 2, 0)
    if name == "sasrec":
        L = np.minimum(stop[stop >= 2], MAX_LEN + 1) - 1  # inputs; each predicts the next item
        return L, float(L.sum())
    L = np.minimum(stop[stop >= 1], MAX_LEN)
    p_last = 0.1  # BERT4Rec's last_mask_prob default: those rows predict one item
    masked = (1 - p_last) * np.maximum(1.0, cfg["mask_prob"] * L) + p_last
    return L, float(masked.sum())


def prefixes(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every training prefix as (user, stop): the history seq[:stop] predicts seq[stop]."""
    stop = np.maximum(np.diff(split.arrays["seq_indptr"]) - 2, 0)
    counts = np.maximum(stop - 1, 0)
    users = np.repeat(np.arange(len(counts)), counts)
    ends = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    return users, ends, counts


# ---- one child per model ---------------------------------------------------------------------


def matmul_gflops(n_items: int, seconds: float = 1.0) -> dict[str, float]:
    """Plain fp32 matmul throughput: a square 2048^3 product and the output layer's shape."""
    out = {}
    for label, (m, k, n) in {"square_2048": (2048, 2048, 2048), "output_layer": (16384, HIDDEN, n_items)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            a @ b
            reps += 1
        out[label] = 2.0 * m * k * n * reps / (time.perf_counter() - t) / 1e9
    return out


class Reference:
    """RecBole-style training on prefix rows: each row is seq[max(0, e - 200):e] padded to the full
    length 200, predicting seq[e]. Rows are cut for the sampled batches only (the full table,
    ``rows_gb``, is what RecBole holds in memory for the whole epoch)."""

    def __init__(self, split, name: str, device: torch.device) -> None:
        from recsys.models.sequential import BERT4RecConfig, SASRecConfig
        from recsys.models.sequential.bert4rec import BERT4RecNetwork
        from recsys.models.sequential.sasrec import SASRecNetwork

        self.name, self.dev = name, device
        self.indptr, self.items = split.arrays["seq_indptr"], split.arrays["seq_items"]
        self.users, self.ends, _ = prefixes(split)
        self.rng = np.random.default_rng(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            if name == "sasrec":
                self.net = SASRecNetwork(split.n_items, SASRecConfig(**CONFIGS[name])).to(device).train()
            else:
                self.net = BERT4RecNetwork(split.n_items, BERT4RecConfig(**CONFIGS[name])).to(device).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.epoch_batches = int(np.ceil(len(self.ends) / REF_BATCH))
        self.rows_gb = len(self.ends) * MAX_LEN * 8 / 2**30

    def step(self) -> None:
        from recsys.models.sequential.sequences import mask_positions, window_tokens

        pick = self.rng.integers(0, len(self.ends), REF_BATCH)
        u, e = self.users[pick], self.ends[pick]
        tokens = window_tokens(self.indptr, self.items, u, np.maximum(e - MAX_LEN, 0), e, width=MAX_LEN)
        net, dev = self.net, self.dev
        if self.name == "sasrec":
            h = net.encode(torch.from_numpy(tokens).to(dev))[:, -1]  # the output at the last position
            loss = F.cross_entropy(net.logits(h), torch.from_numpy(self.items[self.indptr[u] + e]).to(dev))
        else:
            masked = mask_positions(tokens, CONFIGS[self.name]["mask_prob"], self.rng)
            labels = torch.from_numpy(tokens[masked] - 1).to(dev)
            tokens[masked] = net.mask_token
            h = net.encode(torch.from_numpy(tokens).to(dev))
            loss = F.cross_entropy(net.logits(h[torch.from_numpy(masked).to(dev)]), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def seconds_per_batch(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self.step()
        return (time.perf_counter() - t) / n


def run_model(split, name: str, batches: str, ref_batches: str, device: str) -> dict:
    """matmul -> reference batches -> our epoch (peak RSS read here) -> reference batches -> matmul,
    all in this process, so load drift hits every side."""
    import resource

    from recsys.models.registry import build
    from recsys.models.sequential import core

    dev = torch.device(device)
    gflops = [matmul_gflops(split.n_items)]
    ref = Reference(split, name, dev)
    ref.step()  # warm-up
    half = max(int(ref_batches) // 2, 1)
    before = ref.seconds_per_batch(half)
    n, full = int(batches), {}
    original = core.length_batches
    if n:
        def first(*args, **kwargs):
            b = original(*args, **kwargs)
            full["n"] = len(b)
            return b[:n]

        core.length_batches = first
    model = build(name, **CONFIGS[name], epochs=1, device=device, progress="off").fit(split, validate=False)
    core.length_batches = original
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    measured = model.history_[0]["train_seconds"]
    scale = full["n"] / min(n, full["n"]) if n else 1.0
    after = ref.seconds_per_batch(max(int(ref_batches) - half, 1))
    gflops.append(matmul_gflops(split.n_items))
    per_batch = (before + after) / 2
    return {
        "ours": {"seconds": measured * scale, "measured_seconds": measured, "scaled_from_batches": n or None,
                 "loss": model.history_[0]["loss"], "peak_rss_gb": rss_ours},
        "reference": {"seconds": per_batch * ref.epoch_batches, "seconds_per_batch_before_after": [before, after],
                      "batches_timed": int(ref_batches), "epoch_batches": ref.epoch_batches,
                      "prefix_rows": int(len(ref.ends)), "materialised_rows_gb": ref.rows_gb},
        "matmul_gflops_before_after": gflops, "threads": torch.get_num_threads(),
    }


def child(impl: str, args: list[str]) -> None:
    child_result(load_split, run_model, args[-1], impl, args[0], args[1])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sasrec,bert4rec")
    ap.add_argument("--batches", type=int, default=0, help="time only the first N of our batches, scaled (0 = all)")
    ap.add_argument("--ref-batches", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every child (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "seq_epoch_cpu.json"))
    a = ap.parse_args()
    if a.threads:
        os.environ["BENCH_THREADS"] = str(a.threads)
    models = [m for m in a.models.split(",") if m]

    def show(impl: str, r: dict) -> None:
        print(f"{impl}: ours {r['ours']['seconds']:.1f} s per epoch, reference {r['reference']['seconds']:.0f} s "
              f"(scaled), child peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)

    res = run_children(__file__, tuple(models), [str(a.batches), str(a.ref_batches), a.device], show)
    split = load_split()
    report = {"what": __doc__.split("\n")[0], "dataset": "ml-1m leave_one_out k_core=5",
              "n_users": split.n_users, "n_items": split.n_items, "configs": CONFIGS, "models": {}}
    print("\n| model | threads | ours s/epoch | FLOP bound s | x bound | ours peak RSS GB | reference s/epoch (scaled) "
          "| reference / ours |\n|---|---|---|---|---|---|---|---|")
    for m in models:
        r = res[m]
        ours, ref = r["ours"], r["reference"]
        gflops = float(np.mean([max(g.values()) for g in r["matmul_gflops_before_after"]]))
        L, positions = our_rows(m, split, CONFIGS[m])
        flops = epoch_flops(m, L, split.n_items, CONFIGS[m], out_positions=positions)
        _, ends, _ = prefixes(split)
        real = np.minimum(ends, MAX_LEN)
        ref_positions = len(ends) if m == "sasrec" else np.maximum(1.0, CONFIGS[m]["mask_prob"] * real).sum()
        ref_flops = epoch_flops(m, real, split.n_items, CONFIGS[m], padded_to=MAX_LEN, out_positions=float(ref_positions))
        bound = flops / (gflops * 1e9)
        report["models"][m] = {
            **r, "matmul_gflops_used": gflops, "ours_tflop": flops / 1e12, "reference_tflop": ref_flops / 1e12,
            "bound_seconds": bound, "x_bound": ours["seconds"] / bound,
            "reference_over_ours": ref["seconds"] / ours["seconds"], "training_rows": int(len(L)),
        }
        print(f"| {m} | {r['threads']} | {ours['seconds']:.1f} | {bound:.1f} | {ours['seconds'] / bound:.1f} | "
              f"{ours['peak_rss_gb']:.2f} | {ref['seconds']:.0f} ({ref['seconds'] / 3600:.2f} h; rows alone "
              f"{ref['materialised_rows_gb']:.1f} GB) | {ref['seconds'] / ours['seconds']:.0f}x |")
    print(f"(bound: {report['models'][models[0]]['matmul_gflops_used']:.0f} GFLOP/s, the best plain matmul measured "
          f"in the same process before and after)")
    from recsys.io import write_json

    write_json(a.out, report)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
