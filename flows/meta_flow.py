"""Meta-learning flow (MELO): cold-start rating prediction for held-out users with MAML, MAML++
and MELO's adaptive weighted loss over GRU4Rec, NARM, SASRec and BERT4Rec, against the plain
backbones and the global mean.

    python flows/meta_flow.py run                                   # amazon-digital-music, everything
    python flows/meta_flow.py run --dataset ml-100k --backbones bert4rec,gru4rec --methods basic,melo --seeds 0
    python flows/meta_flow.py run --pretrained outputs/pretrain/.../bert4rec/item_embeddings.npy

Settings: ``params/meta_<dataset>.yaml`` (split, task sizes, backbones, shared meta-learning
settings, each method's own); ``--config cfg FILE`` merges a YAML over it. One training task per
(backbone, method, seed) (the global mean once); the end step exposes ``results`` and ``rows`` and
a card with the table and the error per true rating value. ML-1M stops in ``start``: the shared
copy lacks a third of its ratings.
"""

from metaflow import Parameter, card, current, project, step

from flow_base import CsvDatasetFlow, stage_config
from flow_support import (checkpoint_root, main, prune_checkpoints, run_provenance, stage_settings, stage_split,
                          training_step)


@project(name="recsys_pipelines")
class MetaFlow(CsvDatasetFlow):
    """Split -> one task per (backbone, method, seed) (foreach) -> mean +- std table and per-rating plot."""

    _output_under = "meta/<dataset>/<run id>"
    _help = {"dataset": "registered dataset name, one with ratings (see README, 'Datasets')"}

    cfg = stage_config("meta")
    backbones = Parameter("backbones", default="",
                          help="comma list of gru4rec, narm, sasrec, bert4rec (default: the params file's)")
    methods = Parameter("methods", default="",
                        help="comma list of global_mean, basic, maml, maml_pp, melo (default: the params file's)")
    seeds = Parameter("seeds", default="", help="comma list of training seeds (default: the params file's)")
    pretrained = Parameter("pretrained", default="",
                           help="a pretrain run's item_embeddings.npy to initialise the backbones' item embeddings")

    @step
    def start(self):
        """Resolve and check every run's settings (the plan of tasks), then make the split and describe
        its ratings."""
        from recsys.pipeline.meta import STAGE, rating_table

        self.settings = stage_settings(self, STAGE)
        self.tasks = STAGE.plan(self.settings, backbones=self.backbones or None, methods=self.methods or None,
                                seeds=self.seeds or None, pretrained=self.pretrained or None)
        self.specs = {t.key: dict(t.spec) for t in self.tasks}
        self.seed_list = list(dict.fromkeys(t.seed for t in self.tasks))
        stage_split(self, STAGE, self.settings)
        print(rating_table(self.stats))
        self.next(self.train, foreach="tasks")

    @training_step(gpu=1, memory=16000, cpu=4)
    def train(self):
        """Fit one (backbone, method) with one seed; CUDA when present, else the CPU."""
        from recsys.pipeline.meta import STAGE

        self.task = self.input
        self.result = STAGE.run_task(self.split_path, self.task, STAGE.task_dir(self.run_dir, self.task),
                                     checkpoint_dir=checkpoint_root(self))
        self.next(self.join)

    @step
    def join(self, inputs):
        """Mean +- std over seeds per (backbone, method)."""
        from recsys.pipeline.meta import STAGE

        self.results = {f"{i.task.key}/seed{i.task.seed}": i.result for i in inputs}
        self.tasks_done = {i.task.result_key: i.result for i in inputs}
        self.rows = STAGE.aggregate(self.tasks_done)
        prune_checkpoints(self)
        self.merge_artifacts(inputs, exclude=["task", "result"])
        self.evidence = STAGE.evidence(self.tasks_done, self.settings)
        self.next(self.end)

    @card(type="blank", id="meta")
    @step
    def end(self):
        """Expose ``results`` (per run: test RMSE / MAE overall and per true rating, protocol,
        seed, task settings) and ``rows`` (mean, std per (backbone, method)); card: table + plot."""
        from metaflow.cards import Image, Markdown, Table

        from recsys.pipeline import meta
        from recsys.pipeline.evidence import footnote

        s = self.stats
        one = next(iter(self.results.values()))
        current.card.append(Markdown(
            f"# {self.dataset} / user_split (MELO's cold-start protocol)\n"
            f"Split seed {s['seed']}: {s['n_users']:,} users ({s['n_test_users']:,} test, {s['n_valid_users']:,} "
            f"validation), {s['n_items']:,} items. Ratings: {meta.rating_table(s)}.\n\n"
            f"Tasks: {one['tasks']}. Training seeds {self.seed_list}; mean ± std over seeds of the test users' "
            f"last-rating errors."))
        headers, cells = meta.STAGE.table_with_evidence(self.rows, self.evidence)
        current.card.append(Table(cells, headers=headers))
        current.card.append(Markdown(footnote(self.evidence)))
        png = meta.per_rating_plot_png(self.rows, s)
        current.card.append(Image(png))
        meta.STAGE.report(self.run_dir, title=f"{self.dataset}: meta stage (cold-start rating prediction)",
                          rows=self.rows, intro=f"Ratings: {meta.rating_table(s)}",
                          results={"rows": self.rows, "runs": self.results, "stats": s, "evidence": self.evidence},
                          png=png, evidence=self.evidence, tasks=self.tasks_done, dataset=self.dataset,
                          split_sha256=self.split_sha256, provenance=run_provenance(self))


if __name__ == "__main__":
    main(MetaFlow)
