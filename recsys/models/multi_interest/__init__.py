"""Multi-interest recommenders (MIND, ComiRec-SA, REMI) trained with BaM's balanced interest
learning (hard / BaM_p / BaM_l target-interest selection, temperature, multi-interest loss); see
:mod:`.model`. Every model is an :class:`~recsys.models.base.InterestModel`:
``interests(histories) -> [B, K, d]``, item score = max over interests."""

from recsys.models.multi_interest.model import (
    BACKBONES,
    MIND,
    REMI,
    ComiRecSA,
    ComiRecSAConfig,
    MINDConfig,
    MultiInterestConfig,
    MultiInterestModel,
    REMIConfig,
)
from recsys.models.multi_interest.networks import ComiRecSAEncoder, MINDEncoder, MultiInterestNetwork
from recsys.models.multi_interest.objectives import SELECTIONS

__all__ = [
    "BACKBONES", "MIND", "REMI", "SELECTIONS", "ComiRecSA", "ComiRecSAConfig", "ComiRecSAEncoder", "MINDConfig",
    "MINDEncoder", "MultiInterestConfig", "MultiInterestModel", "MultiInterestNetwork", "REMIConfig",
]
