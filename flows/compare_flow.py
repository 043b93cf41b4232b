"""One leaderboard across finished runs: every ranking model of those runs in one table per metric
and user group, with 95 % intervals and paired tests against the best.

    python flows/compare_flow.py run --runs PretrainFlow/1733,TallFlow/1734
    python flows/compare_flow.py run --runs outputs/tall/ml-1m/17,outputs/pretrain/ml-1m/random_split/18 --metrics ndcg@20

``--runs`` takes Metaflow run pathspecs or run folders (each holds the ``evidence.json`` and
``per_user.npz`` its stage wrote). All runs must have evaluated the same saved split (its sha256):
train the second stage on the first one's split (``pretrain_flow.py run --split-dir
<tall run>/split/...``); runs over different splits are refused with one line naming them. No model
is retrained: the intervals and tests are recomputed from the kept per-user arrays. Writes
``report.html``, ``plot.png`` and ``leaderboard.json`` (and a card).
"""

import os

from metaflow import FlowSpec, Parameter, card, current, project, step

from flow_base import output_help, shared
from flow_support import main


@project(name="recsys_pipelines")
class CompareFlow(FlowSpec):
    """Load the runs' kept arrays -> check one split -> leaderboard tables, plot, card."""

    output_dir = shared("output_dir", output_help("compare/<run id>"))
    runs = Parameter("runs", default="", help="comma list of Metaflow run pathspecs (TallFlow/1234) or run folders")
    metrics = Parameter("metrics", default="",
                        help="comma list of metrics (default: every per-user metric all runs kept)")

    @step
    def start(self):
        """Resolve the runs, check they share one split, build the leaderboard."""
        from recsys.pipeline import leaderboard as lb
        from recsys.pipeline.preprocess import default_output_root
        from recsys.pipeline.settings import comma_list

        specs = comma_list(self.runs)
        if not specs:
            from recsys.errors import ConfigError

            raise ConfigError("--runs is empty: pass two or more runs, e.g. --runs PretrainFlow/12,TallFlow/13")
        evidence = [lb.load_run(spec) for spec in specs]
        self.board = lb.leaderboard(evidence, metrics=comma_list(self.metrics) or None)
        self.run_dir = os.path.abspath(self.output_dir or str(default_output_root() / "compare" / current.run_id))
        self.next(self.end)

    @card(type="blank", id="leaderboard")
    @step
    def end(self):
        """Publish: one table per metric and group, the first table's plot, ``leaderboard.json``."""
        from metaflow.cards import Image, Markdown, Table

        from recsys.io import write_json
        from recsys.pipeline import leaderboard as lb
        from recsys.pipeline.evidence import footnote
        from recsys.pipeline.report import publish

        tables = list(self.board["tables"])
        note = footnote({"metrics": self.board["tables"], "alpha": self.board["alpha"],
                         "resamples": self.board["resamples"]}).replace("the reference", "the best method")
        current.card.append(Markdown(f"# Leaderboard over {len(self.board['runs'])} runs\n"
                                     f"Split sha256 `{self.board['split_sha256'][:16]}`. {note}"))
        for title in tables:
            headers, cells = lb.board_table(self.board, title)
            current.card.append(Markdown(f"## {title}"))
            current.card.append(Table(cells, headers=headers))
        png = lb.board_png(self.board)
        current.card.append(Image(png))
        headers, cells = lb.board_table(self.board, tables[0])
        publish(self.run_dir, title=f"Leaderboard: {tables[0]}", intro=note, headers=headers, cells=cells,
                results=self.board, png=png)
        write_json(os.path.join(self.run_dir, "leaderboard.json"), self.board)
        print(lb.board_text(self.board))
        print(f"leaderboard: {os.path.join(self.run_dir, 'leaderboard.json')}")


if __name__ == "__main__":
    main(CompareFlow)
