"""MultVAE / MultDAE / EASE / most-popular on ML-1M under Liang et al.'s strong generalisation.

    RECSYS_DATA_HOME=/work/shared/data python benchmarks/repro_strong_generalization_ml1m.py \
        [--max-epochs 200] [--patience 20] [--threads 2] [--device cpu] [--models multvae multdae ease mostpop]

The protocol of the MultVAE paper (Liang, Krishnan, Hoffman, Jebara; WWW 2018, dawenl/vae_cf),
scaled to ML-1M (the paper has no ML-1M number; this checks that the pipeline behaves as the
paper's ML-20M table does -- VAE / DAE / EASE far above most-popular):

* data: ML-1M ratings >= 4 (the shared file knows every rating >= 4 exactly), binarised;
* split: ``strong_generalization`` -- users with >= 5 items, 600 validation and 600 test users
  (seed 98765, as vae_cf), the rest are training users; items restricted to those of training
  users; each held-out user's items are 80 % fold-in input / 20 % held-out target;
* MultVAE: I-600-200-600-I, dropout 0.5, Adam lr 1e-3, batch 500, beta = min(0.2, updates /
  200,000) as the paper (on ML-1M 200 epochs are ~2k updates, so beta stays far below the
  0.2 cap: the effective beta reached is recorded); eps ~ N(0, 1), fold-in items masked;
* MultDAE: I-200-I, dropout 0.5, lr 1e-3, batch 500, L2 0.01 / batch size;
* both: up to ``--max-epochs`` epochs, best epoch by validation NDCG@100 (validation users'
  fold-in -> held-out), patience ``--patience``;
* EASE: lambda picked from {100, 200, 500, 1000} by validation NDCG@100;
* most-popular: training users' item counts;
* test metrics on the 600 test users (fold-in items masked): Recall@20, Recall@50 with
  denominator min(k, |held-out|), NDCG@100 (binary gains, IDCG over min(k, n) ranks).

Writes benchmarks/results/strong_generalization_ml1m.json (atomically) and prints a markdown
table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Shared CPU: passive OpenMP waiting must be set before torch loads its runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data import load_dataset  # noqa: E402
from recsys.data.preprocess import binarize  # noqa: E402
from recsys.io import write_json  # noqa: E402
from recsys.models.autoencoders.multvae import MultDAE, MultVAE  # noqa: E402
from recsys.models.baselines.ease import EASE  # noqa: E402
from recsys.models.baselines.most_popular import MostPopular  # noqa: E402
from recsys.protocols import strong_generalization  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "strong_generalization_ml1m.json"
TEST_KS = (20, 50, 100)
TEST_METRICS = ("recall", "ndcg")
EASE_LAMBDAS = (100.0, 200.0, 500.0, 1000.0)
MODELS = ("multvae", "multdae", "ease", "mostpop")


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what": None, "dataset": None, "protocol": None, "model_selection": None, "metric_definitions": None,
          "recall_denominator": None, "n_test_users_evaluated": None, "run_length": None, "epoch_numbering": None,
          "threads": None, "device": None, "torch": None, "total_seconds": None,
          "models": {"*": {"config", "best_epoch", "epochs_run", "gradient_updates", "valid_ndcg_at_best", "history",
                           "beta_at_best_epoch", "beta_last_epoch", "beta_note", "lambda_grid", "lambda_chosen",
                           "valid_sweep", "final_fit_seconds", "train_seconds", "test", "test_stderr",
                           "test_users_evaluated", "test_users_skipped"}}}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-epochs", type=int, default=200, help="the paper: 200")
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--n-heldout-users", type=int, default=600)
    p.add_argument("--split-seed", type=int, default=98765)
    p.add_argument("--model-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def rounded(d: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = load_dataset("ml-1m")
    df = binarize(ds.df, 4, unknown_max=ds.unknown_rating_max)
    split = strong_generalization(df, n_heldout_users=args.n_heldout_users, seed=args.split_seed)
    train = split["train"]
    valid = (split["valid_fold_in"], split["valid_holdout"])
    test = (split["test_fold_in"], split["test_holdout"])
    st = split.stats
    print(f"split: {st['n_train_users']} train / {st['n_valid_users']} valid / {st['n_test_users']} test users, "
          f"{st['n_items']} items, {st['n_interactions']:,} interactions ({time.perf_counter() - t0:.1f}s)", flush=True)

    def test_metrics(model) -> tuple[dict, object]:
        r = model.evaluate(*test, recall_denominator="min", ks=TEST_KS, metrics=TEST_METRICS)
        return r.mean(), r

    def valid_ndcg(model) -> float:
        return model.evaluate(*valid, recall_denominator="min", ks=(100,), metrics=("ndcg",)).mean()["ndcg@100"]

    common = dict(epochs=args.max_epochs, patience=args.patience, eval_k=100, seed=args.model_seed, device=args.device)
    results: dict[str, dict] = {}
    definitions, n_test_eval = None, None
    for name in args.models:
        start = time.perf_counter()
        record: dict = {}
        if name in ("multvae", "multdae"):
            if name == "multvae":
                model = MultVAE(enc_dims=[600, 200], dropout=0.5, lr=1e-3, batch_size=500, anneal_cap=0.2,
                                total_anneal_steps=200_000, **common)
            else:
                model = MultDAE(enc_dims=[200], dropout=0.5, lr=1e-3, batch_size=500, **common)
            model.fit(train, valid=valid)
            hist = model.history_
            record.update(
                config=model.config.to_dict(),
                best_epoch=int(model.best_epoch_),
                epochs_run=len(hist),
                gradient_updates=int(model.update_count_),
                valid_ndcg_at_best=hist[model.best_epoch_ - 1]["ndcg@100"],
                history=[rounded(h) for h in hist],
            )
            if name == "multvae":
                record["beta_at_best_epoch"] = hist[model.best_epoch_ - 1]["beta"]
                record["beta_last_epoch"] = hist[-1]["beta"]
                record["beta_note"] = ("beta = min(0.2, updates / 200,000): the cap 0.2 would need 40,000 updates; "
                                       f"{model.update_count_:,} updates were made, so the effective beta stayed "
                                       f"<= {hist[-1]['beta']:.4f}")
        elif name == "ease":
            sweep = {}
            for lam in EASE_LAMBDAS:
                s = time.perf_counter()
                m = EASE(lam=lam, device=args.device).fit(train)
                sweep[str(int(lam))] = {"valid_ndcg@100": valid_ndcg(m), "fit_seconds": round(time.perf_counter() - s, 2)}
                print(f"  ease lam={lam:g}: valid NDCG@100 {sweep[str(int(lam))]['valid_ndcg@100']:.4f}", flush=True)
            best = max(EASE_LAMBDAS, key=lambda lam: sweep[str(int(lam))]["valid_ndcg@100"])
            s = time.perf_counter()
            model = EASE(lam=best, device=args.device).fit(train)
            record.update(config=model.config.to_dict(), lambda_grid=list(EASE_LAMBDAS), lambda_chosen=best,
                          valid_sweep=sweep, final_fit_seconds=round(time.perf_counter() - s, 2))
        else:
            model = MostPopular(device=args.device).fit(train)
            record["config"] = model.config.to_dict()
        record["train_seconds"] = round(time.perf_counter() - start, 2)
        metrics, r = test_metrics(model)
        definitions, n_test_eval = r.definitions(), int(len(r.users))
        record["test"] = metrics
        # standard error of each mean over the test users (std with ddof=1 / sqrt(n))
        record["test_stderr"] = {k: float(v.std(ddof=1) / len(v) ** 0.5) for k, v in r.per_user.items()}
        record["test_users_evaluated"], record["test_users_skipped"] = int(len(r.users)), r.n_skipped
        results[name] = record
        print(f"{name}: {record['train_seconds']:.0f}s, " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
              flush=True)

    out = {
        "what": "Liang et al. (WWW 2018) strong generalisation on ML-1M: MultVAE, MultDAE, EASE, most-popular",
        "dataset": {"name": "ml-1m", "binarize_threshold": 4, "rows_after_threshold": int(len(df))},
        "protocol": {"name": split.protocol, "params": split.params, "split_seed": split.seed, "stats": split.stats,
                     "meta": split.meta},
        "model_selection": "MultVAE / MultDAE: best epoch by validation NDCG@100 (validation users), "
                           f"patience {args.patience}, max {args.max_epochs} epochs; EASE: lambda by validation NDCG@100",
        "metric_definitions": definitions,
        "recall_denominator": "min(k, |held-out|)",
        "n_test_users_evaluated": n_test_eval,
        "run_length": {"max_epochs": args.max_epochs, "patience": args.patience},
        "epoch_numbering": "1-based (best_epoch and the history's epoch numbers, as the training loop counts)",
        "threads": args.threads,
        "device": str(args.device),
        "torch": torch.__version__,
        "models": results,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(args.out, out)

    print(f"\nwritten {args.out}\n")
    print("| model | Recall@20 | Recall@50 | NDCG@100 (± s.e.) | train s | notes |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["test"]
        if name in ("multvae", "multdae"):
            note = f"best epoch {r['best_epoch']} of {r['epochs_run']}"
            if name == "multvae":
                note += f", beta at best {r['beta_at_best_epoch']:.4f} (last {r['beta_last_epoch']:.4f})"
        elif name == "ease":
            note = f"lambda {r['lambda_chosen']:g} (of {', '.join(f'{v:g}' for v in EASE_LAMBDAS)})"
        else:
            note = ""
        print(f"| {name} | {m['recall@20']:.4f} | {m['recall@50']:.4f} | {m['ndcg@100']:.4f} ± "
              f"{r['test_stderr']['ndcg@100']:.4f} | "
              f"{r['train_seconds']:.1f} | {note} |")


if __name__ == "__main__":
    main()
