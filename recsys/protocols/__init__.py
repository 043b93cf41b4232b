"""Evaluation protocols of the reproduced papers and the :class:`Split` they return.

=======================  ==========================================  ====================
protocol                 papers                                      recall denominator
=======================  ==========================================  ====================
strong_generalization    MultVAE (vae_cf), POSIT                     min(k, n)
random_split             LFT / EnLFT, TALL                           n
leave_k_out_by_time      LOCA                                        n
leave_one_out            BERT4Rec-style sequences, BaM               n (one target: HR)
user_split               MELO (cold-start rating regression)         n/a
per_user_holdout         seed 004 MultVAE (weak generalisation)      min(k, n)
=======================  ==========================================  ====================
"""

from recsys.protocols.protocols import (
    PROTOCOLS,
    leave_k_out_by_time,
    leave_one_out,
    make_split,
    per_user_holdout,
    random_split,
    strong_generalization,
    user_split,
)
from recsys.protocols.split import FORMAT_VERSION, Split

__all__ = [
    "FORMAT_VERSION",
    "PROTOCOLS",
    "Split",
    "leave_k_out_by_time",
    "leave_one_out",
    "make_split",
    "per_user_holdout",
    "random_split",
    "strong_generalization",
    "user_split",
]
