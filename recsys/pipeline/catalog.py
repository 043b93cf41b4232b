"""The registry of stages: which methods each stage runs and which registered model each method is.

This is the one place in :mod:`recsys.pipeline` that names models. Everything a stage does
differently for a method (no seed to vary, no device, no backbone, a settings section shared by
several methods) is asked of the model class (``Model.seeded``, ``Model.uses_device``,
``ColdStartRater.has_backbone``, ...), never by testing a name. Adding a method to a stage is a
line here (and its settings in ``params/``); adding a model is ``@register_model`` on its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from recsys.models.meta.learners import METHOD_MODELS as _META_MODELS
from recsys.models.tail.learner import METHODS as _TAIL_LEARNER_METHODS


@dataclass(frozen=True)
class Method:
    """One method of a stage: the registered ``model`` it builds, the config values the method
    itself fixes (``fixed``), and the settings section merged under its own settings (``shared``)."""

    model: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    shared: str | None = None


# ---- local / mixture-of-experts stage (flows/tall_flow.py) ------------------------------------------
LOCAL_STAGE = "tall"  # its name: params/tall_<dataset>.yaml, outputs/tall/<dataset>/<run id>
LOCAL_METHODS = {"vae": "wl", "wl": "wl", "loca": "loca", "lft": "lft", "enlft": "enlft", "tall": "tall"}
LOCAL_BASE_METHODS = ("vae", "wl")  # trained in the base step: LOCA's global model and LFT / EnLFT's start

# ---- adversarial tail stage (flows/tail_flow.py) ------------------------------------------------------
TAIL_METHODS = {
    "mostpop": Method("mostpop"),
    "ease_closed_form": Method("ease"),
    **{m: Method("tail_learner", {"method": m}, shared="learner") for m in _TAIL_LEARNER_METHODS},
}
TAIL_PARAM_STRING_METHOD = "posit"  # the method a published POSIT parameter string sets

# ---- meta stage (flows/meta_flow.py) ------------------------------------------------------------------
META_METHODS = dict(_META_MODELS)  # method -> model: global_mean, basic, maml, maml_pp, melo
META_BACKBONES = ("gru4rec", "narm", "sasrec", "bert4rec")

# ---- multi-interest BaM stage (flows/bam_flow.py) -----------------------------------------------------
BAM_MODELS = ("mind", "comirec", "remi")
BAM_SELECTIONS = ("hard", "p", "l")
BAM_BASELINES = {"mostpop": {}}  # when the settings name none

# ---- the reference method each stage's table tests the others against (settings' `reference:` overrides)
STAGE_REFERENCES = {
    "pretrain": "mostpop",      # every global model against most-popular
    LOCAL_STAGE: "enlft",       # TALL's claim is against EnLFT (the VAE when EnLFT is not run)
    "tail": "ease",             # POSIT's claim is against EASE trained by the same learner
    "meta": "maml_pp",          # MELO's claim is against MAML++, on the same backbone
    "bam": "hard",              # BaM's claim: each model's soft selections against its hard selection
}
LOCAL_FALLBACK_REFERENCE = "vae"
