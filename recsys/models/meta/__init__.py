"""Meta-learning for cold-start rating prediction (MELO, Kim et al. CIKM 2023): the global
mean, the plain backbone, MAML, MAML++ and MELO over any sequential backbone with a rating head.
See :mod:`.cold_start` (the cold-start contract, the global mean and basic), :mod:`.learners`
(MAML, MAML++, MELO), :mod:`.functional` (the batched, functional inner loop),
:mod:`.weighting` (MELO's weighting LSTM) and :mod:`.pretrained` (pretrained item embeddings)."""

from recsys.models.meta.backbones import BACKBONES, MELO_BACKBONES, backbone_config
from recsys.models.meta.cold_start import ColdStartConfig, GlobalMean, GlobalMeanConfig, MetaBasic
from recsys.models.meta.learners import (
    MAML,
    MELO,
    METHOD_MODELS,
    MAMLConfig,
    MAMLPlusPlus,
    MELOConfig,
    MetaConfig,
    MetaLearner,
)

__all__ = [
    "BACKBONES", "MELO_BACKBONES", "METHOD_MODELS", "backbone_config",
    "ColdStartConfig", "GlobalMean", "GlobalMeanConfig", "MAML", "MAMLConfig", "MAMLPlusPlus", "MELO",
    "MELOConfig", "MetaBasic", "MetaConfig", "MetaLearner",
]
