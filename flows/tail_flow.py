"""Adversarial tail flow: POSIT against EASE (SGD and closed form), IPW, CVaR and most-popular.

    python flows/tail_flow.py run --dataset amazon-digital-music
    python flows/tail_flow.py run --dataset ml-1m --methods ease,posit --seeds 0,1,2
    python flows/tail_flow.py run --dataset ml-1m --methods posit \
        --param-string ml1m_ease_lr5.00e-02_alr1.00e+00_wd5.00e-02_nstd1.50e+00_awd0.00e+00_ast2bmlp2_alossrecall_dist_onesFalse_lam1.00e+00_l2_itemarl_metric

Settings: ``params/tail_<dataset>.yaml`` (split, training seeds, the learner's shared settings and
each method's own); ``--config cfg FILE`` merges a YAML over it; ``--param-string`` takes a published
POSIT parameter string and overrides the ``posit`` method with it (``--params`` is a word
Metaflow reserves). One training task per
(method, seed); the join reports mean +- std over seeds and plots coverage against NDCG.
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
class TailFlow(CsvDatasetFlow):
    """Split -> one task per (method, seed) (foreach) -> mean +- std table and coverage / NDCG plot."""

    _output_under = "tail/<dataset>/<run id>"

    cfg = stage_config("tail")
    methods = Parameter("methods", default="",
                        help="comma list of mostpop, ease_closed_form, ease, ipw, cvar, posit (default: all configured)")
    seeds = Parameter("seeds", default="", help="comma list of training seeds (default: the params file's seeds)")
    # `--params` is a reserved word in Metaflow, hence `--param-string`
    param_string = Parameter("param-string", default="",
                             help="a published POSIT parameter string; overrides the posit method's settings")

    @step
    def start(self):
        """Resolve and check every method's settings (the plan of tasks), then make and save the split."""
        from recsys.pipeline.tail import STAGE, memory_plan

        self.settings = stage_settings(self, STAGE)
        self.tasks = STAGE.plan(self.settings, methods=self.methods or None, params_string=self.param_string or None,
                                seeds=self.seeds or None)
        self.specs = {t.key: dict(t.spec) for t in self.tasks}
        self.seed_list = list(dict.fromkeys(t.seed for t in self.tasks))
        stage_split(self, STAGE, self.settings)
        # memory known before training: a task that can never fit stops the run here
        self.memory = memory_plan(self.split_path, self.specs)
        self.next(self.train, foreach="tasks")

    @training_step(gpu=1, memory=16000, cpu=4)
    def train(self):
        """Fit one method with one seed; the code picks CUDA when present, else the CPU."""
        from recsys.pipeline.tail import STAGE

        self.task = self.input
        self.result = STAGE.run_task(self.split_path, self.task, STAGE.task_dir(self.run_dir, self.task),
                                     checkpoint_dir=checkpoint_root(self),
                                     memory_dir=os.path.join(self.run_dir, "memory"))
        self.next(self.join)

    @card(type="blank", id="tail")
    @step
    def join(self, inputs):
        """Mean +- std over seeds per method, as a table and a coverage / NDCG plot."""
        from metaflow.cards import Image, Markdown, Table

        from recsys.pipeline import tail
        from recsys.pipeline.evidence import footnote

        self.results = {f"{i.task.key}/seed{i.task.seed}": i.result for i in inputs}
        prune_checkpoints(self)  # finished models removed theirs; drop the empty folders
        self.tasks_done = {i.task.result_key: i.result for i in inputs}
        self.rows = tail.STAGE.aggregate(self.tasks_done)
        self.merge_artifacts(inputs, exclude=["task", "result"])
        self.evidence = tail.STAGE.evidence(self.tasks_done, self.settings)
        headers, cells = tail.STAGE.table_with_evidence(self.rows, self.evidence)
        current.card.append(Markdown(
            f"# {self.dataset} / strong_generalization\n"
            f"Split seed {self.stats['seed']}; {self.stats['n_users']:,} users, {self.stats['n_items']:,} items; "
            f"training seeds {self.seed_list}; mean ± std over seeds. Recall denominator min(k, |held-out|); "
            f"coverage over blocks of {tail.COVERAGE_BLOCK} test users. {footnote(self.evidence)}"))
        current.card.append(Table(cells, headers=headers))
        current.card.append(Image(tail.coverage_plot_png(self.rows, evidence=self.evidence)))
        self.next(self.end)

    @step
    def end(self):
        """Expose ``results`` (per method/seed run) and ``rows`` (per method, mean and std)."""
        from recsys.pipeline import tail

        tail.STAGE.report(self.run_dir, title=f"{self.dataset}: tail stage", rows=self.rows,
                          intro="Mean ± std over seeds per method.",
                          results={"rows": self.rows, "runs": self.results, "evidence": self.evidence},
                          evidence=self.evidence, tasks=self.tasks_done, dataset=self.dataset,
                          split_sha256=self.split_sha256, provenance=run_provenance(self))


if __name__ == "__main__":
    main(TailFlow)
