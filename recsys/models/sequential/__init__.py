"""Sequential recommenders over time-ordered item sequences (leave-one-out splits)."""

from recsys.models.sequential.bert4rec import BERT4Rec, BERT4RecConfig, BERT4RecNetwork

__all__ = ["BERT4Rec", "BERT4RecConfig", "BERT4RecNetwork"]
