"""Multi-interest flow (BaM): MIND, ComiRec-SA and REMI x {hard, BaM_p, BaM_l} against most-popular.

    python flows/bam_flow.py run                                  # quick profile, embedded Amazon Digital Music
    python flows/bam_flow.py run --dataset ml-1m --model remi --selection p,l --T 1
    python flows/bam_flow.py run --dataset amazon-beauty --multi-loss false --seed 2021

Options mirror BaM's ``main.py``: ``--model`` (mind, comirec, remi; a comma list), ``--selection``
(hard, p, l; a comma list), ``--T`` (τ), ``--linear-size`` (d' of BaM_l), ``--multi-loss``
(true / false / auto = the params file's per-selection value; parsed strictly -- BaM's ``type=bool``
reads ``--multi_loss False`` as True), ``--dataset``, ``--seed``. Settings:
``params/bam_<dataset>.yaml`` (split, training settings per model and selection, upstream switches,
baselines); ``--config cfg FILE`` merges a YAML over it (e.g. ``upstream: {history_zero_upstream:
true, valid_resample: true}`` for BaM's own evaluation and validation).

One training task per (model, selection) (foreach); the join tabulates Recall / NDCG @10, @20 and
the interest balance, and its card shows the table and the interest-usage histograms per selection.
"""

import os

from metaflow import Parameter, card, current, project, step

from flow_base import CsvDatasetFlow, stage_config
from flow_support import (checkpoint_root, main, prune_checkpoints, run_provenance, stage_settings, stage_split,
                          training_step)


@project(name="recsys_pipelines")
class BamFlow(CsvDatasetFlow):
    """Split + baselines -> one task per (model, selection) (foreach) -> table, interest-usage card."""

    _output_under = "bam/<dataset>/<run id>"

    cfg = stage_config("bam")
    model = Parameter("model", default="", help="comma list of mind, comirec, remi (default: the params file's models)")
    selection = Parameter("selection", default="",
                          help="comma list of hard, p (BaM_p), l (BaM_l) (default: the params file's selections)")
    T = Parameter("T", type=float, default=None, help="selection temperature tau (default: the params file's)")
    linear_size = Parameter("linear-size", type=int, default=None,
                            help="BaM_l projection size d' (default: the params file's)")
    multi_loss = Parameter("multi-loss", default="auto",
                           help="true / false: add the multi-interest loss; auto: the params file's per-selection value")
    seed = Parameter("seed", type=int, default=None, help="training seed (default: the params file's, 2021)")
    seeds = Parameter("seeds", default="", help="comma list of training seeds, e.g. 0,1,2: one task per "
                                                 "(model, selection, seed); replaces --seed")

    @step
    def start(self):
        """Check every (model, selection)'s settings (the plan of tasks), make the split, fit the baselines."""
        from recsys.pipeline.bam import STAGE, parse_bool, run_baselines

        self.settings = stage_settings(self, STAGE)
        self.tasks = STAGE.plan(self.settings, models=self.model or None, selections=self.selection or None,
                                tau=self.T, linear_size=self.linear_size,
                                multi_loss=parse_bool("--multi-loss", self.multi_loss), seed=self.seed,
                                seeds=self.seeds or None)
        self.specs = {t.key: dict(t.spec) for t in self.tasks}
        stage_split(self, STAGE, self.settings)
        self.baselines = run_baselines(self.split_path, self.settings, out_dir=os.path.join(self.run_dir, "baselines"))
        self.next(self.train, foreach="tasks")

    @training_step(gpu=1, memory=16000, cpu=4)
    def train(self):
        """Fit one (model, selection); the code picks CUDA when present, else the CPU."""
        from recsys.pipeline.bam import STAGE

        self.task = self.input
        self.result = STAGE.run_task(self.split_path, self.task, STAGE.task_dir(self.run_dir, self.task),
                                     checkpoint_dir=checkpoint_root(self), **STAGE.task_options(self.settings))
        self.next(self.join)

    @card(type="blank", id="bam")
    @step
    def join(self, inputs):
        """Metric table and interest-usage histograms per selection."""
        from metaflow.cards import Image, Markdown, Table

        from recsys.pipeline import bam
        from recsys.pipeline.evidence import footnote

        self.results = {i.task.result_key: i.result for i in inputs}
        prune_checkpoints(self)
        self.merge_artifacts(inputs, exclude=["task", "result"])
        self.rows = bam.table_rows(self.results, self.baselines)
        self.evidence = bam.STAGE.evidence({**self.baselines, **self.results}, self.settings)
        headers, cells = bam.STAGE.table_with_evidence(self.rows, self.evidence)
        up = self.settings.get("upstream") or {}
        current.card.append(Markdown(
            f"# {self.dataset} / leave_one_out (BaM)\n"
            f"{self.stats['n_users']:,} users, {self.stats['n_items']:,} items, "
            f"{self.stats.get('n_interactions', 0):,} interactions. Test item = each user's last; full ranking, "
            f"item score = max over interests; history items "
            f"{'scored 0 (upstream)' if up.get('history_zero_upstream') else 'excluded'}; validation users "
            f"{'redrawn with replacement each time (upstream)' if up.get('valid_resample') else 'one fixed seeded set'}. "
            f"H(·): entropy (nats) of the interest-usage histogram, ln K = balanced. {footnote(self.evidence)}"))
        current.card.append(Table(cells, headers=headers))
        current.card.append(Markdown("## Interest usage per selection (test targets; top-k hits)"))
        current.card.append(Image(bam.usage_plot_png(self.results)))
        self.next(self.end)

    @step
    def end(self):
        """Expose ``results`` (per model/selection), ``baselines`` and ``rows`` (the table)."""
        from recsys.pipeline import bam

        bam.STAGE.report(self.run_dir, title=f"{self.dataset}: multi-interest stage (BaM, leave_one_out)",
                         rows=self.rows, intro="Test Recall / NDCG, entropies of interest use (nats), steps.",
                         results={"rows": self.rows, "runs": {bam_key(k): r for k, r in self.results.items()},
                                  "baselines": self.baselines, "evidence": self.evidence},
                         png=bam.usage_plot_png(self.results), evidence=self.evidence,
                         tasks={**self.baselines, **self.results}, dataset=self.dataset,
                         split_sha256=self.split_sha256, provenance=run_provenance(self))


def bam_key(key) -> str:
    """A results key as JSON takes it: ``mind/p``, ``mind/p/seed1`` with --seeds."""
    return key if isinstance(key, str) else f"{key[0]}/seed{key[1]}"


if __name__ == "__main__":
    main(BamFlow)
