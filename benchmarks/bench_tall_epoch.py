"""One TALL training epoch on ML-1M: ours vs a reference-style implementation, in one run.

    RECSYS_DATA_HOME=/path/to/data python benchmarks/bench_tall_epoch.py [--experts 100] [--batches 0]

Both train 100 Mult-VAE experts I -> 100 -> I with TALL's loss-driven gate (softmax over experts
of 1 / loss on the user's validation items, train-item logits zeroed), gate-weighted output and
KL, per-user weights, Adam (lr 1e-3, weight decay 1e-3 / 100), batch 512, on the ML-1M 10-core
random 70/10/20 split (6,040 users x 3,260 items).

* ours: ``recsys.models.local.TALL(epochs=1)``: one :class:`ExpertBank` (stacked weights,
  sparse input layer, batched matmuls), validation rows gathered sparse per batch, fused Adam;
  the time is the epoch's training pass (``history_[0]["train_seconds"]``).
* reference-style (TALL's ``model/MOE.py`` as shipped, with its per-batch loss tensors turned into
  floats so it fits in memory): a ``ModuleList`` of 100 dense ``nn.Module`` experts called in a
  Python loop, the dense |U| x |I| training matrix, the dense float64 validation matrix converted
  and moved to the device on every forward, per-expert exp / masked-sum / log on dense tensors.

Each implementation runs in its own child process (so peak RSS is its own); the parent prints
the seconds, the ratio and the peak memory. ``--batches N`` limits both to the first N batches
(same users) for a quick look; 0 = the whole epoch. On CPU ours keeps freed large blocks in
glibc's heap (``keep_freed_cpu_memory``); ``--reference-allocator tuned`` (default) gives the
reference the same, ``default`` leaves it with glibc's mmap-per-large-block as upstream runs.
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
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _children import child_result, run_children  # noqa: E402  (benchmarks/ is the script's folder)

BATCH, LR, REG = 512, 1e-3, 1e-3


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"experts", "batches", "device", "reference_allocator", "speedup", "memory_ratio", "ours", "reference"}  # --out


def load_split():
    from recsys.data import load_dataset
    from recsys.protocols import random_split

    if not os.environ.get("RECSYS_DATA_HOME"):
        sys.exit("set RECSYS_DATA_HOME to the folder holding ml-1m/")
    return random_split(load_dataset("ml-1m").df, k_core=10, seed=0)


def run_ours(split, experts: int, batches: int, device: str) -> dict:
    from recsys.models.local import TALL

    train, valid = split["train"], split["valid"]
    if batches:
        keep = batches * BATCH
        train, valid = train[:keep], valid[:keep]
    model = TALL(n_experts=experts, epochs=1, patience=None, batch_size=BATCH, lr=LR, weight_decay=REG / experts,
                 device=device)
    # validation every epoch is part of fit; only the training pass is timed (train_seconds)
    model.fit(train, valid)
    return {"seconds": model.history_[0]["train_seconds"], "loss": model.history_[0]["loss"]}


class DenseExpert(nn.Module):
    """One upstream-style Mult-VAE expert: dense Linear layers, eps std 0.01."""

    def __init__(self, n_items: int, hidden: int = 100) -> None:
        super().__init__()
        self.hidden = hidden
        self.encoder = nn.Linear(n_items, 2 * hidden)
        self.decoder = nn.Linear(hidden, n_items)

    def forward(self, x):
        h = self.encoder(F.normalize(x))
        mu, logvar = h[:, : self.hidden], h[:, self.hidden:]
        z = mu + torch.zeros_like(mu).normal_(0, 0.01) * torch.exp(0.5 * logvar)
        kl = (0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1).sum(1)).mean()
        return self.decoder(z), kl


def run_reference(split, experts: int, batches: int, allocator: str, device: str) -> dict:
    if allocator == "tuned":
        from recsys.training.device import keep_freed_cpu_memory

        keep_freed_cpu_memory()  # the same glibc settings ours gets, so the ratio is the code's alone
    train, valid = split["train"], split["valid"]
    n_users, n_items = train.shape
    dev = torch.device(device)
    torch.manual_seed(0)
    start = time.perf_counter()
    modules = nn.ModuleList([DenseExpert(n_items) for _ in range(experts)]).to(dev)
    opt = torch.optim.Adam(modules.parameters(), lr=LR, weight_decay=REG / experts)
    train_dense = torch.FloatTensor(train.toarray()).to(dev)
    vali = np.zeros((n_users, n_items))  # float64, as upstream's self.vali_
    vali[valid.nonzero()] = 1
    weights = torch.ones(n_users, 1)
    e_loss = torch.ones(n_users, 1)
    order = np.random.default_rng(0).permutation(n_users)
    if batches:
        order = np.arange(min(n_users, batches * BATCH))
    epoch_loss = 0.0
    for b in range(0, len(order), BATCH):
        idx = order[b:b + BATCH]
        x = train_dense[idx]
        vali_batch = torch.FloatTensor(vali).to(dev)[idx]  # rebuilt on every forward, as upstream
        mask = 1 - x
        gate_losses, outs, kls = [], [], []
        for k in range(experts):
            out_k, kl_k = modules[k](x)
            vl = -torch.log(torch.exp(out_k) / torch.exp(out_k * mask).sum(1).reshape(-1, 1))
            gate_losses.append(1 / (vl * vali_batch).sum(1).reshape(-1, 1))
            outs.append(out_k.reshape(-1, 1, n_items))
            kls.append(kl_k)
        gate = F.softmax(torch.cat(gate_losses, 1), dim=1)
        output = torch.matmul(gate.reshape(-1, 1, experts), torch.cat(outs, 1)).reshape(-1, n_items)
        kl = torch.matmul(gate, torch.stack(kls)).sum()
        vl = -torch.log(torch.exp(output) / torch.exp(output * mask).sum(1).reshape(-1, 1))
        e_loss[idx] = (vl * vali_batch).sum(1).reshape(-1, 1).detach().cpu()
        w = weights[idx].to(dev)
        ce = -((F.log_softmax(output, 1) * x).sum(1) * w.view(-1)).sum() / w.sum()
        loss = ce + 0.0 * kl  # beta starts at 0 (annealed over 200k updates)
        opt.zero_grad()
        loss.backward()
        opt.step()
        epoch_loss += float(loss)  # upstream adds the tensor (keeping every graph alive: 24 GB)
    return {"seconds": time.perf_counter() - start, "loss": epoch_loss}


def child(impl: str, experts: int, batches: int, allocator: str, device: str) -> None:
    if impl == "ours":
        child_result(load_split, run_ours, device, experts, batches)
    else:
        child_result(load_split, run_reference, device, experts, batches, allocator)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", type=int, default=100)
    ap.add_argument("--batches", type=int, default=0, help="first N batches only (0 = whole epoch)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    ap.add_argument("--reference-allocator", choices=["tuned", "default"], default="tuned",
                    help="tuned: the reference also keeps freed blocks in the heap, as ours does on CPU "
                         "(recsys.training.device.keep_freed_cpu_memory); default: glibc as shipped")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.experts, args.batches, args.reference_allocator, args.device)
    results = run_children(
        __file__, ("ours", "reference"),
        ["--experts", str(args.experts), "--batches", str(args.batches), "--device", args.device,
         "--reference-allocator", args.reference_allocator],
        lambda impl, r: print(f"{impl:>10}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB", flush=True))
    ratio = results["reference"]["seconds"] / results["ours"]["seconds"]
    mem = results["reference"]["peak_rss_gb"] / results["ours"]["peak_rss_gb"]
    print(f"TALL epoch, {args.experts} experts, {args.device}, torch threads {torch.get_num_threads()}, "
          f"reference allocator {args.reference_allocator}: "
          f"ours is {ratio:.1f}x faster; peak RSS {results['ours']['peak_rss_gb']:.2f} GB vs "
          f"{results['reference']['peak_rss_gb']:.2f} GB ({mem:.1f}x less)")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "experts": args.experts, "batches": args.batches, "device": args.device,
            "reference_allocator": args.reference_allocator, "speedup": ratio, "memory_ratio": mem, **results}, indent=1))


if __name__ == "__main__":
    main()
