"""One MultVAE training epoch on ML-1M: ours vs a reference-style implementation, same process.

    RECSYS_DATA_HOME=/path/to/data python benchmarks/bench_multvae_epoch.py [--rounds 5] [--device cpu]

Both train I-600-200-600-I (dropout 0.5, Adam lr 1e-3, batch 500, beta annealed to 0.2 over
200k updates) on all 1,000,209 ML-1M ratings as implicit feedback (6,040 x 3,706).

* ours: ``recsys.models.MultVAE(epochs=1).fit(csr)`` -- CSR rows, sparse input layer,
  fused Adam; construction included in the time.
* reference-style: the dense |U| x |I| float32 matrix in RAM, each batch built row by row in
  Python, a plain ``nn.Module`` (dense first layer, log_softmax loss over the dense batch),
  default Adam; construction (and the dense matrix) included as well.

Timing: after a warm-up, `rounds` interleaved epochs (ours, reference, ours, ...)
so machine noise hits both alike; medians and the median of per-round ratios are printed.
Memory is measured in separate epochs (tracemalloc slows Python loops, so it is kept out of
the timings): peak RSS above the phase's starting RSS (sampled every 2 ms) and the
tracemalloc peak (NumPy / Python allocations; torch's CPU allocator is not traced).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import os
import resource
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Callable

# Shared machines: with OpenMP's default spin-waiting, a thread descheduled by another process
# stalls every parallel region (measured here: 12 s instead of 2 s per epoch, for both
# implementations alike). Passive waiting must be chosen before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.models.autoencoders import MultVAE  # noqa: E402
from recsys.training.device import pick_device  # noqa: E402

HPARAMS = dict(enc_dims=(600, 200), dropout=0.5, lr=1e-3, batch_size=500, anneal_cap=0.2, total_anneal_steps=200_000)


def load_ml1m() -> sp.csr_matrix:
    home = os.environ.get("RECSYS_DATA_HOME")
    if not home:
        sys.exit("set RECSYS_DATA_HOME to the folder holding ml-1m/ratings_partial.csv.gz")
    df = pd.read_csv(Path(home) / "ml-1m" / "ratings_partial.csv.gz", usecols=["user_id", "movie_id"])
    users, items = pd.factorize(df["user_id"])[0], pd.factorize(df["movie_id"])[0]
    x = sp.csr_matrix((np.ones(len(df), np.float32), (users, items)))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


# ---- reference-style implementation (the usual PyTorch port shape) -------------------------------


class RefVAE(nn.Module):
    def __init__(self, n_items: int, hidden: int = 600, latent: int = 200, dropout: float = 0.5) -> None:
        super().__init__()
        self.latent, self.dropout = latent, dropout
        self.enc = nn.ModuleList([nn.Linear(n_items, hidden), nn.Linear(hidden, 2 * latent)])
        self.dec = nn.ModuleList([nn.Linear(latent, hidden), nn.Linear(hidden, n_items)])
        for layer in [*self.enc, *self.dec]:
            nn.init.xavier_normal_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def forward(self, x: torch.Tensor):
        h = F.dropout(F.normalize(x), self.dropout, self.training)
        h = self.enc[1](torch.tanh(self.enc[0](h)))
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.dec[1](torch.tanh(self.dec[0](z))), mu, logvar


def reference_epoch(x: sp.csr_matrix, device: torch.device, seed: int = 0) -> None:
    torch.manual_seed(seed)
    dense = torch.from_numpy(x.toarray())  # the whole |U| x |I| matrix in host RAM
    model = RefVAE(x.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=HPARAMS["lr"])
    model.train()
    update_count = 0
    order = torch.randperm(dense.shape[0]).tolist()
    bs = HPARAMS["batch_size"]
    for start in range(0, len(order), bs):
        batch = torch.stack([dense[u] for u in order[start : start + bs]]).to(device)  # row by row
        beta = min(HPARAMS["anneal_cap"], update_count / HPARAMS["total_anneal_steps"])
        logits, mu, logvar = model(batch)
        nll = -(F.log_softmax(logits, 1) * batch).sum(1).mean()
        kl = 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1).sum(1).mean()
        loss = nll + beta * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update_count += 1


def ours_epoch(x: sp.csr_matrix, device: torch.device, seed: int = 0) -> None:
    MultVAE(epochs=1, seed=seed, device=str(device), **HPARAMS).fit(x)


# ---- measurement ---------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release() -> None:
    """Hand freed heap back to the OS so the next phase starts from a comparable RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def memory(fn: Callable[[], None]) -> tuple[float, float]:
    """(peak RSS above the starting RSS, tracemalloc peak), in MiB, over one call of `fn`."""
    _release()
    base = peak = _rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    peak = max(peak, _rss())
    return (peak - base) / 2**20, traced / 2**20


def timed(fn: Callable[[], None], device: torch.device) -> float:
    _release()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed epochs per implementation")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    x = load_ml1m()
    print(f"ML-1M: {x.shape[0]} users x {x.shape[1]} items, {x.nnz} interactions; device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    epochs = {"ours": ours_epoch, "reference": reference_epoch}
    impls = {name: functools.partial(epoch, x, device) for name, epoch in epochs.items()}

    # one-time costs (lazy imports, kernel and thread-pool set-up: ~140 MiB RSS) would land on
    # whichever implementation ran first; pay them on a small slice before measuring
    for epoch in epochs.values():
        epoch(x[:600], device)
    mem = {name: memory(fn) for name, fn in impls.items()}  # these full epochs double as warm-up
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(args.rounds):
        for name, fn in impls.items():
            times[name].append(timed(fn, device))

    for name in impls:
        rss, traced = mem[name]
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:>9}: {statistics.median(times[name]):6.2f} s/epoch (median of {args.rounds}: {runs}); "
              f"peak RSS +{rss:7.1f} MiB; tracemalloc peak {traced:7.1f} MiB")
    ratios = [r / o for o, r in zip(times["ours"], times["reference"])]
    print(f"speed-up (reference / ours): median of per-round ratios {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
