"""BERT4Rec under leave-one-out with full ranking (history masked), against most-popular.

    RECSYS_DATA_HOME=../shared/data python benchmarks/repro_bert4rec.py --dataset amazon-beauty \\
        --max-len 50 --mask-prob 0.6 --epochs 200 --patience 20

Reproduces the pretraining issue's BERT4Rec rows: ML-1M 5-core (6,040 users, 3,416 items,
999,611 interactions; order from ``chrono_rank``) against HR@10 / NDCG@10 of 0.2821 / 0.1516
(Petrov & Macdonald, RecSys 2022) and 0.2843 / 0.1537 (Klenitskiy & Vasilev, RecSys 2023), and
Amazon Beauty (S3-Rec files) against most-popular. Writes
``benchmarks/results/bert4rec_<dataset>.json`` with the protocol, split seed, metric
definitions, the configuration, the validation curve and the test metrics of both models.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PUBLISHED = {"ml-1m": {"Petrov & Macdonald 2022": {"hit@10": 0.2821, "ndcg@10": 0.1516},
                       "Klenitskiy & Vasilev 2023": {"hit@10": 0.2843, "ndcg@10": 0.1537}}}


# Every key this script writes (checked by benchmarks/check_results_keys.py): a set names leaf keys,
# a dict maps key patterns to what lies below them, None = not checked further.
WRITES = {"what", "dataset", "protocol", "config", "torch_threads", "device", "epochs_run", "best_epoch", "train_seconds",
          "curve", "test", "published"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--mask-prob", type=float, default=0.2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from recsys.data import load_dataset
    from recsys.io import write_json
    from recsys.models.registry import build
    from recsys.models.baselines import MostPopular
    from recsys.protocols import leave_one_out

    split = leave_one_out(load_dataset(args.dataset).df, k_core=5)
    print(f"{args.dataset}: {split.n_users:,} users, {split.n_items:,} items, "
          f"{split.stats['n_interactions']:,} interactions", flush=True)

    pop = MostPopular().fit(split["train"] + split["valid"])
    history = (split["train"] + split["valid"]).tocsr()
    pop_test = pop.evaluate(history, split["test"], recall_denominator="n", ks=(10, 20), metrics=("hit", "ndcg"))

    config = dict(max_len=args.max_len, hidden=args.hidden, mask_prob=args.mask_prob, epochs=args.epochs,
                  patience=args.patience, eval_every=args.eval_every)
    model = build("bert4rec", **config)
    start = time.perf_counter()
    model.fit(split)
    seconds = time.perf_counter() - start
    test = model.evaluate(split, "test", ks=(10, 20))
    out = {
        "what": "BERT4Rec, leave-one-out, full ranking with the user's history masked",
        "dataset": args.dataset,
        "protocol": {"name": split.protocol, "params": split.params, "stats": split.stats, "meta": split.meta},
        "config": model.config.to_dict(),
        "torch_threads": args.threads,
        "device": str(model.device),
        "epochs_run": len(model.history_),
        "best_epoch": model.best_epoch_,
        "train_seconds": round(seconds, 1),
        "curve": model.history_,
        "test": {"bert4rec": test.summary(), "mostpop": pop_test.summary()},
        "published": PUBLISHED.get(args.dataset, {}),
    }
    path = Path(args.out or Path(__file__).parent / "results" / f"bert4rec_{args.dataset}.json")
    write_json(path, out)
    b, p = test.mean(), pop_test.mean()
    print("| model | HR@10 | NDCG@10 | HR@20 | NDCG@20 |\n|---|---|---|---|---|")
    for name, m in (("BERT4Rec", b), ("most-popular", p)):
        print(f"| {name} | {m['hit@10']:.4f} | {m['ndcg@10']:.4f} | {m['hit@20']:.4f} | {m['ndcg@20']:.4f} |")
    print(f"{len(model.history_)} epochs (best {model.best_epoch_}), {seconds / 60:.1f} min; wrote {path}")


if __name__ == "__main__":
    main()
