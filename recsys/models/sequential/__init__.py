"""Sequential recommenders over time-ordered item sequences (leave-one-out splits).

All share :class:`SequentialModel` (training through the one loop, full-ranking evaluation,
item embeddings and the per-position rating head); see :mod:`.core`.
"""

from recsys.models.sequential.bert4rec import BERT4Rec, BERT4RecConfig, BERT4RecNetwork
from recsys.models.sequential.core import SequentialConfig, SequentialModel
from recsys.models.sequential.gru4rec import GRU4Rec, GRU4RecConfig, GRU4RecNetwork
from recsys.models.sequential.narm import NARM, NARMConfig, NARMNetwork
from recsys.models.sequential.sasrec import SASRec, SASRecConfig, SASRecNetwork

__all__ = [
    "BERT4Rec", "BERT4RecConfig", "BERT4RecNetwork",
    "GRU4Rec", "GRU4RecConfig", "GRU4RecNetwork",
    "NARM", "NARMConfig", "NARMNetwork",
    "SASRec", "SASRecConfig", "SASRecNetwork",
    "SequentialConfig", "SequentialModel",
]
