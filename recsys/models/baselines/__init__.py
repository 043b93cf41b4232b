"""Non-neural baselines: most-popular and EASE^R."""

from recsys.models.baselines.ease import EASE, EASEConfig
from recsys.models.baselines.most_popular import MostPopular, MostPopularConfig

__all__ = ["EASE", "EASEConfig", "MostPopular", "MostPopularConfig"]
