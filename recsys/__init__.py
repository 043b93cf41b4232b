"""recsys: one data layer, one protocol library, one metric library, and the models of
the recsys-pipelines project (MultVAE, EASE, LOCA, LFT/EnLFT, TALL, POSIT, MELO, BaM)."""

__version__ = "0.1.0"
