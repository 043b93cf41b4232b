"""Pretraining flow: train the global models every later stage starts from.

    python flows/pretrain_flow.py run --dataset amazon-digital-music
    python flows/pretrain_flow.py run --dataset ml-1m --protocol strong_generalization --models multvae,ease

Settings: ``params/pretrain_<dataset>.yaml`` (protocol, its parameters, each model's
hyper-parameters); ``--config cfg FILE`` merges a YAML over it. Files (checkpoints, MultVAE
user embeddings and score files for LOCA, BERT4Rec item embeddings) go under the run's output
directory; only their paths, checksums and small metrics travel as artifacts.
Training steps checkpoint each epoch under ``checkpoints/`` of the output root (or
``$RECSYS_CHECKPOINT_ROOT``); a ``@retry`` attempt or ``resume`` goes on from the last one
(``flows/flow_support.py``).
"""

import os

from metaflow import Parameter, card, current, project, step

from flow_base import CsvDatasetFlow, stage_config
from flow_support import checkpoint_root, main, prune_checkpoints, run_provenance, training_step


@project(name="recsys_pipelines")
class PretrainFlow(CsvDatasetFlow):
    """Split -> one training task per model (foreach) -> comparison table and learning curves."""

    _output_under = "pretrain/<dataset>/<protocol>/<run id>"

    cfg = stage_config("pretrain")
    protocol = Parameter("protocol", default="",
                         help="evaluation protocol (default: the params file's default_protocol)")
    models = Parameter("models", default="",
                       help="comma list of models (default: all configured for the protocol)")
    seeds = Parameter("seeds", default="",
                      help="comma list of training seeds, e.g. 0,1,2: one task per seed of every seeded model "
                           "(default: the protocol section's seeds, else one run at each model's config seed)")
    split_dir = Parameter("split-dir", default="",
                          help="reuse a split a preprocess run saved (its folder; checksums are checked)")

    @step
    def start(self):
        """Resolve settings, fail fast on bad names, make and save the split."""
        from recsys.pipeline import pretrain as pt
        from recsys.pipeline.preprocess import check_request

        from recsys.pipeline.settings import with_data_options

        import time

        self.started_at = time.time()
        settings = pt.load_settings(self.dataset, dict(self.cfg))
        self.section = pt.protocol_settings(settings, self.protocol or None, self.models or None)
        self.section = with_data_options(self.section, self.data_path, self.columns, self.sep)
        check_request(self.dataset, self.section["protocol"])
        self.run_dir = os.path.abspath(self.output_dir or str(
            pt.default_run_dir(self.dataset, self.section["protocol"], current.run_id)))
        if self.split_dir:
            from recsys.pipeline.preprocess import load_saved_split

            prepared = load_saved_split(self.split_dir, self.section["protocol"], self.dataset)
        else:
            prepared = pt.prepare(self.dataset, self.section, data_dir=self.data_dir or None,
                                  output_dir=os.path.join(self.run_dir, "split"))
        self.split_path, self.split_sha256, self.stats = str(prepared.path), prepared.sha256, prepared.stats
        self.tasks = pt.STAGE.plan(self.section, seeds=self.seeds or None)
        self.model_names = list(self.section["models"])
        self.next(self.train, foreach="tasks")

    @training_step(gpu=1, memory=16000, cpu=4)
    def train(self):
        """Fit one model (with one seed); the code picks CUDA when present, else the CPU."""
        from recsys.pipeline import pretrain as pt

        self.task = self.input
        self.model_name = self.task.key
        self.result = pt.STAGE.run_task(self.split_path, self.task, pt.STAGE.task_dir(self.run_dir, self.task),
                                        artifacts=self.section.get("artifacts"), checkpoint_dir=checkpoint_root(self))
        self.next(self.join)

    @card(type="blank", id="comparison")
    @step
    def join(self, inputs):
        """Gather per-model results into one table and one plot."""
        from metaflow.cards import Image, Markdown, Table

        from recsys.pipeline import pretrain as pt
        from recsys.pipeline.evidence import footnote

        self.tasks_done = {i.task.result_key: i.result for i in inputs}
        # JSON keys: the model's name, "<model>/seed<s>" for a seed task
        self.results = {(k if isinstance(k, str) else f"{k[0]}/seed{k[1]}"): r for k, r in self.tasks_done.items()}
        prune_checkpoints(self)  # finished models removed theirs; drop the empty folders
        self.merge_artifacts(inputs, exclude=["model_name", "result", "task"])
        self.rows = pt.comparison(self.tasks_done)
        self.evidence = pt.STAGE.evidence(self.tasks_done, self.section)
        headers, cells = pt.STAGE.table_with_evidence(self.rows, self.evidence)
        current.card.append(Markdown(
            f"# {self.dataset} / {self.section['protocol']}\n"
            f"Recall denominator: `{next(iter(self.results.values()))['recall_denominator']}`; "
            f"split seed {self.stats['seed']}; {self.stats['n_users']:,} users, {self.stats['n_items']:,} items. "
            f"{footnote(self.evidence)}"))
        current.card.append(Table(cells, headers=headers))
        png = pt.curves_png(self.results)
        if png:
            current.card.append(Image(png))
        self.next(self.end)

    @step
    def end(self):
        """Expose ``results`` (per model: test metrics, validation curve, epochs, seconds, files)."""
        from recsys.pipeline import pretrain as pt

        pt.STAGE.report(self.run_dir, title=f"{self.dataset}: pretraining ({self.section['protocol']})",
                        intro="Test metrics per model, epochs and training seconds.", rows=self.rows,
                        results=self.results, png=pt.curves_png(self.results), evidence=self.evidence,
                        tasks=self.tasks_done, dataset=self.dataset, split_sha256=self.split_sha256,
                        provenance=run_provenance(self))


if __name__ == "__main__":
    main(PretrainFlow)
