"""BaM training steps per second and a full-ranking evaluation of every ML-1M user: ours against a
reference-style implementation, side by side in one run (machines are noisy: read the ratios).

* ours: :class:`recsys.models.multi_interest.REMI` as the stage trains it -- each step draws 128
  users, target positions and right-aligned history windows with vectorised numpy, the 1,280
  uniform negatives on the device, and runs the attention MLP on the non-PAD positions only; the
  evaluation encodes users in batches of 1,024, scores all items as one matmul, masks history items
  and takes one top-k on the device for all metrics.
* reference style (as BaM's upstream code does it): histories built per user in a Python loop and
  padded to seq_len, negatives sampled on the host with numpy and copied over, the attention MLP on
  every position (padding masked afterwards); evaluation one user at a time (encode, score all
  items, history set to 0, numpy argpartition for the top-20).

Both start from the same initial weights (and the evaluation of both uses the same trained
weights); the two evaluations are compared metric by metric under the history-zero rule (upstream's),
which they must agree on. Each implementation runs in its own child process, so its peak RSS is
its own. Setting: REMI, BaM_p with the multi-interest loss, K = 4, d = 64, seq_len 200, ML-1M all
1,000,209 interactions, no k-core.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_bam_step.py [--steps 40] [--threads 1] [--device cpu]
Writes benchmarks/results/bam_step_ml1m.json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _children import child_result, run_children  # noqa: E402

IMPLS = ("reference", "ours")
CONFIG = dict(seq_len=200, selection="p", multi_loss=True, steps_per_epoch=1, epochs=0, patience=None,
              progress="off", seed=2021)


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what", "config", "device", "torch_threads", "torch", "reference", "ours", "train_speedup", "eval_speedup",
          "peak_rss_ratio", "metric_abs_diff_history_zero"}


def load():
    from recsys.data import load_dataset
    from recsys.protocols import leave_one_out

    return leave_one_out(load_dataset("ml-1m").df, k_core=0)


def _model(split, device):
    from recsys.models.registry import build

    return build("remi", **CONFIG, device=device).fit(split, validate=False)  # epochs=0: initial weights


# ---- reference style ---------------------------------------------------------------------------

def _ref_batch(train_lists, eligible, cfg, rng_py):
    users = rng_py.sample(eligible, cfg.batch_size)
    hist, target = [], []
    for u in users:
        seq = train_lists[u]
        k = rng_py.randrange(1, len(seq))
        h = seq[max(0, k - cfg.seq_len):k]
        hist.append([0] * (cfg.seq_len - len(h)) + [i + 1 for i in h])
        target.append(seq[k])
    return np.array(hist, dtype=np.int64), np.array(target, dtype=np.int64)


def _ref_interests(net, tokens):
    """ComiRec-SA / REMI interests with the attention MLP on every position (padding masked after)."""
    import torch

    enc = net.encoder
    emb = net.emb(tokens)
    width = tokens.shape[1]
    from recsys.models.multi_interest.networks import positions_from_right

    h = emb + enc.pos(positions_from_right(width, enc.seq_len, emb.device)).unsqueeze(0)
    logits = enc.w2(torch.tanh(enc.w1(h))).transpose(1, 2)
    logits = logits.masked_fill((tokens == 0).unsqueeze(1), -1e9)
    att = torch.softmax(logits, -1) * (tokens != 0).unsqueeze(1)
    return torch.bmm(att, emb), att


def _ref_step(model, opt, tokens_np, target_np, n_items, cfg, rng_np):
    import torch

    from recsys.models.multi_interest.objectives import (
        gather_interest, multi_interest_logits, sampled_softmax_loss, select_interest)

    net, dev = model.net_, model.device
    tokens, target = torch.from_numpy(tokens_np).to(dev), torch.from_numpy(target_np).to(dev)
    neg = torch.from_numpy(rng_np.choice(n_items, cfg.n_negatives)).to(dev)  # host sampling, copied over
    v, _ = _ref_interests(net, tokens)
    e = net.item_vectors(target)
    idx, probs = select_interest(net.correlation(v.detach(), e.detach(), False), "p", cfg.tau)
    u = gather_interest(v, idx)
    table = net.item_vectors(neg)
    loss = sampled_softmax_loss((u * e).sum(-1), u @ table.t(), n_items=n_items, neg_items=neg, pos_items=target,
                                beta=cfg.beta).mean()
    mp, mn = multi_interest_logits(v, e, table)
    loss = loss + sampled_softmax_loss(mp, mn, n_items=n_items, neg_items=neg, pos_items=target, beta=cfg.beta).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _ref_evaluate(model, split, ks=(10, 20)):
    import torch

    a = split.arrays
    indptr, items, cfg = a["seq_indptr"], a["seq_items"], model.config
    table = model.net_.item_table().detach().cpu().numpy()
    hits = {k: [] for k in ks}
    ndcg = {k: [] for k in ks}
    with torch.no_grad():
        for u in range(split.n_users):
            seq = items[indptr[u]:indptr[u + 1]].tolist()
            hist, target = seq[:-1], seq[-1]
            h = hist[-cfg.seq_len:]
            tok = torch.tensor([[i + 1 for i in h]], device=model.device)
            v = _ref_interests(model.net_, tok)[0][0].cpu().numpy()  # [K, d]
            scores = (v @ table.T).max(0)
            scores[hist] = 0.0  # upstream: history items scored 0
            top = np.argpartition(-scores, max(ks))[:max(ks)]
            top = top[np.argsort(-scores[top], kind="stable")]
            for k in ks:
                where = np.flatnonzero(top[:k] == target)
                hits[k].append(1.0 if len(where) else 0.0)
                ndcg[k].append(1.0 / np.log2(where[0] + 2) if len(where) else 0.0)
    out = {f"recall@{k}": float(np.mean(hits[k])) for k in ks}
    out.update({f"ndcg@{k}": float(np.mean(ndcg[k])) for k in ks})
    return out


# ---- the child ---------------------------------------------------------------------------------

def run(split, impl, steps, device):
    import torch

    from recsys.models.sequential.sequences import as_sequences

    model = _model(split, device)
    cfg, n_items = model.config, split.n_items
    seqs = as_sequences(split)
    opt = torch.optim.Adam(model.net_.parameters(), lr=cfg.lr)
    model.net_.train()
    warm = 3
    if impl == "reference":
        train_lists = [seqs.items[seqs.indptr[u]:seqs.indptr[u] + seqs.train_stop[u]].tolist()
                       for u in range(seqs.n_users)]
        eligible = [u for u in range(seqs.n_users) if seqs.train_stop[u] >= 2]
        rng_py, rng_np = random.Random(0), np.random.default_rng(0)

        def step():
            tok, tgt = _ref_batch(train_lists, eligible, cfg, rng_py)
            _ref_step(model, opt, tok, tgt, n_items, cfg, rng_np)
    else:
        users = np.flatnonzero(seqs.train_stop >= 2)
        rng = np.random.default_rng(0)

        def step():
            tok, tgt = model._batch(seqs, users, rng)
            loss, _ = model.batch_loss(torch.from_numpy(tok).to(model.device), torch.from_numpy(tgt).to(model.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for _ in range(warm):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t
    # the evaluation reads the same trained weights in both children: a fixed, seeded set
    model = _model(split, device)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(7)
        for p in model.net_.parameters():
            p.copy_(torch.randn(p.shape, generator=gen).to(p.device) * 0.3)
    model.net_.eval()
    t = time.perf_counter()
    if impl == "reference":
        metrics = _ref_evaluate(model, split)
    else:
        metrics = model.evaluate(split, "test", history_zero=True).mean()
    eval_s = time.perf_counter() - t
    masked = model.evaluate(split, "test").mean() if impl == "ours" else None
    return {"steps": steps, "train_seconds": train_s, "steps_per_second": steps / train_s,
            "eval_seconds": eval_s, "eval_users": split.n_users, "metrics_history_zero": metrics,
            "metrics_masked": masked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bam_step_ml1m.json"))
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        os.environ["BENCH_THREADS"] = str(a.threads)
        child_result(load, lambda split, *args: run(split, a.child, a.steps, a.device), a.device)
        return
    import torch

    from recsys.io import write_json

    def show(impl, r):
        print(f"{impl:>9}: {r['steps_per_second']:.2f} steps/s ({r['steps']} steps in {r['train_seconds']:.1f} s); "
              f"full ranking of {r['eval_users']:,} users {r['eval_seconds']:.2f} s; peak RSS {r['peak_rss_gb']:.2f} GB",
              flush=True)

    res = run_children(__file__, IMPLS, ["--steps", str(a.steps), "--threads", str(a.threads), "--device", a.device],
                       show)
    ref, ours = res["reference"], res["ours"]
    agree = {k: abs(ref["metrics_history_zero"][k] - ours["metrics_history_zero"][k]) for k in ours["metrics_history_zero"]}
    out = {
        "what": "REMI + BaM_p (multi-interest loss) on ML-1M (6,040 x 3,706, 1,000,209 interactions): training "
                "steps of 128 users x 1,280 negatives, and a full-ranking evaluation of every user",
        "config": CONFIG, "device": a.device, "torch_threads": a.threads, "torch": torch.__version__,
        "reference": ref, "ours": ours,
        "train_speedup": ours["steps_per_second"] / ref["steps_per_second"],
        "eval_speedup": ref["eval_seconds"] / ours["eval_seconds"],
        "peak_rss_ratio": ours["peak_rss_gb"] / ref["peak_rss_gb"],
        "metric_abs_diff_history_zero": agree,
    }
    write_json(a.out, out)
    print(f"training: ours {out['train_speedup']:.2f}x the reference's steps/s; evaluation: {out['eval_speedup']:.1f}x "
          f"faster; peak RSS ratio {out['peak_rss_ratio']:.2f}; max metric difference {max(agree.values()):.2e}")


if __name__ == "__main__":
    main()
