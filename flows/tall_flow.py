"""Local / mixture-of-experts stage, the project's main job: VAE, WL, LOCA, LFT, EnLFT and TALL
on one random split, with NDCG@20 per mainstream group.

    python flows/tall_flow.py run                                   # embedded Amazon Digital Music
    python flows/tall_flow.py run --dataset ml-1m --shards 4        # published ML-1M settings
    python flows/tall_flow.py run --methods vae,tall

Settings: ``params/tall_<dataset>.yaml``; ``--config cfg FILE`` merges a YAML over it. The
training steps carry ``@resources(gpu=1)``; the code uses CUDA when the machine has it.
LOCA's local models, LFT's users and EnLFT's anchors are split into ``--shards`` tasks of one
``foreach`` (each task trains its part as one batched module), so 100+ local models never mean
100+ processes. Deployed (``argo-workflows create`` / ``step-functions create``), the run
repeats weekly.
Training steps checkpoint each epoch under ``checkpoints/`` of the output root (or
``$RECSYS_CHECKPOINT_ROOT``); a ``@retry`` attempt or ``resume`` goes on from the last one
(``flows/flow_support.py``).
"""

import os

from metaflow import Parameter, card, current, project, schedule, step

from flow_base import CsvDatasetFlow, stage_config
from flow_support import (checkpoint_root, main, prune_checkpoints, run_provenance, stage_settings, stage_split,
                          training_step)


@project(name="recsys_pipelines")
@schedule(weekly=True)
class TallFlow(CsvDatasetFlow):
    """split + mainstream groups -> VAE and WL -> foreach (method, shard) -> assemble, evaluate, card."""

    _output_under = "tall/<dataset>/<run id>"

    cfg = stage_config("tall")
    methods = Parameter("methods", default="",
                        help="comma list of methods (default: all in the params file: vae,wl,loca,lft,enlft,tall,...)")
    shards = Parameter("shards", default=0, type=int,
                       help="tasks per sharded method (LOCA, LFT, EnLFT); 0: the params file's value")
    seeds = Parameter("seeds", default="",
                      help="comma list of training seeds for the seeded methods (settings' seeded_methods, "
                           "default vae,wl); default: the params file's seeds")

    @step
    def start(self):
        """Settings (bad names and values stop here), the split, mainstream scores and groups."""
        from recsys.pipeline import local as lc

        settings = stage_settings(self, lc.STAGE, **({"shards": self.shards} if self.shards else {}),
                                  **({"seeds": self.seeds} if self.seeds else {}))
        self.settings = lc.select_methods(settings, self.methods or None)
        stage_split(self, lc.STAGE, self.settings)
        self.next(self.base)

    @training_step(gpu=1, memory=16000, cpu=4)
    def base(self):
        """The global VAE and WL (baselines, LOCA's global model, LFT / EnLFT's start), then the shared
        preparation of LOCA / LFT / EnLFT (embeddings, anchors, neighbourhoods), once for all their shards."""
        from recsys.pipeline import local as lc
        from recsys.protocols import Split

        self.base_out = lc.train_base(self.split_path, self.settings, os.path.join(self.run_dir, "models"),
                                      checkpoint_dir=checkpoint_root(self))
        n_users = Split.load(self.split_path)["train"].shape[0]
        self.tasks = lc.plan(self.settings, n_users) or [{"method": None, "shard": 0, "n_shards": 1, "items": None}]
        self.next(self.train, foreach="tasks")

    @training_step(gpu=1, memory=16000, cpu=4)
    def train(self):
        """One (method, shard) task; writes its tensors to a file, passes the path on."""
        from recsys.pipeline import local as lc

        task = self.input
        self.output = None
        if task["method"] is not None:
            self.output = lc.run_task(self.split_path, self.base_out, task, self.settings,
                                      os.path.join(self.run_dir, "shards"),
                                      checkpoint_dir=checkpoint_root(self))
        self.next(self.join)

    @card(type="blank", id="groups")
    @step
    def join(self, inputs):
        """Assemble each method from its shards, evaluate, build the group table and plot."""
        from metaflow.cards import Image, Markdown, Table

        from recsys.pipeline import local as lc
        from recsys.pipeline.evidence import footnote

        self.merge_artifacts(inputs, exclude=["output"])
        prune_checkpoints(self)  # finished models removed theirs; drop the empty folders
        outputs = {}
        for i in inputs:
            if i.output is not None:
                outputs.setdefault(lc.result_key(i.output["method"], i.output.get("seed")), []).append(i.output)
        results = dict(self.base_out["results"])
        for key, outs in outputs.items():
            results[key] = lc.assemble(self.split_path, self.base_out, outs[0]["method"], outs, self.settings,
                                       os.path.join(self.run_dir, "models"))
        self.runs = lc.ordered(results, self.settings)  # keys: method, or (method, seed) for a seeded run
        self.results = lc.by_name(self.runs)
        self.rows = lc.group_table(self.runs)
        self.evidence = lc.STAGE.evidence(self.runs, self.settings)
        headers, cells = lc.STAGE.table_with_evidence(self.rows, self.evidence)
        current.card.append(Markdown(
            f"# {self.dataset}: NDCG@20 per mainstream group\n"
            f"random_split seed {self.stats['seed']}; {self.stats['n_users']:,} users, {self.stats['n_items']:,} items; "
            f"recall denominator |test|; training items masked. TALL with `gate_source: valid` gates test "
            f"predictions with validation items (the paper's protocol). {footnote(self.evidence)}"))
        current.card.append(Table(cells, headers=headers))
        current.card.append(Image(lc.group_plot_png(self.runs, self.evidence)))
        self.next(self.end)

    @step
    def end(self):
        """Expose ``results``: per method the test P / R / NDCG @ {1, 5, 10, 20} and NDCG@20 per group."""
        from recsys.pipeline import local as lc

        lc.STAGE.report(self.run_dir, title=f"{self.dataset}: local / mixture-of-experts stage (random_split)",
                        intro="Test NDCG@20 overall and per mainstream group (low -> high), training seconds.",
                        rows=self.rows, results=self.results, png=lc.group_plot_png(self.runs, self.evidence),
                        evidence=self.evidence, tasks=self.runs, dataset=self.dataset,
                        split_sha256=self.split_sha256, provenance=run_provenance(self))
        freed = lc.remove_shards(os.path.join(self.run_dir, "shards"), self.settings)
        if freed:
            print(f"removed the shard-level copies ({freed / 1e6:.0f} MB; the assembled models are in models/); "
                  f"keep them with keep_shards: true")
        print(f"models and splits under {self.run_dir}")


if __name__ == "__main__":
    main(TallFlow)
