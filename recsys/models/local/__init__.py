"""Local and mixture-of-experts models for mainstream bias: WL, LOCA, LFT, EnLFT and TALL
(``../shared/reference/algorithms.md`` section B). All are built on one batched bank of
single-hidden-layer Mult-VAE experts (:mod:`recsys.models.local.bank`)."""

from recsys.models.local.bank import BankAdam, ExpertBank
from recsys.models.local.common import REPORT_KS, REPORT_METRICS, BankConfig, LocalModel
from recsys.models.local.lft import LFT, EnLFT, EnLFTConfig, LFTConfig
from recsys.models.local.loca import LOCA, LOCAConfig
from recsys.models.local.tall import TALL, AdaptiveWeights, TALLConfig
from recsys.models.local.wl import WL, WLConfig, wl_weights

__all__ = [
    "AdaptiveWeights", "BankAdam", "BankConfig", "EnLFT", "EnLFTConfig", "ExpertBank", "LFT", "LFTConfig", "LOCA",
    "LOCAConfig", "LocalModel", "REPORT_KS", "REPORT_METRICS", "TALL", "TALLConfig", "WL", "WLConfig", "wl_weights",
]
