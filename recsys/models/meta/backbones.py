"""The rating backbones of the meta stage and MELO's sizes for them.

MELO (Kim et al. 2023) runs every backbone small: hidden 32; BERT4Rec and SASRec with 2 blocks
of 4 heads, GRU4Rec with 2 GRU layers, NARM with 1; windows of 30 items. Dropout 0.1 everywhere
(MELO states it for BERT4Rec; the same rate is used for the others here).
"""

from __future__ import annotations

from typing import Any, Mapping

from recsys.errors import ConfigError
from recsys.models.registry import get_model

BACKBONES = ("gru4rec", "narm", "sasrec", "bert4rec")

MELO_BACKBONES: dict[str, dict[str, Any]] = {
    "bert4rec": {"hidden": 32, "n_blocks": 2, "n_heads": 4, "dropout": 0.1, "attn_dropout": 0.1, "max_len": 30},
    "sasrec": {"hidden": 32, "n_blocks": 2, "n_heads": 4, "dropout": 0.1, "attn_dropout": 0.1, "max_len": 30},
    "gru4rec": {"hidden": 32, "gru_hidden": 32, "n_layers": 2, "dropout": 0.1, "max_len": 30},
    "narm": {"hidden": 32, "gru_hidden": 32, "n_layers": 1, "dropout": 0.1, "ct_dropout": 0.1, "max_len": 30},
}


def backbone_config(name: str, overrides: Mapping[str, Any] | None = None):
    """The config of backbone `name`: MELO's sizes (for the four MELO backbones) with
    `overrides` on top and the rating objective. An unknown name is a ConfigError naming the
    closest registered model; a registered model without a rating head is refused."""
    from recsys.models.sequential.core import SequentialConfig

    klass = get_model(name)
    if not issubclass(klass.Config, SequentialConfig):
        raise ConfigError(f"backbone {name!r} has no rating head; use one of {', '.join(BACKBONES)}")
    values = {**MELO_BACKBONES.get(name, {}), **dict(overrides or {}), "objective": "rating"}
    return klass.Config.from_dict(values, name)
