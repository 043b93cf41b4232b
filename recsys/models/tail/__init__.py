"""Tail promotion (POSIT, Xu, Shivaswamy, Zhang; ``../shared/reference/algorithms.md`` section D).

So far: the published parameter strings (:mod:`recsys.models.tail.params`); the training body,
its baselines and ``flows/tail_flow.py`` follow (issue 6).
"""

from recsys.models.tail.params import EXAMPLE, ParamString

__all__ = ["EXAMPLE", "ParamString"]
