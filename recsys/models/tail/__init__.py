"""Tail promotion (POSIT, Xu, Shivaswamy, Zhang; ``../shared/reference/algorithms.md`` section D):
the published parameter strings (:mod:`recsys.models.tail.params`) and the training body with its
baselines (:mod:`recsys.models.tail.learner`)."""

from recsys.models.tail.learner import METHODS, Adversary, TailConfig, TailLearner, ipw_weights, topk_hits
from recsys.models.tail.params import EXAMPLE, ParamString

__all__ = ["Adversary", "EXAMPLE", "METHODS", "ParamString", "TailConfig", "TailLearner", "ipw_weights", "topk_hits"]
