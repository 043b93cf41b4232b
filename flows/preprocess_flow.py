"""Preprocessing flow: load a dataset, apply an evaluation protocol, save the Split.

    python flows/preprocess_flow.py run --dataset ml-1m --protocol random_split

Every later flow starts from a Split like the one this flow writes. The end step exposes
``self.stats`` (counts after filtering, per split) and ``self.split_path``.
"""

import os

from metaflow import Config, Parameter, card, current, project, step

from flow_base import CsvDatasetFlow
from flow_support import main

HERE = os.path.dirname(os.path.abspath(__file__))
# Resolved from this file, not the working directory, so the flow runs from anywhere.
PARAMS = os.path.join(HERE, "..", "params", "preprocess.yaml")


@project(name="recsys_pipelines")
class PreprocessFlow(CsvDatasetFlow):
    """Dataset -> binarise -> protocol -> Split on disk, with a statistics card."""

    _help = {"output_dir": "the split's directory: new, empty, or an older split "
                           "(default: <$RECSYS_OUTPUT_DIR or ./outputs>/splits/<dataset>/<protocol>/<run id>)"}

    cfg = Config("cfg", default=PARAMS, parser="yaml.safe_load",
                    help="preprocessing settings per dataset and protocol (params/preprocess.yaml)")
    protocol = Parameter("protocol", default="random_split",
                         help="strong_generalization | random_split | leave_k_out_by_time | "
                              "leave_one_out | user_split")

    @step
    def start(self):
        """Check names and settings before touching any data."""
        from recsys.pipeline.preprocess import STAGE, check_request
        from recsys.pipeline.settings import with_data_options

        check_request(self.dataset, self.protocol)
        self.settings = with_data_options(STAGE.load_settings(self.dataset, dict(self.cfg), protocol=self.protocol),
                                          self.data_path, self.columns, self.sep)
        self.next(self.split)

    @card(type="blank", id="stats")
    @step
    def split(self):
        """Load, binarise, split and save; the card shows the statistics and degree plot."""
        from metaflow.cards import Image, Markdown, Table

        from recsys.pipeline import preprocess as pp

        out = self.output_dir or str(pp.STAGE.default_run_dir(self.dataset, current.run_id, self.protocol))
        prepared = pp.STAGE.prepare(self.dataset, self.settings, data_dir=self.data_dir or None, output_dir=out)
        # Only the path, its digest and small counts travel as artifacts; the matrices stay on disk.
        self.split_path = os.path.abspath(prepared.path)
        self.split_sha256 = prepared.sha256
        self.stats = prepared.stats
        from recsys.pipeline.report import write_report

        cells, png = pp.stats_table(self.stats), pp.degree_plot_png(prepared.split, f"{self.dataset}, {self.protocol}")
        current.card.append(Markdown(f"# {self.dataset} / {self.protocol}"))
        current.card.append(Table(cells, headers=["statistic", "value"]))
        current.card.append(Image(png))
        # beside the split folder, not in it: the split's digest covers its own files only
        self.report_files = {k: str(v) for k, v in write_report(
            f"{self.split_path}-report", title=f"{self.dataset} / {self.protocol}: split statistics",
            headers=["statistic", "value"], cells=cells, results=self.stats, png=png).items()}
        self.next(self.end)

    @step
    def end(self):
        """Expose ``stats`` and ``split_path``; print the headline counts."""
        s = self.stats
        print(f"{self.dataset} / {self.protocol}: {s['n_users']:,} users, {s['n_items']:,} items, "
              f"{s['n_interactions']:,} interactions")
        print(f"split saved to {self.split_path}")
        from recsys.pipeline import preprocess as pp
        from recsys.pipeline.report import print_files, text_table

        print(text_table(["statistic", "value"], pp.stats_table(s)))
        print_files(self.report_files)


if __name__ == "__main__":
    main(PreprocessFlow)
