"""Model names -> classes: ``get_model(name)``, ``build(name, **config)``."""

from __future__ import annotations

import difflib
from typing import Any

from recsys.errors import ConfigError
from recsys.models.autoencoders import MultDAE, MultVAE
from recsys.models.base import Model
from recsys.models.baselines import EASE, MostPopular
from recsys.models.local import LFT, LOCA, TALL, WL, EnLFT
from recsys.models.meta import MAML, MELO, GlobalMean, MAMLPlusPlus, MetaBasic
from recsys.models.multi_interest import MIND, REMI, ComiRecSA
from recsys.models.sequential import BERT4Rec, GRU4Rec, NARM, SASRec
from recsys.models.tail import TailLearner

MODELS: dict[str, type[Model]] = {
    "multvae": MultVAE,
    "multdae": MultDAE,
    "ease": EASE,
    "mostpop": MostPopular,
    "bert4rec": BERT4Rec,
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "narm": NARM,
    "wl": WL,
    "loca": LOCA,
    "lft": LFT,
    "enlft": EnLFT,
    "tall": TALL,
    "tail_learner": TailLearner,
    "global_mean": GlobalMean,
    "meta_basic": MetaBasic,
    "maml": MAML,
    "maml_pp": MAMLPlusPlus,
    "melo": MELO,
    "mind": MIND,
    "comirec": ComiRecSA,
    "remi": REMI,
}


def get_model(name: str) -> type[Model]:
    """The model class registered as `name`; ConfigError (with the closest name) otherwise."""
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(str(name).lower(), MODELS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown model {name!r}.{hint} Valid names: {', '.join(sorted(MODELS))}")


def build(name: str, **config: Any) -> Model:
    """An unfitted model `name` with `config` overriding its defaults (unknown keys -> ConfigError)."""
    return get_model(name)(**config)


def model_of_config(config_class: type) -> str:
    """The registered name whose Config is exactly `config_class` (for nested configs)."""
    for name, klass in MODELS.items():
        if klass.Config is config_class:
            return name
    raise ConfigError(f"{config_class.__name__} is not the config of a registered model")
