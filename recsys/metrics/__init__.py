"""Metrics: full-ranking top-k on the device, item-side / coverage, mainstream groups,
rating regression. Conventions (recall denominator, MAP normaliser, skipped users, ties)
are in each module's docstring and recorded by ``RankingResult.summary()``."""

from recsys.metrics.beyond import BEYOND_METRICS, beyond_accuracy
from recsys.metrics.coverage import (
    ItemRecall,
    catalog_coverage,
    coverage_at_k,
    distributional_coverage,
    item_recall_at_k,
)
from recsys.metrics.groups import GROUP_NAMES, group_report, mainstream_groups, mainstream_scores
from recsys.metrics.ranking import (
    METRICS,
    RECALL_DENOMINATORS,
    RankingResult,
    definitions,
    evaluate,
    rank_metrics,
    topk,
)
from recsys.metrics.regression import mae, per_rating_report, rmse

__all__ = [
    "BEYOND_METRICS",
    "beyond_accuracy",
    "GROUP_NAMES",
    "METRICS",
    "RECALL_DENOMINATORS",
    "ItemRecall",
    "RankingResult",
    "catalog_coverage",
    "coverage_at_k",
    "definitions",
    "distributional_coverage",
    "evaluate",
    "group_report",
    "item_recall_at_k",
    "mae",
    "mainstream_groups",
    "mainstream_scores",
    "per_rating_report",
    "rank_metrics",
    "rmse",
    "topk",
]
